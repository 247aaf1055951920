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

constexpr std::array<std::pair<OwnedKind, const char*>, 5> kKindNames = {{
    {OwnedKind::kUser, "user"},
    {OwnedKind::kGroup, "group"},
    {OwnedKind::kMount, "mount"},
    {OwnedKind::kFile, "file"},
    {OwnedKind::kKey, "key"},
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

bool outcomeIsInForce(GenerationOutcome outcome) {
  return outcome == GenerationOutcome::kApplied || outcome == GenerationOutcome::kUnchanged ||
         outcome == GenerationOutcome::kRolledBack || outcome == GenerationOutcome::kPartial ||
         outcome == GenerationOutcome::kFailed;
}

const char* ownedKindName(OwnedKind kind) {
  for (const auto& [value, name] : kKindNames) {
    if (value == kind) return name;
  }
  return "unknown";
}

std::optional<OwnedKind> parseOwnedKind(const std::string& name) {
  for (const auto& [value, text] : kKindNames) {
    if (name == text) return value;
  }
  return std::nullopt;
}

}  // namespace pim
