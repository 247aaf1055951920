#include "state/state_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <thread>
#include <utility>

#include "state/schema.h"
#include "state/sqlite.h"

namespace pim {
namespace {

using sqlite::Database;
using sqlite::Statement;
using sqlite::Transaction;

constexpr mode_t kDirMode = 0700;
constexpr mode_t kFileMode = 0600;
const char* const kSideFiles[] = {"-wal", "-shm"};

Status sysError(const std::string& what, const std::string& path, int err, ErrorCode code = ErrorCode::kIo) {
  return Status::error(code, what + " " + path + ": " + std::strerror(err), path);
}

// Creates the missing directories leading to `path`, each 0700 whatever the umask. Existing ones
// are left as they are (the operator may have chosen their mode).
Status ensureParentDirectory(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos || slash == 0) return Status::ok();
  const std::string parent = path.substr(0, slash);
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = parent.find('/', pos + 1);
    const std::string prefix = parent.substr(0, pos);
    if (prefix.empty()) continue;
    struct stat st {};
    if (::stat(prefix.c_str(), &st) == 0) {
      if (!S_ISDIR(st.st_mode)) {
        return Status::error(ErrorCode::kIo, "create state directory " + prefix + ": not a directory", prefix);
      }
      continue;
    }
    if (errno != ENOENT) return sysError("create state directory", prefix, errno);
    if (::mkdir(prefix.c_str(), kDirMode) != 0) {
      if (errno == EEXIST) continue;  // created concurrently by another process
      return sysError("create state directory", prefix, errno);
    }
    if (::chmod(prefix.c_str(), kDirMode) != 0) {
      return sysError("chmod state directory", prefix, errno);
    }
  }
  return Status::ok();
}

// The database and its side files must be plain files: a symbolic link could make a root
// process write secrets anywhere.
Status refuseUnsafe(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return Status::ok();
    return sysError("open state database", path, errno);
  }
  if (S_ISLNK(st.st_mode)) {
    return Status::error(ErrorCode::kUnsafe, "open state database " + path + ": refusing a symbolic link", path);
  }
  if (!S_ISREG(st.st_mode)) {
    return Status::error(ErrorCode::kUnsafe, "open state database " + path + ": not a regular file", path);
  }
  return Status::ok();
}

// Creates the file if needed and forces mode 0600 before SQLite opens it (SQLite then gives its
// -wal/-shm files the same mode). O_NOFOLLOW closes the race with refuseUnsafe().
Status prepareFile(const std::string& path) {
  for (const char* suffix : kSideFiles) {
    Status st = refuseUnsafe(path + suffix);
    if (!st) return st;
  }
  Status st = refuseUnsafe(path);
  if (!st) return st;
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, kFileMode);
  if (fd < 0) {
    const int err = errno;
    if (err == ELOOP) {
      return Status::error(ErrorCode::kUnsafe, "open state database " + path + ": refusing a symbolic link", path);
    }
    return sysError("open state database", path, err);
  }
  struct stat info {};
  Status result = Status::ok();
  if (::fstat(fd, &info) != 0) {
    result = sysError("stat state database", path, errno);
  } else if (!S_ISREG(info.st_mode)) {
    result = Status::error(ErrorCode::kUnsafe, "open state database " + path + ": not a regular file", path);
  } else if (info.st_nlink > 1) {
    result = Status::error(ErrorCode::kUnsafe, "open state database " + path + ": file has other hard links", path);
  } else if ((info.st_mode & 07777) != kFileMode && ::fchmod(fd, kFileMode) != 0) {
    result = sysError("chmod state database", path, errno);
  }
  ::close(fd);
  return result;
}

// What tryOpen() found: a usable connection, a database to move aside, or another error that
// must not destroy anything (busy, I/O).
struct OpenAttempt {
  std::unique_ptr<Database> db;
  bool corrupt = false;
  bool busy = false;   // the error was SQLITE_BUSY/LOCKED: another process is in the way
  std::string reason;  // why corrupt
  Status error;
  int fromVersion = 0;
};

OpenAttempt corruptAttempt(std::string reason) {
  OpenAttempt a;
  a.corrupt = true;
  a.reason = std::move(reason);
  return a;
}

OpenAttempt failedAttempt(Status st) {
  OpenAttempt a;
  a.error = std::move(st);
  return a;
}

// Runs a statement that returns one row and hands back its first column as text.
Result<std::string> pragmaText(Database& db, const char* sql, const std::string& what, int* rcOut) {
  auto stmt = Statement::prepare(db, sql, what);
  if (!stmt) {
    *rcOut = db.lastErrorCode();
    return stmt.status();
  }
  auto row = stmt->step();
  if (!row) {
    *rcOut = stmt->lastRc();
    return row.status();
  }
  return *row ? stmt->columnText(0) : std::string();
}

