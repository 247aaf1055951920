#pragma once
// Every SQL text of the state database in one place: the ordered schema migrations and the
// statements StateStore prepares. Values always go through bound parameters (?1, ?2, ...); the
// only SQL built at run time is `PRAGMA user_version = N` with a migration's own constant N
// (PRAGMA takes no parameters).

#include <vector>

namespace pim::sql {

/// One schema step: running `sql` on a database at version `version - 1` brings it to `version`.
/// A step that rebuilds a table referenced by foreign keys runs with foreign key enforcement off
/// (SQLite's procedure for schema changes ALTER TABLE cannot make), and checks them before it
/// commits.
struct Migration {
  int version;
  const char* sql;
  bool rebuildsTables = false;
};

/// The ordered migrations, versions 1, 2, ... without gaps. Append only: never edit a released one.
const std::vector<Migration>& migrations();
/// The schema version this build writes (the last migration's).
int latestSchemaVersion();

// Connection set-up.
extern const char* const kPragmaJournalModeWal;  // returns the mode now in force
extern const char* const kPragmaSynchronousFull;
extern const char* const kPragmaSynchronousNormal;
extern const char* const kPragmaForeignKeysOn;
extern const char* const kPragmaForeignKeysOff;
extern const char* const kPragmaForeignKeyCheck;  // returns one row per violation
extern const char* const kPragmaUserVersion;      // returns the schema version
extern const char* const kPragmaIntegrityCheck;   // returns "ok" or the problems found

// Transactions.
extern const char* const kBeginRead;
extern const char* const kBeginWrite;
extern const char* const kCommit;
extern const char* const kRollback;

// Generations.
extern const char* const kInsertGeneration;
extern const char* const kInsertChange;
extern const char* const kInsertSkipped;
extern const char* const kDeleteSkipped;
extern const char* const kNoteRetry;
extern const char* const kInsertBackup;
extern const char* const kInsertBackupKeepFirst;
extern const char* const kGenerationExists;
extern const char* const kMaxChangeSeq;
extern const char* const kUpdateOutcome;
extern const char* const kSelectGeneration;
extern const char* const kSelectHistory;
extern const char* const kSelectLatest;
extern const char* const kSelectLastApplied;
extern const char* const kSelectSkipped;
extern const char* const kSelectChanges;
extern const char* const kSelectBackups;
extern const char* const kPruneGenerations;

// Meta key/value.
extern const char* const kSelectMeta;
extern const char* const kUpsertMeta;
extern const char* const kRaiseMetaMax;
extern const char* const kDeleteMeta;

// Meta keys.
extern const char* const kMetaPinnedGeneration;
extern const char* const kMetaLastPollTime;
extern const char* const kMetaLastPollOutcome;
extern const char* const kMetaLastError;
extern const char* const kMetaHighestStoreRevision;
extern const char* const kMetaStoreRevision;
extern const char* const kMetaReloadPending;
extern const char* const kMetaDefenderCursor;
extern const char* const kUpsertLogin;
extern const char* const kCountLoginFailure;
extern const char* const kPruneLogins;
extern const char* const kPruneLoginFailures;
extern const char* const kSelectLogins;
extern const char* const kSelectLoginFailures;
extern const char* const kSumLoginFailures;
extern const char* const kMetaRecoveryAttempts;

// Owned objects.
extern const char* const kInsertOwned;
extern const char* const kDeleteOwned;
extern const char* const kSelectOwnedOne;
extern const char* const kSelectOwnedKind;

// Pending-cycle journal.
extern const char* const kInsertPendingCycle;
extern const char* const kSelectPendingCycle;
extern const char* const kDeletePendingCycle;

}  // namespace pim::sql
