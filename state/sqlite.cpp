#include "state/sqlite.h"

#include <utility>

#include "state/schema.h"

namespace pim::sqlite {

ErrorCode errorCodeFor(int rc) {
  switch (rc & 0xff) {
    case SQLITE_CONSTRAINT:
    case SQLITE_MISMATCH:
    case SQLITE_TOOBIG:
    case SQLITE_RANGE:
      return ErrorCode::kInvalid;
    case SQLITE_MISUSE:
    case SQLITE_INTERNAL:
      return ErrorCode::kInternal;
    default:
      return ErrorCode::kIo;
  }
}

bool isCorruption(int rc) {
  const int primary = rc & 0xff;
  return primary == SQLITE_NOTADB || primary == SQLITE_CORRUPT;
}

Result<Database> Database::open(const std::string& path, int flags, int* rcOut) {
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  if (rcOut) *rcOut = rc;
  if (rc != SQLITE_OK) {
    // Even on failure SQLite usually hands back a handle carrying the message.
    std::string message = raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc);
    if (raw) {
      if (rcOut) *rcOut = sqlite3_extended_errcode(raw);
      sqlite3_close_v2(raw);
    }
    return Status::error(ErrorCode::kIo, "open state database " + path + ": " + message, path);
  }
  sqlite3_extended_result_codes(raw, 1);
  return Database(raw, path);
}

Status Database::exec(const char* sql, const std::string& what) {
  char* message = nullptr;
  const int rc = sqlite3_exec(db_.get(), sql, nullptr, nullptr, &message);
  if (rc == SQLITE_OK) return Status::ok();
  std::string text = message ? message : sqlite3_errstr(rc);
  sqlite3_free(message);
  return Status::error(errorCodeFor(rc), what + " " + path_ + ": " + text, path_);
}

Status Database::error(int rc, const std::string& what) const {
  // sqlite3_errmsg describes the most recent failure on this connection, which is `rc`'s.
  const char* message = db_ ? sqlite3_errmsg(db_.get()) : sqlite3_errstr(rc);
  return Status::error(errorCodeFor(rc), what + " " + path_ + ": " + message, path_);
}

Database::Cache::~Cache() {
  for (auto& entry : idle) sqlite3_finalize(entry.second);
}

sqlite3_stmt* Database::takeCached(const std::string& sql) {
  auto it = cache_->idle.find(sql);
  if (it == cache_->idle.end()) return nullptr;
  sqlite3_stmt* stmt = it->second;
  cache_->idle.erase(it);
  return stmt;
}

void Database::giveBack(std::string sql, sqlite3_stmt* stmt) {
  sqlite3_reset(stmt);
  sqlite3_clear_bindings(stmt);
  if (cache_ && cache_->idle.size() < Cache::kMaxIdle && cache_->idle.emplace(std::move(sql), stmt).second) return;
  sqlite3_finalize(stmt);
}

Result<Statement> Statement::prepare(Database& db, const char* sql, std::string what) {
  std::string text(sql);
  if (sqlite3_stmt* cached = db.takeCached(text)) return Statement(cached, &db, std::move(text), std::move(what));
  sqlite3_stmt* raw = nullptr;
  const int rc = sqlite3_prepare_v2(db.get(), sql, -1, &raw, nullptr);
  if (rc != SQLITE_OK) {
    if (raw) sqlite3_finalize(raw);
    return db.error(rc, what);
  }
  return Statement(raw, &db, std::move(text), std::move(what));
}

Statement::Statement(Statement&& other) noexcept
    : stmt_(std::exchange(other.stmt_, nullptr)),
      db_(other.db_),
      sql_(std::move(other.sql_)),
      what_(std::move(other.what_)),
      bindRc_(other.bindRc_),
      lastRc_(other.lastRc_) {}

Statement& Statement::operator=(Statement&& other) noexcept {
  if (this != &other) {
    release();
    stmt_ = std::exchange(other.stmt_, nullptr);
    db_ = other.db_;
    sql_ = std::move(other.sql_);
    what_ = std::move(other.what_);
    bindRc_ = other.bindRc_;
    lastRc_ = other.lastRc_;
  }
  return *this;
}

Statement::~Statement() { release(); }