// Applies the migrations above `fromVersion`, each in its own write transaction. A database
// already current takes no write lock, so opening never waits for a busy writer.
Status applyMigrations(Database& db, int fromVersion, int* rcOut) {
  for (const auto& migration : sql::migrations()) {
    if (migration.version <= fromVersion) continue;
    const std::string what = "migrate state database to schema " + std::to_string(migration.version) + ":";
    // PRAGMA foreign_keys is a no-op inside a transaction: switched around it, and always back on.
    struct ForeignKeysOff {
      Database& db;
      bool on;
      ~ForeignKeysOff() {
        if (on) (void)db.exec(sql::kPragmaForeignKeysOn, "enable foreign keys");
      }
    } fkOff{db, migration.rebuildsTables};
    if (migration.rebuildsTables) {
      if (Status st = db.exec(sql::kPragmaForeignKeysOff, what); !st) {
        *rcOut = db.lastErrorCode();
        return st;
      }
    }
    auto txn = Transaction::begin(db, Transaction::Mode::kWrite, what);
    if (!txn) {
      *rcOut = db.lastErrorCode();
      return txn.status();
    }
    // Another process may have migrated while we waited for the write lock.
    auto version = pragmaText(db, sql::kPragmaUserVersion, what, rcOut);
    if (!version) return version.status();
    if (std::stoi("0" + *version) >= migration.version) continue;
    Status st = db.exec(migration.sql, what);
    if (!st) {
      *rcOut = db.lastErrorCode();
      return st;
    }
    if (migration.rebuildsTables) {
      auto violation = pragmaText(db, sql::kPragmaForeignKeyCheck, what, rcOut);
      if (!violation) return violation.status();
      if (!violation->empty()) {
        return Status::error(ErrorCode::kIo, what + " a foreign key no longer holds (table " + *violation + ")");
      }
    }
    // PRAGMA takes no bound parameters; the value is the migration's own integer constant.
    const std::string setVersion = "PRAGMA user_version = " + std::to_string(migration.version);
    st = db.exec(setVersion.c_str(), what);
    if (!st) {
      *rcOut = db.lastErrorCode();
      return st;
    }
    st = (*txn)->commit();
    if (!st) {
      *rcOut = db.lastErrorCode();
      return st;
    }
  }
  return Status::ok();
}

// Opens and checks the database, then migrates it. Only corruption is reported as `corrupt`;
// busy or I/O errors leave the file alone.
OpenAttempt tryOpen(const std::string& path) {
  int rc = SQLITE_OK;
  auto opened = Database::open(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOFOLLOW | SQLITE_OPEN_FULLMUTEX, &rc);
  if (!opened) {
    if (sqlite::isCorruption(rc)) return corruptAttempt(opened.status().message());
    return failedAttempt(opened.status());
  }
  auto db = std::make_unique<Database>(std::move(opened.value()));
  sqlite3_busy_timeout(db->get(), StateStore::kBusyTimeoutMs);

  const std::string what = "open state database";
  auto check = [&](const Status& st) -> std::optional<OpenAttempt> {
    if (st) return std::nullopt;
    if (sqlite::isCorruption(rc)) return corruptAttempt(st.message());
    OpenAttempt failed = failedAttempt(st);
    failed.busy = (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED;
    return failed;
  };

  Status st = db->exec(sql::kPragmaForeignKeysOn, what);
  rc = st ? SQLITE_OK : db->lastErrorCode();
  if (auto bad = check(st)) return std::move(*bad);

  auto version = pragmaText(*db, sql::kPragmaUserVersion, what, &rc);
  if (auto bad = check(version.status())) return std::move(*bad);
  const int fromVersion = std::stoi("0" + *version);
  if (fromVersion > sql::latestSchemaVersion()) {
    return corruptAttempt("schema version " + std::to_string(fromVersion) + " is newer than this agent's " +
                          std::to_string(sql::latestSchemaVersion()));
  }

  auto mode = pragmaText(*db, sql::kPragmaJournalModeWal, what, &rc);
  if (auto bad = check(mode.status())) return std::move(*bad);
  if (*mode != "wal") {
    return failedAttempt(
        Status::error(ErrorCode::kIo, what + " " + path + ": cannot switch to WAL mode (got " + *mode + ")", path));
  }
  st = db->exec(sql::kPragmaSynchronousFull, what);
  rc = st ? SQLITE_OK : db->lastErrorCode();
  if (auto bad = check(st)) return std::move(*bad);

  // integrity_check returns one row "ok", or up to 100 rows describing problems.
  {
    auto stmt = Statement::prepare(*db, sql::kPragmaIntegrityCheck, "check state database");
    if (!stmt) {
      rc = db->lastErrorCode();
      if (auto bad = check(stmt.status())) return std::move(*bad);
    }
    auto row = stmt->step();
    if (!row) {
      rc = stmt->lastRc();
      if (auto bad = check(row.status())) return std::move(*bad);
    }
    const std::string first = *row ? stmt->columnText(0) : std::string("no result");
    if (first != "ok") return corruptAttempt("integrity check failed: " + first);
  }

  st = applyMigrations(*db, fromVersion, &rc);
  if (auto bad = check(st)) return std::move(*bad);

  OpenAttempt ok;
  ok.db = std::move(db);
  ok.fromVersion = fromVersion;
  return ok;
}

// tryOpen(), again while another process is in the way (two processes creating or converting
// the database at the same moment: some of those steps answer SQLITE_BUSY at once, without the
// busy handler), for at most the busy time-out.
OpenAttempt tryOpenPatiently(const std::string& path) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(StateStore::kBusyTimeoutMs);
  for (int attempt = 1;; ++attempt) {
    OpenAttempt a = tryOpen(path);
    if (a.db || a.corrupt || !a.busy || std::chrono::steady_clock::now() >= deadline) return a;
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min(10 * attempt, 200)));
  }
}

bool pathExists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

// Renames the database and its side files to `<path>.corrupt-<unix time>[.N]{,-wal,-shm}`.
Result<std::string> moveAside(const std::string& path) {
  const std::string base = path + ".corrupt-" + std::to_string(std::time(nullptr));
  std::string aside = base;
  for (int n = 1; pathExists(aside) || pathExists(aside + "-wal"); ++n) {
    aside = base + "." + std::to_string(n);
  }
  if (::rename(path.c_str(), aside.c_str()) != 0) {
    return sysError("move aside state database", path, errno);
  }
  for (const char* suffix : kSideFiles) {
    const std::string side = path + suffix;
    if (!pathExists(side)) continue;
    if (::rename(side.c_str(), (aside + suffix).c_str()) != 0) {
      return sysError("move aside state database", side, errno);
    }
  }
  return aside;
}

