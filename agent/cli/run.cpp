// run: the resident daemon (agent/daemon/daemon.h) until SIGTERM/SIGINT.
#include "agent/cli/commands.h"

#include "agent/daemon/daemon.h"
#include "providers/core/clock.h"
#include "providers/core/log.h"

namespace pim {

ExitCode cmdRun(const std::function<Result<Config>()>& loadConfig, const FailPoints& failpoints) {
  SystemClock clock;
  Daemon daemon(loadConfig, clock, makeLogger("daemon"), failpoints);
  return daemon.run();
}

}  // namespace pim
