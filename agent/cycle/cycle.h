#pragma once
// One agent cycle and the operator commands built on it: fetch, check, apply all-or-nothing,
// record; rollback and resume; recovery of a cycle interrupted by a crash. Used by `once`,
// `rollback`, `resume` and by each turn of the daemon.
//
// All or nothing: before touching the host, a cycle records its generation and opens the
// pending-cycle journal (with backups of the files it may replace) in one transaction. A failure
// part-way re-applies the previous generation's document (an empty one when there was none, plus
// the file backups), records `failed` and closes the journal. A crash leaves the journal open:
// recoverInterruptedCycle() does the same restore at the next start.
//
// Every method that changes the host or the state database expects the caller to hold the
// cycle lock (agent/cycle/file_lock.h); fetch() does not need it.
//
// The class is Agent (Agent::cycle(), Agent::rollback(), ...): the file is named after what it
// runs, the class after what runs it.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/config/config.h"
#include "agent/cycle/failpoint.h"
#include "agent/store/store_client.h"
#include "providers/core/clock.h"
#include "providers/core/log.h"
#include "providers/host/host.h"
#include "providers/provider.h"
#include "state/state_ledger.h"
#include "state/state_store.h"

namespace pim {

/// Builds the providers in their order, bound to a ledger.
using ProviderFactory = std::function<std::vector<std::unique_ptr<Provider>>(Ledger& ledger)>;

/// What a cycle did, for the summary on stdout and the exit code.
struct CycleReport {
  int exitCode = 0;     // the contract's exit code for `once`
  std::string outcome;  // applied, unchanged, rejected, failed, recorded, rolled_back,
                        // unreachable (daemon only: interrupted)
  std::optional<int64_t> generation;
  std::optional<int64_t> revision;
  std::vector<SkippedEntry> skipped;
  std::vector<Action> changes;
  std::string error;                  // empty when the cycle succeeded
  std::vector<std::string> warnings;  // did not fail the cycle (a failed sshd reload)
};

class Agent {
 public:
  /// `failpoints` (tests, see agent/cycle/failpoint.h) apply to the forward applies of cycles and
  /// rollbacks, never to restores. Host, state, clock and the factory must outlive the agent.
  Agent(Config config, Host& host, StateStore& state, const Clock& clock, ProviderFactory factory, Logger log,
        FailPoints failpoints = {});

  /// Finishes a cycle that a crash interrupted (the pending-cycle journal is open): the host is
  /// brought back to the generation in force before it (its document re-applied; with none, an
  /// empty document removes what the cycle created and the backed-up files are put back), sshd
  /// is reloaded when its drop-in changed, and the generation is recorded `failed`
  /// ("interrupted"). Nothing to do without a journal. Call once at start, under the cycle lock.
  /// Errors: the state database could not be read or written (the host may be partly restored;
  /// the journal then stays open for the next start).
  Status recoverInterruptedCycle();

  /// The fetch half of a cycle, as it came from the store.
  struct Fetched {
    Result<FetchOutcome> outcome{Status::error(ErrorCode::kInternal, "not fetched")};
    int64_t time = 0;           // when the fetch started (Unix seconds)
    std::string source;         // store.describe()
    bool reachedStore = false;  // false: the state database failed before the store was asked
  };
  /// Picks the ETag to send (none when the document it names still needs work: after a failure,
  /// or unpinned with a recorded document waiting) and fetches once. Reads the state database
  /// and writes nothing, so it may run without the cycle lock (a long poll must not hold it).
  Fetched fetch(StoreClient& store, int64_t waitSeconds) const;

  /// The reconcile half: records the poll and acts on what fetch() brought. A new document is
  /// checked (rejected whole: exit 3), refused if it is a replay (exit 3), recorded only while
  /// pinned (the pin is read now, not at fetch time), and otherwise applied all-or-nothing (a
  /// failure restores the previous generation: exit 5). An unchanged store re-applies the document
  /// in force, so drift and expired keys are corrected. Store errors: exit 4, host untouched.
  /// `checkHost` false (the daemon, when nothing the last check read has changed since): an
  /// unchanged store does not plan against the host again.
  CycleReport reconcile(const Fetched& fetched, bool checkHost = true);

  /// fetch() then reconcile(): one `once`.
  CycleReport cycle(StoreClient& store, int64_t waitSeconds);

  /// Re-applies the document in force without fetching (key expiry, drift). Records a generation
  /// only when something changed. Retries a failed sshd reload.
  CycleReport reapplyInForce();

  /// What reapplyInForce() reports when the host needs nothing, without looking at the host.
  CycleReport inForceReport();

  /// Applies generation `generation`'s document as a new generation (rolled_back) and pins it.
  /// Errors: exit 2 when the generation does not exist or never held a valid document; exit 5
  /// (host restored, not pinned) when applying failed.
  CycleReport rollback(int64_t generation);

  /// Lifts the pin; the next cycle applies the store's current document.
  Status resume();

  /// The earliest expiry after now among the active keys of the document in force, if any.
  Result<std::optional<int64_t>> nextKeyExpiry() const;

 private:
  struct Applied {
    Status status;
    std::vector<Action> changes;
    std::vector<std::string> warnings;
    bool dropinWritten = false;
    bool sshdReloaded = false;
  };
  Applied applyDocument(const AccessDocument& doc, bool forward);
  /// What the providers would refuse for `doc` on the host as it is (plan only).
  std::vector<SkippedEntry> refusedEntries(const AccessDocument& doc);
  Result<AccessDocument> parseStored(const GenerationRecord& record) const;
  Result<std::optional<AccessDocument>> inForceDocument(std::optional<GenerationRecord>* record) const;
  std::vector<BackupInput> backupFiles();
  /// Puts the backed-up files back; returns whether the sshd drop-in changed.
  bool restoreBackups(const std::vector<BackupInput>& backups);
  /// Brings the host back to `previous` (nullopt: nothing was in force) after a failed or
  /// interrupted forward apply; returns the restore's outcome.
  Applied restore(const std::optional<AccessDocument>& previous, const std::vector<BackupInput>& backups);
  CycleReport applyNew(const std::string& source, const std::string& etag, const std::string& body,
                       const AccessDocument& doc, GenerationOutcome successOutcome, std::optional<int64_t> rollbackOf);
  /// Remembers the sshd reload problems of an apply (or that sshd reloaded) for status.
  void noteReload(const Applied& applied);
  /// Retries a reload that failed earlier when nothing reloaded sshd since.
  void retryPendingReload();
  /// The error to record with a poll: `error`, or the pending sshd reload warning.
  std::string pollError(const std::string& error) const;

  Config config_;
  Host& host_;
  StateStore& state_;
  const Clock& clock_;
  ProviderFactory factory_;
  Logger log_;
  FailPoints failpoints_;
  std::string reloadWarning_;  // the last sshd reload failure, until sshd reloads
  // The parsed document in force, by generation and hash: a daemon re-plans it at every poll.
  mutable std::optional<std::pair<std::pair<int64_t, std::string>, AccessDocument>> inForceCache_;
};

/// Changes as the state database records them (no payloads, no secrets).
std::vector<ChangeInput> toChangeInputs(const std::vector<Action>& actions);

}  // namespace pim
