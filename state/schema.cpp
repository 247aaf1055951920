#include "state/schema.h"

namespace pim::sql {
namespace {

// Version 1. Notes on the choices:
// - generation is AUTOINCREMENT so a number is never reused after pruning: operators refer to
//   "rollback 7" and must not get another document.
// - outcome carries a CHECK so a corrupt or hand-edited value is refused at write time.
// - changes/skipped/backups cascade from generations, so pruning a generation is one DELETE.
// - owned objects do not reference generations: an object stays owned after its generation is
//   pruned.
// - backups keep rowids (their content may be large; WITHOUT ROWID suits small rows only).
const char* const kSchemaV1 = R"sql(
CREATE TABLE generations (
  generation  INTEGER PRIMARY KEY AUTOINCREMENT,
  time        INTEGER NOT NULL,
  source      TEXT NOT NULL DEFAULT '',
  revision    INTEGER,
  etag        TEXT NOT NULL DEFAULT '',
  doc_hash    TEXT NOT NULL DEFAULT '',
  body        TEXT NOT NULL DEFAULT '',
  outcome     TEXT NOT NULL CHECK (outcome IN
                ('pending', 'applied', 'unchanged', 'rejected', 'failed', 'rolled_back', 'recorded')),
  error       TEXT NOT NULL DEFAULT '',
  rollback_of INTEGER
);
CREATE INDEX generations_by_outcome ON generations (outcome, generation);

CREATE TABLE changes (
  generation INTEGER NOT NULL REFERENCES generations (generation) ON DELETE CASCADE,
  seq        INTEGER NOT NULL,
  provider   TEXT NOT NULL,
  object     TEXT NOT NULL,
  action     TEXT NOT NULL,
  before     TEXT NOT NULL DEFAULT '',
  after      TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (generation, seq)
) WITHOUT ROWID;

CREATE TABLE skipped (
  generation INTEGER NOT NULL REFERENCES generations (generation) ON DELETE CASCADE,
  seq        INTEGER NOT NULL,
  id         TEXT NOT NULL,
  reason     TEXT NOT NULL,
  PRIMARY KEY (generation, seq)
) WITHOUT ROWID;

CREATE TABLE backups (
  generation INTEGER NOT NULL REFERENCES generations (generation) ON DELETE CASCADE,
  path       TEXT NOT NULL,
  existed    INTEGER NOT NULL CHECK (existed IN (0, 1)),
  content    BLOB,
  mode       INTEGER NOT NULL DEFAULT 0,
  uid        INTEGER NOT NULL DEFAULT 0,
  gid        INTEGER NOT NULL DEFAULT 0,
  UNIQUE (generation, path)
);

CREATE TABLE owned (
  kind               TEXT NOT NULL CHECK (kind IN ('user', 'group', 'mount', 'file', 'key')),
  name               TEXT NOT NULL,
  created_generation INTEGER,
  PRIMARY KEY (kind, name)
) WITHOUT ROWID;

CREATE TABLE meta (
  key   TEXT PRIMARY KEY,
  value
) WITHOUT ROWID;

CREATE TABLE pending_cycle (
  id                  INTEGER PRIMARY KEY CHECK (id = 1),
  generation          INTEGER NOT NULL,
  previous_generation INTEGER
);
)sql";

// Version 2: a generation can be `partial` (applied but for the parts named in its error, which
// were contained); `cause` says why the generation exists, `attempts` and `last_time` count the
// retries of one document instead of a generation per retry. CHECK constraints cannot be altered:
// the table is rebuilt (SQLite's "other kinds of table schema changes": new table, copy, drop,
// rename), with foreign keys off while it runs (see applyMigrations).
const char* const kSchemaV2 = R"sql(
CREATE TABLE generations_v2 (
  generation  INTEGER PRIMARY KEY AUTOINCREMENT,
  time        INTEGER NOT NULL,
  source      TEXT NOT NULL DEFAULT '',
  revision    INTEGER,
  etag        TEXT NOT NULL DEFAULT '',
  doc_hash    TEXT NOT NULL DEFAULT '',
  body        TEXT NOT NULL DEFAULT '',
  outcome     TEXT NOT NULL CHECK (outcome IN
                ('pending', 'applied', 'unchanged', 'rejected', 'partial', 'failed', 'rolled_back',
                 'recorded')),
  error       TEXT NOT NULL DEFAULT '',
  rollback_of INTEGER,
  cause       TEXT NOT NULL DEFAULT 'store' CHECK (cause IN
                ('store', 'rollback', 'drift', 'boot', 'expiry', 'resume')),
  attempts    INTEGER NOT NULL DEFAULT 1,
  last_time   INTEGER
);
INSERT INTO generations_v2 (generation, time, source, revision, etag, doc_hash, body, outcome, error,
                            rollback_of, cause)
  SELECT generation, time, source, revision, etag, doc_hash, body, outcome, error, rollback_of,
         CASE WHEN rollback_of IS NULL THEN 'store' ELSE 'rollback' END
  FROM generations;
-- Generation numbers are never reused: the new table's counter starts where the old one was.
INSERT INTO sqlite_sequence (name, seq)
  SELECT 'generations_v2', seq FROM sqlite_sequence WHERE name = 'generations'
  AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'generations_v2');
