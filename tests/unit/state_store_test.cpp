#include "state/state_store.h"

#include "state/schema.h"

#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>
#include "tests/support/temp_dir.h"

namespace fs = std::filesystem;
using pim::BackupInput;
using pim::ChangeInput;
using pim::ErrorCode;
using pim::GenerationInput;
using pim::GenerationOutcome;
using pim::OwnedKind;
using pim::StateStore;

namespace {

using TempDir = pim::test::TempDir;

std::unique_ptr<StateStore> openStore(const std::string& path, int64_t keep = 500) {
  auto store = StateStore::open(path, nullptr, keep);
  INFO(store.status().toString());
  REQUIRE(store.isOk());
  return std::move(store.value());
}

GenerationInput makeInput(std::optional<int64_t> revision, GenerationOutcome outcome, int changes = 0) {
  GenerationInput in;
  in.time = 1700000000 + (revision ? *revision : 0);
  in.source = "https://portal.example/v1/instances/p/access";
  in.revision = revision;
  in.etag = "\"etag-" + std::to_string(revision ? *revision : 0) + "\"";
  in.docHash = std::string(64, 'a');
  in.body = "{\"version\":1,\"revision\":" + std::to_string(revision ? *revision : 0) + "}";
  in.outcome = outcome;
  for (int i = 0; i < changes; ++i) {
    in.changes.push_back({"users", "user sftp-" + std::to_string(i), "create", "", "uid 1001"});
  }
  return in;
}

int64_t record(StateStore& store, const GenerationInput& in) {
  auto g = store.recordGeneration(in);
  INFO(g.status().toString());
  REQUIRE(g.isOk());
  return *g;
}

// Runs one integer-valued query on the file directly, bypassing StateStore.
int64_t rawInt(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(stmt) == SQLITE_ROW);
  const int64_t v = sqlite3_column_int64(stmt, 0);
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return v;
}

std::string rawText(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(stmt) == SQLITE_ROW);
  const auto* text = sqlite3_column_text(stmt, 0);
  std::string v = text ? reinterpret_cast<const char*>(text) : "";
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return v;
}

void rawExec(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(db);
}

mode_t modeOf(const std::string& path) {
  struct stat st {};
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

std::string readAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::vector<int64_t> historyNumbers(StateStore& store) {
  auto h = store.history();
  REQUIRE(h.isOk());
  std::vector<int64_t> out;
  for (const auto& r : *h) out.push_back(r.generation);
  return out;
}

}  // namespace

TEST_CASE("state: a fresh database gets the whole schema", "[state]") {
  TempDir dir;
  const std::string path = dir.file("var/lib/pim-access-agent/state.db");
  auto store = openStore(path);
  CHECK_FALSE(store->rebuilt());
  CHECK(store->movedAsidePath().empty());
  CHECK(store->databasePath() == path);
  CHECK(rawInt(path, "PRAGMA user_version") == StateStore::schemaVersion());
  CHECK(StateStore::schemaVersion() >= 1);
  for (const char* table : {"generations", "changes", "skipped", "backups", "owned", "meta", "pending_cycle"}) {
    INFO(table);
    CHECK(rawInt(path, std::string("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' "
                                   "AND name = '") +
                           table + "'") == 1);
  }
  // WAL is a property of the file: a second connection sees it.
  CHECK(rawText(path, "PRAGMA journal_mode") == "wal");

  CHECK(store->history()->empty());
  CHECK_FALSE(store->lastApplied()->has_value());
  CHECK(*store->highestAppliedStoreRevision() == 0);
  CHECK_FALSE(store->storeRevision()->has_value());
  CHECK_FALSE(store->pin()->has_value());
  CHECK_FALSE(store->pendingCycle()->has_value());
  CHECK_FALSE(store->pollStatus()->time.has_value());
  // Missing parents are created 0700.
  CHECK(modeOf(dir.file("var/lib/pim-access-agent")) == 0700);
  CHECK(modeOf(dir.file("var/lib")) == 0700);
}

TEST_CASE("state: keepGenerations must be at least 1", "[state]") {
  TempDir dir;
  auto store = StateStore::open(dir.file("state.db"), nullptr, 0);
  REQUIRE_FALSE(store.isOk());
  CHECK(store.status().code() == ErrorCode::kInvalid);
}

