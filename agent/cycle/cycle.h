#pragma once
// One agent cycle and the operator commands built on it: fetch, check, converge, record; rollback
// and resume; recovery of a cycle interrupted by a crash. Used by `once`, `rollback`, `resume`
// and by each turn of the daemon.
//
// Never more access than the document in force: a cycle converges the host stage by stage
// (agent/reconciler.h): revocations first, then the confining sshd configuration, then grants,
// which wait for it. Before touching the host, a cycle records its generation and opens the
// pending-cycle journal in one transaction; from then on that document is the one in force: a
// part that fails is contained (an SFTP account locked) and recorded (`partial`, exit 5), a
// configuration that cannot be made live holds every grant back (`failed`, exit 5, revocations
// done), and either is retried by later cycles on the same generation. Nothing ever goes back to
// the previous document, which would grant again what this one revoked. A crash leaves the
// journal open: recoverInterruptedCycle() finishes that document's cycle at the next start (only
// its revocations when its recovery itself crashed twice). A reload of sshd that failed is
// persisted and retried before anything is granted.
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
#include "agent/cycle/exit_code.h"
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

/// What became of a cycle: the `outcome:` line of `once` and `rollback`, the report's "cycle", the
/// daemon's log and STATUS= line, the last poll in the state database. The outcomes it shares
/// with GenerationOutcome have the same names.
enum class CycleOutcome {
  kApplied,      // a document applied (a new one, or the one in force again after drift)
  kUnchanged,    // nothing to change
  kRejected,     // the document was refused; the host did not change
  kPartial,      // applied except the parts named in the error (GenerationOutcome::kPartial)
  kFailed,       // nothing granted (GenerationOutcome::kFailed), or an internal error
  kRecorded,     // a document fetched while pinned, not applied
  kRolledBack,   // `rollback N` applied generation N's document
  kUnreachable,  // the store could not be reached or refused the request
  kInterrupted,  // daemon only: its fetch or lock wait was called off (stopping, a fetch cancelled)
};

/// "applied", "unchanged", "rejected", "partial", "failed", "recorded", "rolled_back",
/// "unreachable" or "interrupted".
const char* cycleOutcomeName(CycleOutcome outcome);

/// What a cycle did, for the summary on stdout and the exit code.
struct CycleReport {
  ExitCode exitCode = ExitCode::kOk;  // the contract's exit code for `once`
  CycleOutcome outcome = CycleOutcome::kUnchanged;
  std::optional<int64_t> generation;
  std::optional<int64_t> revision;
  std::vector<SkippedEntry> skipped;
  std::vector<Action> changes;
  std::string error;                  // empty when the cycle succeeded
  int notRegistered = 0;              // exit 4 because the store answered 404 or 410 (not an outage)
  std::vector<std::string> warnings;  // worth an operator's eye (a pending sshd reload)
};

class Agent {
 public:
  /// `failpoints` (tests, see agent/cycle/failpoint.h) apply to the forward applies of cycles and
  /// rollbacks, never to restores. Host, state, clock and the factory must outlive the agent.
  Agent(Config config, Host& host, StateStore& state, const Clock& clock, ProviderFactory factory, Logger log,
        FailPoints failpoints = {});

  /// Finishes a cycle that a crash interrupted (the pending-cycle journal is open): the
  /// interrupted generation's document is converged again (it is the document in force: its
  /// revocations may already be on the host, and are never undone) and its outcome recorded,
  /// with "interrupted" in the error. When its recovery was itself interrupted twice, only its
  /// revocations are applied and it is recorded `failed`. Nothing to do without a journal. Call
  /// once at start, under the cycle lock. Errors: the state database could not be read or written
  /// (the journal then stays open for the next start).
  Status recoverInterruptedCycle();

  /// The fetch half of a cycle, as it came from the store.
  struct Fetched {
    Result<FetchOutcome> outcome{Status::error(ErrorCode::kInternal, "not fetched")};
    int64_t time = 0;           // when the fetch started (Unix seconds)
    std::string source;         // store.describe()
    bool reachedStore = false;  // false: the state database failed before the store was asked
    int notRegistered = 0;      // StoreClient::notRegistered() after the fetch
  };
  /// Picks the ETag to send (none when the document it names still needs work: after a failure,
  /// or unpinned with a recorded document waiting) and fetches once. Reads the state database
  /// and writes nothing, so it may run without the cycle lock (a long poll must not hold it).
  Fetched fetch(StoreClient& store, int64_t waitSeconds) const;

