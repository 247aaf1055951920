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

Status bindBackup(Statement& stmt, int64_t generation, const BackupInput& b) {
  stmt.bind(1, generation)
      .bind(2, b.path)
      .bind(3, static_cast<int64_t>(b.existed ? 1 : 0))
      .bind(5, static_cast<int64_t>(b.mode))
      .bind(6, static_cast<int64_t>(b.uid))
      .bind(7, static_cast<int64_t>(b.gid));
  if (b.existed) {
    stmt.bindBlob(4, b.content);
  } else {
    stmt.bindNull(4);
  }
  return stmt.run();
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

Result<bool> StateStore::exists(int64_t generation, const std::string& what) const {
  auto stmt = Statement::prepare(*db_, sql::kGenerationExists, what);
  if (!stmt) return stmt.status();
  stmt->bind(1, generation);
  return stmt->step();
}

Result<std::optional<int64_t>> StateStore::metaInt(const char* key, const std::string& what) const {
  auto stmt = Statement::prepare(*db_, sql::kSelectMeta, what);
  if (!stmt) return stmt.status();
  stmt->bind(1, key);
  auto row = stmt->step();
  if (!row) return row.status();
  if (!*row) return std::optional<int64_t>();
  return stmt->columnOptionalInt(0);
}

Status StateStore::setMetaValue(const char* key, std::optional<int64_t> intValue,
                                const std::optional<std::string>& textValue, const std::string& what) {
  const bool remove = !intValue && !textValue;
  auto stmt = Statement::prepare(*db_, remove ? sql::kDeleteMeta : sql::kUpsertMeta, what);
  if (!stmt) return stmt.status();
  stmt->bind(1, key);
  if (intValue) stmt->bind(2, *intValue);
  if (textValue) stmt->bind(2, *textValue);
  return stmt->run();
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
  auto stmt = Statement::prepare(*db_, sql::kRaiseMetaMax, what);
  if (!stmt) return stmt.status();
  stmt->bind(1, sql::kMetaHighestStoreRevision).bind(2, *revision);
  return stmt->run();
}

Status StateStore::setOutcomeLocked(int64_t generation, GenerationOutcome outcome, const std::string& error,
                                    const std::string& what) {
  auto stmt = Statement::prepare(*db_, sql::kUpdateOutcome, what);
  if (!stmt) return stmt.status();
  stmt->bind(1, generation).bind(2, outcomeName(outcome)).bind(3, error);
  Status st = stmt->run();
  if (!st) return st;
  if (sqlite3_changes(db_->get()) == 0) {
    return Status::error(ErrorCode::kNotFound, what + " " + path_ + ": no generation " + std::to_string(generation),
                         path_);
  }
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

  auto skipped = Statement::prepare(*db_, sql::kSelectSkipped, what);
  if (!skipped) return skipped.status();
  skipped->bind(1, record.generation);
  for (;;) {
    auto more = skipped->step();
    if (!more) return more.status();
    if (!*more) break;
    record.skipped.push_back({skipped->columnText(0), skipped->columnText(1)});
  }
  return std::optional<GenerationRecord>(std::move(record));
}

// ---- generations ----

Result<int64_t> StateStore::recordGeneration(const GenerationInput& input) {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string what = "record generation in";
  auto txn = Transaction::begin(*db_, Transaction::Mode::kWrite, what);
  if (!txn) return txn.status();

  std::optional<int64_t> previous;
  if (input.beginCycle) {
    auto pending = Statement::prepare(*db_, sql::kSelectPendingCycle, what);
    if (!pending) return pending.status();
    auto row = pending->step();
    if (!row) return row.status();
    if (*row) {
      return Status::error(ErrorCode::kInvalid,
                           what + " " + path_ + ": a cycle for generation " + std::to_string(pending->columnInt(0)) +
                               " is still pending",
                           path_);
    }
    auto applied = readOne(sql::kSelectLastApplied, std::nullopt, what);
    if (!applied) return applied.status();
    if (*applied) previous = (*applied)->generation;
  }

  auto insert = Statement::prepare(*db_, sql::kInsertGeneration, what);
  if (!insert) return insert.status();
  insert->bind(1, input.time)
      .bind(2, input.source)
      .bind(3, input.revision)
      .bind(4, input.etag)
      .bind(5, input.docHash)
      .bind(6, input.body)
      .bind(7, outcomeName(input.outcome))
      .bind(8, input.error)
      .bind(9, input.rollbackOf)
      .bind(10, causeName(input.cause));
  Status st = insert->run();
  if (!st) return st;
  const int64_t generation = sqlite3_last_insert_rowid(db_->get());

  if (!input.changes.empty()) {
    auto stmt = Statement::prepare(*db_, sql::kInsertChange, what);
    if (!stmt) return stmt.status();
    int64_t seq = 0;
    for (const auto& c : input.changes) {
      stmt->bind(1, generation)
          .bind(2, ++seq)
          .bind(3, c.provider)
          .bind(4, c.object)
          .bind(5, c.action)
          .bind(6, c.before)
          .bind(7, c.after);
      st = stmt->run();
      if (!st) return st;
    }
  }
  if (!input.skipped.empty()) {
    auto stmt = Statement::prepare(*db_, sql::kInsertSkipped, what);
    if (!stmt) return stmt.status();
    int64_t seq = 0;
    for (const auto& s : input.skipped) {
      stmt->bind(1, generation).bind(2, ++seq).bind(3, s.id).bind(4, s.reason);
      st = stmt->run();
      if (!st) return st;
    }
  }
  if (!input.backups.empty()) {
    // Plain INSERT: two backups of one path in one input is a caller bug; the UNIQUE constraint
    // fails the whole transaction.
    auto stmt = Statement::prepare(*db_, sql::kInsertBackup, what);
    if (!stmt) return stmt.status();
    for (const auto& b : input.backups) {
      st = bindBackup(*stmt, generation, b);
      if (!st) return st;
    }
  }

  if (input.revision && input.outcome != GenerationOutcome::kRolledBack && !input.rollbackOf) {
    st = setMetaValue(sql::kMetaStoreRevision, input.revision, std::nullopt, what);
    if (!st) return st;
  }
  st = raiseHighestRevision(generation, input.outcome, input.revision, what);
  if (!st) return st;

  if (input.beginCycle) {
    auto stmt = Statement::prepare(*db_, sql::kInsertPendingCycle, what);
    if (!stmt) return stmt.status();
    stmt->bind(1, generation).bind(2, previous);
    st = stmt->run();
    if (!st) return st;
  }

  auto prune = Statement::prepare(*db_, sql::kPruneGenerations, what);
  if (!prune) return prune.status();
  prune->bind(1, keepGenerations_);
  st = prune->run();
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
  auto found = exists(generation, what);
  if (!found) return found.status();
  if (!*found) {
    return Status::error(ErrorCode::kNotFound, what + " " + path_ + ": no generation " + std::to_string(generation),
                         path_);
  }
  if (Status st = insertChangesLocked(generation, changes, what); !st) return st;
  return (*txn)->commit();
}

Status StateStore::insertChangesLocked(int64_t generation, const std::vector<ChangeInput>& changes,
                                       const std::string& what) {
  if (changes.empty()) return Status::ok();
  auto maxSeq = Statement::prepare(*db_, sql::kMaxChangeSeq, what);
  if (!maxSeq) return maxSeq.status();
  maxSeq->bind(1, generation);
  auto row = maxSeq->step();
  if (!row) return row.status();
  int64_t seq = *row ? maxSeq->columnInt(0) : 0;
  maxSeq->reset();

  auto stmt = Statement::prepare(*db_, sql::kInsertChange, what);
  if (!stmt) return stmt.status();
  for (const auto& c : changes) {
    stmt->bind(1, generation)
        .bind(2, ++seq)
        .bind(3, c.provider)
        .bind(4, c.object)
        .bind(5, c.action)
        .bind(6, c.before)
        .bind(7, c.after);
    Status st = stmt->run();
    if (!st) return st;
  }
  return Status::ok();
}

Status StateStore::replaceSkippedLocked(int64_t generation, const std::vector<SkippedRecord>& skipped,
                                        const std::string& what) {
  auto clear = Statement::prepare(*db_, sql::kDeleteSkipped, what);
  if (!clear) return clear.status();
  clear->bind(1, generation);
  if (Status st = clear->run(); !st) return st;
  auto stmt = Statement::prepare(*db_, sql::kInsertSkipped, what);
  if (!stmt) return stmt.status();
  int64_t seq = 0;
  for (const auto& s : skipped) {
    stmt->bind(1, generation).bind(2, ++seq).bind(3, s.id).bind(4, s.reason);
    Status st = stmt->run();
    if (!st) return st;
  }
  return Status::ok();
}

Status StateStore::noteRetry(int64_t generation, int64_t time) {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string what = "note a retry of generation " + std::to_string(generation) + " in";
  auto txn = Transaction::begin(*db_, Transaction::Mode::kWrite, what);
  if (!txn) return txn.status();
  auto found = exists(generation, what);
  if (!found) return found.status();
  if (!*found) {
    return Status::error(ErrorCode::kNotFound, what + " " + path_ + ": no generation " + std::to_string(generation),
                         path_);
  }
  auto stmt = Statement::prepare(*db_, sql::kNoteRetry, what);
  if (!stmt) return stmt.status();
  stmt->bind(1, generation).bind(2, time);
  if (Status st = stmt->run(); !st) return st;
  return (*txn)->commit();
}

Status StateStore::addBackup(int64_t generation, const BackupInput& backup) {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string what = "record backup of " + backup.path + " in";
  auto txn = Transaction::begin(*db_, Transaction::Mode::kWrite, what);
  if (!txn) return txn.status();
  auto found = exists(generation, what);
  if (!found) return found.status();
  if (!*found) {
    return Status::error(ErrorCode::kNotFound, what + " " + path_ + ": no generation " + std::to_string(generation),
                         path_);
  }
  auto stmt = Statement::prepare(*db_, sql::kInsertBackupKeepFirst, what);
  if (!stmt) return stmt.status();
  Status st = bindBackup(*stmt, generation, backup);
  if (!st) return st;
  return (*txn)->commit();
}

Result<std::optional<GenerationRecord>> StateStore::generation(int64_t n) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string what = "read generation " + std::to_string(n) + " from";
  auto txn = Transaction::begin(*db_, Transaction::Mode::kRead, what);
  if (!txn) return txn.status();
  return readOne(sql::kSelectGeneration, n, what);
}