TEST_CASE("state: reopening keeps every table's data", "[state]") {
  TempDir dir;
  const std::string path = dir.file("state.db");
  int64_t g = 0;
  {
    auto store = openStore(path);
    auto in = makeInput(42, GenerationOutcome::kApplied, 3);
    in.skipped = {{"key-7", "expired"}};
    in.backups = {{"/etc/ssh/sshd_config.d/50-pim-access-agent.conf", true, "Match User x\n", 0644, 0, 0}};
    g = record(*store, in);
    REQUIRE(store->setPin(g).isOk());
    REQUIRE(store->addOwned(OwnedKind::kUser, "sftp-acme", g).isOk());
    REQUIRE(store->recordPoll(1700000100, "ok", "").isOk());
  }
  auto store = openStore(path);
  CHECK_FALSE(store->rebuilt());
  auto rec = store->generation(g);
  REQUIRE(rec.isOk());
  REQUIRE(rec->has_value());
  CHECK((*rec)->revision == 42);
  CHECK((*rec)->outcome == GenerationOutcome::kApplied);
  CHECK((*rec)->changeCount == 3);
  REQUIRE((*rec)->skipped.size() == 1);
  CHECK((*rec)->skipped[0].id == "key-7");
  CHECK((*rec)->skipped[0].reason == "expired");
  CHECK(store->changes(g)->size() == 3);
  CHECK(store->backups(g)->size() == 1);
  CHECK(*store->pin() == std::optional<int64_t>(g));
  CHECK(*store->isOwned(OwnedKind::kUser, "sftp-acme"));
  CHECK(store->pollStatus()->time == std::optional<int64_t>(1700000100));
  CHECK(*store->highestAppliedStoreRevision() == 42);
}

TEST_CASE("state: the file is 0600 and its directory 0700 even with umask 0", "[state]") {
  TempDir dir;
  const std::string path = dir.file("sub/state.db");
  const mode_t old = ::umask(0);
  {
    auto store = openStore(path);
    record(*store, makeInput(1, GenerationOutcome::kApplied, 1));
    CHECK(modeOf(path) == 0600);
    // SQLite gives the side files the database's mode; they exist while a connection is open.
    REQUIRE(fs::exists(path + "-wal"));
    CHECK(modeOf(path + "-wal") == 0600);
    CHECK(modeOf(path + "-shm") == 0600);
    CHECK(modeOf(dir.file("sub")) == 0700);
  }
  ::umask(old);

  SECTION("an existing file with a loose mode is tightened") {
    REQUIRE(::chmod(path.c_str(), 0644) == 0);
    auto store = openStore(path);
    CHECK(modeOf(path) == 0600);
    CHECK(store->history()->size() == 1);
  }
}

TEST_CASE("state: a symbolic link at the path is refused", "[state]") {
  TempDir dir;
  const std::string target = dir.file("elsewhere.db");
  const std::string path = dir.file("state.db");

  SECTION("at the database") {
    fs::create_symlink(target, path);
    auto store = StateStore::open(path, nullptr);
    REQUIRE_FALSE(store.isOk());
    CHECK(store.status().code() == ErrorCode::kUnsafe);
    CHECK(store.status().message().find("symbolic link") != std::string::npos);
    CHECK_FALSE(fs::exists(target));  // nothing created through the link
  }
  SECTION("at the WAL file") {
    fs::create_symlink(target, path + "-wal");
    auto store = StateStore::open(path, nullptr);
    REQUIRE_FALSE(store.isOk());
    CHECK(store.status().code() == ErrorCode::kUnsafe);
    CHECK_FALSE(fs::exists(target));
  }
  SECTION("a hard-linked database") {
    { auto store = openStore(path); }
    fs::create_hard_link(path, target);
    auto store = StateStore::open(path, nullptr);
    REQUIRE_FALSE(store.isOk());
    CHECK(store.status().code() == ErrorCode::kUnsafe);
  }
}

