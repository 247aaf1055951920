#pragma once
// Helpers shared by the command implementations: exit codes from errors, output formatting,
// opening the state database below --root.

#include <Poco/Dynamic/Var.h>
#include <Poco/JSON/Array.h>

#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "agent/config.h"
#include "providers/core/model.h"
#include "providers/host/host.h"
#include "state/state_store.h"

namespace pim {

/// "2026-11-21T10:00:00Z" for Unix seconds.
std::string isoTime(int64_t t);
/// Pretty JSON (2 spaces).
std::string toJson(const Poco::Dynamic::Var& v);
/// [{"id": ..., "reason": ...}, ...]
Poco::JSON::Array::Ptr skippedJson(const std::vector<SkippedEntry>& skipped);
/// "skipped N entries:" then one line per entry ("  id: reason"), or "skipped: none".
void printSkipped(std::ostream& out, const std::vector<SkippedEntry>& skipped);
/// Creates the state database's directory below --root: parents 0755, the directory itself 0700.
Status makeStateDirectory(const Config& config, Host& host);
/// Opens the state database of the config below --root, creating its directory 0700.
Result<std::unique_ptr<StateStore>> openState(const Config& config, Host& host);
/// What every command that changes the host opens first: minimal account files in a bare --root
/// sandbox, the state database, and, when the database had to be rebuilt, the agent's own objects
/// re-adopted from the host (agent/adopt.h) before any cycle runs.
Result<std::unique_ptr<StateStore>> openStateForCycles(const Config& config, Host& host);
/// The cycle lock file next to the database (real path).
std::string lockPath(const Config& config, Host& host);
/// The exit code for an error: kInvalid -> 2, kRejected -> 3, kUnreachable -> 4, else 1.
int exitFor(const Status& s);
/// Prints the error on stderr and returns exitFor(s).
int fail(const Status& s);

}  // namespace pim