Result<std::optional<GenerationRecord>> StateStore::latest() const {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string what = "read latest generation from";
  auto txn = Transaction::begin(*db_, Transaction::Mode::kRead, what);
  if (!txn) return txn.status();
  return readOne(sql::kSelectLatest, std::nullopt, what);
}

Result<std::optional<GenerationRecord>> StateStore::lastApplied() const {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string what = "read applied generation from";
  auto txn = Transaction::begin(*db_, Transaction::Mode::kRead, what);
  if (!txn) return txn.status();
  return readOne(sql::kSelectLastApplied, std::nullopt, what);
}

Result<std::vector<GenerationRecord>> StateStore::history(int limit) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string what = "read history from";
  auto stmt = Statement::prepare(*db_, sql::kSelectHistory, what);
  if (!stmt) return stmt.status();
  stmt->bind(1, static_cast<int64_t>(limit > 0 ? limit : -1));  // LIMIT -1: no limit
  std::vector<GenerationRecord> out;
  for (;;) {
    auto row = stmt->step();
    if (!row) return row.status();
    if (!*row) break;
    bool badOutcome = false;
    out.push_back(readGenerationRow(*stmt, &badOutcome));
    if (badOutcome) return badOutcomeStatus(what, path_, out.back().generation);
  }
  return out;
}