GenerationRecord readGenerationRow(const Statement& stmt, bool* badOutcome) {
  GenerationRecord r;
  r.generation = stmt.columnInt(0);
  r.time = stmt.columnInt(1);
  r.source = stmt.columnText(2);
  r.revision = stmt.columnOptionalInt(3);
  r.etag = stmt.columnText(4);
  r.docHash = stmt.columnText(5);
  r.body = stmt.columnText(6);
  auto outcome = parseOutcome(stmt.columnText(7));
  if (outcome) {
    r.outcome = *outcome;
  } else {
    *badOutcome = true;
  }
  r.error = stmt.columnText(8);
  r.rollbackOf = stmt.columnOptionalInt(9);
  r.cause = parseCause(stmt.columnText(10)).value_or(GenerationCause::kStore);
  r.attempts = stmt.columnInt(11);
  r.lastTime = stmt.columnOptionalInt(12);
  r.changeCount = stmt.columnInt(13);
  r.skippedCount = stmt.columnInt(14);
  return r;
}

Status badOutcomeStatus(const std::string& what, const std::string& path, int64_t generation) {
  return Status::error(ErrorCode::kInternal,
                       what + " " + path + ": generation " + std::to_string(generation) + " has an unknown outcome",
                       path);
}

Status noSuchGeneration(const std::string& what, const std::string& path, int64_t generation) {
  return Status::error(ErrorCode::kNotFound, what + " " + path + ": no generation " + std::to_string(generation), path);
}

// Inserts backup `b` of `generation` with `sqlText` (kInsertBackup or kInsertBackupKeepFirst).
Status insertBackup(Database& db, const char* sqlText, int64_t generation, const BackupInput& b,
                    const std::string& what) {
  auto stmt = Statement::prepare(db, sqlText, what);
  if (!stmt) return stmt.status();
  stmt->bind(1, generation)
      .bind(2, b.path)
      .bind(3, static_cast<int64_t>(b.existed ? 1 : 0))
      .bind(5, static_cast<int64_t>(b.mode))
      .bind(6, static_cast<int64_t>(b.uid))
      .bind(7, static_cast<int64_t>(b.gid));
  if (b.existed) {
    stmt->bindBlob(4, b.content);
  } else {
    stmt->bindNull(4);
  }
  return stmt->run();
}

// A row of kSelectChanges, its columns in ChangeRecord's order.
ChangeRecord readChangeRow(const Statement& s) {
  return ChangeRecord{s.columnInt(0),  s.columnInt(1),  s.columnText(2), s.columnText(3),
                      s.columnText(4), s.columnText(5), s.columnText(6)};
}

// A row of kSelectBackups, its columns in BackupRecord's order.
BackupRecord readBackupRow(const Statement& s) {
  auto u32 = [&s](int column) { return static_cast<uint32_t>(s.columnInt(column)); };
  return BackupRecord{s.columnInt(0), s.columnText(1), s.columnInt(2) != 0, s.columnBlob(3), u32(4), u32(5), u32(6)};
}

// The statement helpers of StateStore's reads and writes: prepare, bind, step and run, written once.

// Prepares `sqlText` with `args` bound to ?1, ?2, ...
template <class... Args>
Result<Statement> prepareWith(Database& db, const char* sqlText, const std::string& what, const Args&... args) {
  auto stmt = Statement::prepare(db, sqlText, what);
  if (!stmt) return stmt.status();
  [[maybe_unused]] int index = 0;
  (stmt->bind(++index, args), ...);
  return stmt;
}

// Prepares `sqlText` with `args` bound and runs it.
template <class... Args>
Status runWith(Database& db, const char* sqlText, const std::string& what, const Args&... args) {
  auto stmt = prepareWith(db, sqlText, what, args...);
  if (!stmt) return stmt.status();
  return stmt->run();
}

// Prepares `sqlText` and runs it once per element of `items`, bound by bind(statement, item).
// Stops at the first error.
template <class Items, class Bind>
Status runEach(Database& db, const char* sqlText, const Items& items, const std::string& what, Bind bind) {
  auto stmt = Statement::prepare(db, sqlText, what);
  if (!stmt) return stmt.status();
  for (const auto& item : items) {
    bind(*stmt, item);
    if (Status st = stmt->run(); !st) return st;
  }
  return Status::ok();
}

// Prepares `sqlText` with `args` bound and steps it once: the statement on its first row, or
// nullopt when it returned none.
template <class... Args>
Result<std::optional<Statement>> firstRow(Database& db, const char* sqlText, const std::string& what,
                                          const Args&... args) {
  auto stmt = prepareWith(db, sqlText, what, args...);
  if (!stmt) return stmt.status();
  auto row = stmt->step();
  if (!row) return row.status();
  if (!*row) return std::optional<Statement>();
  return std::optional<Statement>(std::move(*stmt));
}

// Steps `stmt` to its end and returns read(stmt) of every row.
template <class Read>
auto collectRows(Statement& stmt, Read read) -> Result<std::vector<decltype(read(stmt))>> {
  std::vector<decltype(read(stmt))> out;
  for (;;) {
    auto row = stmt.step();
    if (!row) return row.status();
    if (!*row) return out;
    out.push_back(read(stmt));
  }
}

// Prepares `sqlText` with `args` bound and returns read(statement) of every row.
template <class Read, class... Args>
auto selectRows(Database& db, const char* sqlText, const std::string& what, Read read, const Args&... args)
    -> decltype(collectRows(std::declval<Statement&>(), read)) {
  auto stmt = prepareWith(db, sqlText, what, args...);
  if (!stmt) return stmt.status();
  return collectRows(*stmt, read);
}

}  // namespace

StateStore::StateStore(std::unique_ptr<sqlite::Database> db, std::string path, Logger log, int64_t keepGenerations)
    : db_(std::move(db)), path_(std::move(path)), log_(std::move(log)), keepGenerations_(keepGenerations) {}

StateStore::~StateStore() = default;

int StateStore::schemaVersion() { return sql::latestSchemaVersion(); }

