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

int cmdHistory(const Config& config, bool json) {
  RealHost host(config.root, makeLogger("host"));
  auto opened = openState(config, host);
  if (!opened) return fail(opened.status());
  auto history = (*opened)->history(0);
  if (!history) return fail(history.status());
  if (json) {
    Poco::JSON::Array::Ptr arr = new Poco::JSON::Array;
    for (const auto& g : *history) {
      Poco::JSON::Object::Ptr o = new Poco::JSON::Object(Poco::JSON_PRESERVE_KEY_ORDER);
      o->set("generation", g.generation);
      o->set("time", isoTime(g.time));
      o->set("revision", optionalInt(g.revision));
      o->set("outcome", std::string(outcomeName(g.outcome)));
      o->set("changes", g.changeCount);
      o->set("skipped", g.skippedCount);
      o->set("rollback_of", optionalInt(g.rollbackOf));
      o->set("error", g.error.empty() ? Poco::Dynamic::Var() : Poco::Dynamic::Var(g.error));
      arr->add(o);
    }
    std::cout << toJson(arr) << "\n";
    return kExitOk;
  }
  std::cout << "generation  time                  revision  outcome      changes\n";
  for (const auto& g : *history) {
    char line[160];
    std::snprintf(line, sizeof line, "%10lld  %-20s  %8s  %-11s  %7lld", static_cast<long long>(g.generation),
                  isoTime(g.time).c_str(), optionalText(g.revision).c_str(), outcomeName(g.outcome),
                  static_cast<long long>(g.changeCount));
    std::cout << line;
    if (g.rollbackOf) std::cout << "  (rollback of " << *g.rollbackOf << ")";
    if (!g.error.empty()) std::cout << "  " << g.error;
    std::cout << "\n";
  }
  return kExitOk;
}

}  // namespace pim
