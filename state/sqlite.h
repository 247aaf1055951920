#pragma once
// Thin RAII wrappers over the SQLite C API: a connection, a prepared statement and a transaction
// guard. Errors come back as Status values naming the operation, the database file and SQLite's
// message; nothing here throws. Used only inside state/.

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "providers/result.h"

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

 private:
  struct Closer {
    void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
  };
  Database(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}

  std::unique_ptr<sqlite3, Closer> db_;
  std::string path_;
};

/// A prepared statement with bound parameters (1-based indexes, as in SQLite). Movable, finalised
/// on destruction. Bind errors are remembered and reported by the next step()/run().
class Statement {
 public:
  /// Prepares `sql` on `db`; `what` names the operation in error messages.
  static Result<Statement> prepare(Database& db, const char* sql, std::string what);

  Statement(Statement&&) noexcept = default;
  Statement& operator=(Statement&&) noexcept = default;
  ~Statement() = default;

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
  struct Finalizer {
    void operator()(sqlite3_stmt* stmt) const { sqlite3_finalize(stmt); }
  };
  Statement(sqlite3_stmt* stmt, Database* db, std::string what)
      : stmt_(stmt), db_(db), what_(std::move(what)) {}
  void noteBind(int rc);

  std::unique_ptr<sqlite3_stmt, Finalizer> stmt_;
  Database* db_;
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
  static Result<std::unique_ptr<Transaction>> begin(Database& db, Mode mode,
                                                    const std::string& what);
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
