#pragma once
// What a cycle does with a valid document from the store, decided in one place for `once` and
// the daemon (Agent::reconcile), `plan` and `status`, so that they never disagree about one
// document.

#include <cstdint>
#include <optional>
#include <string>

#include "providers/core/result.h"
#include "state/state_store.h"

namespace pim {

enum class Verdict {
  kApply,      // a new document: converge to it
  kUnchanged,  // the document in force (same bytes), or the same store revision again: a no-op
  kRecord,     // a rollback pins another generation: recorded, not applied
  kReplay,     // a revision below the highest ever applied from the store: refused (exit 3)
};

struct Decision {
  Verdict verdict = Verdict::kApply;
  std::string reason;                       // for people: why (the replay's revisions, the pin)
  std::optional<GenerationRecord> inForce;  // the generation in force when decided (body included)
  std::optional<int64_t> pin;
};

/// "apply", "unchanged", "record" or "replay".
const char* verdictName(Verdict verdict);

/// Decides for a document of store revision `revision` whose bytes hash to `docHash`, against
/// the state as it is now. In order: the bytes of the document in force again are unchanged
/// (also a rolled-back document that the store publishes again, once resumed); a revision below
/// the highest ever applied from the store is a replay; while pinned, a document is recorded; the
/// store revision in force again (not a rollback) is unchanged; anything else is applied.
/// Reads the state database only. Errors: those of the database.
Result<Decision> decideDocument(const StateStore& state, int64_t revision, const std::string& docHash);

}  // namespace pim
