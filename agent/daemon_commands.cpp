// enforce-perms and run.
#include <iostream>

#include "agent/cli.h"
#include "agent/commands.h"

namespace pim {

int cmdEnforcePerms(const Config&) {
  std::cerr << "pim-access-agent: enforce-perms: not available in this build yet\n";
  return kExitInternal;
}

int cmdRun(const Config&) {
  std::cerr << "pim-access-agent: run: not available in this build yet\n";
  return kExitInternal;
}

}  // namespace pim
