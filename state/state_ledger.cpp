#include "state/state_ledger.h"

namespace pim {

bool StateLedger::owns(OwnedKind kind, const std::string& name) const {
  auto r = state_.isOwned(kind, name);
  // An unreadable database must not make the agent take over or remove anything.
  return r.isOk() && *r;
}

std::vector<std::string> StateLedger::owned(OwnedKind kind) const {
  auto r = state_.owned(kind);
  return r.isOk() ? *r : std::vector<std::string>{};
}

Status StateLedger::recordCreated(OwnedKind kind, const std::string& name) {
  return state_.addOwned(kind, name, generation_);
}

Status StateLedger::recordCreatedAll(OwnedKind kind, const std::vector<std::string>& names) {
  return state_.addOwnedAll(kind, names, generation_);
}

Status StateLedger::recordRemovedAll(OwnedKind kind, const std::vector<std::string>& names) {
  return state_.removeOwnedAll(kind, names);
}

Status StateLedger::recordRemoved(OwnedKind kind, const std::string& name) { return state_.removeOwned(kind, name); }

}  // namespace pim