TEST_CASE("state: an unusable database is moved aside and rebuilt", "[state]") {
  TempDir dir;
  const std::string path = dir.file("state.db");
  std::string original;

  SECTION("not a database") {
    original = std::string(8192, '\x5a');
    std::ofstream(path, std::ios::binary) << original;
  }
  SECTION("a schema newer than this build") {
    { auto store = openStore(path); }
    rawExec(path, "PRAGMA user_version = 999");
    original = readAll(path);
  }
  SECTION("damaged pages (integrity check or corruption error)") {
    {
      auto store = openStore(path);
      for (int i = 1; i <= 60; ++i) record(*store, makeInput(i, GenerationOutcome::kApplied, 20));
    }  // the last close checkpoints the WAL into the file
    REQUIRE(fs::file_size(path) > 16 * 4096);
    {
      std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
      f.seekp(4096 * 3);  // keep the header page intact: damage b-tree pages
      const std::string junk(4096 * 8, '\xff');
      f.write(junk.data(), static_cast<std::streamsize>(junk.size()));
    }
    original = readAll(path);
  }

  auto store = openStore(path);
  CHECK(store->rebuilt());
  const std::string aside = store->movedAsidePath();
  CHECK(aside.rfind(path + ".corrupt-", 0) == 0);
  REQUIRE(fs::exists(aside));
  CHECK(readAll(aside) == original);  // kept as found, for an autopsy
  // The fresh database works and is empty.
  CHECK(store->history()->empty());
  CHECK(record(*store, makeInput(1, GenerationOutcome::kApplied)) >= 1);
  CHECK(modeOf(path) == 0600);
  // Opening again finds a healthy database.
  store.reset();
  auto again = openStore(path);
  CHECK_FALSE(again->rebuilt());
  CHECK(again->history()->size() == 1);
}

TEST_CASE("state: a busy database is not mistaken for a corrupt one", "[state]") {
  TempDir dir;
  const std::string path = dir.file("state.db");
  { record(*openStore(path), makeInput(1, GenerationOutcome::kApplied)); }
  // Another process holds the write lock with an uncommitted write.
  sqlite3* other = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &other) == SQLITE_OK);
  REQUIRE(sqlite3_exec(other, "BEGIN IMMEDIATE; INSERT INTO meta (key, value) VALUES ('x', 1);", nullptr, nullptr,
                       nullptr) == SQLITE_OK);
  auto store = openStore(path);
  CHECK_FALSE(store->rebuilt());
  CHECK(store->history()->size() == 1);  // readers are not blocked in WAL mode
  sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr);
  sqlite3_close(other);
}

TEST_CASE("state: retention keeps the newest generations and protected ones", "[state]") {
  TempDir dir;
  const std::string path = dir.file("state.db");

  SECTION("only the newest are kept, children cascade, numbers are never reused") {
    auto store = openStore(path, 5);
    for (int i = 1; i <= 12; ++i) record(*store, makeInput(i, GenerationOutcome::kApplied, 2));
    CHECK(historyNumbers(*store) == std::vector<int64_t>{12, 11, 10, 9, 8});
    CHECK_FALSE(store->generation(7)->has_value());
    CHECK(store->changes(7)->empty());
    CHECK(rawInt(path, "SELECT COUNT(*) FROM changes") == 5 * 2);
    CHECK(*store->highestAppliedStoreRevision() == 12);
    CHECK(record(*store, makeInput(13, GenerationOutcome::kApplied)) == 13);
  }
  SECTION("the pinned and the applied generation are never pruned") {
    auto store = openStore(path, 5);
    const int64_t applied = record(*store, makeInput(1, GenerationOutcome::kApplied, 1));
    const int64_t pinned = record(*store, makeInput(2, GenerationOutcome::kRecorded, 1));
    REQUIRE(store->setPin(pinned).isOk());
    for (int i = 3; i <= 12; ++i) record(*store, makeInput(i, GenerationOutcome::kRecorded, 1));
    CHECK(historyNumbers(*store) == std::vector<int64_t>{12, 11, 10, 9, 8, pinned, applied});
    CHECK((*store->lastApplied())->generation == applied);
    CHECK(store->changes(pinned)->size() == 1);
    // Lifting the pin lets the next record prune it.
    REQUIRE(store->setPin(std::nullopt).isOk());
    record(*store, makeInput(13, GenerationOutcome::kRecorded));
    CHECK(historyNumbers(*store) == std::vector<int64_t>{13, 12, 11, 10, 9, applied});
  }
  SECTION("the generations of a pending cycle are never pruned") {
    auto store = openStore(path, 2);
    const int64_t first = record(*store, makeInput(1, GenerationOutcome::kApplied));
    auto in = makeInput(2, GenerationOutcome::kPending);
    in.beginCycle = true;
    const int64_t pending = record(*store, in);
    for (int i = 3; i <= 6; ++i) record(*store, makeInput(i, GenerationOutcome::kRejected));
    const auto numbers = historyNumbers(*store);
    CHECK(std::set<int64_t>(numbers.begin(), numbers.end()) == std::set<int64_t>{6, 5, pending, first});
  }
}

