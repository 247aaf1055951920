#pragma once
// Every command of the command line, one file each in agent/cli/ (run.cpp, once.cpp, plan.cpp,
// ...); each returns the exit code. agent/cli/cli.cpp parses the arguments and dispatches here.

#include <functional>
#include <string>

#include "agent/cli/cli.h"
#include "agent/config/config.h"
#include "agent/cycle/failpoint.h"

namespace pim {

/// `run`: the resident daemon; returns when stopped by SIGTERM/SIGINT. `loadConfig` is called
/// at start and on SIGHUP; `failpoints` (tests) go to the daemon's cycles.
ExitCode cmdRun(const std::function<Result<Config>()>& loadConfig, const FailPoints& failpoints);
/// `once`: one fetch and one reconcile under the cycle lock; prints the cycle's summary and
/// rewrites the metrics file.
ExitCode cmdOnce(const Config& config, const FailPoints& failpoints);
/// `plan`: fetches the document and prints the actions a reconcile would take; changes nothing.
ExitCode cmdPlan(const Config& config, const CliOptions& o);
/// `enforce-perms`: one full permission pass over the transfer root; prints the counts.
ExitCode cmdEnforcePerms(const Config& config);
/// `status`: generation in force, pin, store revision, last poll, skipped entries, last error,
/// keys and accounts in force.
ExitCode cmdStatus(const Config& config, bool json);
/// `history`: generations newest first.
ExitCode cmdHistory(const Config& config, bool json);
/// `show N`: one generation's document (secrets masked) and changes.
ExitCode cmdShow(const Config& config, const std::string& generation, bool json);
/// `rollback N` (N in o.args): re-applies generation N's document and pins it.
ExitCode cmdRollback(const Config& config, const CliOptions& o, const FailPoints& failpoints);
/// `resume`: lifts the pin.
ExitCode cmdResume(const Config& config);
/// `wait [--timeout S] [--revision R]`: returns 0 as soon as a store document (of revision R or
/// above, when given) is applied on the host; 3 when that document was rejected, 5 when its cycle
/// did not apply everything, 7 when the time-out (default 600 s) passes first (4 when the last
/// poll could not reach the store). Reads the state database only; for cloud-init and
/// provisioning scripts.
ExitCode cmdWait(const Config& config, const CliOptions& o);
/// `version`: prints the version.
ExitCode cmdVersion();

}  // namespace pim