Result<std::vector<ChangeRecord>> StateStore::changes(int64_t n) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string what = "read changes of generation " + std::to_string(n) + " from";
  auto stmt = Statement::prepare(*db_, sql::kSelectChanges, what);
  if (!stmt) return stmt.status();
  stmt->bind(1, n);
  std::vector<ChangeRecord> out;
  for (;;) {
    auto row = stmt->step();
    if (!row) return row.status();
    if (!*row) break;
    ChangeRecord c;
    c.generation = stmt->columnInt(0);
    c.seq = stmt->columnInt(1);
    c.provider = stmt->columnText(2);
    c.object = stmt->columnText(3);
    c.action = stmt->columnText(4);
    c.before = stmt->columnText(5);
    c.after = stmt->columnText(6);
    out.push_back(std::move(c));
  }
  return out;
}

Result<std::vector<BackupRecord>> StateStore::backups(int64_t n) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string what = "read backups of generation " + std::to_string(n) + " from";
  auto stmt = Statement::prepare(*db_, sql::kSelectBackups, what);
  if (!stmt) return stmt.status();
  stmt->bind(1, n);
  std::vector<BackupRecord> out;
  for (;;) {
    auto row = stmt->step();
    if (!row) return row.status();
    if (!*row) break;
    BackupRecord b;
    b.generation = stmt->columnInt(0);
    b.path = stmt->columnText(1);
    b.existed = stmt->columnInt(2) != 0;
    b.content = stmt->columnBlob(3);
    b.mode = static_cast<uint32_t>(stmt->columnInt(4));
    b.uid = static_cast<uint32_t>(stmt->columnInt(5));
    b.gid = static_cast<uint32_t>(stmt->columnInt(6));
    out.push_back(std::move(b));
  }
  return out;
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
  if (generation) {
    auto found = exists(*generation, what);
    if (!found) return found.status();
    if (!*found) {
      return Status::error(ErrorCode::kNotFound, what + " " + path_ + ": no generation " + std::to_string(*generation),
                           path_);
    }
  }
  Status st = setMetaValue(sql::kMetaPinnedGeneration, generation, std::nullopt, what);
  if (!st) return st;
  st = (*txn)->commit();
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
  auto normal = Statement::prepare(*db_, sql::kPragmaSynchronousNormal, what);
  if (!normal) return normal.status();
  Status relaxed = normal->run();
  if (!relaxed) return relaxed;
  struct RestoreFull {
    Database& db;
    ~RestoreFull() {
      auto full = Statement::prepare(db, sql::kPragmaSynchronousFull, "restore synchronous = FULL in");
      if (full) (void)full->run();
    }
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
    auto stmt = Statement::prepare(*db_, sql::kSelectMeta, what);
    if (!stmt) return stmt.status();
    stmt->bind(1, key);
    auto row = stmt->step();
    if (!row) return row.status();
    if (*row) *field = stmt->columnText(0);
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
  auto stmt = Statement::prepare(*db_, sql::kInsertOwned, what);
  if (!stmt) return stmt.status();
  for (const auto& name : names) {
    stmt->bind(1, ownedKindName(kind)).bind(2, name).bind(3, generation);
    if (Status st = stmt->run(); !st) return st;
  }
  return (*txn)->commit();
}