Result<std::unique_ptr<StateStore>> StateStore::open(const std::string& realPath, Logger log, int64_t keepGenerations) {
  // A logger without sinks drops everything (state/ does not link the providers' nullLogger()).
  if (!log) log = std::make_shared<spdlog::logger>("state", spdlog::sinks_init_list{});
  if (keepGenerations < 1) {
    return Status::error(ErrorCode::kInvalid, "open state database " + realPath + ": keep_generations must be >= 1",
                         realPath);
  }
  if (realPath.empty()) {
    return Status::error(ErrorCode::kInvalid, "open state database: empty path");
  }
  Status st = ensureParentDirectory(realPath);
  if (!st) return st;
  st = prepareFile(realPath);
  if (!st) return st;

  OpenAttempt attempt = tryOpenPatiently(realPath);
  std::string movedAside;
  if (attempt.corrupt) {
    attempt.db.reset();  // close before renaming
    auto aside = moveAside(realPath);
    if (!aside) return aside.status();
    movedAside = *aside;
    log->warn(
        "state database {} is unusable ({}); moved it aside to {} and started a fresh one: "
        "history is lost and ownership must be rebuilt from the host",
        realPath, attempt.reason, movedAside);
    st = prepareFile(realPath);
    if (!st) return st;
    attempt = tryOpenPatiently(realPath);
    if (attempt.corrupt) {
      return Status::error(
          ErrorCode::kIo, "open state database " + realPath + ": fresh database unusable: " + attempt.reason, realPath);
    }
  }
  if (!attempt.db) return attempt.error;

  if (attempt.fromVersion == 0) {
    log->info("created state database {} (schema version {})", realPath, sql::latestSchemaVersion());
  } else if (attempt.fromVersion < sql::latestSchemaVersion()) {
    log->info("migrated state database {} from schema version {} to {}", realPath, attempt.fromVersion,
              sql::latestSchemaVersion());
  }
  std::unique_ptr<StateStore> store(new StateStore(std::move(attempt.db), realPath, std::move(log), keepGenerations));
  store->rebuilt_ = !movedAside.empty();
  store->created_ = attempt.fromVersion == 0;
  store->movedAsidePath_ = movedAside;
  return store;
}

Result<std::unique_ptr<StateStore>> StateStore::openReadOnly(const std::string& realPath, Logger log) {
  if (!log) log = std::make_shared<spdlog::logger>("state", spdlog::sinks_init_list{});
  struct stat st {};
  if (::lstat(realPath.c_str(), &st) != 0) {
    return Status::error(errno == ENOENT ? ErrorCode::kNotFound : ErrorCode::kIo,
                         "open state database " + realPath + " for reading: " + std::strerror(errno), realPath);
  }
  if (!S_ISREG(st.st_mode)) {
    return Status::error(ErrorCode::kUnsafe, "open state database " + realPath + ": not a regular file", realPath);
  }
  const std::string what = "read state database";
  auto tryOpen = [&](bool immutable) -> Result<std::unique_ptr<Database>> {
    int flags = SQLITE_OPEN_READONLY | SQLITE_OPEN_NOFOLLOW | SQLITE_OPEN_FULLMUTEX;
    std::string name = realPath;
    if (immutable) {
      // A URI: characters with a meaning in URIs are escaped.
      name = "file:";
      for (char c : realPath) {
        if (c == '%' || c == '?' || c == '#') {
          char buf[4];
          std::snprintf(buf, sizeof buf, "%%%02X", static_cast<unsigned char>(c));
          name += buf;
        } else {
          name += c;
        }
      }
      name += "?immutable=1";
      flags |= SQLITE_OPEN_URI;
    }
    auto opened = Database::open(name, flags);
    if (!opened) return opened.status();
    auto db = std::make_unique<Database>(std::move(opened.value()));
    sqlite3_busy_timeout(db->get(), StateStore::kBusyTimeoutMs);
    int rc = SQLITE_OK;
    auto version = pragmaText(*db, sql::kPragmaUserVersion, what, &rc);
    if (!version) return version.status();
    const int v = std::stoi("0" + *version);
    if (v != sql::latestSchemaVersion()) {
      return Status::error(ErrorCode::kInvalid,
                           what + " " + realPath + ": schema version " + std::to_string(v) +
                               (v < sql::latestSchemaVersion()
                                    ? " is older than this agent's; a cycle (once, or the service) migrates it"
                                    : " is newer than this agent's " + std::to_string(sql::latestSchemaVersion())),
                           realPath);
    }
    // The first read of a WAL database maps its -shm: fails here, not later, when it cannot.
    auto probe = pragmaText(*db, "SELECT COUNT(*) FROM meta", what, &rc);
    if (!probe) return probe.status();
    return db;
  };
  auto db = tryOpen(false);
  if (!db && db.status().code() != ErrorCode::kInvalid) db = tryOpen(true);
  if (!db) return db.status();
  std::unique_ptr<StateStore> store(new StateStore(std::move(*db), realPath, std::move(log), 1));
  return store;
}

Result<std::unique_ptr<StateStore>> StateStore::openInMemory(Logger log) {
  if (!log) log = std::make_shared<spdlog::logger>("state", spdlog::sinks_init_list{});
  auto opened = Database::open(":memory:", SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX);
  if (!opened) return opened.status();
  auto db = std::make_unique<Database>(std::move(opened.value()));
  int rc = SQLITE_OK;
  if (Status st = db->exec(sql::kPragmaForeignKeysOn, "open state database"); !st) return st;
  if (Status st = applyMigrations(*db, 0, &rc); !st) return st;
  return std::unique_ptr<StateStore>(new StateStore(std::move(db), ":memory:", std::move(log), 1));
}

// ---- private helpers (the mutex is held by the caller) ----

Status StateStore::requireGeneration(int64_t generation, const std::string& what) const {
  auto row = firstRow(*db_, sql::kGenerationExists, what, generation);
  if (!row) return row.status();
  return *row ? Status::ok() : noSuchGeneration(what, path_, generation);
}