void Statement::release() {
  if (stmt_ == nullptr) return;
  db_->giveBack(std::move(sql_), stmt_);
  stmt_ = nullptr;
}

void Statement::noteBind(int rc) {
  if (rc != SQLITE_OK && bindRc_ == SQLITE_OK) bindRc_ = rc;
}

Statement& Statement::bind(int index, int64_t value) {
  noteBind(sqlite3_bind_int64(stmt_, index, value));
  return *this;
}

Statement& Statement::bind(int index, const std::string& text) {
  noteBind(sqlite3_bind_text64(stmt_, index, text.data(), text.size(), SQLITE_TRANSIENT, SQLITE_UTF8));
  return *this;
}

Statement& Statement::bind(int index, const char* text) { return bind(index, std::string(text)); }

Statement& Statement::bind(int index, const std::optional<int64_t>& value) {
  return value ? bind(index, *value) : bindNull(index);
}

Statement& Statement::bindBlob(int index, const std::string& bytes) {
  // A zero-length blob must still be a blob, not NULL: sqlite3_bind_blob64 with a null pointer
  // binds NULL, so point at a valid empty buffer.
  static const char kEmpty = 0;
  const void* data = bytes.empty() ? static_cast<const void*>(&kEmpty) : bytes.data();
  noteBind(sqlite3_bind_blob64(stmt_, index, data, bytes.size(), SQLITE_TRANSIENT));
  return *this;
}

Statement& Statement::bindNull(int index) {
  noteBind(sqlite3_bind_null(stmt_, index));
  return *this;
}

Result<bool> Statement::step() {
  if (bindRc_ != SQLITE_OK) {
    lastRc_ = bindRc_;
    return Status::error(errorCodeFor(bindRc_), what_ + " " + db_->path() + ": bind: " + sqlite3_errstr(bindRc_),
                         db_->path());
  }
  const int rc = sqlite3_step(stmt_);
  lastRc_ = rc;
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return db_->error(rc, what_);
}

Status Statement::run() {
  for (;;) {
    auto row = step();
    if (!row) {
      reset();
      return row.status();
    }
    if (!*row) break;
  }
  reset();
  return Status::ok();
}

void Statement::reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
  bindRc_ = SQLITE_OK;
}

int64_t Statement::columnInt(int column) const { return sqlite3_column_int64(stmt_, column); }

std::optional<int64_t> Statement::columnOptionalInt(int column) const {
  if (columnIsNull(column)) return std::nullopt;
  return columnInt(column);
}

std::string Statement::columnText(int column) const {
  const auto* text = sqlite3_column_text(stmt_, column);
  if (!text) return {};
  return std::string(reinterpret_cast<const char*>(text), static_cast<size_t>(sqlite3_column_bytes(stmt_, column)));
}

std::string Statement::columnBlob(int column) const {
  const void* data = sqlite3_column_blob(stmt_, column);
  if (!data) return {};
  return std::string(static_cast<const char*>(data), static_cast<size_t>(sqlite3_column_bytes(stmt_, column)));
}

bool Statement::columnIsNull(int column) const { return sqlite3_column_type(stmt_, column) == SQLITE_NULL; }

namespace {

// BEGIN, COMMIT and ROLLBACK through the statement cache, like every other statement.
Status runCached(Database& db, const char* sql, const std::string& what) {
  auto stmt = Statement::prepare(db, sql, what);
  if (!stmt) return stmt.status();
  return stmt->run();
}

}  // namespace

Result<std::unique_ptr<Transaction>> Transaction::begin(Database& db, Mode mode, const std::string& what) {
  Status st = runCached(db, mode == Mode::kWrite ? sql::kBeginWrite : sql::kBeginRead, what);
  if (!st) return st;
  return std::unique_ptr<Transaction>(new Transaction(db, what));
}

Transaction::~Transaction() {
  if (!open_) return;
  // Rolling back can only fail if the transaction is already gone (SQLite rolled it back on an
  // I/O error); either way nothing of it is committed.
  (void)runCached(db_, sql::kRollback, what_);
}

Status Transaction::commit() {
  Status st = runCached(db_, sql::kCommit, what_);
  // On a failed COMMIT (e.g. SQLITE_BUSY) the transaction stays open; the destructor rolls it back.
  if (st) open_ = false;
  return st;
}

}  // namespace pim::sqlite
