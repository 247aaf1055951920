#include "agent/cli.h"

namespace pim {

int runCli(int, char**) { return kExitInternal; }

}  // namespace pim