TEST_CASE("state: recordGeneration is all or nothing", "[state]") {
  TempDir dir;
  const std::string path = dir.file("state.db");
  auto store = openStore(path);
  auto in = makeInput(9, GenerationOutcome::kApplied, 4);
  in.skipped = {{"acc-1", "bad username"}};
  in.beginCycle = true;
  // The same path twice violates UNIQUE(generation, path) after the generation row, its changes
  // and skipped entries were inserted.
  in.backups = {{"/etc/passwd", true, "root:x:0:0::/root:/bin/sh\n", 0644, 0, 0},
                {"/etc/passwd", true, "other\n", 0644, 0, 0}};
  auto g = store->recordGeneration(in);
  REQUIRE_FALSE(g.isOk());
  CHECK(g.status().code() == ErrorCode::kInvalid);
  CHECK(g.status().message().find(path) != std::string::npos);
  for (const char* table : {"generations", "changes", "skipped", "backups", "meta", "pending_cycle"}) {
    INFO(table);
    CHECK(rawInt(path, std::string("SELECT COUNT(*) FROM ") + table) == 0);
  }
  CHECK(*store->highestAppliedStoreRevision() == 0);
  CHECK_FALSE(store->pendingCycle()->has_value());
  // The store is still usable and the failed number was not consumed.
  in.backups.pop_back();
  CHECK(record(*store, in) == 1);
  CHECK(store->backups(1)->size() == 1);
}

TEST_CASE("state: history, changes and backups read back in order", "[state]") {
  TempDir dir;
  auto store = openStore(dir.file("state.db"));
  const int64_t g1 = record(*store, makeInput(1, GenerationOutcome::kApplied, 0));
  auto in2 = makeInput(2, GenerationOutcome::kFailed, 2);
  in2.error = "sshd -t: bad option";
  const int64_t g2 = record(*store, in2);
  auto in3 = makeInput(3, GenerationOutcome::kApplied, 5);
  in3.skipped = {{"key-1", "expired"}, {"acc-2", "invalid folder"}};
  const std::string binary(
      "\x00\x01\xff"
      "abc\x00",
      7);
  in3.backups = {{"/home/akeneo/.ssh/authorized_keys", true, binary, 0600, 1000, 1000},
                 {"/etc/ssh/sshd_config.d/50-pim-access-agent.conf", false, "", 0, 0, 0}};
  const int64_t g3 = record(*store, in3);

  auto h = store->history();
  REQUIRE(h.isOk());
  REQUIRE(h->size() == 3);
  CHECK((*h)[0].generation == g3);
  CHECK((*h)[1].generation == g2);
  CHECK((*h)[2].generation == g1);
  CHECK((*h)[0].changeCount == 5);
  CHECK((*h)[0].skippedCount == 2);
  CHECK((*h)[1].changeCount == 2);
  CHECK((*h)[1].outcome == GenerationOutcome::kFailed);
  CHECK((*h)[1].error == "sshd -t: bad option");
  CHECK((*h)[2].changeCount == 0);
  CHECK((*h)[0].body.empty());  // listings leave the document out
  CHECK((*h)[0].revision == 3);
  CHECK((*h)[0].time == in3.time);
  CHECK((*h)[0].etag == in3.etag);
  CHECK(store->history(2)->size() == 2);
  CHECK((*store->history(1))[0].generation == g3);

  auto full = store->generation(g3);
  REQUIRE(full->has_value());
  CHECK((*full)->body == in3.body);
  CHECK((*full)->docHash == in3.docHash);
  CHECK((*full)->source == in3.source);
  CHECK((*full)->skipped.size() == 2);
  CHECK((*full)->skipped[1].id == "acc-2");
  CHECK_FALSE(store->generation(99)->has_value());

  auto changes = store->changes(g3);
  REQUIRE(changes->size() == 5);
  for (size_t i = 0; i < changes->size(); ++i) {
    CHECK((*changes)[i].seq == static_cast<int64_t>(i + 1));
    CHECK((*changes)[i].object == "user sftp-" + std::to_string(i));
    CHECK((*changes)[i].provider == "users");
    CHECK((*changes)[i].action == "create");
    CHECK((*changes)[i].after == "uid 1001");
  }
  REQUIRE(store->appendChanges(g3, {{"sshd", "drop-in", "update", "a", "b"}}).isOk());
  CHECK(store->changes(g3)->back().seq == 6);
  CHECK(store->appendChanges(99, {{"sshd", "x", "y", "", ""}}).code() == ErrorCode::kNotFound);

  auto backups = store->backups(g3);
  REQUIRE(backups->size() == 2);
  // Ordered by path.
  CHECK((*backups)[0].path == "/etc/ssh/sshd_config.d/50-pim-access-agent.conf");
  CHECK_FALSE((*backups)[0].existed);
  CHECK((*backups)[1].content == binary);
  CHECK((*backups)[1].existed);
  CHECK((*backups)[1].mode == 0600);
  CHECK((*backups)[1].uid == 1000);
  CHECK((*backups)[1].gid == 1000);
  // addBackup keeps the first version of a path.
  REQUIRE(store->addBackup(g2, {"/etc/group", true, "first", 0644, 0, 0}).isOk());
  REQUIRE(store->addBackup(g2, {"/etc/group", true, "second", 0644, 0, 0}).isOk());
  REQUIRE(store->backups(g2)->size() == 1);
  CHECK((*store->backups(g2))[0].content == "first");
  CHECK(store->addBackup(99, {"/etc/group", true, "", 0644, 0, 0}).code() == ErrorCode::kNotFound);
}