Result<std::optional<int64_t>> StateStore::metaInt(const char* key, const std::string& what) const {
  auto row = firstRow(*db_, sql::kSelectMeta, what, key);
  if (!row) return row.status();
  if (!*row) return std::optional<int64_t>();
  return (*row)->columnOptionalInt(0);
}

Result<std::string> StateStore::metaText(const char* key, const std::string& what) const {
  auto row = firstRow(*db_, sql::kSelectMeta, what, key);
  if (!row) return row.status();
  return *row ? (*row)->columnText(0) : std::string();
}

Status StateStore::setMetaValue(const char* key, std::optional<int64_t> intValue,
                                const std::optional<std::string>& textValue, const std::string& what) {
  if (textValue) return runWith(*db_, sql::kUpsertMeta, what, key, *textValue);
  if (intValue) return runWith(*db_, sql::kUpsertMeta, what, key, *intValue);
  return runWith(*db_, sql::kDeleteMeta, what, key);
}

Status StateStore::raiseHighestRevision(int64_t /*generation*/, GenerationOutcome outcome,
                                        std::optional<int64_t> revision, const std::string& what) {
  // Rollbacks re-apply an old document on purpose: they must not move the replay bar. A document
  // that was partly applied, or whose grants wait, is in force all the same.
  if (!revision) return Status::ok();
  if (outcome != GenerationOutcome::kApplied && outcome != GenerationOutcome::kUnchanged &&
      outcome != GenerationOutcome::kPartial && outcome != GenerationOutcome::kFailed) {
    return Status::ok();
  }
  return runWith(*db_, sql::kRaiseMetaMax, what, sql::kMetaHighestStoreRevision, *revision);
}

Status StateStore::setOutcomeLocked(int64_t generation, GenerationOutcome outcome, const std::string& error,
                                    const std::string& what) {
  Status st = runWith(*db_, sql::kUpdateOutcome, what, generation, outcomeName(outcome), error);
  if (!st) return st;
  if (sqlite3_changes(db_->get()) == 0) return noSuchGeneration(what, path_, generation);
  auto record = readOne(sql::kSelectGeneration, generation, what);
  if (!record) return record.status();
  if (!*record) return Status::ok();
  return raiseHighestRevision(generation, outcome, (*record)->revision, what);
}

Result<std::optional<GenerationRecord>> StateStore::readOne(const char* sqlText, std::optional<int64_t> bind,
                                                            const std::string& what) const {
  auto stmt = Statement::prepare(*db_, sqlText, what);
  if (!stmt) return stmt.status();
  if (bind) stmt->bind(1, *bind);
  auto row = stmt->step();
  if (!row) return row.status();
  if (!*row) return std::optional<GenerationRecord>();
  bool badOutcome = false;
  GenerationRecord record = readGenerationRow(*stmt, &badOutcome);
  if (badOutcome) return badOutcomeStatus(what, path_, record.generation);

  auto skipped = selectRows(
      *db_, sql::kSelectSkipped, what,
      [](const Statement& s) {
        return SkippedRecord{s.columnText(0), s.columnText(1)};
      },
      record.generation);
  if (!skipped) return skipped.status();
  record.skipped = std::move(*skipped);
  return std::optional<GenerationRecord>(std::move(record));
}

Result<std::optional<GenerationRecord>> StateStore::readOneConsistent(const char* sqlText, std::optional<int64_t> bind,
                                                                      const std::string& what) const {
  // One snapshot for the generation and its skipped entries.
  auto txn = Transaction::begin(*db_, Transaction::Mode::kRead, what);
  if (!txn) return txn.status();
  return readOne(sqlText, bind, what);
}

Result<std::optional<PendingCycle>> StateStore::pendingCycleLocked(const std::string& what) const {
  auto row = firstRow(*db_, sql::kSelectPendingCycle, what);
  if (!row) return row.status();
  if (!*row) return std::optional<PendingCycle>();
  return std::optional<PendingCycle>(PendingCycle{(*row)->columnInt(0), (*row)->columnOptionalInt(1)});
}

Status StateStore::noPendingCycleLocked(const std::string& what) const {
  auto pending = pendingCycleLocked(what);
  if (!pending) return pending.status();
  if (!*pending) return Status::ok();
  return Status::error(
      ErrorCode::kInvalid,
      what + " " + path_ + ": a cycle for generation " + std::to_string((*pending)->generation) + " is still pending",
      path_);
}

Status StateStore::endCycleLocked(const std::string& what) {
  Status st = runWith(*db_, sql::kDeletePendingCycle, what);
  if (!st) return st;
  return setMetaValue(sql::kMetaRecoveryAttempts, std::nullopt, std::nullopt, what);
}

// ---- generations ----