UPDATE sqlite_sequence SET seq = MAX(seq, COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'generations'), 0))
  WHERE name = 'generations_v2';
DROP TABLE generations;
ALTER TABLE generations_v2 RENAME TO generations;
CREATE INDEX generations_by_outcome ON generations (outcome, generation);
)sql";

// Version 3: the login audit (agent/daemon/login_audit.h): the last successful login per user and
// key fingerprint ('' for a login without a key), and the connections per source address that
// ended during authentication. Both are bounded by the writer (kPrune*).
const char* const kSchemaV3 = R"sql(
CREATE TABLE logins (
  user        TEXT NOT NULL,
  fingerprint TEXT NOT NULL DEFAULT '',
  method      TEXT NOT NULL DEFAULT '',
  time        INTEGER NOT NULL,
  address     TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (user, fingerprint)
);
CREATE TABLE login_failures (
  address   TEXT PRIMARY KEY,
  count     INTEGER NOT NULL,
  last_time INTEGER NOT NULL
);
CREATE INDEX login_failures_by_time ON login_failures (last_time);
)sql";

}  // namespace

const std::vector<Migration>& migrations() {
  static const std::vector<Migration> kMigrations = {
      {1, kSchemaV1},
      {2, kSchemaV2, true},
      {3, kSchemaV3},
  };
  return kMigrations;
}

int latestSchemaVersion() { return migrations().back().version; }

const char* const kPragmaJournalModeWal = "PRAGMA journal_mode = WAL";
const char* const kPragmaSynchronousFull = "PRAGMA synchronous = FULL";
const char* const kPragmaSynchronousNormal = "PRAGMA synchronous = NORMAL";
const char* const kPragmaForeignKeysOn = "PRAGMA foreign_keys = ON";
const char* const kPragmaForeignKeysOff = "PRAGMA foreign_keys = OFF";
const char* const kPragmaForeignKeyCheck = "PRAGMA foreign_key_check";
const char* const kPragmaUserVersion = "PRAGMA user_version";
const char* const kPragmaIntegrityCheck = "PRAGMA integrity_check";

const char* const kBeginRead = "BEGIN DEFERRED";
const char* const kBeginWrite = "BEGIN IMMEDIATE";
const char* const kCommit = "COMMIT";
const char* const kRollback = "ROLLBACK";

// ---- generations ----

const char* const kInsertGeneration =
    "INSERT INTO generations (time, source, revision, etag, doc_hash, body, outcome, error, "
    "rollback_of, cause) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";
const char* const kInsertChange =
    "INSERT INTO changes (generation, seq, provider, object, action, before, after) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
const char* const kInsertSkipped = "INSERT INTO skipped (generation, seq, id, reason) VALUES (?1, ?2, ?3, ?4)";
const char* const kDeleteSkipped = "DELETE FROM skipped WHERE generation = ?1";
const char* const kNoteRetry = "UPDATE generations SET attempts = attempts + 1, last_time = ?2 WHERE generation = ?1";
const char* const kInsertBackup =
    "INSERT INTO backups (generation, path, existed, content, mode, uid, gid) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
const char* const kInsertBackupKeepFirst =
    "INSERT INTO backups (generation, path, existed, content, mode, uid, gid) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (generation, path) DO NOTHING";
const char* const kGenerationExists = "SELECT 1 FROM generations WHERE generation = ?1";
const char* const kMaxChangeSeq = "SELECT COALESCE(MAX(seq), 0) FROM changes WHERE generation = ?1";
const char* const kUpdateOutcome = "UPDATE generations SET outcome = ?2, error = ?3 WHERE generation = ?1";

// Column order shared by every generation read (see readGenerationRow() in state_store.cpp).
// clang-format off
#define PIM_GENERATION_COLUMNS(body)                                              \
  "SELECT g.generation, g.time, g.source, g.revision, g.etag, g.doc_hash, "       \
  body ", g.outcome, g.error, g.rollback_of, g.cause, g.attempts, g.last_time, " \
  "(SELECT COUNT(*) FROM changes c WHERE c.generation = g.generation), "          \
  "(SELECT COUNT(*) FROM skipped s WHERE s.generation = g.generation) "           \
  "FROM generations g "
// clang-format on

const char* const kSelectGeneration = PIM_GENERATION_COLUMNS("g.body") "WHERE g.generation = ?1";
// History leaves the body out: a few hundred documents of up to 4 MiB each are not a listing.
const char* const kSelectHistory = PIM_GENERATION_COLUMNS("''") "ORDER BY g.generation DESC LIMIT ?1";
const char* const kSelectLatest = PIM_GENERATION_COLUMNS("g.body") "ORDER BY g.generation DESC LIMIT 1";
const char* const kSelectLastApplied =
    PIM_GENERATION_COLUMNS("g.body")
    "WHERE g.outcome IN ('applied', 'unchanged', 'rolled_back', 'partial', 'failed') "
    "ORDER BY g.generation DESC LIMIT 1";

