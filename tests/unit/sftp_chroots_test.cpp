#include "providers/sftp_chroots.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <functional>

#include "providers/host/accounts_tool.h"
#include "providers/host/real_host.h"
#include "providers/sftp_accounts.h"
#include "providers/transfer_tree.h"
#include "tests/support/etc_sandbox.h"
#include "tests/support/skip.h"

namespace fs = std::filesystem;
using namespace pim;

namespace {

std::vector<std::string> verbsAndObjects(const std::vector<Action>& actions) {
  std::vector<std::string> out;
  for (const auto& a : actions) out.push_back(std::string(verbName(a.verb)) + " " + a.object);
  return out;
}

FileInfo dir(mode_t mode, uid_t uid = 0, uint64_t inode = 0) {
  FileInfo f;
  f.type = FileType::kDirectory;
  f.mode = mode;
  f.uid = uid;
  f.device = 7;
  f.inode = inode;
  return f;
}

SftpChrootsDesired desiredOf(std::vector<ChrootAccount> accounts, std::vector<std::string> keep = {}) {
  return SftpChrootsDesired{"/srv/pim-sftp", "/data/transfer/pim", std::move(accounts), std::move(keep), ""};
}

/// The chain and the transfer tree in place; no chroot yet.
SftpChrootsCurrent settledBase() {
  SftpChrootsCurrent c;
  c.paths["/"] = dir(0755);
  c.paths["/srv"] = dir(0755);
  c.paths["/srv/pim-sftp"] = dir(0755);
  c.paths["/data/transfer/pim"] = dir(02770, 0, 100);
  c.paths["/data/transfer/pim/imports"] = dir(02770, 0, 101);
  return c;
}

/// `user`'s chroot made by the agent, with `inode` showing through its mount.
void addChroot(SftpChrootsCurrent& c, const std::string& user, uint64_t inode) {
  c.paths["/srv/pim-sftp/" + user] = dir(0755);
  c.paths["/srv/pim-sftp/" + user + "/transfer"] = dir(02770, 0, inode);
  c.mounts["/srv/pim-sftp/" + user + "/transfer"] = 1;
  c.ownedMounts.insert("/srv/pim-sftp/" + user + "/transfer");
  c.ownedDirs.insert("/srv/pim-sftp/" + user);
  c.ownedDirs.insert("/srv/pim-sftp/" + user + "/transfer");
}

bool isRoot() { return pim::test::runsAsRoot("mount namespace, bind mounts, useradd --prefix"); }

/// Runs `body` in a forked child inside a private mount namespace, so that its mounts never reach
/// the test binary's namespace (they vanish with the child). The child reports failed checks as
/// lines on a pipe; Catch macros must not run there.
struct ChildChecks {
  int fd = -1;
  int failures = 0;
  int passed = 0;
  void check(bool ok, const std::string& what) {
    if (ok) {
      ++passed;
      return;
    }
    ++failures;
    const std::string line = what + "\n";
    (void)!::write(fd, line.data(), line.size());
  }
};

/// Returns the failed checks, one per line; `*passed` is the number of checks that passed.
std::string runInPrivateNamespace(const std::function<void(ChildChecks&)>& body, int* exitCode, int* passed) {
  int fds[2];
  if (::pipe(fds) != 0) return "pipe failed";
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    ChildChecks checks;
    checks.fd = fds[1];
    if (::unshare(CLONE_NEWNS) != 0 || ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
      checks.check(false, "unshare/mount private failed");
      ::_exit(2);
    }
    try {
      body(checks);
    } catch (const std::exception& e) {
      checks.check(false, std::string("exception: ") + e.what());
    } catch (...) {
      checks.check(false, "exception");
    }
    const std::string count = "#" + std::to_string(checks.passed) + "\n";
    (void)!::write(fds[1], count.data(), count.size());
    ::_exit(checks.failures == 0 ? 0 : 1);
  }
  ::close(fds[1]);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fds[0], buf, sizeof buf)) > 0) out.append(buf, size_t(n));
  ::close(fds[0]);
  *passed = 0;
  const auto mark = out.rfind('#');
  if (mark != std::string::npos) {
    *passed = std::atoi(out.c_str() + mark + 1);
    out.erase(mark);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  *exitCode = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return out;
}