Result<int64_t> StateStore::recordGeneration(const GenerationInput& input) {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string what = "record generation in";
  auto txn = Transaction::begin(*db_, Transaction::Mode::kWrite, what);
  if (!txn) return txn.status();

  std::optional<int64_t> previous;
  if (input.beginCycle) {
    if (Status st = noPendingCycleLocked(what); !st) return st;
    auto applied = readOne(sql::kSelectLastApplied, std::nullopt, what);
    if (!applied) return applied.status();
    if (*applied) previous = (*applied)->generation;
  }

  Status st =
      runWith(*db_, sql::kInsertGeneration, what, input.time, input.source, input.revision, input.etag, input.docHash,
              input.body, outcomeName(input.outcome), input.error, input.rollbackOf, causeName(input.cause));
  if (!st) return st;
  const int64_t generation = sqlite3_last_insert_rowid(db_->get());

  st = insertChangesLocked(generation, input.changes, what);
  if (st && !input.skipped.empty()) st = replaceSkippedLocked(generation, input.skipped, what);
  if (st && !input.backups.empty()) {
    // Plain INSERT: two backups of one path in one input is a caller bug; the UNIQUE constraint
    // fails the whole transaction.
    for (size_t i = 0; st && i < input.backups.size(); ++i) {
      st = insertBackup(*db_, sql::kInsertBackup, generation, input.backups[i], what);
    }
  }
  if (!st) return st;

  if (input.revision && input.outcome != GenerationOutcome::kRolledBack && !input.rollbackOf) {
    st = setMetaValue(sql::kMetaStoreRevision, input.revision, std::nullopt, what);
    if (!st) return st;
  }
  st = raiseHighestRevision(generation, input.outcome, input.revision, what);
  if (!st) return st;

  if (input.beginCycle) {
    st = runWith(*db_, sql::kInsertPendingCycle, what, generation, previous);
    if (!st) return st;
  }

  st = runWith(*db_, sql::kPruneGenerations, what, keepGenerations_);
  if (!st) return st;
  const int pruned = sqlite3_changes(db_->get());

  st = (*txn)->commit();
  if (!st) return st;
  log_->debug("recorded generation {} (outcome {}, revision {}, {} changes){}", generation, outcomeName(input.outcome),
              input.revision ? std::to_string(*input.revision) : std::string("none"), input.changes.size(),
              pruned > 0 ? "; pruned " + std::to_string(pruned) + " old generations" : std::string());
  return generation;
}

Status StateStore::updateOutcome(int64_t generation, GenerationOutcome outcome, const std::string& error) {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string what = "update generation outcome in";
  auto txn = Transaction::begin(*db_, Transaction::Mode::kWrite, what);
  if (!txn) return txn.status();
  Status st = setOutcomeLocked(generation, outcome, error, what);
  if (!st) return st;
  return (*txn)->commit();
}

Status StateStore::appendChanges(int64_t generation, const std::vector<ChangeInput>& changes) {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string what = "record changes in";
  auto txn = Transaction::begin(*db_, Transaction::Mode::kWrite, what);
  if (!txn) return txn.status();
  if (Status st = requireGeneration(generation, what); !st) return st;
  if (Status st = insertChangesLocked(generation, changes, what); !st) return st;
  return (*txn)->commit();
}

Status StateStore::insertChangesLocked(int64_t generation, const std::vector<ChangeInput>& changes,
                                       const std::string& what) {
  if (changes.empty()) return Status::ok();
  int64_t seq = 0;
  {
    auto maxSeq = firstRow(*db_, sql::kMaxChangeSeq, what, generation);
    if (!maxSeq) return maxSeq.status();
    if (*maxSeq) seq = (*maxSeq)->columnInt(0);
  }  // the statement is reset here, before the inserts
  return runEach(*db_, sql::kInsertChange, changes, what, [&](Statement& s, const ChangeInput& c) {
    s.bind(1, generation).bind(2, ++seq).bind(3, c.provider).bind(4, c.object).bind(5, c.action);
    s.bind(6, c.before).bind(7, c.after);
  });
}

Status StateStore::replaceSkippedLocked(int64_t generation, const std::vector<SkippedRecord>& skipped,
                                        const std::string& what) {
  if (Status st = runWith(*db_, sql::kDeleteSkipped, what, generation); !st) return st;
  int64_t seq = 0;
  return runEach(*db_, sql::kInsertSkipped, skipped, what, [&](Statement& s, const SkippedRecord& r) {
    s.bind(1, generation).bind(2, ++seq).bind(3, r.id).bind(4, r.reason);
  });
}

Status StateStore::noteRetry(int64_t generation, int64_t time) {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string what = "note a retry of generation " + std::to_string(generation) + " in";
  auto txn = Transaction::begin(*db_, Transaction::Mode::kWrite, what);
  if (!txn) return txn.status();
  Status st = requireGeneration(generation, what);
  if (st) st = runWith(*db_, sql::kNoteRetry, what, generation, time);
  if (!st) return st;
  return (*txn)->commit();
}

Status StateStore::addBackup(int64_t generation, const BackupInput& backup) {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string what = "record backup of " + backup.path + " in";
  auto txn = Transaction::begin(*db_, Transaction::Mode::kWrite, what);
  if (!txn) return txn.status();
  Status st = requireGeneration(generation, what);
  if (st) st = insertBackup(*db_, sql::kInsertBackupKeepFirst, generation, backup, what);
  if (!st) return st;
  return (*txn)->commit();
}

Result<std::optional<GenerationRecord>> StateStore::generation(int64_t n) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return readOneConsistent(sql::kSelectGeneration, n, "read generation " + std::to_string(n) + " from");
}

Result<std::optional<GenerationRecord>> StateStore::latest() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return readOneConsistent(sql::kSelectLatest, std::nullopt, "read latest generation from");
}

Result<std::optional<GenerationRecord>> StateStore::lastApplied() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return readOneConsistent(sql::kSelectLastApplied, std::nullopt, "read applied generation from");
}

Result<std::vector<GenerationRecord>> StateStore::history(int limit) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string what = "read history from";
  std::optional<int64_t> bad;  // the first generation with an unknown outcome
  auto read = [&bad](const Statement& s) {
    bool badOutcome = false;
    GenerationRecord r = readGenerationRow(s, &badOutcome);
    if (badOutcome && !bad) bad = r.generation;
    return r;
  };
  const int64_t rows = limit > 0 ? limit : -1;  // LIMIT -1: no limit
  auto out = selectRows(*db_, sql::kSelectHistory, what, read, rows);
  if (out && bad) return badOutcomeStatus(what, path_, *bad);
  return out;
}

Result<std::vector<ChangeRecord>> StateStore::changes(int64_t n) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return selectRows(*db_, sql::kSelectChanges, "read changes of generation " + std::to_string(n) + " from",
                    readChangeRow, n);
}