Status StateStore::addOwned(OwnedKind kind, const std::string& name, std::optional<int64_t> generation) {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string what = std::string("record owned ") + ownedKindName(kind) + " " + name + " in";
  auto stmt = Statement::prepare(*db_, sql::kInsertOwned, what);
  if (!stmt) return stmt.status();
  stmt->bind(1, ownedKindName(kind)).bind(2, name).bind(3, generation);
  return stmt->run();
}

Status StateStore::removeOwned(OwnedKind kind, const std::string& name) {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string what = std::string("forget owned ") + ownedKindName(kind) + " " + name + " in";
  auto stmt = Statement::prepare(*db_, sql::kDeleteOwned, what);
  if (!stmt) return stmt.status();
  stmt->bind(1, ownedKindName(kind)).bind(2, name);
  return stmt->run();
}

Status StateStore::removeOwnedAll(OwnedKind kind, const std::vector<std::string>& names) {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string what =
      std::string("forget ") + std::to_string(names.size()) + " owned " + ownedKindName(kind) + " in";
  auto txn = Transaction::begin(*db_, Transaction::Mode::kWrite, what);
  if (!txn) return txn.status();
  auto stmt = Statement::prepare(*db_, sql::kDeleteOwned, what);
  if (!stmt) return stmt.status();
  for (const auto& name : names) {
    stmt->bind(1, ownedKindName(kind)).bind(2, name);
    if (Status st = stmt->run(); !st) return st;
  }
  return (*txn)->commit();
}