TEST_CASE("state: the generation in force and the replay bar", "[state]") {
  TempDir dir;
  auto store = openStore(dir.file("state.db"));
  const int64_t g1 = record(*store, makeInput(10, GenerationOutcome::kApplied));
  record(*store, makeInput(5, GenerationOutcome::kRejected));
  auto rollback = makeInput(10, GenerationOutcome::kRolledBack);
  rollback.rollbackOf = g1;
  const int64_t g3 = record(*store, rollback);
  const int64_t g4 = record(*store, makeInput(12, GenerationOutcome::kPending));

  auto applied = store->lastApplied();
  REQUIRE(applied->has_value());
  CHECK((*applied)->generation == g3);
  CHECK((*applied)->rollbackOf == std::optional<int64_t>(g1));
  CHECK(*store->highestAppliedStoreRevision() == 10);
  CHECK(*store->storeRevision() == std::optional<int64_t>(12));
  CHECK((*store->latest())->generation == g4);

  // A document whose cycle did not grant everything is in force all the same (its revocations
  // are on the host), and raises the bar.
  for (auto outcome : {GenerationOutcome::kFailed, GenerationOutcome::kPartial, GenerationOutcome::kApplied}) {
    INFO(outcomeName(outcome));
    REQUIRE(store->updateOutcome(g4, outcome).isOk());
    CHECK((*store->lastApplied())->generation == g4);
    CHECK(*store->highestAppliedStoreRevision() == 12);
  }
  CHECK(store->updateOutcome(99, GenerationOutcome::kApplied).code() == ErrorCode::kNotFound);

  // A rollback never raises the bar, and the bar never goes down.
  auto old = makeInput(50, GenerationOutcome::kRolledBack);
  record(*store, old);
  CHECK(*store->highestAppliedStoreRevision() == 12);
  record(*store, makeInput(11, GenerationOutcome::kUnchanged));
  CHECK(*store->highestAppliedStoreRevision() == 12);
  // A rejected document with a lower revision is still the store's latest.
  CHECK(*store->storeRevision() == std::optional<int64_t>(11));
}

TEST_CASE("state: owned objects", "[state]") {
  TempDir dir;
  const std::string path = dir.file("state.db");
  auto store = openStore(path);
  CHECK_FALSE(*store->isOwned(OwnedKind::kUser, "sftp-b"));
  REQUIRE(store->addOwned(OwnedKind::kUser, "sftp-b", 1).isOk());
  REQUIRE(store->addOwned(OwnedKind::kUser, "sftp-a", 2).isOk());
  REQUIRE(store->addOwned(OwnedKind::kUser, "sftp-a", 3).isOk());  // idempotent
  REQUIRE(store->addOwned(OwnedKind::kMount, "/srv/pim-sftp/sftp-a/transfer", std::nullopt).isOk());
  CHECK(*store->isOwned(OwnedKind::kUser, "sftp-a"));
  CHECK_FALSE(*store->isOwned(OwnedKind::kGroup, "sftp-a"));  // kinds are separate
  CHECK(*store->owned(OwnedKind::kUser) == std::vector<std::string>{"sftp-a", "sftp-b"});
  CHECK(*store->owned(OwnedKind::kMount) == std::vector<std::string>{"/srv/pim-sftp/sftp-a/transfer"});
  CHECK(store->owned(OwnedKind::kKey)->empty());
  CHECK(rawInt(path, "SELECT created_generation FROM owned WHERE name = 'sftp-a'") == 2);
  REQUIRE(store->removeOwned(OwnedKind::kUser, "sftp-a").isOk());
  REQUIRE(store->removeOwned(OwnedKind::kUser, "sftp-a").isOk());  // idempotent
  CHECK_FALSE(*store->isOwned(OwnedKind::kUser, "sftp-a"));
  CHECK(*store->owned(OwnedKind::kUser) == std::vector<std::string>{"sftp-b"});
}

