// version: prints the version.
#include "agent/cli/commands.h"

#include <iostream>

#include "agent/cli/cli.h"

namespace pim {

ExitCode cmdVersion() {
  std::cout << "pim-access-agent " << PIM_VERSION << "\n";
  return ExitCode::kOk;
}

}  // namespace pim