#undef PIM_GENERATION_COLUMNS

const char* const kSelectSkipped = "SELECT id, reason FROM skipped WHERE generation = ?1 ORDER BY seq";
const char* const kSelectChanges =
    "SELECT generation, seq, provider, object, action, before, after FROM changes "
    "WHERE generation = ?1 ORDER BY seq";
const char* const kSelectBackups =
    "SELECT generation, path, existed, content, mode, uid, gid FROM backups "
    "WHERE generation = ?1 ORDER BY path";

// Deletes every generation older than the newest ?1, except the one in force (newest applied,
// unchanged, rolled back, partial or failed), the pinned one and those of an interrupted cycle.
// Children cascade.
const char* const kPruneGenerations =
    "DELETE FROM generations WHERE generation < "
    "  (SELECT MIN(generation) FROM "
    "    (SELECT generation FROM generations ORDER BY generation DESC LIMIT ?1)) "
    "AND generation IS NOT "
    "  (SELECT value FROM meta WHERE key = 'pinned_generation') "
    "AND generation IS NOT "
    "  (SELECT generation FROM generations "
    "   WHERE outcome IN ('applied', 'unchanged', 'rolled_back', 'partial', 'failed') "
    "   ORDER BY generation DESC LIMIT 1) "
    "AND generation NOT IN "
    "  (SELECT generation FROM pending_cycle UNION ALL "
    "   SELECT previous_generation FROM pending_cycle WHERE previous_generation IS NOT NULL)";

// ---- meta ----

const char* const kSelectMeta = "SELECT value FROM meta WHERE key = ?1";
const char* const kUpsertMeta =
    "INSERT INTO meta (key, value) VALUES (?1, ?2) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value";
const char* const kRaiseMetaMax =
    "INSERT INTO meta (key, value) VALUES (?1, ?2) "
    "ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)";
const char* const kDeleteMeta = "DELETE FROM meta WHERE key = ?1";

const char* const kMetaPinnedGeneration = "pinned_generation";
const char* const kMetaLastPollTime = "last_poll_time";
const char* const kMetaLastPollOutcome = "last_poll_outcome";
const char* const kMetaLastError = "last_error";
const char* const kMetaHighestStoreRevision = "highest_store_revision";
const char* const kMetaStoreRevision = "store_revision";
const char* const kMetaReloadPending = "sshd_reload_pending";
const char* const kMetaDefenderCursor = "defender_cursor";
const char* const kMetaRecoveryAttempts = "recovery_attempts";

// ---- login audit ----

// A later login replaces an earlier one; messages read again (a cursor lost) change nothing.
const char* const kUpsertLogin =
    "INSERT INTO logins (user, fingerprint, method, time, address) VALUES (?1, ?2, ?3, ?4, ?5) "
    "ON CONFLICT (user, fingerprint) DO UPDATE SET method = excluded.method, time = excluded.time, "
    "address = excluded.address WHERE excluded.time >= logins.time";
const char* const kCountLoginFailure =
    "INSERT INTO login_failures (address, count, last_time) VALUES (?1, ?2, ?3) "
    "ON CONFLICT (address) DO UPDATE SET count = count + excluded.count, "
    "last_time = MAX(last_time, excluded.last_time)";
const char* const kPruneLogins =
    "DELETE FROM logins WHERE rowid NOT IN (SELECT rowid FROM logins ORDER BY time DESC LIMIT ?1)";
const char* const kPruneLoginFailures =
    "DELETE FROM login_failures WHERE address NOT IN "
    "(SELECT address FROM login_failures ORDER BY last_time DESC LIMIT ?1)";
const char* const kSelectLogins =
    "SELECT user, fingerprint, method, time, address FROM logins ORDER BY user, fingerprint";
const char* const kSelectLoginFailures =
    "SELECT address, count, last_time FROM login_failures ORDER BY count DESC, last_time DESC, address LIMIT ?1";
const char* const kSumLoginFailures = "SELECT COALESCE(SUM(count), 0), COUNT(*) FROM login_failures";

// ---- owned objects ----

// The first creation wins: re-adding an owned object keeps its original generation.
const char* const kInsertOwned =
    "INSERT INTO owned (kind, name, created_generation) VALUES (?1, ?2, ?3) "
    "ON CONFLICT (kind, name) DO NOTHING";
const char* const kDeleteOwned = "DELETE FROM owned WHERE kind = ?1 AND name = ?2";
const char* const kSelectOwnedOne = "SELECT 1 FROM owned WHERE kind = ?1 AND name = ?2";
const char* const kSelectOwnedKind = "SELECT name FROM owned WHERE kind = ?1 ORDER BY name";

// ---- pending-cycle journal ----

const char* const kInsertPendingCycle =
    "INSERT INTO pending_cycle (id, generation, previous_generation) VALUES (1, ?1, ?2)";
const char* const kSelectPendingCycle = "SELECT generation, previous_generation FROM pending_cycle WHERE id = 1";
const char* const kDeletePendingCycle = "DELETE FROM pending_cycle";

}  // namespace pim::sql