TEST_CASE("state: pin and poll status", "[state]") {
  TempDir dir;
  auto store = openStore(dir.file("state.db"));
  const int64_t g = record(*store, makeInput(1, GenerationOutcome::kApplied));
  CHECK_FALSE(store->pin()->has_value());
  CHECK(store->setPin(g + 5).code() == ErrorCode::kNotFound);
  CHECK_FALSE(store->pin()->has_value());
  REQUIRE(store->setPin(g).isOk());
  CHECK(*store->pin() == std::optional<int64_t>(g));
  REQUIRE(store->setPin(std::nullopt).isOk());
  CHECK_FALSE(store->pin()->has_value());

  REQUIRE(store->recordPoll(100, "unreachable", "GET https://portal: connection refused").isOk());
  auto poll = store->pollStatus();
  REQUIRE(poll.isOk());
  CHECK(poll->time == std::optional<int64_t>(100));
  CHECK(poll->outcome == "unreachable");
  CHECK(poll->error == "GET https://portal: connection refused");
  REQUIRE(store->recordPoll(200, "ok", "").isOk());
  poll = store->pollStatus();
  CHECK(poll->time == std::optional<int64_t>(200));
  CHECK(poll->outcome == "ok");
  CHECK(poll->error.empty());
}

TEST_CASE("state: the pending-cycle journal survives a crash", "[state]") {
  TempDir dir;
  const std::string path = dir.file("state.db");
  int64_t g1 = 0;
  int64_t g2 = 0;
  {
    auto store = openStore(path);
    g1 = record(*store, makeInput(1, GenerationOutcome::kApplied));
    g2 = record(*store, makeInput(2, GenerationOutcome::kPending));
    CHECK(store->beginCycle(g2 + 1, g1).code() == ErrorCode::kNotFound);
    REQUIRE(store->beginCycle(g2, g1).isOk());
    CHECK(store->beginCycle(g2, g1).code() == ErrorCode::kInvalid);
    // No endCycle: the process "crashes" here.
  }
  auto store = openStore(path);
  auto pending = store->pendingCycle();
  REQUIRE(pending.isOk());
  REQUIRE(pending->has_value());
  CHECK((*pending)->generation == g2);
  CHECK((*pending)->previousGeneration == std::optional<int64_t>(g1));
  // The pending generation is not in force.
  CHECK((*store->lastApplied())->generation == g1);

  REQUIRE(store->finishCycle(GenerationOutcome::kRejected, "refused after a crash").isOk());
  CHECK_FALSE(store->pendingCycle()->has_value());
  CHECK((*store->generation(g2))->outcome == GenerationOutcome::kRejected);
  CHECK((*store->generation(g2))->error == "refused after a crash");
  CHECK(store->finishCycle(GenerationOutcome::kApplied).code() == ErrorCode::kNotFound);

  // recordGeneration can open the journal atomically, naming the generation in force.
  auto in = makeInput(3, GenerationOutcome::kPending);
  in.beginCycle = true;
  const int64_t g3 = record(*store, in);
  pending = store->pendingCycle();
  REQUIRE(pending->has_value());
  CHECK((*pending)->generation == g3);
  CHECK((*pending)->previousGeneration == std::optional<int64_t>(g1));
  CHECK_FALSE(store->recordGeneration(in).isOk());  // one cycle at a time
  REQUIRE(store->finishCycle(GenerationOutcome::kApplied).isOk());
  CHECK((*store->lastApplied())->generation == g3);
  CHECK(*store->highestAppliedStoreRevision() == 3);

  REQUIRE(store->beginCycle(g3, std::nullopt).isOk());
  REQUIRE(store->endCycle().isOk());
  CHECK_FALSE(store->pendingCycle()->has_value());
  REQUIRE(store->endCycle().isOk());  // idempotent
}

