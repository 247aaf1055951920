#pragma once
// The commands that read the state database or run for long; each returns the exit code.

#include <functional>
#include <string>

#include "agent/config.h"
#include "agent/failpoint.h"

namespace pim {

/// `status`: generation in force, pin, store revision, last poll, skipped entries, last error,
/// keys and accounts in force.
int cmdStatus(const Config& config, bool json);
/// `history`: generations newest first.
int cmdHistory(const Config& config, bool json);
/// `show N`: one generation's document (secrets masked) and changes.
int cmdShow(const Config& config, const std::string& generation, bool json);
/// `enforce-perms`: one full permission pass over the transfer root; prints the counts.
int cmdEnforcePerms(const Config& config);
/// `run`: the resident daemon; returns when stopped by SIGTERM/SIGINT. `loadConfig` is called
/// at start and on SIGHUP; `failpoints` (tests) go to the daemon's cycles.
int cmdRun(const std::function<Result<Config>()>& loadConfig, const FailPoints& failpoints);

}  // namespace pim
