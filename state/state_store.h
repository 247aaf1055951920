#pragma once
// The agent's state database (SQLite, one file, mode 0600): every generation fetched from the
// store with its document, outcome, changes, skipped entries and backups of replaced files; the
// objects the agent created; the pin; the last poll; and a pending-cycle journal for crash
// recovery.
//
// Several processes may use the same file at once (the daemon and a `rollback N` from the command
// line): the database runs in WAL mode with a 5 s busy timeout and every write is one IMMEDIATE
// transaction. One StateStore may be shared by threads (calls are serialised). Nothing throws:
// every call returns a Status or a Result whose message names the operation and the file.

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "providers/core/log.h"
#include "providers/core/result.h"
#include "state/state_records.h"

namespace pim {

namespace sqlite {
class Database;
}

class StateStore {
 public:
  static constexpr int64_t kDefaultKeepGenerations = 500;
  static constexpr int kBusyTimeoutMs = 5000;

  /// Opens (creating if needed) the database at `realPath`, a real filesystem path (the caller
  /// applies --root). Creates missing parent directories with mode 0700; the file is created and
  /// kept at mode 0600 whatever the umask. Brings the schema to the latest version (one
  /// transaction per migration). A file that is not a database, fails `PRAGMA integrity_check`
  /// or carries a schema newer than this build is renamed to `<path>.corrupt-<unix time>` (with
  /// its -wal/-shm), a warning is logged and a fresh database is created: rebuilt() then returns
  /// true. `keepGenerations` (>= 1) bounds the history kept by recordGeneration().
  /// Errors: kInvalid (keepGenerations < 1), kUnsafe (a symbolic link, hard-linked file or
  /// non-regular file at the path or its -wal/-shm), kIo (mkdir/open/rename failed, database
  /// busy or unreadable for another reason: such a database is left where it is).
  static Result<std::unique_ptr<StateStore>> open(const std::string& realPath, Logger log,
                                                  int64_t keepGenerations = kDefaultKeepGenerations);
  /// Opens an existing database for reading only, for the diagnostics (`status`, `history`,
  /// `show`, `plan`): creates, migrates, fixes and writes nothing, so it works on a read-only or
  /// full disk. When SQLite cannot read a WAL database in place (its directory is read-only and
  /// the -shm file is gone), it is opened as immutable (what the last checkpoint holds).
  /// Every write on the result fails. Errors: kNotFound (no database there), kUnsafe (not a
  /// regular file), kInvalid (a schema older or newer than this build: run a cycle first, or
  /// upgrade), kIo.
  static Result<std::unique_ptr<StateStore>> openReadOnly(const std::string& realPath, Logger log);
  /// An empty database in memory with the whole schema (what the diagnostics read when no
  /// database exists yet). Errors: kIo.
  static Result<std::unique_ptr<StateStore>> openInMemory(Logger log);
  ~StateStore();
  StateStore(const StateStore&) = delete;
  StateStore& operator=(const StateStore&) = delete;

  /// True when open() found an unusable database, moved it aside and started afresh: ownership
  /// and history were lost and the agent should rebuild ownership from the host.
  bool rebuilt() const { return rebuilt_; }
  /// True when open() found no database (schema version 0: a new or emptied state directory, a
  /// lost /var/lib) and created it, or rebuilt(): what the agent made on the host is not recorded
  /// and must be recognised from the host again.
  bool created() const { return created_; }
  /// Where open() moved an unusable database ("" when rebuilt() is false).
  const std::string& movedAsidePath() const { return movedAsidePath_; }
  /// The database file's path as given to open().
  std::string databasePath() const { return path_; }
  /// The schema version this build writes.
  static int schemaVersion();

  // ---- generations ----

  /// Records one fetched document as a new generation, with its changes (numbered 1..n), skipped
  /// entries and backups, in ONE transaction that also (if input.beginCycle) opens the pending-
  /// cycle journal and then prunes the history to the newest keepGenerations generations, never
  /// pruning the generation in force (lastApplied()), the pinned one or one of a pending cycle.
  /// Updates the meta "store_revision" (latest revision seen, not for rollbacks) and raises
  /// "highest_store_revision" for an applied/unchanged outcome. Returns the new number (numbers
  /// are never reused). Errors (nothing is recorded): kInvalid (two backups of one path, a cycle
  /// already pending with beginCycle), kIo (busy beyond the timeout, disk).
  Result<int64_t> recordGeneration(const GenerationInput& input);
  /// Sets a generation's outcome and error text (empty clears it); raises the highest applied
  /// store revision when the outcome is applied/unchanged. Errors: kNotFound (no such
  /// generation), kIo.
  Status updateOutcome(int64_t generation, GenerationOutcome outcome, const std::string& error = {});
  /// Appends changes to a generation after the ones already recorded (for changes known only
  /// once applied). Errors: kNotFound (no such generation), kIo. All or nothing.
  Status appendChanges(int64_t generation, const std::vector<ChangeInput>& changes);
  /// Records a file as it was before the generation's cycle replaced it. The first backup of a
  /// path in a generation wins (a file replaced twice keeps its original). Errors: kNotFound,
  /// kIo.
  Status addBackup(int64_t generation, const BackupInput& backup);

