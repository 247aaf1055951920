// version: prints the version.
#include "agent/cli/commands.h"

#include <iostream>

#include "agent/cli/cli.h"

namespace pim {

int cmdVersion() {
  std::cout << "pim-access-agent " << PIM_VERSION << "\n";
  return kExitOk;
}

}  // namespace pim