TEST_CASE("state: two handles on one file interleave writes", "[state]") {
  TempDir dir;
  const std::string path = dir.file("state.db");
  auto a = openStore(path);
  auto b = openStore(path);
  std::vector<int64_t> numbers;
  for (int i = 1; i <= 20; ++i) {
    numbers.push_back(record(*a, makeInput(2 * i, GenerationOutcome::kApplied, 1)));
    numbers.push_back(record(*b, makeInput(2 * i + 1, GenerationOutcome::kRecorded, 1)));
  }
  for (size_t i = 1; i < numbers.size(); ++i) CHECK(numbers[i] == numbers[i - 1] + 1);
  REQUIRE(a->addOwned(OwnedKind::kGroup, "pimtransfer", numbers[0]).isOk());
  CHECK(*b->isOwned(OwnedKind::kGroup, "pimtransfer"));
  REQUIRE(b->setPin(numbers[3]).isOk());
  CHECK(*a->pin() == std::optional<int64_t>(numbers[3]));
  CHECK(a->history()->size() == 40);
  CHECK(*b->highestAppliedStoreRevision() == 40);

  SECTION("and from two threads at once") {
    auto writer = [&path](int base, bool* ok) {
      auto store = StateStore::open(path, nullptr);
      *ok = store.isOk();
      for (int i = 0; i < 50 && *ok; ++i) {
        *ok = (*store)->recordGeneration(makeInput(base + i, GenerationOutcome::kRecorded, 3)).isOk() &&
              (*store)->addOwned(OwnedKind::kKey, std::to_string(base + i), std::nullopt).isOk();
      }
    };
    bool ok1 = false;
    bool ok2 = false;
    std::thread t1(writer, 1000, &ok1);
    std::thread t2(writer, 2000, &ok2);
    t1.join();
    t2.join();
    CHECK(ok1);
    CHECK(ok2);
    CHECK(a->history()->size() == 140);
    CHECK(a->owned(OwnedKind::kKey)->size() == 100);
    CHECK(rawInt(path, "SELECT COUNT(*) FROM changes") == 40 + 100 * 3);
  }
}

TEST_CASE("state: a forked process writes while this one does", "[state]") {
  TempDir dir;
  const std::string path = dir.file("state.db");
  constexpr int kEach = 60;
  // Both processes create the database at the same time too: migrations must not collide.
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    int rc = 0;
    auto store = StateStore::open(path, nullptr);
    if (!store.isOk()) rc = 2;
    for (int i = 0; rc == 0 && i < kEach; ++i) {
      if (!(*store)->recordGeneration(makeInput(10000 + i, GenerationOutcome::kRecorded, 5)).isOk() ||
          !(*store)->addOwned(OwnedKind::kUser, "child-" + std::to_string(i), std::nullopt).isOk()) {
        rc = 3;
      }
    }
    ::_exit(rc);  // no Catch2 or static destructors in the child
  }
  auto store = openStore(path);
  int failures = 0;
  for (int i = 0; i < kEach; ++i) {
    if (!store->recordGeneration(makeInput(i + 1, GenerationOutcome::kApplied, 5)).isOk()) {
      ++failures;
    }
    if (!store->addOwned(OwnedKind::kUser, "parent-" + std::to_string(i), std::nullopt).isOk()) {
      ++failures;
    }
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(failures == 0);
  const auto numbers = historyNumbers(*store);
  CHECK(numbers.size() == 2 * kEach);
  CHECK(std::set<int64_t>(numbers.begin(), numbers.end()).size() == 2 * kEach);
  CHECK(store->owned(OwnedKind::kUser)->size() == 2 * kEach);
  CHECK(rawInt(path, "SELECT COUNT(*) FROM changes") == 2 * kEach * 5);
  CHECK(rawText(path, "PRAGMA integrity_check") == "ok");
}

