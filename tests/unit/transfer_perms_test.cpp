#include "providers/host/transfer_perms.h"

#include <fcntl.h>
#include <ftw.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#ifdef __linux__
#include <sched.h>
#include <sys/mount.h>
#endif

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <sstream>
#include <string>
#include <thread>
#include <vector>
#include "tests/support/skip.h"
#include "tests/support/temp_dir.h"

namespace {

using TempDir = pim::test::TempDir;

using pim::PermEnforcer;
using pim::PermStats;

// As root the tests use a group nobody has (4242): every chown is real. As another user they
// use their own group, which chown accepts.
gid_t testGid() { return geteuid() == 0 ? 4242 : getegid(); }

void makeDir(const std::string& path, mode_t mode) {
  REQUIRE(mkdir(path.c_str(), 0700) == 0);
  REQUIRE(chmod(path.c_str(), mode) == 0);
}

void makeFile(const std::string& path, mode_t mode, gid_t gid = static_cast<gid_t>(-1)) {
  int fd = open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0600);
  REQUIRE(fd >= 0);
  REQUIRE(write(fd, "x", 1) == 1);
  close(fd);
  REQUIRE(chmod(path.c_str(), mode) == 0);
  if (gid != static_cast<gid_t>(-1)) REQUIRE(lchown(path.c_str(), static_cast<uid_t>(-1), gid) == 0);
}

struct stat lstatOf(const std::string& path) {
  struct stat st {};
  REQUIRE(lstat(path.c_str(), &st) == 0);
  return st;
}

mode_t modeOf(const std::string& path) { return lstatOf(path).st_mode & 07777; }

bool sameStat(const struct stat& a, const struct stat& b) {
  return a.st_mode == b.st_mode && a.st_uid == b.st_uid && a.st_gid == b.st_gid &&
         a.st_ctim.tv_sec == b.st_ctim.tv_sec && a.st_ctim.tv_nsec == b.st_ctim.tv_nsec;
}