Result<std::vector<BackupRecord>> StateStore::backups(int64_t n) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return selectRows(*db_, sql::kSelectBackups, "read backups of generation " + std::to_string(n) + " from",
                    readBackupRow, n);
}

Result<int64_t> StateStore::highestAppliedStoreRevision() const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto value = metaInt(sql::kMetaHighestStoreRevision, "read highest applied revision from");
  if (!value) return value.status();
  return value->value_or(0);
}

Result<std::optional<int64_t>> StateStore::storeRevision() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return metaInt(sql::kMetaStoreRevision, "read store revision from");
}

// ---- pin ----

Status StateStore::setPin(std::optional<int64_t> generation) {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string what =
      generation ? "pin generation " + std::to_string(*generation) + " in" : std::string("lift pin in");
  auto txn = Transaction::begin(*db_, Transaction::Mode::kWrite, what);
  if (!txn) return txn.status();
  Status st = generation ? requireGeneration(*generation, what) : Status::ok();
  if (st) st = setMetaValue(sql::kMetaPinnedGeneration, generation, std::nullopt, what);
  if (st) st = (*txn)->commit();
  if (!st) return st;
  if (generation) {
    log_->info("pinned generation {}", *generation);
  } else {
    log_->info("lifted the pin");
  }
  return Status::ok();
}

Result<std::optional<int64_t>> StateStore::pin() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return metaInt(sql::kMetaPinnedGeneration, "read pin from");
}

// ---- poll status ----

Status StateStore::recordPoll(int64_t time, const std::string& outcome, const std::string& error) {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string what = "record poll in";
  // The poll record is written at every poll and is worth no fsync: in WAL mode, synchronous =
  // NORMAL still keeps the database consistent; a power cut may only lose the newest poll times.
  // Every other transaction stays synchronous = FULL.
  Status relaxed = runWith(*db_, sql::kPragmaSynchronousNormal, what);
  if (!relaxed) return relaxed;
  struct RestoreFull {
    Database& db;
    ~RestoreFull() { (void)runWith(db, sql::kPragmaSynchronousFull, "restore synchronous = FULL in"); }
  } restore{*db_};
  auto txn = Transaction::begin(*db_, Transaction::Mode::kWrite, what);
  if (!txn) return txn.status();
  Status st = setMetaValue(sql::kMetaLastPollTime, time, std::nullopt, what);
  if (st) st = setMetaValue(sql::kMetaLastPollOutcome, std::nullopt, outcome, what);
  if (st) {
    st = setMetaValue(sql::kMetaLastError, std::nullopt,
                      error.empty() ? std::nullopt : std::optional<std::string>(error), what);
  }
  if (!st) return st;
  return (*txn)->commit();
}

Result<PollStatus> StateStore::pollStatus() const {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string what = "read poll status from";
  auto txn = Transaction::begin(*db_, Transaction::Mode::kRead, what);
  if (!txn) return txn.status();
  PollStatus out;
  auto time = metaInt(sql::kMetaLastPollTime, what);
  if (!time) return time.status();
  out.time = *time;
  for (auto [key, field] : {std::pair<const char*, std::string*>{sql::kMetaLastPollOutcome, &out.outcome},
                            {sql::kMetaLastError, &out.error}}) {
    auto text = metaText(key, what);
    if (!text) return text.status();
    *field = std::move(*text);
  }
  return out;
}

// ---- owned objects ----

Status StateStore::addOwnedAll(OwnedKind kind, const std::vector<std::string>& names,
                               std::optional<int64_t> generation) {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string what =
      std::string("record ") + std::to_string(names.size()) + " owned " + ownedKindName(kind) + " in";
  auto txn = Transaction::begin(*db_, Transaction::Mode::kWrite, what);
  if (!txn) return txn.status();
  Status st = runEach(*db_, sql::kInsertOwned, names, what, [&](Statement& s, const std::string& name) {
    s.bind(1, ownedKindName(kind)).bind(2, name).bind(3, generation);
  });
  if (!st) return st;
  return (*txn)->commit();
}

Status StateStore::addOwned(OwnedKind kind, const std::string& name, std::optional<int64_t> generation) {
  std::lock_guard<std::mutex> lock(mutex_);
  return runWith(*db_, sql::kInsertOwned, std::string("record owned ") + ownedKindName(kind) + " " + name + " in",
                 ownedKindName(kind), name, generation);
}

Status StateStore::removeOwned(OwnedKind kind, const std::string& name) {
  std::lock_guard<std::mutex> lock(mutex_);
  return runWith(*db_, sql::kDeleteOwned, std::string("forget owned ") + ownedKindName(kind) + " " + name + " in",
                 ownedKindName(kind), name);
}

Status StateStore::removeOwnedAll(OwnedKind kind, const std::vector<std::string>& names) {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string what =
      std::string("forget ") + std::to_string(names.size()) + " owned " + ownedKindName(kind) + " in";
  auto txn = Transaction::begin(*db_, Transaction::Mode::kWrite, what);
  if (!txn) return txn.status();
  Status st = runEach(*db_, sql::kDeleteOwned, names, what,
                      [&](Statement& s, const std::string& name) { s.bind(1, ownedKindName(kind)).bind(2, name); });
  if (!st) return st;
  return (*txn)->commit();
}

Result<bool> StateStore::isOwned(OwnedKind kind, const std::string& name) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string what = std::string("read owned ") + ownedKindName(kind) + " " + name + " from";
  auto row = firstRow(*db_, sql::kSelectOwnedOne, what, ownedKindName(kind), name);
  if (!row) return row.status();
  return row->has_value();
}

Result<std::vector<std::string>> StateStore::owned(OwnedKind kind) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return selectRows(
      *db_, sql::kSelectOwnedKind, std::string("read owned ") + ownedKindName(kind) + "s from",
      [](const Statement& s) { return s.columnText(0); }, ownedKindName(kind));
}

// ---- pending-cycle journal ----

