#include "agent/daemon/perm_watcher.h"

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>
#include "tests/support/skip.h"
#include "tests/support/temp_dir.h"

namespace {

using TempDir = pim::test::TempDir;

using pim::PermEnforcer;
using pim::PermWatcher;
using Clock = std::chrono::steady_clock;

gid_t testGid() { return geteuid() == 0 ? 4242 : getegid(); }

// Deadlines only turn a hang into a failure; nothing measures speed.
constexpr std::chrono::seconds kDeadline(120);
constexpr std::chrono::seconds kBurstDeadline(600);

void makeDir(const std::string& path, mode_t mode) {
  REQUIRE(mkdir(path.c_str(), 0700) == 0);
  REQUIRE(chmod(path.c_str(), mode) == 0);
}

void makeFile(const std::string& path, mode_t mode) {
  int fd = open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, mode);
  REQUIRE(fd >= 0);
  REQUIRE(write(fd, "data", 4) == 4);
  REQUIRE(fchmod(fd, mode) == 0);
  close(fd);
}

mode_t modeOf(const std::string& path) {
  struct stat st {};
  REQUIRE(lstat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

gid_t gCheckGid = 0;
size_t gWrong = 0;
size_t gSeen = 0;
std::string gFirstWrong;
int checkEntry(const char* path, const struct stat* st, int type, struct FTW*) {
  if (type == FTW_NS) return 0;
  ++gSeen;
  bool wrong = false;
  if (S_ISDIR(st->st_mode)) {
    wrong = (st->st_mode & 07777) != 02770 || st->st_gid != gCheckGid;
  } else if (S_ISREG(st->st_mode) && st->st_nlink == 1) {
    mode_t want = (st->st_mode & 0111) ? 0770 : 0660;
    wrong = (st->st_mode & 07777) != want || st->st_gid != gCheckGid;
  }
  if (wrong && gWrong++ == 0) gFirstWrong = path;
  return 0;
}
// Entries below root with a wrong mode or group (nftw, symlinks not followed).
size_t countWrong(const std::string& root, gid_t gid) {
  gCheckGid = gid;
  gWrong = 0;
  gSeen = 0;
  gFirstWrong.clear();
  REQUIRE(nftw(root.c_str(), checkEntry, 32, FTW_PHYS) == 0);
  return gWrong;
}

int shell(const std::string& command) { return std::system(command.c_str()); }

// One loop driven by the test thread, a watcher on `root`.
struct Harness {
  explicit Harness(const std::string& rootPath, std::chrono::seconds safety = std::chrono::seconds(3600),
                   pim::PermWatcherLimits limits = {})
      : root(rootPath), gid(testGid()), enforcer(rootPath, gid, pim::nullLogger()) {
    REQUIRE(uv_loop_init(&loop) == 0);
    watcher = std::make_unique<PermWatcher>(&loop, enforcer, rootPath, pim::nullLogger(), safety, limits);
  }
  ~Harness() {
    watcher->stop();
    watcher.reset();
    uv_run(&loop, UV_RUN_DEFAULT);  // close callbacks
    uv_loop_close(&loop);
  }

  // Runs the loop until `done` holds or the deadline passes; `done` is evaluated every
  // `every` (it may walk a large tree).
  bool runUntil(const std::function<bool()>& done, std::chrono::seconds deadline = kDeadline,
                std::chrono::milliseconds every = std::chrono::milliseconds(50)) {
    auto end = Clock::now() + deadline;
    auto nextCheck = Clock::now();
    while (Clock::now() < end) {
      uv_run(&loop, UV_RUN_NOWAIT);
      if (Clock::now() >= nextCheck) {
        if (done()) return true;
        nextCheck = Clock::now() + every;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return done();
  }
  void startAndSettle() {
    REQUIRE(watcher->start().isOk());
    REQUIRE(runUntil([&] { return watcher->fullPasses() >= 1; }));
  }
  bool settle(std::chrono::seconds deadline = kDeadline,
              std::chrono::milliseconds every = std::chrono::milliseconds(50)) {
    bool ok = runUntil([&] { return countWrong(root, gid) == 0; }, deadline, every);
    if (!ok) countWrong(root, gid);
    INFO("first wrong entry: " << gFirstWrong);
    CHECK(gFirstWrong.empty());
    return ok;
  }

  std::string root;
  gid_t gid;
  uv_loop_t loop{};
  PermEnforcer enforcer;
  std::unique_ptr<PermWatcher> watcher;
};

void writeNumber(char* out, unsigned n) {
  char tmp[16];
  int len = 0;
  do {
    tmp[len++] = static_cast<char>('0' + n % 10);
    n /= 10;
  } while (n != 0);
  for (int i = 0; i < len; ++i) out[i] = tmp[len - 1 - i];
  out[len] = '\0';
}

}  // namespace

TEST_CASE("perm watcher: initial pass then new files and directories", "[perm_watcher]") {
  TempDir tmp;
  makeDir(tmp / "root", 0755);
  makeFile(tmp / "root/before", 0644);
  Harness h(tmp / "root");
  h.startAndSettle();
  CHECK(h.watcher->watchCount() == 1);
  CHECK(modeOf(tmp / "root/before") == 0660);
  CHECK(h.watcher->start().code() == pim::ErrorCode::kInternal);

  makeFile(tmp / "root/f", 0644);
  makeDir(tmp / "root/n1", 0755);
  REQUIRE(h.runUntil([&] { return h.watcher->watchCount() == 2; }));
  makeDir(tmp / "root/n1/n2", 0700);
  makeFile(tmp / "root/n1/n2/g", 0600);
  makeFile(tmp / "root/n1/x", 0755);
  REQUIRE(h.settle());
  CHECK(modeOf(tmp / "root/n1/x") == 0770);
  CHECK(h.watcher->watchCount() == 3);
  CHECK(h.watcher->totals().changed >= 6);
  CHECK(h.watcher->overflows() == 0);
}

TEST_CASE("perm watcher: mkdir -p and a file in one go", "[perm_watcher]") {
  TempDir tmp;
  makeDir(tmp / "root", 0755);
  Harness h(tmp / "root");
  h.startAndSettle();
  // The file exists before any watch on a/b/c can: only the scan of new directories finds it.
  REQUIRE(shell("umask 022; mkdir -p '" + (tmp / "root/a/b/c") + "' && touch '" + (tmp / "root/a/b/c/f") + "'") == 0);
  REQUIRE(h.settle());
  CHECK(modeOf(tmp / "root/a/b/c/f") == 0660);
  CHECK(h.watcher->watchCount() == 4);
}

TEST_CASE("perm watcher: trees moved in and moved around", "[perm_watcher]") {
  TempDir tmp;
  makeDir(tmp / "root", 0755);
  makeDir(tmp / "prep", 0700);
  makeDir(tmp / "prep/d1", 0700);
  makeDir(tmp / "prep/d1/d2", 0755);
  makeFile(tmp / "prep/d1/d2/f", 0600);
  makeFile(tmp / "prep/top", 0644);
  Harness h(tmp / "root");
  h.startAndSettle();

  REQUIRE(rename((tmp / "prep").c_str(), (tmp / "root/in").c_str()) == 0);
  REQUIRE(h.settle());
  CHECK(h.watcher->watchCount() == 4);  // root, in, in/d1, in/d1/d2

  // Watches follow the tree's new place: new files there are fixed.
  makeFile(tmp / "root/in/d1/d2/later", 0644);
  REQUIRE(h.settle());

  // Moved within the tree: the old paths are dropped and the new ones watched.
  makeDir(tmp / "root/other", 0755);
  REQUIRE(h.settle());
  REQUIRE(rename((tmp / "root/in/d1").c_str(), (tmp / "root/other/moved").c_str()) == 0);
  REQUIRE(h.runUntil([&] { return h.watcher->watchCount() == 5; }));
  makeFile(tmp / "root/other/moved/d2/after-move", 0644);
  makeDir(tmp / "root/other/moved/d2/deeper", 0700);
  makeFile(tmp / "root/other/moved/d2/deeper/f", 0600);
  REQUIRE(h.settle());
  CHECK(h.watcher->watchCount() == 6);

  // Moved out of the tree: its watches go, and nothing outside is touched afterwards.
  REQUIRE(rename((tmp / "root/other/moved").c_str(), (tmp / "gone").c_str()) == 0);
  REQUIRE(h.runUntil([&] { return h.watcher->watchCount() == 3; }));
  makeFile(tmp / "gone/d2/outside", 0600);
  makeFile(tmp / "root/marker", 0644);  // once this is fixed, earlier events were handled
  REQUIRE(h.settle());
  CHECK(modeOf(tmp / "gone/d2/outside") == 0600);
}

TEST_CASE("perm watcher: tar x of an archive with restrictive modes", "[perm_watcher]") {
  if (!pim::test::runsAsRoot("tar keeps archive modes only for root")) return;
  TempDir tmp;
  makeDir(tmp / "root", 0755);
  makeDir(tmp / "src", 0700);
  makeDir(tmp / "src/private", 0700);
  makeDir(tmp / "src/private/deep", 0700);
  makeFile(tmp / "src/private/secret", 0600);
  makeFile(tmp / "src/private/deep/tool", 0700);
  makeFile(tmp / "src/private/deep/data", 0400);
  REQUIRE(shell("tar -C '" + (tmp / "src") + "' -cf '" + (tmp / "a.tar") + "' private") == 0);
  Harness h(tmp / "root");
  h.startAndSettle();
  REQUIRE(shell("tar -C '" + (tmp / "root") + "' -xpf '" + (tmp / "a.tar") + "'") == 0);
  REQUIRE(h.settle());
  CHECK(modeOf(tmp / "root/private/deep/tool") == 0770);
  CHECK(modeOf(tmp / "root/private/deep/data") == 0660);
  CHECK(modeOf(tmp / "root/private") == 02770);
}

TEST_CASE("perm watcher: a later chmod is reset and a right entry is left alone", "[perm_watcher]") {
  TempDir tmp;
  makeDir(tmp / "root", 0755);
  makeDir(tmp / "root/d", 0755);
  makeFile(tmp / "root/d/f", 0644);
  Harness h(tmp / "root");
  h.startAndSettle();
  REQUIRE(h.settle());
  uint64_t changed = h.watcher->totals().changed;

  REQUIRE(chmod((tmp / "root/d/f").c_str(), 0644) == 0);
  REQUIRE(h.runUntil([&] { return modeOf(tmp / "root/d/f") == 0660; }));
  REQUIRE(chmod((tmp / "root/d").c_str(), 0700) == 0);
  REQUIRE(h.runUntil([&] { return modeOf(tmp / "root/d") == 02770; }));
  REQUIRE(chmod((tmp / "root").c_str(), 0750) == 0);
  REQUIRE(h.runUntil([&] { return modeOf(tmp / "root") == 02770; }));
  // Exactly our three corrections: our own chmods raise IN_ATTRIB, but the entries are then
  // right and are not changed again (no feedback loop).
  uint64_t scanned = h.watcher->totals().scanned;
  makeFile(tmp / "root/marker", 0660);  // right from the start (the set-gid root gives the group)
  REQUIRE(h.runUntil([&] { return h.watcher->totals().scanned > scanned; }));
  REQUIRE(h.settle());
  CHECK(h.watcher->totals().changed == changed + 3);
}

TEST_CASE("perm watcher: symlinks and hard links in the watched tree", "[perm_watcher]") {
  TempDir tmp;
  makeDir(tmp / "root", 0755);
  makeDir(tmp / "outside", 0700);
  makeFile(tmp / "outside/secret", 0600);
  Harness h(tmp / "root");
  h.startAndSettle();
  REQUIRE(symlink((tmp / "outside").c_str(), (tmp / "root/to-dir").c_str()) == 0);
  REQUIRE(symlink((tmp / "outside/secret").c_str(), (tmp / "root/to-file").c_str()) == 0);
  REQUIRE(link((tmp / "outside/secret").c_str(), (tmp / "root/hard").c_str()) == 0);
  REQUIRE(h.runUntil([&] { return h.watcher->totals().skippedHardlinks >= 1; }));
  REQUIRE(h.runUntil([&] { return h.watcher->totals().skippedSymlinks >= 2; }));
  CHECK(modeOf(tmp / "outside") == 0700);
  CHECK(modeOf(tmp / "outside/secret") == 0600);
  CHECK(h.watcher->watchCount() == 1);
  bool reported = false;
  for (const auto& r : h.watcher->totals().reports) reported = reported || r == "hard link: hard";
  CHECK(reported);
}

TEST_CASE("perm watcher: a burst of 100000 files from 4 processes", "[perm_watcher]") {
  TempDir tmp;
  makeDir(tmp / "root", 0755);
  Harness h(tmp / "root");
  h.startAndSettle();
  const std::string root = tmp / "root";
  constexpr int kProcs = 4;
  constexpr int kLeaves = 1000;       // 10 x 10 x 10 nested directories
  constexpr int kFilesPerLeaf = 100;  // 100,000 files
  std::vector<pid_t> children;
  for (int p = 0; p < kProcs; ++p) {
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      // Only system calls here: the parent has other threads.
      umask(022);
      int rootFd = open(root.c_str(), O_RDONLY | O_DIRECTORY);
      if (rootFd < 0) _exit(1);
      for (int leaf = p; leaf < kLeaves; leaf += kProcs) {
        char a[16], b[16], c[16];
        writeNumber(a, static_cast<unsigned>(leaf / 100));
        writeNumber(b, static_cast<unsigned>(leaf / 10 % 10));
        writeNumber(c, static_cast<unsigned>(leaf % 10));
        int fd = rootFd;
        for (const char* name :
             {static_cast<const char*>(a), static_cast<const char*>(b), static_cast<const char*>(c)}) {
          mkdirat(fd, name, 0755);  // EEXIST from a sibling process is fine
          int next = openat(fd, name, O_RDONLY | O_DIRECTORY);
          if (fd != rootFd) close(fd);
          if (next < 0) _exit(2);
          fd = next;
        }
        for (int i = 0; i < kFilesPerLeaf; ++i) {
          char name[16];
          writeNumber(name, static_cast<unsigned>(i));
          int f = openat(fd, name, O_CREAT | O_WRONLY | O_TRUNC, 0644);
          if (f < 0) _exit(3);
          if (write(f, "payload\n", 8) != 8) _exit(4);
          close(f);
        }
        close(fd);
      }
      _exit(0);
    }
    children.push_back(pid);
  }
  // The loop keeps reading events while the children write.
  for (pid_t pid : children) {
    int status = 0;
    for (;;) {
      uv_run(&h.loop, UV_RUN_NOWAIT);
      pid_t r = waitpid(pid, &status, WNOHANG);
      if (r == pid) break;
      REQUIRE(r == 0);
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) == 0);
  }
  REQUIRE(h.settle(kBurstDeadline, std::chrono::milliseconds(1000)));
  CHECK(gSeen == 1 + 10 + 100 + 1000 + 100000);
  CHECK(h.watcher->watchCount() == 1 + 10 + 100 + 1000);
  CHECK(h.watcher->totals().changed >= 100000 + 1110);
}

TEST_CASE("perm watcher: inotify queue overflow leads to a full rescan", "[perm_watcher]") {
  TempDir tmp;
  makeDir(tmp / "root", 0755);
  makeDir(tmp / "root/d", 0755);
  long maxQueued = 16384;
  {
    std::ifstream in("/proc/sys/fs/inotify/max_queued_events");
    in >> maxQueued;
  }
  // Each file raises IN_CREATE and IN_CLOSE_WRITE: more than the queue holds, and > 20,000.
  const long files = std::max<long>(20001, maxQueued + 5000);
  Harness h(tmp / "root");
  h.startAndSettle();
  // The loop does not run: nothing reads the inotify fd while the files are made.
  for (long i = 0; i < files; ++i) {
    makeFile(tmp / ("root/d/f" + std::to_string(i)), 0644);
  }
  REQUIRE(h.runUntil([&] { return h.watcher->overflows() >= 1; }));
  REQUIRE(h.settle(kBurstDeadline, std::chrono::milliseconds(500)));
  CHECK(h.watcher->fullPasses() >= 2);
  CHECK(h.watcher->watchCount() == 2);
}

TEST_CASE("perm watcher: too few inotify watches falls back to periodic passes", "[perm_watcher]") {
  TempDir tmp;
  makeDir(tmp / "root", 0755);
  for (const char* d : {"a", "b", "c", "d"}) makeDir(tmp / (std::string("root/") + d), 0755);
  pim::PermWatcherLimits limits;
  limits.maxWatches = 2;  // behaves like ENOSPC from inotify_add_watch beyond two
  limits.fallbackInterval = std::chrono::seconds(1);
  Harness h(tmp / "root", std::chrono::seconds(3600), limits);
  h.startAndSettle();
  CHECK(h.watcher->degraded());
  CHECK(h.watcher->watchCount() == 2);
  REQUIRE(h.settle());
  // Directories without a watch are still covered, by the periodic passes.
  for (const char* d : {"a", "b", "c", "d"}) makeFile(tmp / (std::string("root/") + d + "/f"), 0600);
  REQUIRE(h.settle());
  // The pass is counted when it has been handed back to the loop, a moment after its fixes.
  CHECK(h.runUntil([&] { return h.watcher->fullPasses() >= 2; }));
}

TEST_CASE("perm watcher: full passes on request and on the safety timer", "[perm_watcher]") {
  TempDir tmp;
  makeDir(tmp / "root", 0755);
  makeDir(tmp / "root/d", 0755);
  Harness h(tmp / "root", std::chrono::seconds(1));
  h.startAndSettle();
  REQUIRE(h.settle());
  // On request, and then on the timer alone.
  h.watcher->requestFullPass();
  REQUIRE(h.runUntil([&] { return h.watcher->fullPasses() >= 2; }));
  uint64_t passes = h.watcher->fullPasses();
  REQUIRE(h.runUntil([&] { return h.watcher->fullPasses() > passes; }));
  CHECK(h.watcher->watchCount() == 2);
  CHECK(h.watcher->overflows() == 0);
}

TEST_CASE("perm watcher: stop lets the loop finish", "[perm_watcher]") {
  TempDir tmp;
  makeDir(tmp / "root", 0755);
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  PermEnforcer enforcer(tmp / "root", testGid(), pim::nullLogger());
  {
    PermWatcher watcher(&loop, enforcer, tmp / "root", pim::nullLogger());
    REQUIRE(watcher.start().isOk());
    uv_run(&loop, UV_RUN_NOWAIT);
    watcher.stop();
    watcher.stop();  // idempotent
    CHECK(watcher.watchCount() == 0);
  }
  CHECK(uv_run(&loop, UV_RUN_DEFAULT) == 0);
  CHECK(uv_loop_close(&loop) == 0);
}
