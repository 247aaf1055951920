#pragma once
// The state database and the cycle lock below --root, opened the way every command and the daemon
// need them (moved here from the command line so that the daemon does not reach up into it).

#include <memory>
#include <string>

#include "agent/config/config.h"
#include "providers/core/result.h"
#include "providers/host/host.h"
#include "providers/host/real_host.h"
#include "state/state_store.h"

namespace pim {

/// Creates the state database's directory below --root: parents 0755, the directory itself 0700.
Status makeStateDirectory(const Config& config, Host& host);
/// Opens the state database of the config below --root, creating its directory 0700.
Result<std::unique_ptr<StateStore>> openState(const Config& config, Host& host);
/// What every command that changes the host opens first: minimal account files in a bare --root
/// sandbox, the state database, and, when the database had to be rebuilt, the agent's own objects
/// re-adopted from the host (agent/cycle/adopt.h) before any cycle runs.
Result<std::unique_ptr<StateStore>> openStateForCycles(const Config& config, Host& host);
/// What the changing commands and the daemon open first: the host of the config (RealHost below
/// --root) into `host`, then its state database for cycles (openStateForCycles()) into `state`.
/// Errors: those of openStateForCycles() (`host` is set all the same).
Status openHostAndState(const Config& config, std::unique_ptr<RealHost>& host, std::unique_ptr<StateStore>& state);
/// Opens the state database for the diagnostics (`status`, `history`, `show`, `plan`): read-only,
/// creating nothing (StateStore::openReadOnly), so it works on a read-only or full disk; an empty
/// database in memory when none exists yet.
Result<std::unique_ptr<StateStore>> openStateForReading(const Config& config, Host& host);
/// The cycle lock file next to the database (real path).
std::string lockPath(const Config& config, Host& host);

}  // namespace pim