// Counts entries below `root` whose mode or group breaks the contract (nftw without following
// symlinks; hard-linked files, symlinks and special files are not judged).
gid_t gCheckGid = 0;
size_t gWrong = 0;
std::string gFirstWrong;
int checkEntry(const char* path, const struct stat* st, int type, struct FTW*) {
  if (type == FTW_NS) return 0;
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
size_t countWrong(const std::string& root, gid_t gid) {
  gCheckGid = gid;
  gWrong = 0;
  gFirstWrong.clear();
  REQUIRE(nftw(root.c_str(), checkEntry, 32, FTW_PHYS) == 0);
  return gWrong;
}

size_t openFdCount() {
  size_t n = 0;
  for (auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    (void)e;
    ++n;
  }
  return n;
}

bool hasReport(const PermStats& stats, const std::string& line) {
  for (const auto& r : stats.reports) {
    if (r == line) return true;
  }
  return false;
}

// A chain of `depth` directories "d" below `root`, made with fds (the path is longer than
// PATH_MAX), with a file "bottom" at the end.
void makeDeepTree(const std::string& root, int depth) {
  int fd = open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  for (int i = 0; i < depth; ++i) {
    REQUIRE(mkdirat(fd, "d", 0755) == 0);
    REQUIRE(fchmodat(fd, "d", 0755, 0) == 0);
    int next = openat(fd, "d", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    REQUIRE(next >= 0);
    close(fd);
    fd = next;
  }
  int f = openat(fd, "bottom", O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
  REQUIRE(f >= 0);
  REQUIRE(fchmod(f, 0644) == 0);
  close(f);
  close(fd);
}

// Walks the chain down; returns how many levels (and the bottom file) are not right.
size_t countWrongDeep(const std::string& root, int depth, gid_t gid) {
  size_t wrong = 0;
  int fd = open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  for (int i = 0; i < depth; ++i) {
    int next = openat(fd, "d", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    REQUIRE(next >= 0);
    close(fd);
    fd = next;
    struct stat st {};
    REQUIRE(fstat(fd, &st) == 0);
    if ((st.st_mode & 07777) != 02770 || st.st_gid != gid) ++wrong;
  }
  struct stat st {};
  REQUIRE(fstatat(fd, "bottom", &st, AT_SYMLINK_NOFOLLOW) == 0);
  if ((st.st_mode & 07777) != 0660 || st.st_gid != gid) ++wrong;
  close(fd);
  return wrong;
}

// Removes a chain made by makeDeepTree without long paths: down to the bottom, then up through
// ".." removing one level at a time.
void removeDeepTree(const std::string& root) {
  int fd = open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  int depth = 0;
  for (;;) {
    int next = openat(fd, "d", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (next < 0) break;
    close(fd);
    fd = next;
    ++depth;
  }
  unlinkat(fd, "bottom", 0);
  for (; depth > 0; --depth) {
    int parent = openat(fd, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    REQUIRE(parent >= 0);
    close(fd);
    fd = parent;
    REQUIRE(unlinkat(fd, "d", AT_REMOVEDIR) == 0);
  }
  close(fd);
}

}  // namespace

TEST_CASE("transfer perms: wrong modes and group fixed, right entries untouched", "[transfer_perms]") {
  TempDir tmp;
  const gid_t gid = testGid();
  makeDir(tmp / "root", 0755);
  const std::string root = tmp / "root";
  makeDir(root + "/a", 0700);
  makeFile(root + "/a/plain", 0644);
  makeFile(root + "/a/exec", 0755);
  makeFile(root + "/a/setid", 06755);
  makeFile(root + "/a/only-user-exec", 0744);
  makeFile(root + "/a/sticky", 01660);
  makeFile(root + "/right", 0660, gid);
  makeFile(root + "/right-exec", 0770, gid);
  makeDir(root + "/ok", 02770);
  REQUIRE(lchown((root + "/ok").c_str(), static_cast<uid_t>(-1), gid) == 0);
  if (geteuid() == 0) REQUIRE(lchown((root + "/a/plain").c_str(), 1234, 0) == 0);

  const struct stat rightBefore = lstatOf(root + "/right");
  const struct stat rightExecBefore = lstatOf(root + "/right-exec");
  const struct stat okBefore = lstatOf(root + "/ok");

  PermEnforcer enforcer(root, gid, pim::nullLogger());
  PermStats stats = enforcer.fullPass();

  CHECK(stats.errors == 0);
  CHECK(stats.changed == 7);  // root, a, plain, exec, setid, only-user-exec, sticky
  CHECK(stats.scanned == 10);
  CHECK(modeOf(root) == 02770);
  CHECK(modeOf(root + "/a") == 02770);
  CHECK(modeOf(root + "/a/plain") == 0660);
  CHECK(modeOf(root + "/a/exec") == 0770);
  CHECK(modeOf(root + "/a/setid") == 0770);  // set-uid/set-gid never stay on files
  CHECK(modeOf(root + "/a/only-user-exec") == 0770);
  CHECK(modeOf(root + "/a/sticky") == 0660);
  CHECK(countWrong(root, gid) == 0);
  if (geteuid() == 0) {
    CHECK(lstatOf(root + "/a/plain").st_uid == 1234);  // owners are never changed
    CHECK(lstatOf(root + "/a/plain").st_gid == gid);
  }
  // Entries already right are not touched at all (their ctime would move).
  CHECK(sameStat(lstatOf(root + "/right"), rightBefore));
  CHECK(sameStat(lstatOf(root + "/right-exec"), rightExecBefore));
  CHECK(sameStat(lstatOf(root + "/ok"), okBefore));

  PermStats again = enforcer.fullPass();
  CHECK(again.changed == 0);
  CHECK(again.scanned == stats.scanned);
}

TEST_CASE("transfer perms: symlinks are neither followed nor changed", "[transfer_perms]") {
  TempDir tmp;
  const gid_t gid = testGid();
  makeDir(tmp / "root", 0755);
  makeDir(tmp / "outside", 0700);
  makeFile(tmp / "outside/secret", 0600);
  makeDir(tmp / "outside/dir", 0700);
  makeFile(tmp / "outside/dir/inner", 0640);
  const std::string root = tmp / "root";
  REQUIRE(symlink((tmp / "outside/secret").c_str(), (root + "/to-file").c_str()) == 0);
  REQUIRE(symlink((tmp / "outside/dir").c_str(), (root + "/to-dir").c_str()) == 0);
  REQUIRE(symlink("dangling-target", (root + "/dangling").c_str()) == 0);

  const struct stat secretBefore = lstatOf(tmp / "outside/secret");
  const struct stat dirBefore = lstatOf(tmp / "outside/dir");
  const struct stat innerBefore = lstatOf(tmp / "outside/dir/inner");
  const struct stat linkBefore = lstatOf(root + "/to-file");
  const struct stat dirLinkBefore = lstatOf(root + "/to-dir");

  PermEnforcer enforcer(root, gid, pim::nullLogger());
  PermStats stats = enforcer.fullPass();
  CHECK(stats.errors == 0);
  CHECK(stats.skippedSymlinks == 3);
  CHECK(stats.changed == 1);  // the root only
  CHECK(sameStat(lstatOf(tmp / "outside/secret"), secretBefore));
  CHECK(sameStat(lstatOf(tmp / "outside/dir"), dirBefore));
  CHECK(sameStat(lstatOf(tmp / "outside/dir/inner"), innerBefore));
  CHECK(sameStat(lstatOf(root + "/to-file"), linkBefore));
  CHECK(sameStat(lstatOf(root + "/to-dir"), dirLinkBefore));

  // Through fixPath too: a symlink as the entry or on the way is not followed.
  CHECK(enforcer.fixPath("to-file").changed == 0);
  CHECK(enforcer.fixPath("to-dir").changed == 0);
  PermStats via = enforcer.fixPath("to-dir/inner");
  CHECK(via.changed == 0);
  CHECK(via.errors == 0);
  CHECK(sameStat(lstatOf(tmp / "outside/dir/inner"), innerBefore));
  CHECK(sameStat(lstatOf(tmp / "outside/secret"), secretBefore));
}

TEST_CASE("transfer perms: hard-linked files are left alone and reported", "[transfer_perms]") {
  TempDir tmp;
  const gid_t gid = testGid();
  makeDir(tmp / "root", 0755);
  const std::string root = tmp / "root";
  makeDir(root + "/sub", 0755);
  makeFile(tmp / "outside-name", 0644);
  REQUIRE(link((tmp / "outside-name").c_str(), (root + "/sub/linked").c_str()) == 0);
  const struct stat before = lstatOf(root + "/sub/linked");

  PermEnforcer enforcer(root, gid, pim::nullLogger());
  PermStats stats = enforcer.fullPass();
  CHECK(stats.skippedHardlinks == 1);
  CHECK(hasReport(stats, "hard link: sub/linked"));
  CHECK(sameStat(lstatOf(root + "/sub/linked"), before));
  CHECK(modeOf(tmp / "outside-name") == 0644);

  PermStats one = enforcer.fixPath("sub/linked");
  CHECK(one.skippedHardlinks == 1);
  CHECK(one.changed == 0);
  CHECK(sameStat(lstatOf(root + "/sub/linked"), before));
}

TEST_CASE("transfer perms: FIFOs and sockets are left alone and do not block the pass", "[transfer_perms]") {
  TempDir tmp;
  const gid_t gid = testGid();
  makeDir(tmp / "root", 0755);
  const std::string root = tmp / "root";
  REQUIRE(mkfifo((root + "/fifo").c_str(), 0644) == 0);
  REQUIRE(chmod((root + "/fifo").c_str(), 0644) == 0);
  int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(sock >= 0);
  struct sockaddr_un addr {};
  addr.sun_family = AF_UNIX;
  std::string sockPath = root + "/sock";
  REQUIRE(sockPath.size() < sizeof addr.sun_path);
  std::strcpy(addr.sun_path, sockPath.c_str());
  REQUIRE(bind(sock, reinterpret_cast<struct sockaddr*>(&addr), sizeof addr) == 0);
  const struct stat fifoBefore = lstatOf(root + "/fifo");
  const struct stat sockBefore = lstatOf(sockPath);

  PermEnforcer enforcer(root, gid, pim::nullLogger());
  auto pass = std::async(std::launch::async, [&] {
    PermStats s = enforcer.fullPass();
    s.add(enforcer.fixPath("fifo"));
    return s;
  });
  // A generous deadline only to fail instead of hanging if opening the FIFO blocked.
  if (pass.wait_for(std::chrono::seconds(60)) != std::future_status::ready) {
    int w = open((root + "/fifo").c_str(), O_WRONLY | O_NONBLOCK);  // release a blocked open
    if (w >= 0) close(w);
    FAIL("the permission pass blocked on a FIFO");
  }
  PermStats stats = pass.get();
  close(sock);
  CHECK(stats.skippedOther == 3);  // the FIFO twice, the socket once
  CHECK(stats.errors == 0);
  CHECK(sameStat(lstatOf(root + "/fifo"), fifoBefore));
  CHECK(sameStat(lstatOf(sockPath), sockBefore));
  CHECK(modeOf(root) == 02770);
}

TEST_CASE("transfer perms: fixPath and fixEntries", "[transfer_perms]") {
  TempDir tmp;
  const gid_t gid = testGid();
  makeDir(tmp / "root", 0755);
  const std::string root = tmp / "root";
  makeDir(root + "/a", 0755);
  makeDir(root + "/a/b", 0755);
  makeFile(root + "/a/b/f", 0644);
  makeFile(root + "/a/g", 0644);
  makeFile(root + "/top", 0600);
  PermEnforcer enforcer(root, gid, pim::nullLogger());

  // One file: nothing else changes.
  PermStats one = enforcer.fixPath("a/g");
  CHECK(one.changed == 1);
  CHECK(modeOf(root + "/a/g") == 0660);
  CHECK(modeOf(root + "/a") == 0755);
  CHECK(modeOf(root + "/top") == 0600);

  // "." in fixEntries: the directory itself, not what is below it.
  PermStats self = enforcer.fixEntries("a", {"."});
  CHECK(self.changed == 1);
  CHECK(modeOf(root + "/a") == 02770);
  CHECK(modeOf(root + "/a/b") == 0755);

  // A directory: its whole subtree.
  PermStats dir = enforcer.fixPath("a/b");
  CHECK(dir.changed == 2);
  CHECK(modeOf(root + "/a/b") == 02770);
  CHECK(modeOf(root + "/a/b/f") == 0660);

  // Missing entries are not errors; ".." is refused.
  PermStats missing = enforcer.fixEntries("a", {"nope", "top"});
  CHECK(missing.errors == 0);
  CHECK(missing.changed == 0);
  PermStats escape = enforcer.fixPath("a/../../outside");
  CHECK(escape.errors == 1);
  CHECK(escape.changed == 0);
  PermStats escape2 = enforcer.fixEntries("a", {".."});
  CHECK(escape2.errors == 1);

  // The hook decides whether a directory is descended into.
  makeFile(root + "/a/b/new", 0644);
  std::vector<std::string> seen;
  pim::WalkHooks hooks;
  hooks.onDirectory = [&](const std::string& rel, int fd) {
    CHECK(fd >= 0);
    seen.push_back(rel);
    return rel != "a/b";
  };
  enforcer.fullPass(hooks);
  CHECK(seen == std::vector<std::string>{"", "a", "a/b"});
  CHECK(modeOf(root + "/a/b/new") == 0644);
  CHECK(modeOf(root + "/top") == 0660);

  // Cancelled before it starts: stops at once.
  std::atomic<bool> cancel{true};
  pim::WalkHooks cancelled;
  cancelled.cancel = &cancel;
  PermStats c = enforcer.fullPass(cancelled);
  CHECK(c.cancelled);
  CHECK(modeOf(root + "/a/b/new") == 0644);
}

TEST_CASE("transfer perms: a missing root is one error", "[transfer_perms]") {
  TempDir tmp;
  PermEnforcer enforcer(tmp / "missing", testGid(), pim::nullLogger());
  PermStats stats = enforcer.fullPass();
  CHECK(stats.errors == 1);
  REQUIRE(stats.reports.size() == 1);
  CHECK(stats.reports[0].find("error: .: open") == 0);
  // A root that is itself a symlink is refused too.
  makeDir(tmp / "real", 0755);
  REQUIRE(symlink((tmp / "real").c_str(), (tmp / "link").c_str()) == 0);
  PermEnforcer viaLink(tmp / "link", testGid(), pim::nullLogger());
  CHECK(viaLink.fullPass().errors == 1);
  CHECK(modeOf(tmp / "real") == 0755);
}

TEST_CASE("transfer perms: stats add and bounded reports", "[transfer_perms]") {
  PermStats a;
  a.scanned = 2;
  a.changed = 1;
  a.errors = 1;
  a.report("error: x");
  PermStats b;
  b.scanned = 3;
  b.skippedHardlinks = 1;
  b.cancelled = true;
  for (size_t i = 0; i < PermStats::kMaxReports + 5; ++i) b.report("hard link: " + std::to_string(i));
  CHECK(b.reports.size() == PermStats::kMaxReports);
  CHECK(b.reportsDropped == 5);
  a.add(b);
  CHECK(a.scanned == 5);
  CHECK(a.changed == 1);
  CHECK(a.errors == 1);
  CHECK(a.skippedHardlinks == 1);
  CHECK(a.cancelled);
  CHECK(a.reports.size() == PermStats::kMaxReports);
  CHECK(a.reports[0] == "error: x");
  CHECK(a.reportsDropped == 5 + 1);  // b's 5, and one of b's that no longer fit after a's own
}

TEST_CASE("transfer perms: stays inside the tree while a directory is swapped for a symlink", "[transfer_perms]") {
  TempDir tmp;
  const gid_t gid = testGid();
  makeDir(tmp / "root", 0755);
  const std::string root = tmp / "root";
  makeDir(root + "/a", 0755);
  makeDir(root + "/a/b", 0755);
  makeDir(root + "/a/b/swap", 0755);
  makeDir(root + "/a/b/swap/sub", 0755);
  for (int i = 0; i < 20; ++i) makeFile(root + "/a/b/swap/x" + std::to_string(i), 0644);
  makeFile(root + "/a/b/swap/sub/y", 0644);
  // Outside: wrong by the contract, so any pass that followed the link would change it.
  makeDir(tmp / "outside", 0700);
  makeDir(tmp / "outside/sub", 0700);
  makeFile(tmp / "outside/x0", 0600);
  makeFile(tmp / "outside/sub/y", 0600);
  REQUIRE(symlink((tmp / "outside").c_str(), (root + "/a/b/alt").c_str()) == 0);
  const std::vector<std::string> outsidePaths = {tmp / "outside", tmp / "outside/sub", tmp / "outside/x0",
                                                 tmp / "outside/sub/y"};
  std::vector<struct stat> before;
  for (const auto& p : outsidePaths) before.push_back(lstatOf(p));

  // Held on the real inside directory whatever its name, to make its files wrong again.
  int insideFd = open((root + "/a/b/swap").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  REQUIRE(insideFd >= 0);

  std::atomic<bool> stop{false};
  std::atomic<uint64_t> swaps{0};
  const std::string swapPath = root + "/a/b/swap";
  const std::string altPath = root + "/a/b/alt";
  std::thread swapper([&] {
    while (!stop) {
      if (renameat2(AT_FDCWD, swapPath.c_str(), AT_FDCWD, altPath.c_str(), RENAME_EXCHANGE) == 0) {
        ++swaps;
      }
    }
  });

  PermEnforcer enforcer(root, gid, pim::nullLogger());
  PermEnforcer oneFd(root, gid, pim::nullLogger(), 1);  // reopens parents through ".."
  PermStats total;
  for (int i = 0; i < 300; ++i) {
    for (int k = 0; k < 20; k += 3) fchmodat(insideFd, ("x" + std::to_string(k)).c_str(), 0644, 0);
    total.add((i % 2 == 0 ? enforcer : oneFd).fullPass());
    total.add(enforcer.fixPath("a/b/swap/x1"));
    total.add(enforcer.fixPath("a/b/alt/x0"));
    total.add(enforcer.fixPath("a/b/swap/sub"));
    total.add(enforcer.fixEntries("a/b/alt", {"x0", "sub", "."}));
  }
  stop = true;
  swapper.join();
  close(insideFd);

  INFO("swaps: " << swaps << ", changes: " << total.changed);
  CHECK(swaps > 0);
  CHECK(total.changed > 0);
  for (size_t i = 0; i < outsidePaths.size(); ++i) {
    INFO(outsidePaths[i]);
    CHECK(sameStat(lstatOf(outsidePaths[i]), before[i]));
  }
  // Once the race stops, one pass makes the tree right.
  enforcer.fullPass();
  CHECK(countWrong(root, gid) == 0);
}

TEST_CASE("transfer perms: a tree 10000 levels deep with bounded fds and no recursion", "[transfer_perms]") {
  TempDir tmp;
  const gid_t gid = testGid();
  makeDir(tmp / "root", 0755);
  const std::string root = tmp / "root";
  constexpr int kDepth = 10000;
  makeDeepTree(root, kDepth);
  const size_t fdsBefore = openFdCount();

  PermEnforcer enforcer(root, gid, pim::nullLogger());
  PermStats stats = enforcer.fullPass();
  CHECK(stats.errors == 0);
  CHECK(stats.changed == kDepth + 2);  // the root, every level, the bottom file
  CHECK(stats.scanned == kDepth + 2);
  CHECK(countWrongDeep(root, kDepth, gid) == 0);
  CHECK(enforcer.fullPass().changed == 0);
  CHECK(openFdCount() == fdsBefore);

  // Again with two fds: every level is reopened through "..".
  REQUIRE(chmod(root.c_str(), 0755) == 0);
  PermEnforcer tight(root, gid, pim::nullLogger(), 2);
  PermStats again = tight.fullPass();
  CHECK(again.errors == 0);
  CHECK(again.changed == 1);
  CHECK(again.scanned == kDepth + 2);
  CHECK(openFdCount() == fdsBefore);
  removeDeepTree(root);
}

TEST_CASE("transfer perms: does not descend into another file system", "[transfer_perms]") {
  if (!pim::test::runsAsRoot("mounting a tmpfs in a private mount namespace")) return;
  TempDir tmp;
  const gid_t gid = testGid();
  makeDir(tmp / "root", 0755);
  const std::string root = tmp / "root";
  makeDir(root + "/mnt", 0755);
  makeFile(root + "/f", 0644);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // Child: its own mount namespace, so nothing leaks to the host even on a crash.
    if (unshare(CLONE_NEWNS) != 0 || mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
      _exit(77);
    }
    if (mount("tmpfs", (root + "/mnt").c_str(), "tmpfs", 0, "mode=0755") != 0) _exit(77);
    int fd = open((root + "/mnt/inner").c_str(), O_CREAT | O_WRONLY, 0644);
    if (fd < 0) _exit(2);
    fchmod(fd, 0644);
    close(fd);
    PermEnforcer enforcer(root, gid, pim::nullLogger());
    PermStats stats = enforcer.fullPass();
    struct stat mnt {
    }, inner{}, f{};
    stat((root + "/mnt").c_str(), &mnt);
    stat((root + "/mnt/inner").c_str(), &inner);
    stat((root + "/f").c_str(), &f);
    bool ok = (mnt.st_mode & 07777) == 0755 && (inner.st_mode & 07777) == 0644 && (f.st_mode & 07777) == 0660 &&
              stats.skippedOther == 1 && stats.errors == 0 && hasReport(stats, "other file system: mnt");
    _exit(ok ? 0 : 1);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  if (!pim::test::runsHere(WEXITSTATUS(status) != 77, "cannot make a private mount namespace here")) return;
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("transfer perms: by name or by fd, on one thread or several, the same result", "[transfer_perms]") {
  const gid_t gid = testGid();
  struct Way {
    bool byName;
    unsigned threads;
  };
  for (Way way : {Way{false, 1}, Way{false, 4}, Way{true, 1}, Way{true, 4}}) {
    INFO("by " << (way.byName ? "name" : "fd") << ", " << way.threads << " threads");
    TempDir tmp;
    makeDir(tmp / "root", 0755);
    const std::string root = tmp / "root";
    makeDir(root + "/big", 0755);
    // More files than the threshold for several threads, of every kind the pass meets.
    const mode_t modes[] = {0644, 0755, 06755, 01660, 0600};
    for (int i = 0; i < 700; ++i) makeFile(root + "/big/f" + std::to_string(i), modes[i % 5]);
    for (int i = 0; i < 5; ++i) makeDir(root + "/big/d" + std::to_string(i), 0700);
    makeFile(root + "/big/right", 0660, gid);
    makeFile(tmp / "outside", 0600);
    REQUIRE(symlink((tmp / "outside").c_str(), (root + "/big/link").c_str()) == 0);
    REQUIRE(link((tmp / "outside").c_str(), (root + "/big/hard").c_str()) == 0);
    const struct stat outsideBefore = lstatOf(tmp / "outside");
    const struct stat rightBefore = lstatOf(root + "/big/right");

    PermEnforcer enforcer(root, gid, pim::nullLogger());
    enforcer.setMethod(way.byName, way.threads);
    if (way.byName && !enforcer.pathChanges()) {
      WARN("no fchmodat2 (Linux < 6.6) or fs.protected_hardlinks off: the by-name way is not available here");
      continue;
    }
    PermStats stats = enforcer.fullPass();
    CHECK(stats.errors == 0);
    CHECK(stats.scanned == 1 + 1 + 700 + 5 + 1 + 2);  // root, big, files, dirs, right, link, hard
    CHECK(stats.changed == 1 + 1 + 700 + 5);
    CHECK(stats.skippedSymlinks == 1);
    CHECK(stats.skippedHardlinks == 1);
    CHECK(countWrong(root, gid) == 0);  // (the symlink and the hard link are not judged)
    CHECK(modeOf(root + "/big/f0") == 0660);
    CHECK(modeOf(root + "/big/f1") == 0770);
    CHECK(modeOf(root + "/big/f2") == 0770);
    CHECK(modeOf(root + "/big/f3") == 0660);
    CHECK(modeOf(root + "/big/d0") == 02770);
    CHECK(sameStat(lstatOf(tmp / "outside"), outsideBefore));
    CHECK(sameStat(lstatOf(root + "/big/right"), rightBefore));
    CHECK(enforcer.fullPass().changed == 0);
  }
}

TEST_CASE("transfer perms: changes are logged one by one up to 100 per call, then counted", "[transfer_perms]") {
  const gid_t gid = testGid();
  TempDir tmp;
  const std::string root = tmp / "root";
  makeDir(root, 0755);
  for (int i = 0; i < 150; ++i) makeFile(root + "/f" + std::to_string(i), 0644);
  std::ostringstream out;
  auto log = std::make_shared<spdlog::logger>("perms", std::make_shared<spdlog::sinks::ostream_sink_mt>(out));
  log->set_pattern("%l %v");
  auto countLines = [&](const std::string& prefix) {
    std::istringstream in(out.str());
    size_t n = 0;
    for (std::string line; std::getline(in, line);) n += line.rfind(prefix, 0) == 0 ? 1 : 0;
    return n;
  };
  PermEnforcer enforcer(root, gid, log);
  SECTION("at info: 100 listed, the rest counted") {
    log->set_level(spdlog::level::info);
    CHECK(enforcer.fullPass().changed == 151);  // the root and 150 files
    CHECK(countLines("info set " + root + "/") == 100);
    CHECK(countLines("info " + root + ": 51 more changes not listed") == 1);
    // The count starts again with each call: a few changes are all listed.
    makeFile(root + "/late1", 0600);
    makeFile(root + "/late2", 0600);
    out.str("");
    CHECK(enforcer.fixEntries("", {"late1", "late2"}).changed == 2);
    CHECK(countLines("info set " + root + "/late") == 2);
    CHECK(countLines("info " + root + ":") == 0);
  }
  SECTION("at debug: every change listed") {
    log->set_level(spdlog::level::debug);
    CHECK(enforcer.fullPass().changed == 151);
    CHECK(countLines("info set ") + countLines("debug set ") == 151);
    CHECK(countLines("debug set ") == 51);
  }
}

TEST_CASE("transfer perms: several threads over many small directories", "[transfer_perms]") {
  // Workers fix the files of directories the walk listed earlier while it lists the next ones:
  // the pass must still return only once every file is right, count each entry once, hold a
  // bounded number of fds, and stop on request.
  const gid_t gid = testGid();
  TempDir tmp;
  const std::string root = tmp / "root";
  makeDir(root, 0755);
  const int kDirs = 300, kFiles = 7;
  for (int d = 0; d < kDirs; ++d) {
    const std::string dir = root + "/d" + std::to_string(d / 30) + "/e" + std::to_string(d);
    std::filesystem::create_directories(dir);
    for (int f = 0; f < kFiles; ++f) makeFile(dir + "/f" + std::to_string(f), f % 2 ? 0755 : 0600);
  }
  const uint64_t entries = 1 + 10 + kDirs + kDirs * kFiles;  // root, d*, e*, files

  PermEnforcer enforcer(root, gid, pim::nullLogger(), 8);
  enforcer.setMethod(true, 4);
  SECTION("every file fixed, each counted once, fds bounded") {
    const size_t fdsBefore = openFdCount();
    size_t mostFds = 0;
    pim::WalkHooks hooks;
    hooks.onDirectory = [&](const std::string&, int) {
      mostFds = std::max(mostFds, openFdCount());
      return true;
    };
    PermStats stats = enforcer.fullPass(hooks);
    CHECK(stats.errors == 0);
    CHECK(stats.scanned == entries);
    CHECK(stats.changed == entries);
    CHECK(countWrong(root, gid) == 0);
    CHECK(modeOf(root + "/d3/e99/f1") == 0770);
    CHECK(modeOf(root + "/d3/e99/f2") == 0660);
    // 8 directory fds on the walk's stack, plus the queued batches' directories (2 per thread)
    // and those being fixed (one per thread), plus the directory iterator of openFdCount itself.
    CHECK(mostFds <= fdsBefore + 8 + 2 * 4 + 4 + 2);
    CHECK(openFdCount() == fdsBefore);
    PermStats again = enforcer.fullPass();
    CHECK(again.changed == 0);
    CHECK(again.scanned == entries);
  }
  SECTION("cancelled half-way") {
    std::atomic<bool> cancel{false};
    int seen = 0;
    pim::WalkHooks hooks;
    hooks.cancel = &cancel;
    hooks.onDirectory = [&](const std::string&, int) {
      if (++seen == kDirs / 2) cancel = true;
      return true;
    };
    PermStats stats = enforcer.fullPass(hooks);
    CHECK(stats.cancelled);
    CHECK(stats.scanned < entries);
    CHECK(countWrong(root, gid) > 0);
    PermStats rest = enforcer.fullPass();
    CHECK_FALSE(rest.cancelled);
    CHECK(stats.changed + rest.changed == entries);
    CHECK(countWrong(root, gid) == 0);
  }
}

TEST_CASE("transfer perms: a file swapped for a symlink while being fixed is never followed", "[transfer_perms]") {
  const gid_t gid = testGid();
  for (bool byName : {false, true}) {
    INFO("by " << (byName ? "name" : "fd"));
    TempDir tmp;
    makeDir(tmp / "root", 02770);
    const std::string root = tmp / "root";
    REQUIRE(lchown(root.c_str(), static_cast<uid_t>(-1), gid) == 0);
    makeFile(root + "/f", 0644);
    makeFile(tmp / "outside", 0600);
    REQUIRE(symlink((tmp / "outside").c_str(), (root + "/l").c_str()) == 0);
    const struct stat outsideBefore = lstatOf(tmp / "outside");

    PermEnforcer enforcer(root, gid, pim::nullLogger());
    enforcer.setMethod(byName, 1);
    if (byName && !enforcer.pathChanges()) continue;
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> swaps{0};
    int rootFd = open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    REQUIRE(rootFd >= 0);
    std::thread swapper([&] {
      while (!stop) {
        if (renameat2(rootFd, "f", rootFd, "l", RENAME_EXCHANGE) == 0) ++swaps;
      }
    });
    PermStats total;
    for (int i = 0; i < 2000; ++i) {
      // Whichever name the regular file has now, make it wrong again.
      for (const char* name : {"f", "l"}) {
        if (fchmodat(rootFd, name, 0644, AT_SYMLINK_NOFOLLOW) != 0) continue;  // the symlink: EOPNOTSUPP
      }
      total.add(enforcer.fixEntries("", {"f", "l"}));
    }
    stop = true;
    swapper.join();
    close(rootFd);
    INFO("swaps: " << swaps << ", changes: " << total.changed);
    CHECK(swaps > 0);
    CHECK(total.changed > 0);
    CHECK(sameStat(lstatOf(tmp / "outside"), outsideBefore));
  }
}
