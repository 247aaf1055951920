#pragma once
// The Ledger of providers/core/ledger.h backed by the state database: what the agent created survives
// restarts, and only those objects are ever removed.

#include "providers/core/ledger.h"
#include "state/state_store.h"

namespace pim {

class StateLedger : public Ledger {
 public:
  explicit StateLedger(StateStore& state) : state_(state) {}
  /// The generation recorded with objects created from now on (nullopt: unknown).
  void setGeneration(std::optional<int64_t> generation) { generation_ = generation; }

  bool owns(OwnedKind kind, const std::string& name) const override;
  std::vector<std::string> owned(OwnedKind kind) const override;
  Status recordCreated(OwnedKind kind, const std::string& name) override;
  Status recordRemoved(OwnedKind kind, const std::string& name) override;
  /// One transaction for all of them.
  Status recordCreatedAll(OwnedKind kind, const std::vector<std::string>& names) override;
  Status recordRemovedAll(OwnedKind kind, const std::vector<std::string>& names) override;

 private:
  StateStore& state_;
  std::optional<int64_t> generation_;
};

}  // namespace pim