Result<bool> StateStore::isOwned(OwnedKind kind, const std::string& name) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string what = std::string("read owned ") + ownedKindName(kind) + " " + name + " from";
  auto stmt = Statement::prepare(*db_, sql::kSelectOwnedOne, what);
  if (!stmt) return stmt.status();
  stmt->bind(1, ownedKindName(kind)).bind(2, name);
  return stmt->step();
}

Result<std::vector<std::string>> StateStore::owned(OwnedKind kind) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string what = std::string("read owned ") + ownedKindName(kind) + "s from";
  auto stmt = Statement::prepare(*db_, sql::kSelectOwnedKind, what);
  if (!stmt) return stmt.status();
  stmt->bind(1, ownedKindName(kind));
  std::vector<std::string> out;
  for (;;) {
    auto row = stmt->step();
    if (!row) return row.status();
    if (!*row) break;
    out.push_back(stmt->columnText(0));
  }
  return out;
}

// ---- pending-cycle journal ----

Status StateStore::beginCycle(int64_t generation, std::optional<int64_t> previousGeneration) {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string what = "begin cycle for generation " + std::to_string(generation) + " in";
  auto txn = Transaction::begin(*db_, Transaction::Mode::kWrite, what);
  if (!txn) return txn.status();
  for (auto n : {std::optional<int64_t>(generation), previousGeneration}) {
    if (!n) continue;
    auto found = exists(*n, what);
    if (!found) return found.status();
    if (!*found) {
      return Status::error(ErrorCode::kNotFound, what + " " + path_ + ": no generation " + std::to_string(*n), path_);
    }
  }
  auto pending = Statement::prepare(*db_, sql::kSelectPendingCycle, what);
  if (!pending) return pending.status();
  auto row = pending->step();
  if (!row) return row.status();
  if (*row) {
    return Status::error(
        ErrorCode::kInvalid,
        what + " " + path_ + ": a cycle for generation " + std::to_string(pending->columnInt(0)) + " is still pending",
        path_);
  }
  pending->reset();
  auto stmt = Statement::prepare(*db_, sql::kInsertPendingCycle, what);
  if (!stmt) return stmt.status();
  stmt->bind(1, generation).bind(2, previousGeneration);
  Status st = stmt->run();
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
  auto pending = Statement::prepare(*db_, sql::kSelectPendingCycle, what);
  if (!pending) return pending.status();
  auto row = pending->step();
  if (!row) return row.status();
  if (!*row) {
    return Status::error(ErrorCode::kNotFound, what + " " + path_ + ": no cycle pending", path_);
  }
  const int64_t generation = pending->columnInt(0);
  pending->reset();
  Status st = insertChangesLocked(generation, changes, what);
  if (!st) return st;
  if (skipped) {
    st = replaceSkippedLocked(generation, *skipped, what);
    if (!st) return st;
  }
  st = setOutcomeLocked(generation, outcome, error, what);
  if (!st) return st;
  auto clear = Statement::prepare(*db_, sql::kDeletePendingCycle, what);
  if (!clear) return clear.status();
  st = clear->run();
  if (!st) return st;
  st = setMetaValue(sql::kMetaRecoveryAttempts, std::nullopt, std::nullopt, what);
  if (!st) return st;
  return (*txn)->commit();
}

Status StateStore::endCycle() {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string what = "end cycle in";
  auto txn = Transaction::begin(*db_, Transaction::Mode::kWrite, what);
  if (!txn) return txn.status();
  auto stmt = Statement::prepare(*db_, sql::kDeletePendingCycle, what);
  if (!stmt) return stmt.status();
  if (Status st = stmt->run(); !st) return st;
  if (Status st = setMetaValue(sql::kMetaRecoveryAttempts, std::nullopt, std::nullopt, what); !st) return st;
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
  auto stmt = Statement::prepare(*db_, sql::kSelectMeta, "read the pending sshd reload from");
  if (!stmt) return stmt.status();
  stmt->bind(1, sql::kMetaReloadPending);
  auto row = stmt->step();
  if (!row) return row.status();
  return *row ? stmt->columnText(0) : std::string();
}