Status StateStore::beginCycle(int64_t generation, std::optional<int64_t> previousGeneration) {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string what = "begin cycle for generation " + std::to_string(generation) + " in";
  auto txn = Transaction::begin(*db_, Transaction::Mode::kWrite, what);
  if (!txn) return txn.status();
  for (auto n : {std::optional<int64_t>(generation), previousGeneration}) {
    if (!n) continue;
    if (Status st = requireGeneration(*n, what); !st) return st;
  }
  Status st = noPendingCycleLocked(what);
  if (st) st = runWith(*db_, sql::kInsertPendingCycle, what, generation, previousGeneration);
  if (!st) return st;
  return (*txn)->commit();
}

Status StateStore::finishCycle(GenerationOutcome outcome, const std::string& error,
                               const std::vector<ChangeInput>& changes,
                               const std::optional<std::vector<SkippedRecord>>& skipped) {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string what = "finish cycle in";
  auto txn = Transaction::begin(*db_, Transaction::Mode::kWrite, what);
  if (!txn) return txn.status();
  auto pending = pendingCycleLocked(what);
  if (!pending) return pending.status();
  if (!*pending) {
    return Status::error(ErrorCode::kNotFound, what + " " + path_ + ": no cycle pending", path_);
  }
  const int64_t generation = (*pending)->generation;
  Status st = insertChangesLocked(generation, changes, what);
  if (st && skipped) st = replaceSkippedLocked(generation, *skipped, what);
  if (st) st = setOutcomeLocked(generation, outcome, error, what);
  if (st) st = endCycleLocked(what);
  if (!st) return st;
  return (*txn)->commit();
}

Status StateStore::endCycle() {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string what = "end cycle in";
  auto txn = Transaction::begin(*db_, Transaction::Mode::kWrite, what);
  if (!txn) return txn.status();
  if (Status st = endCycleLocked(what); !st) return st;
  return (*txn)->commit();
}

Result<int64_t> StateStore::noteRecoveryAttempt() {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string what = "count recovery attempts in";
  auto txn = Transaction::begin(*db_, Transaction::Mode::kWrite, what);
  if (!txn) return txn.status();
  auto count = metaInt(sql::kMetaRecoveryAttempts, what);
  if (!count) return count.status();
  const int64_t attempts = count->value_or(0) + 1;
  if (Status st = setMetaValue(sql::kMetaRecoveryAttempts, attempts, std::nullopt, what); !st) return st;
  if (Status st = (*txn)->commit(); !st) return st;
  return attempts;
}

Status StateStore::setReloadPending(const std::string& error) {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string what = error.empty() ? "clear the pending sshd reload in" : "record a pending sshd reload in";
  return setMetaValue(sql::kMetaReloadPending, std::nullopt,
                      error.empty() ? std::nullopt : std::optional<std::string>(error), what);
}

Result<std::string> StateStore::reloadPending() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return metaText(sql::kMetaReloadPending, "read the pending sshd reload from");
}

Status StateStore::setDefenderCursor(const std::string& cursor) {
  std::lock_guard<std::mutex> lock(mutex_);
  return setMetaValue(sql::kMetaDefenderCursor, std::nullopt,
                      cursor.empty() ? std::nullopt : std::optional<std::string>(cursor),
                      "record the defender's journal cursor in");
}

Result<std::string> StateStore::defenderCursor() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return metaText(sql::kMetaDefenderCursor, "read the defender's journal cursor from");
}

Status StateStore::recordLogins(const std::vector<LoginRecord>& logins, const std::vector<LoginFailureRecord>& failures,
                                const std::string& cursor) {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string what = "record logins in";
  auto txn = Transaction::begin(*db_, Transaction::Mode::kWrite, what);
  if (!txn) return txn.status();
  Status st = Status::ok();
  if (!logins.empty()) {
    st = runEach(*db_, sql::kUpsertLogin, logins, what, [](Statement& s, const LoginRecord& l) {
      s.bind(1, l.user).bind(2, l.fingerprint).bind(3, l.method).bind(4, l.time).bind(5, l.address);
    });
    if (st) st = runWith(*db_, sql::kPruneLogins, what, kMaxLogins);
  }
  if (st && !failures.empty()) {
    st = runEach(*db_, sql::kCountLoginFailure, failures, what, [](Statement& s, const LoginFailureRecord& f) {
      s.bind(1, f.address).bind(2, f.count).bind(3, f.lastTime);
    });
    if (st) st = runWith(*db_, sql::kPruneLoginFailures, what, kMaxLoginFailures);
  }
  if (st && !cursor.empty()) st = setMetaValue(sql::kMetaDefenderCursor, std::nullopt, cursor, what);
  if (!st) return st;
  return (*txn)->commit();
}

Result<std::vector<LoginRecord>> StateStore::logins() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return selectRows(*db_, sql::kSelectLogins, "read logins from", [](const Statement& s) {
    return LoginRecord{s.columnText(0), s.columnText(1), s.columnText(2), s.columnInt(3), s.columnText(4)};
  });
}

Result<StateStore::LoginFailures> StateStore::loginFailures(int64_t limit) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string what = "read failed logins from";
  LoginFailures out;
  auto top = selectRows(
      *db_, sql::kSelectLoginFailures, what,
      [](const Statement& s) {
        return LoginFailureRecord{s.columnText(0), s.columnInt(1), s.columnInt(2)};
      },
      limit);
  if (!top) return top.status();
  out.top = std::move(*top);
  auto sum = firstRow(*db_, sql::kSumLoginFailures, what);
  if (!sum) return sum.status();
  if (*sum) {
    out.total = (*sum)->columnInt(0);
    out.sources = (*sum)->columnInt(1);
  }
  return out;
}

Result<std::optional<PendingCycle>> StateStore::pendingCycle() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return pendingCycleLocked("read pending cycle from");
}

}  // namespace pim
