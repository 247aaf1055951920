#include "agent/cli/cli_support.h"

#include <Poco/JSON/Object.h>
#include <Poco/JSON/Stringifier.h>

#include <ctime>

#include <iostream>
#include <sstream>
#include "agent/cli/cli.h"

namespace pim {

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

void printCycle(std::ostream& out, const CycleReport& r) {
  out << "outcome: " << cycleOutcomeName(r.outcome);
  if (r.generation) out << ", generation " << *r.generation;
  if (r.revision) out << ", revision " << *r.revision;
  out << "\n";
  if (!r.error.empty()) out << "error: " << r.error << "\n";
  out << "changes: " << r.changes.size() << "\n";
  for (const auto& a : r.changes) out << "  " << a.describe() << "\n";
  printSkipped(out, r.skipped);
}

Poco::Dynamic::Var optionalInt(const std::optional<int64_t>& v) {
  if (!v) return Poco::Dynamic::Var();
  return Poco::Dynamic::Var(*v);
}

std::string optionalText(const std::optional<int64_t>& v) { return v ? std::to_string(*v) : "none"; }

ExitCode exitFor(const Status& s) {
  switch (s.code()) {
    case ErrorCode::kInvalid:
      return ExitCode::kUsage;
    case ErrorCode::kRejected:
      return ExitCode::kRejected;
    case ErrorCode::kBusy:
      return ExitCode::kBusy;
    case ErrorCode::kUnreachable:
      return ExitCode::kUnreachable;
    default:
      return ExitCode::kInternal;
  }
}

ExitCode fail(const Status& s) {
  std::cerr << "pim-access-agent: " << s.message() << "\n";
  return exitFor(s);
}

ExitCode fail(const Status& s, bool json) {
  const ExitCode code = fail(s);
  if (json) {
    Poco::JSON::Object::Ptr root = new Poco::JSON::Object(Poco::JSON_PRESERVE_KEY_ORDER);
    root->set("error", s.message());
    root->set("exit", static_cast<int>(code));
    std::cout << toJson(root) << "\n";
  }
  return code;
}

}  // namespace pim
