#include "state/state_records.h"

#include <array>
#include <utility>

namespace pim {
namespace {

// These spellings are also written in state/schema.cpp's CHECK constraints and queries.
constexpr std::array<std::pair<GenerationOutcome, const char*>, 8> kOutcomeNames = {{
    {GenerationOutcome::kPending, "pending"},
    {GenerationOutcome::kApplied, "applied"},
    {GenerationOutcome::kUnchanged, "unchanged"},
    {GenerationOutcome::kRejected, "rejected"},
    {GenerationOutcome::kPartial, "partial"},
    {GenerationOutcome::kFailed, "failed"},
    {GenerationOutcome::kRolledBack, "rolled_back"},
    {GenerationOutcome::kRecorded, "recorded"},
}};

// Also written in state/schema.cpp's CHECK constraint (schema 2).
constexpr std::array<std::pair<GenerationCause, const char*>, 6> kCauseNames = {{
    {GenerationCause::kStore, "store"},
    {GenerationCause::kRollback, "rollback"},
    {GenerationCause::kDrift, "drift"},
    {GenerationCause::kBoot, "boot"},
    {GenerationCause::kExpiry, "expiry"},
    {GenerationCause::kResume, "resume"},
}};

}  // namespace

const char* outcomeName(GenerationOutcome outcome) {
  for (const auto& [value, name] : kOutcomeNames) {
    if (value == outcome) return name;
  }
  return "unknown";
}

std::optional<GenerationOutcome> parseOutcome(const std::string& name) {
  for (const auto& [value, text] : kOutcomeNames) {
    if (name == text) return value;
  }
  return std::nullopt;
}

const char* causeName(GenerationCause cause) {
  for (const auto& [value, name] : kCauseNames) {
    if (value == cause) return name;
  }
  return "unknown";
}

std::optional<GenerationCause> parseCause(const std::string& name) {
  for (const auto& [value, text] : kCauseNames) {
    if (name == text) return value;
  }
  return std::nullopt;
}

bool outcomeIsInForce(GenerationOutcome outcome) {
  return outcome == GenerationOutcome::kApplied || outcome == GenerationOutcome::kUnchanged ||
         outcome == GenerationOutcome::kRolledBack || outcome == GenerationOutcome::kPartial ||
         outcome == GenerationOutcome::kFailed;
}

}  // namespace pim
