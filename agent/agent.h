#pragma once
// One agent cycle and the operator commands built on it: fetch, check, apply all-or-nothing,
// record; rollback and resume; recovery of a cycle interrupted by a crash. Used by `once`,
// `rollback`, `resume` and by each turn of the daemon.

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/config.h"
#include "agent/state_ledger.h"
#include "agent/store_client.h"
#include "providers/clock.h"
#include "providers/host.h"
#include "providers/log.h"
#include "providers/provider.h"
#include "state/state_store.h"

namespace pim {

/// Builds the providers in their order, bound to a ledger.
using ProviderFactory = std::function<std::vector<std::unique_ptr<Provider>>(Ledger& ledger)>;

/// What a cycle did, for the summary on stdout and the exit code.
struct CycleReport {
  int exitCode = 0;          // the contract's exit code for `once`
  std::string outcome;       // applied, unchanged, rejected, failed, recorded, unreachable
  std::optional<int64_t> generation;
  std::optional<int64_t> revision;
  std::vector<SkippedEntry> skipped;
  std::vector<Action> changes;
  std::string error;         // empty when the cycle succeeded
};

class Agent {
 public:
  Agent(Config config, Host& host, StateStore& state, const Clock& clock, ProviderFactory factory, Logger log);

  /// Finishes or undoes a cycle that a crash interrupted (the pending-cycle journal): the host
  /// is brought back to the generation in force before it. Call once at start.
  Status recoverInterruptedCycle();

  /// One fetch and one reconcile. A new document is checked (rejected whole: exit 3), refused if
  /// it is a replay (exit 3), recorded only while pinned, and otherwise applied all-or-nothing
  /// (a failure restores the previous generation: exit 5). An unchanged store re-applies the
  /// document in force, so drift and expired keys are corrected. Store errors: exit 4.
  CycleReport cycle(StoreClient& store, int64_t waitSeconds);

  /// Re-applies the document in force without fetching (key expiry, drift). Records a generation
  /// only when something changed.
  CycleReport reapplyInForce();

  /// Applies generation `generation`'s document as a new generation (rolled_back) and pins it.
  /// Errors: exit 2 when the generation does not exist or never held a valid document.
  CycleReport rollback(int64_t generation);

  /// Lifts the pin; the next cycle applies the store's current document.
  Status resume();

  /// The earliest expiry after now among the active keys of the document in force, if any.
  Result<std::optional<int64_t>> nextKeyExpiry() const;

 private:
  struct Applied {
    Status status;
    std::vector<Action> changes;
  };
  Applied applyDocument(const AccessDocument& doc);
  Result<AccessDocument> parseStored(const GenerationRecord& record) const;
  Result<std::optional<AccessDocument>> inForceDocument(std::optional<GenerationRecord>* record) const;
  std::vector<BackupInput> backupFiles();
  void restoreBackups(const std::vector<BackupInput>& backups);
  CycleReport applyNew(const std::string& source, const std::string& etag, const std::string& body,
                       const AccessDocument& doc, GenerationOutcome successOutcome,
                       std::optional<int64_t> rollbackOf);

  Config config_;
  Host& host_;
  StateStore& state_;
  const Clock& clock_;
  ProviderFactory factory_;
  Logger log_;
};

/// Changes as the state database records them (no payloads, no secrets).
std::vector<ChangeInput> toChangeInputs(const std::vector<Action>& actions);

}  // namespace pim
