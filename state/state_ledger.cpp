#include "state/state_ledger.h"

namespace pim {

bool StateLedger::owns(const std::string& kind, const std::string& name) const {
  auto k = parseOwnedKind(kind);
  if (!k) return false;
  auto r = state_.isOwned(*k, name);
  // An unreadable database must not make the agent take over or remove anything.
  return r.isOk() && *r;
}

std::vector<std::string> StateLedger::owned(const std::string& kind) const {
  auto k = parseOwnedKind(kind);
  if (!k) return {};
  auto r = state_.owned(*k);
  return r.isOk() ? *r : std::vector<std::string>{};
}

Status StateLedger::recordCreated(const std::string& kind, const std::string& name) {
  auto k = parseOwnedKind(kind);
  if (!k) return Status::error(ErrorCode::kInternal, "ledger: unknown kind " + kind);
  return state_.addOwned(*k, name, generation_);
}

Status StateLedger::recordCreatedAll(const std::string& kind, const std::vector<std::string>& names) {
  auto k = parseOwnedKind(kind);
  if (!k) return Status::error(ErrorCode::kInternal, "ledger: unknown kind " + kind);
  return state_.addOwnedAll(*k, names, generation_);
}

Status StateLedger::recordRemovedAll(const std::string& kind, const std::vector<std::string>& names) {
  auto k = parseOwnedKind(kind);
  if (!k) return Status::error(ErrorCode::kInternal, "ledger: unknown kind " + kind);
  return state_.removeOwnedAll(*k, names);
}

Status StateLedger::recordRemoved(const std::string& kind, const std::string& name) {
  auto k = parseOwnedKind(kind);
  if (!k) return Status::error(ErrorCode::kInternal, "ledger: unknown kind " + kind);
  return state_.removeOwned(*k, name);
}

}  // namespace pim
