#pragma once
// Values written to and read from the state database: generations with their changes, skipped
// entries and file backups, owned objects, poll status and the pending-cycle journal.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "providers/core/ledger.h"  // OwnedKind

namespace pim {

/// What became of a generation. The names are those of `history --json`.
enum class GenerationOutcome {
  kPending,     // recorded, its cycle not finished yet (transient; see StateStore::beginCycle)
  kApplied,     // applied from the store
  kUnchanged,   // fetched, already in force: nothing to change
  kRejected,    // refused as a whole (invalid, replay, bad signature); the host did not change
  kPartial,     // applied except the parts named in the error, which were contained (locked or left out)
  kFailed,      // the confining sshd configuration could not be made live (or the cycle was stopped):
                // the revocations were applied, nothing was granted; retried
  kRolledBack,  // made by `rollback N`: generation N's document applied again (and pinned)
  kRecorded,    // fetched while pinned, not applied
};

/// "pending", "applied", "unchanged", "rejected", "partial", "failed", "rolled_back" or "recorded".
const char* outcomeName(GenerationOutcome outcome);
/// The outcome named `name` (as outcomeName writes it), or nullopt.
std::optional<GenerationOutcome> parseOutcome(const std::string& name);
/// Why a generation exists. The names are those of `history --json`'s "cause".
enum class GenerationCause {
  kStore,     // a document from the store
  kRollback,  // `rollback N`
  kDrift,     // the host drifted from the document in force, which was applied again
  kBoot,      // the daemon started while the store was unreachable and applied the document in force
  kExpiry,    // a key of the document in force expired
  kResume,    // the store's document applied after `resume` lifted a rollback's pin
};
/// "store", "rollback", "drift", "boot", "expiry" or "resume".
const char* causeName(GenerationCause cause);
/// The cause named `name`, or nullopt.
std::optional<GenerationCause> parseCause(const std::string& name);

/// True for the outcomes whose document is in force on the host: applied, unchanged, rolled_back,
/// partial and failed (a document whose cycle began is in force: its revocations were applied, and
/// what it grants and the host does not yet is retried, never the previous document's grants).
bool outcomeIsInForce(GenerationOutcome outcome);

/// One change a cycle made (or plans to make) on the host. `before`/`after` are short
/// descriptions for `show N`; the database is 0600 root but callers should still keep key
/// material and password hashes out of them.
struct ChangeInput {
  std::string provider;  // "users", "sshd", ...
  std::string object;    // "user sftp-acme", "/etc/ssh/sshd_config.d/50-pim-access-agent.conf"
  std::string action;    // "create", "update", "remove", "lock", ...
  std::string before;
  std::string after;
};

/// An entry of the document that was skipped, and why. (state/ does not see providers/core/model.h;
/// use toSkippedRecords()/fromSkippedRecords() to convert from/to the document's SkippedEntry.)
struct SkippedRecord {
  std::string id;
  std::string reason;
};

/// Copies a list of entries with `id` and `reason` members (e.g. AccessDocument::skipped).
template <class Entries>
std::vector<SkippedRecord> toSkippedRecords(const Entries& entries) {
  std::vector<SkippedRecord> out;
  for (const auto& e : entries) out.push_back(SkippedRecord{e.id, e.reason});
  return out;
}

/// Copies skipped records into a list of `Entry{id, reason}` (e.g. the document's SkippedEntry).
template <class Entry>
std::vector<Entry> fromSkippedRecords(const std::vector<SkippedRecord>& records) {
  std::vector<Entry> out;
  for (const auto& r : records) out.push_back(Entry{r.id, r.reason});
  return out;
}

/// A file the agent is about to replace, as it was before, so a restore needs nothing else.
struct BackupInput {
  std::string path;      // host path (without --root)
  bool existed = false;  // false: the file did not exist; restoring means removing it
  std::string content;   // raw bytes (may hold secrets: the database is 0600)
  uint32_t mode = 0;     // permission bits incl. setuid/setgid/sticky
  uint32_t uid = 0;
  uint32_t gid = 0;
};

/// Everything recorded for one fetched document in one transaction.
struct GenerationInput {
  int64_t time = 0;                 // Unix seconds, from the caller's clock
  std::string source;               // store URL or file:// path it came from
  std::optional<int64_t> revision;  // the document's revision; nullopt if it had none
  std::string etag;
  std::string docHash;  // sha256 hex of `body`, computed by the caller
  std::string body;     // the document as fetched (secrets included)
  GenerationOutcome outcome = GenerationOutcome::kPending;
  std::string error;                  // why rejected/failed; empty otherwise
  std::optional<int64_t> rollbackOf;  // for kRolledBack: the generation whose document this is
  GenerationCause cause = GenerationCause::kStore;
  std::vector<SkippedRecord> skipped;
  std::vector<ChangeInput> changes;  // numbered 1, 2, ... in this order
  std::vector<BackupInput> backups;  // at most one per path
  /// When true, the pending-cycle journal is opened for this generation in the same
  /// transaction, with the generation in force before it as the one to restore.
  bool beginCycle = false;
};

/// A recorded generation.
struct GenerationRecord {
  int64_t generation = 0;
  int64_t time = 0;
  std::string source;
  std::optional<int64_t> revision;
  std::string etag;
  std::string docHash;
  std::string body;  // empty in StateStore::history() listings
  GenerationOutcome outcome = GenerationOutcome::kPending;
  std::string error;
  std::optional<int64_t> rollbackOf;
  GenerationCause cause = GenerationCause::kStore;
  int64_t attempts = 1;             // cycles that applied this document: retries update the generation
  std::optional<int64_t> lastTime;  // the last attempt's time (Unix seconds), when retried
  int64_t changeCount = 0;
  int64_t skippedCount = 0;
  std::vector<SkippedRecord> skipped;  // filled by generation(), latest() and lastApplied() only
};

/// A recorded change.
struct ChangeRecord {
  int64_t generation = 0;
  int64_t seq = 0;  // 1-based order within the generation
  std::string provider;
  std::string object;
  std::string action;
  std::string before;
  std::string after;
};

/// A recorded backup: a file as it was before the generation's cycle replaced it.
struct BackupRecord {
  int64_t generation = 0;
  std::string path;
  bool existed = false;
  std::string content;
  uint32_t mode = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
};

/// The last poll of the store, as recorded by StateStore::recordPoll.
struct PollStatus {
  std::optional<int64_t> time;  // nullopt: never polled
  std::string outcome;          // free text chosen by the caller ("ok", "not_modified", ...)
  std::string error;            // empty: the last poll had no error
};

/// A cycle that began and did not end: after a crash, the next start restores `previous`
/// (using the backups of `generation`) or finishes `generation`.
struct PendingCycle {
  int64_t generation = 0;
  std::optional<int64_t> previousGeneration;  // nullopt: nothing was in force before
};

/// The last successful login of one user with one key (or, fingerprint "", with a password or
/// another method without a key), from sshd's messages (agent/daemon/login_audit.h).
struct LoginRecord {
  std::string user;
  std::string fingerprint;  // "SHA256:..." or ""
  std::string method;       // publickey, password, keyboard-interactive/pam, ...
  int64_t time = 0;         // Unix seconds
  std::string address;
};

/// The connections from one address that ended during authentication.
struct LoginFailureRecord {
  std::string address;
  int64_t count = 0;
  int64_t lastTime = 0;  // Unix seconds
};

}  // namespace pim
