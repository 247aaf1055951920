// Benchmark for scripts/bench-state: records N generations of 10 changes each through
// StateStore (one transaction per generation, the store's way) and the same rows with one
// autocommit transaction per row, on the same schema and durability settings, and prints both
// times and their ratio. Not part of the build or the tests.

#include <sqlite3.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "state/schema.h"
#include "state/state_store.h"

namespace {

constexpr int kChangesPerGeneration = 10;

double secondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

pim::GenerationInput makeInput(int64_t revision) {
  pim::GenerationInput in;
  in.time = 1700000000 + revision;
  in.source = "https://portal.example/v1/instances/bench/access";
  in.revision = revision;
  in.etag = "\"" + std::to_string(revision) + "\"";
  in.docHash = std::string(64, 'a');
  in.body = std::string(2048, 'x');
  in.outcome = pim::GenerationOutcome::kApplied;
  for (int i = 0; i < kChangesPerGeneration; ++i) {
    in.changes.push_back({"users", "user sftp-" + std::to_string(i), "create", "", "uid 1001"});
  }
  return in;
}

void check(int rc, sqlite3* db, const char* what) {
  if (rc == SQLITE_OK || rc == SQLITE_DONE || rc == SQLITE_ROW) return;
  std::fprintf(stderr, "%s: %s\n", what, sqlite3_errmsg(db));
  std::exit(1);
}

// One autocommit transaction per row: the generation row, then each change row.
double autocommitPerRow(const std::string& path, int generations) {
  {
    auto store = pim::StateStore::open(path, nullptr, generations + 1);  // creates the schema
    if (!store) {
      std::fprintf(stderr, "%s\n", store.status().message().c_str());
      std::exit(1);
    }
  }
  sqlite3* db = nullptr;
  check(sqlite3_open(path.c_str(), &db), db, "open");
  check(sqlite3_exec(db, pim::sql::kPragmaSynchronousFull, nullptr, nullptr, nullptr), db, "sync");
  check(sqlite3_exec(db, pim::sql::kPragmaForeignKeysOn, nullptr, nullptr, nullptr), db, "fk");
  sqlite3_stmt* gen = nullptr;
  sqlite3_stmt* change = nullptr;
  check(sqlite3_prepare_v2(db, pim::sql::kInsertGeneration, -1, &gen, nullptr), db, "prepare");
  check(sqlite3_prepare_v2(db, pim::sql::kInsertChange, -1, &change, nullptr), db, "prepare");
  const auto start = std::chrono::steady_clock::now();
  for (int g = 1; g <= generations; ++g) {
    const auto in = makeInput(g);
    sqlite3_bind_int64(gen, 1, in.time);
    sqlite3_bind_text(gen, 2, in.source.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(gen, 3, *in.revision);
    sqlite3_bind_text(gen, 4, in.etag.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(gen, 5, in.docHash.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(gen, 6, in.body.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(gen, 7, "applied", -1, SQLITE_STATIC);
    sqlite3_bind_text(gen, 8, "", -1, SQLITE_STATIC);
    sqlite3_bind_null(gen, 9);
    check(sqlite3_step(gen), db, "insert generation");
    sqlite3_reset(gen);
    const int64_t id = sqlite3_last_insert_rowid(db);
    int seq = 0;
    for (const auto& c : in.changes) {
      sqlite3_bind_int64(change, 1, id);
      sqlite3_bind_int64(change, 2, ++seq);
      sqlite3_bind_text(change, 3, c.provider.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(change, 4, c.object.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(change, 5, c.action.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(change, 6, c.before.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(change, 7, c.after.c_str(), -1, SQLITE_TRANSIENT);
      check(sqlite3_step(change), db, "insert change");
      sqlite3_reset(change);
    }
  }
  const double elapsed = secondsSince(start);
  sqlite3_finalize(gen);
  sqlite3_finalize(change);
  sqlite3_close(db);
  return elapsed;
}

double perGeneration(const std::string& path, int generations, int64_t keep) {
  auto store = pim::StateStore::open(path, nullptr, keep);
  if (!store) {
    std::fprintf(stderr, "%s\n", store.status().message().c_str());
    std::exit(1);
  }
  const auto start = std::chrono::steady_clock::now();
  for (int g = 1; g <= generations; ++g) {
    auto r = (*store)->recordGeneration(makeInput(g));
    if (!r) {
      std::fprintf(stderr, "%s\n", r.status().message().c_str());
      std::exit(1);
    }
  }
  return secondsSince(start);
}

}  // namespace

int main(int argc, char** argv) {
  const int generations = argc > 1 ? std::atoi(argv[1]) : 10000;
  const std::string dir = argc > 2 ? argv[2] : "/tmp";
  if (generations < 1) {
    std::fprintf(stderr, "usage: bench-state [GENERATIONS] [DIR]\n");
    return 2;
  }
  const std::string base = dir + "/bench-state-" + std::to_string(::getpid());
  const double txn = perGeneration(base + "-txn.db", generations, generations + 1);
  const double pruned = perGeneration(base + "-pruned.db", generations, 500);
  const double autocommit = autocommitPerRow(base + "-auto.db", generations);
  for (const char* name : {"-txn.db", "-pruned.db", "-auto.db"}) {
    for (const char* side : {"", "-wal", "-shm"}) {
      std::error_code ec;
      std::filesystem::remove(base + name + side, ec);
    }
  }
  const double rows = generations * (1.0 + kChangesPerGeneration);
  std::printf("generations: %d, %d changes each, 2 KiB body, synchronous=FULL, WAL\n", generations,
              kChangesPerGeneration);
  std::printf("recordGeneration (1 transaction/generation, no pruning): %8.2f s  %7.3f ms/gen\n", txn,
              txn * 1000 / generations);
  std::printf("recordGeneration (keep 500, pruning each time):          %8.2f s  %7.3f ms/gen\n", pruned,
              pruned * 1000 / generations);
  std::printf("autocommit (1 transaction/row, %.0f rows):             %8.2f s  %7.3f ms/gen\n", rows, autocommit,
              autocommit * 1000 / generations);
  std::printf("ratio autocommit / transaction: %.1fx\n", autocommit / txn);
  return 0;
}