  /// The reconcile half: records the poll and acts on what fetch() brought. A new document is
  /// checked (rejected whole: exit 3), refused if it is a replay (exit 3), recorded only while
  /// pinned (the pin is read now, not at fetch time), and otherwise converged (a part that fails
  /// or grants held back: exit 5). An unchanged store re-applies the document in force, so drift,
  /// expired keys and earlier failures are corrected. Store errors: exit 4, host untouched.
  /// `checkHost` false (the daemon, when nothing the last check read has changed since): an
  /// unchanged store does not plan against the host again.
  CycleReport reconcile(const Fetched& fetched, bool checkHost = true);

  /// fetch() then reconcile(): one `once`.
  CycleReport cycle(StoreClient& store, int64_t waitSeconds);

  /// Re-applies the document in force without fetching (key expiry, drift, a pending sshd
  /// reload). A drift repair or expiry is a generation of its own; the retry of a partial or
  /// failed generation updates that generation. Nothing is recorded when nothing changed.
  /// `cause` says why (drift, expiry, boot) when it becomes a generation of its own.
  CycleReport reapplyInForce(GenerationCause cause = GenerationCause::kDrift);

  /// What reapplyInForce() reports when the host needs nothing, without looking at the host.
  CycleReport inForceReport();

  /// Applies generation `generation`'s document as a new generation (rolled_back) and pins it.
  /// Errors: exit 2 when the generation does not exist or never held a valid document; exit 5
  /// when part of it could not be applied (it is pinned and in force all the same, the failed
  /// parts contained, and retried).
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
    std::vector<SkippedEntry> refused;
    bool confined = true;
  };
  /// The document's skipped entries and those the providers refused while applying it (each
  /// refusal logged once).
  std::vector<SkippedEntry> skippedWithRefused(const AccessDocument& doc, const Applied& applied) const;
  /// Logs a state database write that failed (`what`: "record the poll", ...).
  void noteStateWrite(const Status& written, const char* what) const;
  /// Converges the host to `doc` (agent/reconciler.h) as generation `generation` (the objects
  /// it creates are recorded as created by it), with the failpoints when `forward`, and records
  /// what became of the pending sshd reload.
  /// With `prepared` (a drift check's providers, desired state and plan), converges from that
  /// plan with those providers: the host is observed once per cycle.
  struct Prepared;
  Applied applyDocument(const AccessDocument& doc, int64_t generation, bool forward, bool revokeOnly = false,
                        Prepared* prepared = nullptr);
  Result<AccessDocument> parseStored(const GenerationRecord& record) const;
  Result<std::optional<AccessDocument>> inForceDocument(std::optional<GenerationRecord>* record) const;
  /// Records `doc` as a new generation, converges to it and records the outcome.
  CycleReport applyNew(const std::string& source, const std::string& etag, const std::string& body,
                       const AccessDocument& doc, GenerationOutcome successOutcome, std::optional<int64_t> rollbackOf,
                       GenerationCause cause, Prepared* prepared = nullptr);
  /// Converges to the document of `record` (a partial or failed generation) again, as another
  /// attempt of that same generation.
  CycleReport retry(const GenerationRecord& record, const AccessDocument& doc);
  /// The outcome, exit code, error and changes of one convergence, as a report.
  CycleReport reportOf(const Applied& applied, GenerationOutcome successOutcome, int64_t generation,
                       const AccessDocument& doc, std::vector<SkippedEntry> skipped) const;
  /// The outcome to record for `applied`: `success`, partial, or failed.
  static GenerationOutcome outcomeOf(const Applied& applied, GenerationOutcome success);
  /// The error to record with a poll: `error`, or the pending sshd reload warning.
  std::string pollError(const std::string& error) const;

  Config config_;
  Host& host_;
  StateStore& state_;
  const Clock& clock_;
  ProviderFactory factory_;
  Logger log_;
  FailPoints failpoints_;
  // The parsed document in force, by generation and hash: a daemon re-plans it at every poll.
  mutable std::optional<std::pair<std::pair<int64_t, std::string>, AccessDocument>> inForceCache_;
};

/// Changes as the state database records them (no payloads, no secrets).
std::vector<ChangeInput> toChangeInputs(const std::vector<Action>& actions);

}  // namespace pim
