// The SQLite wrappers of state/sqlite.h: the statement cache must reuse prepared statements and
// must never keep a read snapshot open between uses (a daemon's idle statements would otherwise
// pin the WAL and block every checkpoint).
#include <sqlite3.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <string>

#include "state/sqlite.h"
#include "tests/support/temp_dir.h"

using pim::sqlite::Database;
using pim::sqlite::Statement;
using pim::sqlite::Transaction;

namespace {

Database openAt(const std::string& path) {
  auto db = Database::open(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  REQUIRE(db.isOk());
  REQUIRE(db->exec("PRAGMA journal_mode = WAL", "wal").isOk());
  return std::move(*db);
}

// Busy flag of a TRUNCATE checkpoint: 0 when no reader holds a snapshot of the WAL.
int checkpointBusy(Database& db) {
  auto stmt = Statement::prepare(db, "PRAGMA wal_checkpoint(TRUNCATE)", "checkpoint");
  REQUIRE(stmt.isOk());
  auto row = stmt->step();
  REQUIRE(row.isOk());
  REQUIRE(*row);
  return static_cast<int>(stmt->columnInt(0));
}

}  // namespace

TEST_CASE("sqlite: prepared statements are cached and reused", "[state]") {
  pim::test::TempDir dir;
  Database db = openAt(dir.path() + "/cache.db");
  REQUIRE(db.exec("CREATE TABLE t (v INTEGER)", "create").isOk());
  const char* insert = "INSERT INTO t (v) VALUES (?1)";
  CHECK(db.cachedStatements() == 0);

  sqlite3_stmt* first = nullptr;
  {
    auto stmt = Statement::prepare(db, insert, "insert");
    REQUIRE(stmt.isOk());
    first = sqlite3_next_stmt(db.get(), nullptr);
    REQUIRE(stmt->bind(1, int64_t{1}).run().isOk());
  }
  CHECK(db.cachedStatements() == 1);
  {
    auto stmt = Statement::prepare(db, insert, "insert");
    REQUIRE(stmt.isOk());
    CHECK(db.cachedStatements() == 0);                     // taken out while in use
    CHECK(sqlite3_next_stmt(db.get(), nullptr) == first);  // the same prepared statement
    // A nested use of the same text gets a statement of its own.
    auto nested = Statement::prepare(db, insert, "insert");
    REQUIRE(nested.isOk());
    REQUIRE(stmt->bind(1, int64_t{2}).run().isOk());
    REQUIRE(nested->bind(1, int64_t{3}).run().isOk());
  }
  CHECK(db.cachedStatements() == 1);  // one idle copy per text; the other was finalised
  auto count = Statement::prepare(db, "SELECT count(*), sum(v) FROM t", "count");
  REQUIRE(count.isOk());
  REQUIRE(*count->step());
  CHECK(count->columnInt(0) == 3);
  CHECK(count->columnInt(1) == 6);  // bindings were cleared and rebound, not reused
}

TEST_CASE("sqlite: an idle cached statement holds no read snapshot", "[state]") {
  pim::test::TempDir dir;
  const std::string path = dir.path() + "/snapshot.db";
  Database reader = openAt(path);
  REQUIRE(reader.exec("CREATE TABLE t (v INTEGER); INSERT INTO t VALUES (1), (2), (3)", "create").isOk());
  Database writer = openAt(path);

  {
    // Stepped once, not to the end: a read transaction is open until the statement is reset.
    auto stmt = Statement::prepare(reader, "SELECT v FROM t", "read");
    REQUIRE(stmt.isOk());
    auto row = stmt->step();
    REQUIRE(row.isOk());
    REQUIRE(*row);
    REQUIRE(writer.exec("INSERT INTO t VALUES (4)", "write").isOk());
    CHECK(checkpointBusy(writer) == 1);  // the open snapshot pins the WAL
  }
  REQUIRE(reader.cachedStatements() >= 1);
  REQUIRE(writer.exec("INSERT INTO t VALUES (5)", "write").isOk());
  CHECK(checkpointBusy(writer) == 0);  // back in the cache, reset: nothing pinned

  // Transactions go through the cache too and leave nothing open after a rollback.
  {
    auto txn = Transaction::begin(reader, Transaction::Mode::kRead, "read");
    REQUIRE(txn.isOk());
    auto stmt = Statement::prepare(reader, "SELECT count(*) FROM t", "count");
    REQUIRE(stmt.isOk());
    REQUIRE(*stmt->step());
    CHECK(stmt->columnInt(0) == 5);
  }
  REQUIRE(writer.exec("INSERT INTO t VALUES (6)", "write").isOk());
  CHECK(checkpointBusy(writer) == 0);
}
