#pragma once
// Helpers shared by the command implementations: exit codes from errors and output formatting.
// Opening the state database below --root is agent/cycle/open_state.h.

#include <Poco/Dynamic/Var.h>
#include <Poco/JSON/Array.h>

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "agent/cycle/cycle.h"
#include "agent/cycle/exit_code.h"
#include "providers/core/model.h"
#include "providers/core/result.h"
#include "providers/core/text_fields.h"  // isoTime

namespace pim {

/// Pretty JSON (2 spaces).
std::string toJson(const Poco::Dynamic::Var& v);
/// [{"id": ..., "reason": ...}, ...]
Poco::JSON::Array::Ptr skippedJson(const std::vector<SkippedEntry>& skipped);
/// "skipped N entries:" then one line per entry ("  id: reason"), or "skipped: none".
void printSkipped(std::ostream& out, const std::vector<SkippedEntry>& skipped);
/// The summary of a cycle on stdout (once, rollback): outcome, error, changes, skipped entries.
void printCycle(std::ostream& out, const CycleReport& r);
/// The value, or JSON null when absent.
Poco::Dynamic::Var optionalInt(const std::optional<int64_t>& v);
/// The value, or "none" when absent.
std::string optionalText(const std::optional<int64_t>& v);
/// The exit code for an error: kInvalid -> 2, kRejected -> 3, kUnreachable -> 4, else 1.
ExitCode exitFor(const Status& s);
/// Prints the error on stderr and returns exitFor(s).
ExitCode fail(const Status& s);
/// fail(s), and with `json` also `{"error": "<message>", "exit": N}` on stdout, so that a `--json`
/// command prints JSON in every case.
ExitCode fail(const Status& s, bool json);

}  // namespace pim
