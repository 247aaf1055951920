#pragma once
// Thin RAII wrappers over the SQLite C API: a connection, a prepared statement and a transaction
// guard. Errors come back as Status values naming the operation, the database file and SQLite's
// message; nothing here throws. Used only inside state/.

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "providers/core/result.h"

namespace pim::sqlite {

/// Maps an SQLite result code to the project's error codes (constraint -> kInvalid, misuse ->
/// kInternal, everything else -> kIo).
ErrorCode errorCodeFor(int rc);

/// True for the result codes that mean the file is not a usable database (SQLITE_NOTADB,
/// SQLITE_CORRUPT), as opposed to a busy, locked or I/O condition.
bool isCorruption(int rc);

/// An open connection. Movable, closes on destruction.
class Database {
 public:
  /// Opens `path` with sqlite3_open_v2 `flags`. On failure returns kIo with SQLite's message and
  /// sets `*rcOut` (when given) to the extended result code.
  static Result<Database> open(const std::string& path, int flags, int* rcOut = nullptr);

  Database(Database&&) noexcept = default;
  Database& operator=(Database&&) noexcept = default;
  ~Database() = default;

  sqlite3* get() const { return db_.get(); }
  const std::string& path() const { return path_; }

  /// Runs one or more SQL statements that bind nothing and return no rows wanted (schema,
  /// BEGIN/COMMIT). `what` names the operation for the error message.
  Status exec(const char* sql, const std::string& what);
  /// A Status for result code `rc` of operation `what`: "what PATH: message".
  Status error(int rc, const std::string& what) const;
  /// The extended result code of the last failed call on this connection.
  int lastErrorCode() const { return sqlite3_extended_errcode(db_.get()); }
  /// Prepared statements kept for reuse (idle, reset), for tests and the benchmark.
  size_t cachedStatements() const { return cache_ ? cache_->idle.size() : 0; }

 private:
  friend class Statement;
  struct Closer {
    void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
  };
  // Idle prepared statements by SQL text: a daemon runs the same few dozen statements at every
  // poll, and preparing (parsing, planning) was most of SQLite's cost. A statement is taken out
  // while in use (so nested uses of one SQL text each get their own) and reset before it is put
  // back, so that no idle statement holds a read snapshot. Finalised before the connection closes.
  struct Cache {
    static constexpr size_t kMaxIdle = 128;
    std::unordered_map<std::string, sqlite3_stmt*> idle;
    ~Cache();
  };
  Database(sqlite3* db, std::string path) : db_(db), path_(std::move(path)), cache_(std::make_unique<Cache>()) {}
  sqlite3_stmt* takeCached(const std::string& sql);
  void giveBack(std::string sql, sqlite3_stmt* stmt);

  std::unique_ptr<sqlite3, Closer> db_;
  std::string path_;
  std::unique_ptr<Cache> cache_;  // after db_: destroyed (statements finalised) before the close
};

/// A prepared statement with bound parameters (1-based indexes, as in SQLite). Movable, finalised
/// on destruction. Bind errors are remembered and reported by the next step()/run().
class Statement {
 public:
  /// Prepares `sql` on `db`; `what` names the operation in error messages.
  static Result<Statement> prepare(Database& db, const char* sql, std::string what);

  Statement(Statement&& other) noexcept;
  Statement& operator=(Statement&& other) noexcept;
  ~Statement();
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& bind(int index, int64_t value);
  Statement& bind(int index, const std::string& text);
  Statement& bind(int index, const char* text);
  Statement& bind(int index, const std::optional<int64_t>& value);  // nullopt -> NULL
  Statement& bindBlob(int index, const std::string& bytes);
  Statement& bindNull(int index);

  /// Steps once: true when a row is available, false when the statement is done. Errors carry
  /// SQLite's message; `lastRc()` then holds the extended result code.
  Result<bool> step();
  /// Steps to completion ignoring rows, then resets the statement and clears its bindings so it
  /// can be bound and run again.
  Status run();
  /// Resets the statement and clears its bindings.
  void reset();

  int64_t columnInt(int column) const;
  std::optional<int64_t> columnOptionalInt(int column) const;
  std::string columnText(int column) const;
  std::string columnBlob(int column) const;
  bool columnIsNull(int column) const;

  int lastRc() const { return lastRc_; }

 private:
  Statement(sqlite3_stmt* stmt, Database* db, std::string sql, std::string what)
      : stmt_(stmt), db_(db), sql_(std::move(sql)), what_(std::move(what)) {}
  void noteBind(int rc);
  void release();  // back to the connection's cache (reset) or finalised

  sqlite3_stmt* stmt_ = nullptr;
  Database* db_ = nullptr;
  std::string sql_;  // the text it was prepared from: its key in the cache
  std::string what_;
  int bindRc_ = SQLITE_OK;
  int lastRc_ = SQLITE_OK;
};

/// A transaction that rolls back on destruction unless committed.
class Transaction {
 public:
  enum class Mode {
    kRead,   // BEGIN (deferred): a consistent snapshot for several reads
    kWrite,  // BEGIN IMMEDIATE: takes the write lock up front, so no upgrade deadlock (busy
             // timeout applies while another process writes)
  };
  /// Begins a transaction on `db`. Errors (busy after the timeout, I/O) come back as a Status.
  static Result<std::unique_ptr<Transaction>> begin(Database& db, Mode mode, const std::string& what);
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;

  /// Commits; after an error the destructor rolls back.
  Status commit();

 private:
  Transaction(Database& db, std::string what) : db_(db), what_(std::move(what)) {}
  Database& db_;
  std::string what_;
  bool open_ = true;
};

}  // namespace pim::sqlite
