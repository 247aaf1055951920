#include "agent/cli_support.h"

#include <Poco/JSON/Object.h>
#include <Poco/JSON/Stringifier.h>

#include <ctime>

#include <iostream>
#include <sstream>
#include "agent/adopt.h"
#include "agent/cli.h"
#include "agent/sandbox.h"
#include "providers/core/log.h"
#include "state/state_ledger.h"

namespace pim {

std::string isoTime(int64_t t) {
  std::time_t tt = std::time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string toJson(const Poco::Dynamic::Var& v) {
  std::ostringstream out;
  Poco::JSON::Stringifier::stringify(v, out, 2);
  return out.str();
}

Poco::JSON::Array::Ptr skippedJson(const std::vector<SkippedEntry>& skipped) {
  Poco::JSON::Array::Ptr arr = new Poco::JSON::Array;
  for (const auto& s : skipped) {
    Poco::JSON::Object::Ptr o = new Poco::JSON::Object(Poco::JSON_PRESERVE_KEY_ORDER);
    o->set("id", s.id);
    o->set("reason", s.reason);
    arr->add(o);
  }
  return arr;
}

void printSkipped(std::ostream& out, const std::vector<SkippedEntry>& skipped) {
  if (skipped.empty()) {
    out << "skipped: none\n";
    return;
  }
  out << "skipped " << skipped.size() << (skipped.size() == 1 ? " entry:\n" : " entries:\n");
  for (const auto& s : skipped) out << "  " << s.id << ": " << s.reason << "\n";
}

/// Opens the state database of the config (below --root).
Status makeStateDirectory(const Config& config, Host& host) {
  const std::string dir = config.state.db.substr(0, config.state.db.rfind('/'));
  if (dir.empty()) return Status::ok();
  const std::string parent = dir.substr(0, dir.rfind('/'));
  if (!parent.empty()) {
    Status s = host.makeDirectories(parent, Ownership{0755, 0, 0});
    if (!s) return s;
  }
  // The database holds every document with its secrets: its directory is root's alone.
  return host.makeDirectory(dir, Ownership{0700, 0, 0});
}

Result<std::unique_ptr<StateStore>> openState(const Config& config, Host& host) {
  if (Status s = makeStateDirectory(config, host); !s) return s;
  return StateStore::open(host.realPath(config.state.db), makeLogger("state"), config.state.keepGenerations);
}

Result<std::unique_ptr<StateStore>> openStateForCycles(const Config& config, Host& host) {
  if (Status s = prepareSandbox(host); !s) return s;
  auto state = openState(config, host);
  if (!state) return state.status();
  if ((*state)->rebuilt()) {
    StateLedger ledger(**state);
    auto adopted = adoptFromHost(host, config.host, ledger, makeLogger("state"));
    if (!adopted) return adopted.status();
  }
  return state;
}

std::string lockPath(const Config& config, Host& host) { return host.realPath(config.state.db) + ".lock"; }

int exitFor(const Status& s) {
  switch (s.code()) {
    case ErrorCode::kInvalid:
      return kExitUsage;
    case ErrorCode::kRejected:
      return kExitRejected;
    case ErrorCode::kUnreachable:
      return kExitUnreachable;
    default:
      return kExitInternal;
  }
}

int fail(const Status& s) {
  std::cerr << "pim-access-agent: " << s.message() << "\n";
  return exitFor(s);
}

}  // namespace pim