bool mountedAt(Host& host, const std::string& target) {
  auto list = host.listMounts();
  if (!list) return false;
  for (const auto& m : *list) {
    if (m.target == target) return true;
  }
  return false;
}

}  // namespace

TEST_CASE("planSftpChroots table", "[sftp_chroots]") {
  SECTION("nothing there: chain, chroot, mount point, bind mount") {
    SftpChrootsCurrent c;
    c.paths["/"] = dir(0755);
    c.paths["/data/transfer/pim/imports"] = dir(02770, 0, 101);
    auto actions = planSftpChroots(desiredOf({{"b", "akeneosftp2", "imports"}, {"a", "akeneosftp", "."}}), c);
    CHECK(verbsAndObjects(actions) ==
          std::vector<std::string>{"mkdir /srv", "mkdir /srv/pim-sftp", "mkdir /srv/pim-sftp/akeneosftp",
                                   "mkdir /srv/pim-sftp/akeneosftp/transfer", "mount /srv/pim-sftp/akeneosftp/transfer",
                                   "mkdir /srv/pim-sftp/akeneosftp2", "mkdir /srv/pim-sftp/akeneosftp2/transfer",
                                   "mount /srv/pim-sftp/akeneosftp2/transfer"});
    CHECK(actions[4].payload == "/data/transfer/pim");
    CHECK(actions[7].payload == "/data/transfer/pim/imports");
    CHECK(actions[7].describe() ==
          "sftp_chroots: mount /srv/pim-sftp/akeneosftp2/transfer (bind /data/transfer/pim/imports)");
  }
  SECTION("everything in place: nothing to do") {
    auto c = settledBase();
    addChroot(c, "akeneosftp2", 101);
    CHECK(planSftpChroots(desiredOf({{"b", "akeneosftp2", "imports"}}), c).empty());
  }
  SECTION("a missing mount (after a reboot) is made again") {
    auto c = settledBase();
    addChroot(c, "akeneosftp2", 101);
    c.mounts.clear();
    c.paths["/srv/pim-sftp/akeneosftp2/transfer"] = dir(0755);
    CHECK(verbsAndObjects(planSftpChroots(desiredOf({{"b", "akeneosftp2", "imports"}}), c)) ==
          std::vector<std::string>{"mount /srv/pim-sftp/akeneosftp2/transfer"});
  }
  SECTION("a folder change or a foreign subtree replaces the mount") {
    auto c = settledBase();
    addChroot(c, "akeneosftp2", 101);
    auto actions = planSftpChroots(desiredOf({{"b", "akeneosftp2", "."}}), c);
    REQUIRE(verbsAndObjects(actions) == std::vector<std::string>{"remount /srv/pim-sftp/akeneosftp2/transfer"});
    CHECK(actions[0].payload == "/data/transfer/pim");
  }
  SECTION("a mount someone stacked on the agent's is left alone: the account is refused, not bound") {
    auto c = settledBase();
    addChroot(c, "akeneosftp2", 101);
    c.mounts["/srv/pim-sftp/akeneosftp2/transfer"] = 2;
    std::vector<SkippedEntry> skipped;
    auto actions = planSftpChroots(desiredOf({{"b", "akeneosftp2", "imports"}}), c, &skipped);
    CHECK(actions.empty());
    REQUIRE(skipped.size() == 1);
    CHECK(skipped[0].id == "b");
    CHECK_THAT(skipped[0].reason, Catch::Contains("2 mounts that pim-access-agent did not make"));
    // Nor is it unmounted when the account goes away: the chroot stays with it.
    CHECK(planSftpChroots(desiredOf({}), c).empty());
  }
  SECTION("a mount the agent did not make on an account's mount point is never replaced") {
    auto c = settledBase();
    addChroot(c, "akeneosftp2", 101);
    c.ownedMounts.clear();
    std::vector<SkippedEntry> skipped;
    // (Not the folder the agent would bind there: that one it would leave as it is anyway.)
    auto actions = planSftpChroots(desiredOf({{"b", "akeneosftp2", "."}}), c, &skipped);
    CHECK(actions.empty());
    REQUIRE(skipped.size() == 1);
    CHECK_THAT(skipped[0].reason, Catch::Contains("a mount that pim-access-agent did not make"));
  }
  SECTION("a chroot with a wrong mode: fixed when the agent made it, refused otherwise") {
    auto c = settledBase();
    addChroot(c, "akeneosftp2", 101);
    c.paths["/srv/pim-sftp/akeneosftp2"] = dir(0775);
    CHECK(verbsAndObjects(planSftpChroots(desiredOf({{"b", "akeneosftp2", "imports"}}), c)) ==
          std::vector<std::string>{"fix /srv/pim-sftp/akeneosftp2"});
    c.ownedDirs.erase("/srv/pim-sftp/akeneosftp2");
    std::vector<SkippedEntry> skipped;
    CHECK(planSftpChroots(desiredOf({{"b", "akeneosftp2", "imports"}}), c, &skipped).empty());
    REQUIRE(skipped.size() == 1);
    CHECK(skipped[0].id == "b");
  }
  SECTION("an unsafe ancestor the agent did not make is reported for every account") {
    auto c = settledBase();
    c.paths["/srv"] = dir(0777, 1000);
    std::vector<SkippedEntry> skipped;
    auto actions = planSftpChroots(desiredOf({{"a", "akeneosftp", "."}, {"b", "akeneosftp2", "imports"}}), c, &skipped);
    CHECK(actions.empty());
    REQUIRE(skipped.size() == 2);
    CHECK_THAT(skipped[0].reason, Catch::Contains("/srv has mode 0777 owner 1000:0"));
  }
  SECTION("the chroot base the agent made is fixed") {
    auto c = settledBase();
    c.paths["/srv/pim-sftp"] = dir(0775);
    c.ownedDirs.insert("/srv/pim-sftp");
    addChroot(c, "akeneosftp", 100);
    CHECK(verbsAndObjects(planSftpChroots(desiredOf({{"a", "akeneosftp", "."}}), c)) ==
          std::vector<std::string>{"fix /srv/pim-sftp"});
  }
  SECTION("a removed account: unmount, then its directories, deepest first") {
    auto c = settledBase();
    addChroot(c, "akeneosftp", 100);
    addChroot(c, "akeneosftp2", 101);
    CHECK(verbsAndObjects(planSftpChroots(desiredOf({{"a", "akeneosftp", "."}}), c)) ==
          std::vector<std::string>{"unmount /srv/pim-sftp/akeneosftp2/transfer",
                                   "rmdir /srv/pim-sftp/akeneosftp2/transfer", "rmdir /srv/pim-sftp/akeneosftp2"});
  }
  SECTION("an account whose entry became invalid keeps its chroot and mount") {
    auto c = settledBase();
    addChroot(c, "akeneosftp2", 101);
    CHECK(planSftpChroots(desiredOf({}, {"akeneosftp2"}), c).empty());
  }
  SECTION("a refused (foreign) user gets no chroot and is not reported twice") {
    auto c = settledBase();
    c.foreignUsers.insert("legacy");
    std::vector<SkippedEntry> skipped;
    CHECK(planSftpChroots(desiredOf({{"l", "legacy", "."}}), c, &skipped).empty());
    CHECK(skipped.empty());
  }
  SECTION("a mount whose folder became unsafe is taken down") {
    auto c = settledBase();
    addChroot(c, "akeneosftp2", 101);
    c.unsafe["/data/transfer/pim/imports"] = "/data/transfer/pim/imports is a symbolic link";
    CHECK(verbsAndObjects(planSftpChroots(desiredOf({{"b", "akeneosftp2", "imports"}}), c)) ==
          std::vector<std::string>{"unmount /srv/pim-sftp/akeneosftp2/transfer"});
  }
  SECTION("records of things that are gone are dropped") {
    auto c = settledBase();
    c.ownedMounts.insert("/srv/pim-sftp/gone/transfer");
    c.ownedDirs.insert("/srv/pim-sftp/gone");
    auto actions = planSftpChroots(desiredOf({}), c);
    CHECK(verbsAndObjects(actions) ==
          std::vector<std::string>{"forget /srv/pim-sftp/gone/transfer", "forget /srv/pim-sftp/gone"});
    CHECK(actions[0].payload == "mount");
    CHECK(actions[1].payload == "file");
  }
}

