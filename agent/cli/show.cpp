// show N: one generation's document (secrets masked) and its changes (a read-only view of the
// state database).
#include "agent/cli/commands.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>

#include <cstdlib>
#include <iostream>

#include "agent/cli/cli.h"
#include "agent/cli/cli_support.h"
#include "agent/cycle/open_state.h"
#include "agent/document/document.h"
#include "providers/core/log.h"
#include "providers/host/real_host.h"

namespace pim {

ExitCode cmdShow(const Config& config, const std::string& arg, bool json) {
  char* end = nullptr;
  long long n = std::strtoll(arg.c_str(), &end, 10);
  if (end == arg.c_str() || *end != '\0' || n < 1) {
    return fail(Status::error(ErrorCode::kInvalid, "show: not a generation number: " + arg), json);
  }
  RealHost host(config.root, makeLogger("host"));
  auto opened = openStateForReading(config, host);
  if (!opened) return fail(opened.status(), json);
  auto record = (*opened)->generation(n);
  if (!record) return fail(record.status(), json);
  if (!record->has_value()) {
    return fail(Status::error(ErrorCode::kInvalid, "show: generation " + std::to_string(n) + " does not exist"), json);
  }
  auto changes = (*opened)->changes(n);
  if (!changes) return fail(changes.status(), json);
  const GenerationRecord& g = **record;
  const std::string masked = g.body.empty() ? std::string("null") : maskSecrets(g.body);
  if (json) {
    Poco::JSON::Object::Ptr o = new Poco::JSON::Object(Poco::JSON_PRESERVE_KEY_ORDER);
    o->set("generation", g.generation);
    o->set("time", isoTime(g.time));
    o->set("source", g.source);
    o->set("revision", optionalInt(g.revision));
    o->set("etag", g.etag);
    o->set("outcome", std::string(outcomeName(g.outcome)));
    o->set("error", g.error.empty() ? Poco::Dynamic::Var() : Poco::Dynamic::Var(g.error));
    o->set("rollback_of", optionalInt(g.rollbackOf));
    o->set("skipped", skippedJson(fromSkippedRecords<SkippedEntry>(g.skipped)));
    Poco::JSON::Array::Ptr arr = new Poco::JSON::Array;
    for (const auto& c : *changes) {
      Poco::JSON::Object::Ptr j = new Poco::JSON::Object(Poco::JSON_PRESERVE_KEY_ORDER);
      j->set("provider", c.provider);
      j->set("object", c.object);
      j->set("action", c.action);
      j->set("before", c.before);
      j->set("after", c.after);
      arr->add(j);
    }
    o->set("changes", arr);
    std::cout << toJson(o).substr(0, toJson(o).size() - 1);  // "document" appended verbatim below
    std::cout << ",\n  \"document\": " << masked << "\n}\n";
    return ExitCode::kOk;
  }
  std::cout << "generation " << g.generation << "  " << isoTime(g.time) << "  " << outcomeName(g.outcome);
  if (g.revision) std::cout << "  revision " << *g.revision;
  if (g.rollbackOf) std::cout << "  (rollback of " << *g.rollbackOf << ")";
  std::cout << "\nsource: " << g.source << "\n";
  if (!g.error.empty()) std::cout << "error: " << g.error << "\n";
  printSkipped(std::cout, fromSkippedRecords<SkippedEntry>(g.skipped));
  std::cout << "changes: " << changes->size() << "\n";
  for (const auto& c : *changes) {
    std::cout << "  " << c.provider << ": " << c.action << " " << c.object;
    if (!c.after.empty()) std::cout << " (" << c.after << ")";
    std::cout << "\n";
  }
  std::cout << "document (secrets masked):\n" << masked << "\n";
  return ExitCode::kOk;
}

}  // namespace pim