  /// Generation `n` with its body and skipped entries, or nullopt if it does not exist (or was
  /// pruned).
  Result<std::optional<GenerationRecord>> generation(int64_t n) const;
  /// The newest `limit` generations (all when limit <= 0), newest first, with change and skipped
  /// counts; body and skipped list are left empty (use generation(n)).
  Result<std::vector<GenerationRecord>> history(int limit = 0) const;
  /// The changes recorded for generation `n` in order (empty if none or no such generation).
  Result<std::vector<ChangeRecord>> changes(int64_t n) const;
  /// The backups recorded for generation `n`, by path (empty if none or no such generation).
  Result<std::vector<BackupRecord>> backups(int64_t n) const;
  /// The newest generation whatever its outcome (body and skipped included), or nullopt.
  Result<std::optional<GenerationRecord>> latest() const;
  /// The generation in force: the newest whose outcome is applied, unchanged or rolled_back
  /// (body and skipped included), or nullopt if nothing was ever applied.
  Result<std::optional<GenerationRecord>> lastApplied() const;
  /// The highest store revision ever applied (outcome applied or unchanged; rollbacks excluded),
  /// kept in meta so pruning never lowers it; 0 if none. A lower revision from the store is a
  /// replay.
  Result<int64_t> highestAppliedStoreRevision() const;
  /// The revision of the latest document seen from the store (any outcome but rolled_back), or
  /// nullopt.
  Result<std::optional<int64_t>> storeRevision() const;

  // ---- pin ----

  /// Pins generation `generation` (the store's newer documents are then only recorded), or
  /// lifts the pin with nullopt. Errors: kNotFound (no such generation), kIo.
  Status setPin(std::optional<int64_t> generation);
  /// The pinned generation, or nullopt.
  Result<std::optional<int64_t>> pin() const;

  // ---- poll status ----

  /// Records the last poll: its time (Unix seconds), outcome (caller's words) and error (empty:
  /// none, which clears the last error).
  Status recordPoll(int64_t time, const std::string& outcome, const std::string& error);
  /// The last poll recorded (time nullopt if never).
  Result<PollStatus> pollStatus() const;

  // ---- objects the agent created ----

  /// Records that the agent created object `name` of `kind` in `generation` (nullopt: unknown,
  /// e.g. rebuilt from the host). Idempotent: an object already owned keeps its first generation.
  Status addOwned(OwnedKind kind, const std::string& name, std::optional<int64_t> generation);
  /// addOwned() for several names of one kind, in one transaction (all or none).
  Status addOwnedAll(OwnedKind kind, const std::vector<std::string>& names, std::optional<int64_t> generation);
  /// Forgets an owned object (after the agent removed it). Idempotent.
  Status removeOwned(OwnedKind kind, const std::string& name);
  /// removeOwned() for several names of one kind, in one transaction.
  Status removeOwnedAll(OwnedKind kind, const std::vector<std::string>& names);
  /// True when the agent created object `name` of `kind`.
  Result<bool> isOwned(OwnedKind kind, const std::string& name) const;
  /// The names of the owned objects of `kind`, sorted.
  Result<std::vector<std::string>> owned(OwnedKind kind) const;

  // ---- pending-cycle journal (crash recovery) ----

  /// Notes, durably, that a cycle applying `generation` starts and that `previousGeneration`
  /// (nullopt: none) is the one to restore if it does not end. Call before touching the host.
  /// Errors: kNotFound (either generation missing), kInvalid (a cycle is already pending: finish
  /// or end it first), kIo.
  Status beginCycle(int64_t generation, std::optional<int64_t> previousGeneration);
  /// Sets the pending cycle's generation's outcome (as updateOutcome), appends `changes` after the
  /// ones recorded, replaces its skipped entries with `skipped` unless nullopt, and clears the
  /// journal, in one transaction. Errors: kNotFound (no cycle pending), kIo.
  Status finishCycle(GenerationOutcome outcome, const std::string& error = {},
                     const std::vector<ChangeInput>& changes = {},
                     const std::optional<std::vector<SkippedRecord>>& skipped = std::nullopt);
  /// Notes one more attempt at applying generation `generation`'s document (a retry of a partial
  /// or failed generation), at `time`. Errors: kNotFound, kIo.
  Status noteRetry(int64_t generation, int64_t time);
  /// Clears the journal without touching outcomes. Idempotent.
  Status endCycle();
  /// The cycle that began and did not end (after a crash), or nullopt.
  Result<std::optional<PendingCycle>> pendingCycle() const;
  /// Counts one more attempt to recover the pending cycle and returns the count (1 the first
  /// time); finishCycle() and endCycle() reset it. A cycle whose recovery keeps crashing is then
  /// recovered with its revocations only. Errors: kIo.
  Result<int64_t> noteRecoveryAttempt();