TEST_CASE("sftp_chroots: bind mounts in a private mount namespace", "[sftp_chroots][root]") {
  if (!isRoot()) return;
  test::EtcSandbox sb;
  int code = -1;
  int passed = 0;
  const std::string failures = runInPrivateNamespace(
      [&](ChildChecks& t) {
        RealHost host(sb.dir(), nullLogger());
        t.check(AccountsTool(host).addGroup("pimtransfer", true).isOk(), "groupadd (login_user's in a cycle)");
        MemoryLedger ledger;
        TransferTreeProvider tree(nullLogger());
        SftpAccountsProvider accounts(nullLogger(), ledger);
        SftpChrootsProvider chroots(nullLogger(), ledger);
        std::vector<Provider*> providers{&tree, &accounts, &chroots};
        HostSettings hs;
        SshdSettings ss;
        AccessDocument doc;
        SftpAccount a;
        a.id = "sftp-main";
        a.username = "akeneosftp";
        a.passwordHash = "$6$salt$hash";
        a.folder = ".";
        SftpAccount b = a;
        b.id = "sftp-imports";
        b.username = "akeneosftp2";
        b.folder = "imports/erp";
        SftpAccount c = a;
        c.id = "sftp-old";
        c.username = "akeneosftp3";
        c.folder = "exports";
        c.active = false;
        doc.accounts = {a, b, c};
        Desired d{doc, hs, ss, 0};
        auto reconcile = [&]() {
          for (Provider* p : providers) {
            auto actions = p->plan(d, host);
            t.check(actions.isOk(), p->name() + " plan: " + actions.status().toString());
            if (!actions) return;
            for (const auto& act : *actions) {
              Status s = p->apply(act, d, host);
              t.check(s.isOk(), act.describe() + ": " + s.toString());
            }
          }
        };
        auto planEmpty = [&](const std::string& when) {
          for (Provider* p : providers) {
            auto actions = p->plan(d, host);
            t.check(actions.isOk() && actions->empty(), when + ": " + p->name() + " plan not empty");
          }
        };
        auto rootDir0755 = [&](const std::string& hostPath) {
          struct stat st {};
          return ::lstat(sb.path(hostPath).c_str(), &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 07777) == 0755 &&
                 st.st_uid == 0 && st.st_gid == 0;
        };

        reconcile();
        for (const char* u : {"akeneosftp", "akeneosftp2", "akeneosftp3"}) {
          const std::string target = chrootTransferPath(hs.chrootBase, u);
          t.check(rootDir0755(chrootPath(hs.chrootBase, u)), std::string("chroot of ") + u + " is root:root 0755");
          t.check(mountedAt(host, target), target + " listed in mountinfo");
          t.check(ledger.owns(OwnedKind::kMount, target), target + " recorded in the ledger");
        }
        t.check(rootDir0755("/srv/pim-sftp"), "chroot base is root:root 0755");
        sb.write("/data/transfer/pim/imports/erp/hello.csv", "hello\n");
        t.check(sb.read("/srv/pim-sftp/akeneosftp2/transfer/hello.csv") == "hello\n", "file visible through the mount");
        t.check(sb.read("/srv/pim-sftp/akeneosftp/transfer/imports/erp/hello.csv") == "hello\n",
                "the root account sees the whole tree");
        planEmpty("after the first apply");

        // A reboot: the mounts are gone, the next cycle makes them again.
        for (const char* u : {"akeneosftp", "akeneosftp2", "akeneosftp3"}) {
          t.check(host.unmount(chrootTransferPath(hs.chrootBase, u), false).isOk(), "unmount for the reboot");
        }
        auto afterReboot = chroots.plan(d, host);
        t.check(afterReboot.isOk() && verbsAndObjects(*afterReboot) ==
                                          std::vector<std::string>{"mount /srv/pim-sftp/akeneosftp/transfer",
                                                                   "mount /srv/pim-sftp/akeneosftp2/transfer",
                                                                   "mount /srv/pim-sftp/akeneosftp3/transfer"},
                "after a reboot the mounts are planned again");
        reconcile();
        t.check(sb.read("/srv/pim-sftp/akeneosftp2/transfer/hello.csv") == "hello\n", "mount made again");
        planEmpty("after the reboot");

        // A folder change replaces the mount.
        doc.accounts[1].folder = "exports";
        sb.write("/data/transfer/pim/exports/out.csv", "out\n");
        auto change = chroots.plan(d, host);
        t.check(change.isOk() &&
                    verbsAndObjects(*change) == std::vector<std::string>{"remount /srv/pim-sftp/akeneosftp2/transfer"},
                "a folder change plans a remount");
        reconcile();
        t.check(sb.read("/srv/pim-sftp/akeneosftp2/transfer/out.csv") == "out\n", "new folder mounted");
        t.check(!fs::exists(sb.path("/srv/pim-sftp/akeneosftp2/transfer/hello.csv")), "old folder no longer visible");
        planEmpty("after the folder change");

        // akeneosftp2 is in use (a process works inside its folder) when both accounts go.
        const std::string busyDir = sb.path("/srv/pim-sftp/akeneosftp2/transfer");
        int ready[2];
        t.check(::pipe(ready) == 0, "pipe");
        pid_t busy = ::fork();
        if (busy == 0) {
          if (::chdir(busyDir.c_str()) != 0) ::_exit(3);
          (void)!::write(ready[1], "x", 1);
          ::pause();
          ::_exit(0);
        }
        char x = 0;
        t.check(::read(ready[0], &x, 1) == 1, "busy process ready");
        doc.accounts = {c};
        reconcile();
        ::kill(busy, SIGKILL);
        ::waitpid(busy, nullptr, 0);
        bool reported = false;
        for (const auto& r : chroots.reports()) {
          if (r.find("/srv/pim-sftp/akeneosftp2/transfer") != std::string::npos &&
              r.find("lazily") != std::string::npos) {
            reported = true;
          }
        }
        t.check(reported, "the busy mount is detached lazily and reported");
        for (const char* u : {"akeneosftp", "akeneosftp2"}) {
          const std::string target = chrootTransferPath(hs.chrootBase, u);
          t.check(!mountedAt(host, target), target + " unmounted");
          t.check(!ledger.owns(OwnedKind::kMount, target), target + " dropped from the ledger");
          t.check(!fs::exists(sb.path(chrootPath(hs.chrootBase, u))), std::string("chroot of ") + u + " removed");
        }
        t.check(mountedAt(host, chrootTransferPath(hs.chrootBase, "akeneosftp3")),
                "the remaining account keeps its mount");
        t.check(sb.read("/data/transfer/pim/imports/erp/hello.csv") == "hello\n", "files under the transfer root stay");
        t.check(sb.read("/data/transfer/pim/exports/out.csv") == "out\n", "files under the transfer root stay (2)");
        planEmpty("after the removal");
      },
      &code, &passed);
  INFO(failures);
  CHECK(failures.empty());
  CHECK(code == 0);
  CHECK(passed >= 30);
}

TEST_CASE("sftp_chroots refuses a chroot below a writable ancestor", "[sftp_chroots][root]") {
  if (!isRoot()) return;
  test::EtcSandbox sb;
  RealHost host(sb.dir(), nullLogger());
  MemoryLedger ledger;
  SftpChrootsProvider chroots(nullLogger(), ledger);
  fs::create_directories(sb.path("/srv"));
  REQUIRE(::chmod(sb.path("/srv").c_str(), 0777) == 0);
  fs::create_directories(sb.path("/data/transfer/pim"));
  HostSettings hs;
  SshdSettings ss;
  AccessDocument doc;
  SftpAccount a;
  a.id = "sftp-main";
  a.username = "akeneosftp";
  a.folder = ".";
  doc.accounts = {a};
  Desired d{doc, hs, ss, 0};
  auto actions = chroots.plan(d, host);
  REQUIRE(actions.isOk());
  CHECK(actions->empty());
  REQUIRE(chroots.skipped().size() == 1);
  CHECK(chroots.skipped()[0].id == "sftp-main");
  CHECK_THAT(chroots.skipped()[0].reason, Catch::Contains("/srv has mode 0777 owner 0:0"));
  CHECK_FALSE(fs::exists(sb.path("/srv/pim-sftp")));
}