Status StateStore::setDefenderCursor(const std::string& cursor) {
  std::lock_guard<std::mutex> lock(mutex_);
  return setMetaValue(sql::kMetaDefenderCursor, std::nullopt,
                      cursor.empty() ? std::nullopt : std::optional<std::string>(cursor),
                      "record the defender's journal cursor in");
}

Result<std::string> StateStore::defenderCursor() const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto stmt = Statement::prepare(*db_, sql::kSelectMeta, "read the defender's journal cursor from");
  if (!stmt) return stmt.status();
  stmt->bind(1, sql::kMetaDefenderCursor);
  auto row = stmt->step();
  if (!row) return row.status();
  return *row ? stmt->columnText(0) : std::string();
}

Status StateStore::recordLogins(const std::vector<LoginRecord>& logins, const std::vector<LoginFailureRecord>& failures,
                                const std::string& cursor) {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string what = "record logins in";
  auto txn = Transaction::begin(*db_, Transaction::Mode::kWrite, what);
  if (!txn) return txn.status();
  if (!logins.empty()) {
    auto stmt = Statement::prepare(*db_, sql::kUpsertLogin, what);
    if (!stmt) return stmt.status();
    for (const auto& l : logins) {
      stmt->bind(1, l.user).bind(2, l.fingerprint).bind(3, l.method).bind(4, l.time).bind(5, l.address);
      if (Status st = stmt->run(); !st) return st;
    }
    auto prune = Statement::prepare(*db_, sql::kPruneLogins, what);
    if (!prune) return prune.status();
    prune->bind(1, kMaxLogins);
    if (Status st = prune->run(); !st) return st;
  }
  if (!failures.empty()) {
    auto stmt = Statement::prepare(*db_, sql::kCountLoginFailure, what);
    if (!stmt) return stmt.status();
    for (const auto& f : failures) {
      stmt->bind(1, f.address).bind(2, f.count).bind(3, f.lastTime);
      if (Status st = stmt->run(); !st) return st;
    }
    auto prune = Statement::prepare(*db_, sql::kPruneLoginFailures, what);
    if (!prune) return prune.status();
    prune->bind(1, kMaxLoginFailures);
    if (Status st = prune->run(); !st) return st;
  }
  if (!cursor.empty()) {
    if (Status st = setMetaValue(sql::kMetaDefenderCursor, std::nullopt, cursor, what); !st) return st;
  }
  return (*txn)->commit();
}

Result<std::vector<LoginRecord>> StateStore::logins() const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto stmt = Statement::prepare(*db_, sql::kSelectLogins, "read logins from");
  if (!stmt) return stmt.status();
  std::vector<LoginRecord> out;
  for (;;) {
    auto row = stmt->step();
    if (!row) return row.status();
    if (!*row) break;
    out.push_back(
        {stmt->columnText(0), stmt->columnText(1), stmt->columnText(2), stmt->columnInt(3), stmt->columnText(4)});
  }
  return out;
}

Result<StateStore::LoginFailures> StateStore::loginFailures(int64_t limit) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string what = "read failed logins from";
  LoginFailures out;
  auto stmt = Statement::prepare(*db_, sql::kSelectLoginFailures, what);
  if (!stmt) return stmt.status();
  stmt->bind(1, limit);
  for (;;) {
    auto row = stmt->step();
    if (!row) return row.status();
    if (!*row) break;
    out.top.push_back({stmt->columnText(0), stmt->columnInt(1), stmt->columnInt(2)});
  }
  auto sum = Statement::prepare(*db_, sql::kSumLoginFailures, what);
  if (!sum) return sum.status();
  auto row = sum->step();
  if (!row) return row.status();
  if (*row) {
    out.total = sum->columnInt(0);
    out.sources = sum->columnInt(1);
  }
  return out;
}

Result<std::optional<PendingCycle>> StateStore::pendingCycle() const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto stmt = Statement::prepare(*db_, sql::kSelectPendingCycle, "read pending cycle from");
  if (!stmt) return stmt.status();
  auto row = stmt->step();
  if (!row) return row.status();
  if (!*row) return std::optional<PendingCycle>();
  PendingCycle cycle;
  cycle.generation = stmt->columnInt(0);
  cycle.previousGeneration = stmt->columnOptionalInt(1);
  return std::optional<PendingCycle>(cycle);
}

}  // namespace pim