TEST_CASE("state: a schema 1 database is migrated with its history, numbering and children", "[state]") {
  TempDir dir;
  const std::string path = dir.file("state.db");
  // A database as a released agent of schema 1 left it: two generations (the third was pruned),
  // changes and skipped entries of the second, the pin and the journal.
  rawExec(path, std::string(pim::sql::migrations().at(0).sql) +
                    "PRAGMA user_version = 1;"
                    "INSERT INTO generations (generation, time, revision, etag, doc_hash, body, outcome, rollback_of) "
                    "VALUES (2, 100, 7, '\"e7\"', 'h7', '{}', 'applied', NULL),"
                    "       (3, 200, 7, '\"e7\"', 'h7', '{}', 'rolled_back', 2);"
                    "UPDATE sqlite_sequence SET seq = 4 WHERE name = 'generations';"
                    "INSERT INTO changes VALUES (3, 1, 'sshd', '/x', 'write', 'a', 'b');"
                    "INSERT INTO skipped VALUES (3, 1, 'k-bad', 'not base64');"
                    "INSERT INTO meta VALUES ('pinned_generation', 3);");
  auto store = openStore(path);
  CHECK(rawInt(path, "PRAGMA user_version") == StateStore::schemaVersion());
  auto g3 = store->generation(3);
  REQUIRE(g3->has_value());
  CHECK((*g3)->outcome == GenerationOutcome::kRolledBack);
  CHECK((*g3)->rollbackOf == std::optional<int64_t>(2));
  CHECK((*g3)->skipped.size() == 1);
  CHECK(store->changes(3)->size() == 1);
  CHECK(rawText(path, "SELECT cause FROM generations WHERE generation = 3") == "rollback");
  CHECK(rawText(path, "SELECT cause FROM generations WHERE generation = 2") == "store");
  CHECK(*store->pin() == std::optional<int64_t>(3));
  // Numbers are never reused: the next one is 5, not 4 (4 existed and was pruned) nor 3.
  CHECK(record(*store, makeInput(8, GenerationOutcome::kPartial)) == 5);
  CHECK((*store->lastApplied())->outcome == GenerationOutcome::kPartial);
  // Foreign keys hold again after the rebuild: a change for a missing generation is refused,
  // and removing a generation takes its children along.
  CHECK(store->appendChanges(99, {{"p", "o", "a", "", ""}}).code() == ErrorCode::kNotFound);
  CHECK(rawInt(path, "PRAGMA foreign_keys") == 0);  // (a new connection's default: per connection)
  rawExec(path, "PRAGMA foreign_keys = ON; DELETE FROM generations WHERE generation = 3;");
  CHECK(rawInt(path, "SELECT COUNT(*) FROM changes") == 0);
}

TEST_CASE("state: a pending sshd reload, recovery attempts and retries are remembered", "[state]") {
  TempDir dir;
  const std::string path = dir.file("state.db");
  int64_t g1 = 0;
  {
    auto store = openStore(path);
    CHECK(store->created());
    CHECK(*store->reloadPending() == "");
    REQUIRE(store->setReloadPending("reload sshd (systemctl reload ssh): exit code 1").isOk());
    auto in = makeInput(4, GenerationOutcome::kPending);
    in.beginCycle = true;
    g1 = record(*store, in);
    CHECK(*store->noteRecoveryAttempt() == 1);
    CHECK(*store->noteRecoveryAttempt() == 2);
  }
  auto store = openStore(path);
  CHECK_FALSE(store->created());
  CHECK(*store->reloadPending() == "reload sshd (systemctl reload ssh): exit code 1");
  CHECK(*store->noteRecoveryAttempt() == 3);
  // Finishing the cycle records its changes and skipped entries with the outcome, and resets the
  // count of recovery attempts.
  REQUIRE(store
              ->finishCycle(GenerationOutcome::kPartial, "sftp_chroots: mount x: busy",
                            {{"sshd", "/d", "write", "", ""}},
                            std::vector<pim::SkippedRecord>{{"sftp-x", "folder refused"}})
              .isOk());
  CHECK((*store->generation(g1))->outcome == GenerationOutcome::kPartial);
  CHECK((*store->generation(g1))->skipped.size() == 1);
  CHECK(store->changes(g1)->size() == 1);
  REQUIRE(store->beginCycle(g1, std::nullopt).isOk());
  CHECK(*store->noteRecoveryAttempt() == 1);
  REQUIRE(store->noteRetry(g1, 500).isOk());
  CHECK(rawInt(path, "SELECT attempts FROM generations WHERE generation = " + std::to_string(g1)) == 2);
  CHECK(rawInt(path, "SELECT last_time FROM generations WHERE generation = " + std::to_string(g1)) == 500);
  CHECK(store->noteRetry(99, 1).code() == ErrorCode::kNotFound);
  REQUIRE(store->finishCycle(GenerationOutcome::kApplied, "", {{"sshd", "/d", "reload", "", ""}}, std::nullopt).isOk());
  CHECK(store->changes(g1)->size() == 2);                // appended
  CHECK((*store->generation(g1))->skipped.size() == 1);  // kept when not given
  REQUIRE(store->setReloadPending("").isOk());
  CHECK(*store->reloadPending() == "");
}
