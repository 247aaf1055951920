#include "agent/cycle/decision.h"

namespace pim {

const char* verdictName(Verdict verdict) {
  switch (verdict) {
    case Verdict::kApply:
      return "apply";
    case Verdict::kUnchanged:
      return "unchanged";
    case Verdict::kRecord:
      return "record";
    case Verdict::kReplay:
      return "replay";
  }
  return "?";
}

Result<Decision> decideDocument(const StateStore& state, int64_t revision, const std::string& docHash) {
  Decision d;
  auto inForce = state.lastApplied();
  if (!inForce) return inForce.status();
  d.inForce = *inForce;
  auto pin = state.pin();
  if (!pin) return pin.status();
  d.pin = *pin;
  auto highest = state.highestAppliedStoreRevision();
  if (!highest) return highest.status();

  if (d.inForce && d.inForce->docHash == docHash) {
    d.verdict = Verdict::kUnchanged;
    d.reason = "the document in force (generation " + std::to_string(d.inForce->generation) + ")";
    return d;
  }
  if (revision < *highest) {
    d.verdict = Verdict::kReplay;
    d.reason = "revision " + std::to_string(revision) + " is lower than revision " + std::to_string(*highest) +
               " already applied (replay refused; publish the fix with a revision above " + std::to_string(*highest) +
               ", or use rollback to go back)";
    return d;
  }
  if (d.pin) {
    d.verdict = Verdict::kRecord;
    d.reason = "pinned to generation " + std::to_string(*d.pin) + " by a rollback: recorded, not applied";
    return d;
  }
  if (d.inForce && d.inForce->revision && *d.inForce->revision == revision &&
      d.inForce->outcome != GenerationOutcome::kRolledBack) {
    d.verdict = Verdict::kUnchanged;
    d.reason = "revision " + std::to_string(revision) + " is already in force";
    return d;
  }
  d.verdict = Verdict::kApply;
  return d;
}

}  // namespace pim
