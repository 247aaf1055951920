// history: generations newest first (a read-only view of the state database).
#include "agent/cli/commands.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>

#include <cstdio>
#include <iostream>

#include "agent/cli/cli.h"
#include "agent/cli/cli_support.h"
#include "agent/cycle/open_state.h"
#include "providers/core/log.h"
#include "providers/host/real_host.h"

namespace pim {

ExitCode cmdHistory(const Config& config, bool json) {
  RealHost host(config.root, makeLogger("host"));
  auto opened = openStateForReading(config, host);
  if (!opened) return fail(opened.status(), json);
  auto history = (*opened)->history(0);
  if (!history) return fail(history.status(), json);
  if (json) {
    Poco::JSON::Array::Ptr arr = new Poco::JSON::Array;
    for (const auto& g : *history) {
      Poco::JSON::Object::Ptr o = new Poco::JSON::Object(Poco::JSON_PRESERVE_KEY_ORDER);
      o->set("generation", g.generation);
      o->set("time", isoTime(g.time));
      o->set("revision", optionalInt(g.revision));
      o->set("outcome", std::string(outcomeName(g.outcome)));
      o->set("cause", std::string(causeName(g.cause)));
      o->set("attempts", g.attempts);
      o->set("last_attempt", g.lastTime ? Poco::Dynamic::Var(isoTime(*g.lastTime)) : Poco::Dynamic::Var());
      o->set("changes", g.changeCount);
      o->set("skipped", g.skippedCount);
      o->set("rollback_of", optionalInt(g.rollbackOf));
      o->set("error", g.error.empty() ? Poco::Dynamic::Var() : Poco::Dynamic::Var(g.error));
      arr->add(o);
    }
    std::cout << toJson(arr) << "\n";
    return ExitCode::kOk;
  }
  std::cout << "generation  time                  revision  outcome      cause     changes\n";
  for (const auto& g : *history) {
    char line[160];
    std::snprintf(line, sizeof line, "%10lld  %-20s  %8s  %-11s  %-8s  %7lld", static_cast<long long>(g.generation),
                  isoTime(g.time).c_str(), optionalText(g.revision).c_str(), outcomeName(g.outcome), causeName(g.cause),
                  static_cast<long long>(g.changeCount));
    std::cout << line;
    if (g.rollbackOf) std::cout << "  (rollback of " << *g.rollbackOf << ")";
    if (g.attempts > 1) {
      std::cout << "  (" << g.attempts << " attempts, last " << (g.lastTime ? isoTime(*g.lastTime) : "?") << ")";
    }
    if (!g.error.empty()) std::cout << "  " << g.error;
    std::cout << "\n";
  }
  return ExitCode::kOk;
}

}  // namespace pim