  // ---- sshd reload owed ----

  /// Records that a drop-in is in place that sshd did not load (`error`: why the reload failed),
  /// or with "" that sshd loaded it. Until then every cycle retries the reload before granting
  /// anything. Errors: kIo.
  Status setReloadPending(const std::string& error);
  /// The failure of the reload still owed, or "" when none.
  Result<std::string> reloadPending() const;

  // ---- defender ----

  /// Where the defender stopped reading sshd's messages (a journal cursor, or a file position),
  /// so that a restart neither counts a failure twice nor misses one. "" clears it. Errors: kIo.
  Status setDefenderCursor(const std::string& cursor);
  /// The cursor, or "" when none was kept.
  Result<std::string> defenderCursor() const;

  // ---- login audit ----

  /// Records successful logins (each replaces an older one of the same user and fingerprint),
  /// adds `failures` (count and last time per address) to the counts, keeps at most kMaxLogins and
  /// kMaxLoginFailures rows (the newest), and moves the cursor of sshd's messages to `cursor`
  /// ("" leaves it), all in one transaction: a restart neither counts a message twice nor
  /// misses one. Errors: kIo.
  Status recordLogins(const std::vector<LoginRecord>& logins, const std::vector<LoginFailureRecord>& failures,
                      const std::string& cursor);
  /// Every login record (at most kMaxLogins).
  Result<std::vector<LoginRecord>> logins() const;
  /// The sources with the most failures (at most `limit`), and the totals over all sources.
  struct LoginFailures {
    std::vector<LoginFailureRecord> top;
    int64_t total = 0;    // failures counted, every source kept
    int64_t sources = 0;  // sources kept
  };
  Result<LoginFailures> loginFailures(int64_t limit) const;
  static constexpr int64_t kMaxLogins = 10000;
  static constexpr int64_t kMaxLoginFailures = 1000;

 private:
  StateStore(std::unique_ptr<sqlite::Database> db, std::string path, Logger log, int64_t keepGenerations);

  Result<std::optional<GenerationRecord>> readOne(const char* sql, std::optional<int64_t> bind,
                                                  const std::string& what) const;
  /// readOne() in a read transaction of its own: the generation and its skipped entries from one snapshot.
  Result<std::optional<GenerationRecord>> readOneConsistent(const char* sql, std::optional<int64_t> bind,
                                                            const std::string& what) const;
  Result<std::optional<int64_t>> metaInt(const char* key, const std::string& what) const;
  /// The meta value of `key` as text; "" when there is none.
  Result<std::string> metaText(const char* key, const std::string& what) const;
  Status setMetaValue(const char* key, std::optional<int64_t> intValue, const std::optional<std::string>& textValue,
                      const std::string& what);
  /// Ok when generation `generation` exists; kNotFound ("WHAT PATH: no generation N") when not.
  Status requireGeneration(int64_t generation, const std::string& what) const;
  Result<std::optional<PendingCycle>> pendingCycleLocked(const std::string& what) const;
  /// Ok when no cycle is pending; kInvalid ("a cycle for generation N is still pending") when one is.
  Status noPendingCycleLocked(const std::string& what) const;
  /// Drops the pending-cycle journal and the count of recovery attempts.
  Status endCycleLocked(const std::string& what);
  Status raiseHighestRevision(int64_t generation, GenerationOutcome outcome, std::optional<int64_t> revision,
                              const std::string& what);
  Status setOutcomeLocked(int64_t generation, GenerationOutcome outcome, const std::string& error,
                          const std::string& what);
  Status insertChangesLocked(int64_t generation, const std::vector<ChangeInput>& changes, const std::string& what);
  Status replaceSkippedLocked(int64_t generation, const std::vector<SkippedRecord>& skipped, const std::string& what);

  std::unique_ptr<sqlite::Database> db_;
  std::string path_;
  Logger log_;
  int64_t keepGenerations_;
  bool rebuilt_ = false;
  bool created_ = false;
  std::string movedAsidePath_;
  mutable std::mutex mutex_;
};

}  // namespace pim
