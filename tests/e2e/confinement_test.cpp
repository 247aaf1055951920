// Issue "Never more access than the store grants", end to end with a real sshd and real
// ssh/sftp/sshpass clients: whatever fails or crashes, no account or key logs in outside its
// confinement or from a refused address, and every revocation of the document in force is
// effective within one cycle. The cases attack the cycle where it used to grant too much: a lost
// state database, a failed reload, a slow `sshd -t`, crashes at any point (failpoints and random
// SIGKILLs, also during useradd), a folder the host refuses, a mount the agent did not make, a
// failing part next to revocations. Each case runs in its own namespace (in-namespace.sh).

#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include <catch2/catch.hpp>

#include "tests/e2e/harness.h"

using namespace pim::e2e;

namespace {

const std::string kRefusedAddr = "127.0.0.2";  // not in always_allow (127.0.0.1/32) nor the documents

/// The users of /etc/passwd whose home is "/transfer": what the agent makes as SFTP accounts.
std::set<std::string> sftpSignatureUsers() {
  std::set<std::string> out;
  std::ifstream f("/etc/passwd");
  for (std::string line; std::getline(f, line);) {
    std::vector<std::string> fields;
    std::stringstream ss(line);
    for (std::string field; std::getline(ss, field, ':');) fields.push_back(field);
    if (fields.size() >= 6 && fields[5] == "/transfer") out.insert(fields[0]);
  }
  return out;
}

/// The users the state database records as the agent's.
std::set<std::string> recordedUsers(const std::string& db) {
  CommandOutput r = mustRun({"sqlite3", db, "SELECT name FROM owned WHERE kind = 'user' ORDER BY name"});
  std::set<std::string> out;
  std::stringstream ss(r.out);
  for (std::string line; std::getline(ss, line);) {
    if (!line.empty()) out.insert(line);
  }
  return out;
}

/// The pid of the first process whose command name is `comm` (this namespace's /proc), or -1.
pid_t findProcess(const std::string& comm) {
  DIR* d = ::opendir("/proc");
  if (d == nullptr) return -1;
  pid_t found = -1;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream f("/proc/" + name + "/comm");
    std::string c;
    std::getline(f, c);
    if (c == comm) {
      found = pid_t(std::stol(name));
      break;
    }
  }
  ::closedir(d);
  return found;
}

/// Logs in over ssh with a key and runs `id -un`: true when the login user got a shell.
bool keyLogsIn(ManagedHost& host, const KeyPair& key, const std::string& addr = "127.0.0.1") {
  auto r = host.sshd().sshRun("akeneo", Credential::key(key), "id -un", {}, addr);
  return r.exit == 0 && trim(r.out) == "akeneo";
}

/// An SFTP session with a password that lists its working directory: true when it got in.
bool sftpLogsIn(ManagedHost& host, const std::string& user, const std::string& password,
                const std::string& addr = "127.0.0.1") {
  return host.sshd().sftpBatch(user, Credential::withPassword(password), "pwd\n", addr).exit == 0;
}

/// What an SFTP account must not be able to do, even with its own password: a shell command,
/// a TCP forward, reading outside its chroot, logging in from a refused address.
void checkConfined(ManagedHost& host, const std::string& user, const std::string& password) {
  INFO("account " << user);
  auto shell = host.sshd().sshRun(user, Credential::withPassword(password), "id; cat /etc/passwd");
  CHECK_FALSE(contains(shell.out, "uid="));
  CHECK_FALSE(contains(shell.out, "root:x:0:0"));
  auto forward = host.sshd().sshRun(
      user, Credential::withPassword(password), "",
      {"-N", "-o", "ExitOnForwardFailure=yes", "-W", "127.0.0.1:" + std::to_string(host.sshd().port())});
  CHECK_FALSE(contains(forward.out, "SSH-2.0"));
  auto escape = host.sshd().sftpBatch(user, Credential::withPassword(password), "get /etc/passwd passwd.copy\n");
  CHECK(escape.exit != 0);
  CHECK_FALSE(sftpLogsIn(host, user, password, kRefusedAddr));
}

/// `status --json`'s last_error ("" when null).
std::string lastError(ManagedHost& host) {
  auto status = host.status();
  return status->isNull("last_error") ? std::string() : status->getValue<std::string>("last_error");
}

std::string hashOf(const std::string& password) {
  static std::map<std::string, std::string> cache;
  auto it = cache.find(password);
  if (it == cache.end()) it = cache.emplace(password, cryptHash(password)).first;
  return it->second;
}

}  // namespace

TEST_CASE("e2e confinement: with the state database lost, the agent's own SFTP account stays confined",
          "[e2e][confinement]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  ManagedHost host;
  DocSpec doc;
  doc.allowedSources = {"203.0.113.0/24"};
  doc.accounts = {{"sftp-main", "akeneosftp", hashOf("Main-pass-1"), ".", true, {}}};
  host.apply(doc);
  REQUIRE(sftpLogsIn(host, "akeneosftp", "Main-pass-1"));

  // A reinstall, an `apt purge`, a lost /var/lib: the state directory is emptied.
  const std::string db = host.agent().setting("state.db");
  for (const char* suffix : {"", "-wal", "-shm"}) ::unlink((db + suffix).c_str());
  CommandOutput again = host.run({"once"});
  INFO(again.out << again.err);
  CHECK(again.exit == 0);
  CHECK_FALSE(contains(again.out, "not created by pim-access-agent"));
  CHECK(recordedUsers(db).count("akeneosftp") == 1);  // recognised by its signature
  CHECK(contains(readFile(ManagedHost::kDropin), "akeneosftp"));
  REQUIRE(sftpLogsIn(host, "akeneosftp", "Main-pass-1"));
  checkConfined(host, "akeneosftp", "Main-pass-1");

  // Removed from the document afterwards, it goes: the agent knows it is its own.
  doc.revision = 2;
  doc.accounts.clear();
  host.apply(doc);
  CHECK(sftpSignatureUsers().empty());
  CHECK_FALSE(sftpLogsIn(host, "akeneosftp", "Main-pass-1"));
}

TEST_CASE("e2e confinement: a failed reload holds new grants back, is remembered and retried", "[e2e][confinement]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  TempDir scripts;
  const std::string reload = scripts.file("reload.sh");
  const std::string refuse = scripts.file("refuse-reloads");
  ManagedHost host({{"sshd.reload_command", reload}});
  writeFile(reload,
            "#!/bin/sh\n[ -e " + refuse + " ] && { echo 'reload refused by the test' >&2; exit 1; }\nexec " +
                host.sshd().reloadCommand() + "\n",
            0755);
  KeyPair alice = generateKey(host.tmp().path(), "ed25519", "alice");
  KeyPair bob = generateKey(host.tmp().path(), "ed25519", "bob");
  DocSpec doc;
  doc.allowedSources = {"127.0.0.2/32"};
  doc.keys = {{"k-alice", alice.publicLine, true, ""}};
  doc.accounts = {{"sftp-main", "akeneosftp", hashOf("Main-pass-1"), ".", true, {}}};
  host.apply(doc);
  REQUIRE(keyLogsIn(host, alice, kRefusedAddr));

  // Revision 2 narrows the sources, removes alice's key and adds bob and a new account; sshd
  // refuses to reload.
  writeFile(refuse, "");
  doc.revision = 2;
  doc.allowedSources = {"203.0.113.0/24"};
  doc.keys = {{"k-bob", bob.publicLine, true, ""}};
  doc.accounts.push_back({"sftp-new", "newsftp", hashOf("New-pass-1"), ".", true, {}});
  host.agent().setDocument(renderDocument(doc));
  CommandOutput failed = host.agent().run({"once"});  // (sshd is not reloaded: no waiting for it)
  INFO(failed.out << failed.err);
  CHECK(failed.exit == 5);
  CHECK(contains(failed.out + failed.err, "reload refused by the test"));
  // The revocations are in place; nothing new is granted while sshd runs its old configuration.
  CHECK_FALSE(keyLogsIn(host, alice));
  CHECK_FALSE(keyLogsIn(host, bob));
  CHECK_FALSE(sftpLogsIn(host, "newsftp", "New-pass-1"));
  CHECK_FALSE(sftpLogsIn(host, "newsftp", "New-pass-1", kRefusedAddr));

  // Remembered: another process sees the reload owed, and status says so.
  CHECK(contains(lastError(host), "reload"));
  CommandOutput still = host.agent().run({"once"});
  CHECK(still.exit == 5);
  CHECK_FALSE(sftpLogsIn(host, "newsftp", "New-pass-1"));

  // sshd reloads again: the next once reloads first, then grants, confined.
  ::unlink(refuse.c_str());
  CommandOutput healed = host.run({"once"});
  INFO(healed.out << healed.err);
  CHECK(healed.exit == 0);
  CHECK(keyLogsIn(host, bob));
  CHECK_FALSE(keyLogsIn(host, bob, kRefusedAddr));  // the narrowed sources are live too
  CHECK(sftpLogsIn(host, "newsftp", "New-pass-1"));
  checkConfined(host, "newsftp", "New-pass-1");
  CHECK(lastError(host).empty());
}

TEST_CASE("e2e confinement: new accounts are never live before their Match block, even with a slow sshd -t",
          "[e2e][confinement]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  TempDir scripts;
  const std::string slowSshd = scripts.file("slow-sshd");
  writeFile(slowSshd, "#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = -t ] && sleep 4; done\nexec /usr/sbin/sshd \"$@\"\n",
            0755);
  ManagedHost host({{"sshd.binary", slowSshd}});
  DocSpec doc;
  doc.allowedSources = {"203.0.113.0/24"};
  host.apply(doc);

  doc.revision = 2;
  for (int i = 0; i < 3; ++i) {
    doc.accounts.push_back(
        {"sftp-" + std::to_string(i), "fresh" + std::to_string(i), hashOf("Fresh-pass-1"), ".", true, {}});
  }
  host.agent().setDocument(renderDocument(doc));
  // While the cycle runs, try shells and forwards with the new accounts' password.
  // Each failed password costs about 2 s (PAM's delay): several attackers in parallel.
  std::atomic<bool> done{false};
  std::atomic<int> attempts{0};
  std::mutex mutex;
  std::vector<std::string> breaches;
  std::vector<std::thread> attackers;
  for (int t = 0; t < 6; ++t) {
    attackers.emplace_back([&, t] {
      while (!done.load()) {
        const std::string user = "fresh" + std::to_string(t % 3);
        auto r = host.sshd().sshRun(user, Credential::withPassword("Fresh-pass-1"), "id -un");
        ++attempts;
        if (contains(r.out, user)) {
          std::lock_guard<std::mutex> lock(mutex);
          breaches.push_back(user + ": " + r.out);
        }
      }
    });
  }
  CommandOutput once = host.run({"once"});
  done = true;
  for (auto& t : attackers) t.join();
  INFO(once.out << once.err);
  CHECK(once.exit == 0);
  CHECK(attempts.load() > 3);
  CHECK(breaches.empty());
  for (int i = 0; i < 3; ++i) {
    CHECK(sftpLogsIn(host, "fresh" + std::to_string(i), "Fresh-pass-1"));
  }
  checkConfined(host, "fresh0", "Fresh-pass-1");
}

TEST_CASE("e2e confinement: killed before its outcome is recorded, a cycle's revocations survive the next start",
          "[e2e][confinement][crash]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  ManagedHost host;
  KeyPair kept = generateKey(host.tmp().path(), "ed25519", "kept");
  KeyPair revoked = generateKey(host.tmp().path(), "ed25519", "revoked");
  DocSpec doc;
  doc.allowedSources = {"203.0.113.0/24"};
  doc.keys = {{"k-kept", kept.publicLine, true, ""}, {"k-revoked", revoked.publicLine, true, ""}};
  doc.accounts = {{"sftp-kept", "keptsftp", hashOf("Kept-pass-1"), ".", true, {}},
                  {"sftp-gone", "gonesftp", hashOf("Gone-pass-1"), ".", true, {}}};
  host.apply(doc);
  REQUIRE(keyLogsIn(host, revoked));
  REQUIRE(sftpLogsIn(host, "gonesftp", "Gone-pass-1"));

  doc.revision = 2;
  doc.keys.pop_back();
  doc.accounts.pop_back();
  host.agent().setDocument(renderDocument(doc));
  CommandOutput crashed = runCommand({agentBinary(), "--config", host.agent().configPath(), "once"}, "",
                                     std::chrono::seconds(120), {"PIM_FAILPOINT=crash-before-finish"});
  INFO(crashed.err);
  REQUIRE(crashed.exit == 128 + SIGKILL);

  // The next start, with the store out of reach (a reboot during an outage): recovery only.
  const std::string parked = host.agent().documentPath() + ".parked";
  REQUIRE(::rename(host.agent().documentPath().c_str(), parked.c_str()) == 0);
  CommandOutput recovered = host.run({"once"});
  INFO(recovered.out << recovered.err);
  CHECK(recovered.exit == 4);
  CHECK_FALSE(keyLogsIn(host, revoked));
  CHECK_FALSE(sftpLogsIn(host, "gonesftp", "Gone-pass-1"));
  CHECK(keyLogsIn(host, kept));
  CHECK(sftpLogsIn(host, "keptsftp", "Kept-pass-1"));
  CHECK(host.status()->getValue<int64_t>("revision") == 2);

  // A daemon starting while the store is still down re-applies the document in force: revision 2.
  CommandOutput daemon =
      runCommand({"timeout", "-s", "TERM", "4", agentBinary(), "--config", host.agent().configPath(), "run"}, "",
                 std::chrono::seconds(20));
  INFO(daemon.err);
  CHECK_FALSE(keyLogsIn(host, revoked));
  CHECK_FALSE(sftpLogsIn(host, "gonesftp", "Gone-pass-1"));
  CHECK(keyLogsIn(host, kept));
}

TEST_CASE("e2e confinement: random SIGKILLs of cycles never leave a grant before a revocation",
          "[e2e][confinement][crash]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  ManagedHost host;
  KeyPair a = generateKey(host.tmp().path(), "ed25519", "a");
  KeyPair b = generateKey(host.tmp().path(), "ed25519", "b");
  // Two documents that each revoke what the other grants: a key and two accounts apiece.
  auto docFor = [&](int64_t revision) {
    DocSpec d;
    d.revision = revision;
    d.allowedSources = {"203.0.113.0/24"};
    const bool even = revision % 2 == 0;
    d.keys = {{even ? "k-a" : "k-b", (even ? a : b).publicLine, true, ""}};
    for (const char* name : {"x", "y"}) {
      const std::string user = std::string(name) + (even ? "evensftp" : "oddsftp");
      d.accounts.push_back({"sftp-" + user, user, hashOf("Pass-" + user), ".", true, {}});
    }
    return d;
  };
  host.apply(docFor(1));
  std::mt19937 rng(20261206);
  std::uniform_int_distribution<int> delayMs(0, 900);
  const std::string db = host.agent().setting("state.db");
  for (int round = 2; round <= 11; ++round) {
    INFO("round " << round);
    host.agent().setDocument(renderDocument(docFor(round)));
    const int delay = delayMs(rng);
    std::thread killer([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(delay));
      const pid_t agent = findProcess("pim-access-agen");
      if (agent > 0) ::kill(agent, SIGKILL);
    });
    CommandOutput cycle = runCommand({agentBinary(), "--config", host.agent().configPath(), "once"});
    killer.join();
    // Whatever point it died at: every SFTP account on the host is recorded as the agent's, and
    // a grant of this round never stands next to what this round revokes.
    const auto users = sftpSignatureUsers();
    const auto recorded = recordedUsers(db);
    for (const auto& u : users) CHECK(recorded.count(u) == 1);
    const bool even = round % 2 == 0;
    const std::string grant = even ? "evensftp" : "oddsftp";
    const std::string revoke = even ? "oddsftp" : "evensftp";
    bool granted = false, revokedAll = true;
    for (const auto& u : users) {
      if (u.find(grant) != std::string::npos) granted = true;
      if (u.find(revoke) != std::string::npos) revokedAll = false;
    }
    INFO("exit " << cycle.exit << ", killed after " << delay << " ms; users:" << [&] {
      std::string s;
      for (const auto& u : users) s += " " + u;
      return s;
    }());
    CHECK((!granted || revokedAll));
    // The next start finishes the round's document, whatever the store does.
    CommandOutput next = host.run({"once"});
    INFO(next.out << next.err);
    CHECK(next.exit == 0);
    CHECK(keyLogsIn(host, even ? a : b));
    CHECK_FALSE(keyLogsIn(host, even ? b : a));
    CHECK(sftpLogsIn(host, "x" + grant, "Pass-x" + grant));
    CHECK_FALSE(sftpLogsIn(host, "x" + revoke, "Pass-x" + revoke));
  }
}

TEST_CASE("e2e confinement: killed between the drop-in and sshd's reload, the next cycle reloads before it grants",
          "[e2e][confinement][crash]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  // The reload command kills the agent the first time (the window a SIGKILL can hit: the new
  // drop-in written, sshd not told), then reloads sshd.
  TempDir scripts;
  const std::string marker = scripts.file("killed-once");
  const std::string realReload = scripts.file("reload-command");
  writeFile(scripts.file("reload.sh"),
            "#!/bin/sh\nif [ ! -e " + marker + " ]; then : >" + marker +
                "; kill -9 $PPID; sleep 5; exit 1; fi\nexec $(cat " + realReload + ")\n",
            0755);
  ManagedHost host(std::map<std::string, std::string>{{"sshd.reload_command", scripts.file("reload.sh")}});
  writeFile(realReload, host.sshd().reloadCommand() + "\n");
  DocSpec doc;
  doc.allowedSources = {"203.0.113.0/24"};
  doc.accounts = {{"sftp-new", "newsftp", hashOf("Pass-newsftp"), ".", true, {}}};
  const size_t starts = host.sshd().starts();
  host.agent().setDocument(renderDocument(doc));
  CommandOutput killed = runCommand({agentBinary(), "--config", host.agent().configPath(), "once"});
  INFO("killed once: exit " << killed.exit << "\n" << killed.out << killed.err);
  REQUIRE(pathExists(marker));
  CHECK(killed.exit != 0);
  REQUIRE(contains(readFile(ManagedHost::kDropin), "newsftp"));  // the new drop-in is in place...
  CHECK(host.sshd().starts() == starts);                         // ...and sshd never loaded it
  // The reload is owed, and says so.
  CHECK_FALSE(host.status()->isNull("sshd_reload_pending"));

  CommandOutput next = host.run({"once"});
  INFO("next once:\n" << next.out << next.err);
  CHECK(next.exit == 0);
  CHECK(host.sshd().starts() > starts);
  CHECK(sftpLogsIn(host, "newsftp", "Pass-newsftp"));
  CHECK(host.status()->isNull("sshd_reload_pending"));
}

TEST_CASE("e2e confinement: kill -9 during useradd (or systemd-sysusers), 30 times: no account the agent does not know",
          "[e2e][confinement][crash]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  ManagedHost host;
  const std::string db = host.agent().setting("state.db");
  DocSpec doc;
  doc.allowedSources = {"203.0.113.0/24"};
  host.apply(doc);
  int killedDuringUseradd = 0;
  for (int round = 0; round < 30; ++round) {
    INFO("round " << round);
    doc.revision = 2 + round;
    doc.accounts.clear();
    // One new account is made by useradd, several by one systemd-sysusers run: both, in turn.
    const int count = round % 2 == 0 ? 1 : 4;
    for (int i = 0; i < count; ++i) {
      const std::string user = "r" + std::to_string(round) + "u" + std::to_string(i);
      doc.accounts.push_back({"sftp-" + user, user, hashOf("Pass-1"), ".", true, {}});
    }
    host.agent().setDocument(renderDocument(doc));
    std::atomic<bool> done{false};
    std::atomic<bool> killed{false};
    std::thread killer([&] {
      while (!done.load()) {
        if (findProcess("useradd") > 0 || findProcess("systemd-sysuser") > 0) {
          const pid_t agent = findProcess("pim-access-agen");
          if (agent > 0 && ::kill(agent, SIGKILL) == 0) killed = true;
          return;
        }
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
    });
    CommandOutput cycle = runCommand({agentBinary(), "--config", host.agent().configPath(), "once"});
    done = true;
    killer.join();
    if (killed) ++killedDuringUseradd;
    // useradd may still be finishing its account: wait for it, then compare.
    for (int i = 0; i < 200 && (findProcess("useradd") > 0 || findProcess("systemd-sysuser") > 0); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    const auto recorded = recordedUsers(db);
    for (const auto& u : sftpSignatureUsers()) {
      INFO("account " << u << " (agent exit " << cycle.exit << ")");
      CHECK(recorded.count(u) == 1);
    }
  }
  CHECK(killedDuringUseradd >= 20);
  // The next cycle converges: exactly the last document's accounts, confined.
  CommandOutput last = host.run({"once"});
  INFO(last.out << last.err);
  CHECK(last.exit == 0);
  std::set<std::string> expected;
  for (const auto& acc : doc.accounts) expected.insert(acc.username);
  CHECK(sftpSignatureUsers() == expected);
  checkConfined(host, doc.accounts[0].username, "Pass-1");
}

TEST_CASE("e2e confinement: an account whose folder the host refuses is skipped and locked", "[e2e][confinement]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  ManagedHost host;
  DocSpec doc;
  doc.allowedSources = {"203.0.113.0/24"};
  doc.accounts = {{"sftp-main", "akeneosftp", hashOf("Main-pass-1"), ".", true, {}}};
  host.apply(doc);
  // Someone with write access to the transfer tree plants a symlink where a folder is wanted.
  ::symlink("/etc", (host.transferRoot() + "/evil").c_str());
  doc.revision = 2;
  doc.accounts.push_back({"sftp-evil", "evilsftp", hashOf("Evil-pass-1"), "evil", true, {}});
  host.agent().setDocument(renderDocument(doc));
  CommandOutput once = host.run({"once"});
  INFO(once.out << once.err);
  CHECK(once.exit == 0);
  CHECK(contains(once.out, "sftp-evil"));
  CHECK_FALSE(sftpLogsIn(host, "evilsftp", "Evil-pass-1"));
  auto shell = host.sshd().sshRun("evilsftp", Credential::withPassword("Evil-pass-1"), "id");
  CHECK_FALSE(contains(shell.out, "uid="));
  CHECK(sftpLogsIn(host, "akeneosftp", "Main-pass-1"));  // the rest of the document applies
}

TEST_CASE("e2e confinement: a mount the agent did not make on a chroot's mount point is left alone",
          "[e2e][confinement]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  ManagedHost host;
  DocSpec doc;
  doc.allowedSources = {"203.0.113.0/24"};
  doc.accounts = {{"sftp-main", "akeneosftp", hashOf("Main-pass-1"), ".", true, {}}};
  host.apply(doc);
  const std::string point = host.chrootBase() + "/akeneosftp/transfer";
  mustRun({"mount", "-t", "tmpfs", "-o", "mode=755", "operator-mount", point});
  writeFile(point + "/operator-note.txt", "left by an operator\n");

  CommandOutput once = host.run({"once"});
  INFO(once.out << once.err);
  CHECK(once.exit == 0);
  CHECK(contains(once.out, "did not make"));
  CHECK(readFile(point + "/operator-note.txt") == "left by an operator\n");  // still mounted, still seen
  CHECK_FALSE(sftpLogsIn(host, "akeneosftp", "Main-pass-1"));                // not bound there: locked

  // The operator takes the mount away: the account is bound and usable again.
  mustRun({"umount", point});
  CommandOutput healed = host.run({"once"});
  INFO(healed.out << healed.err);
  CHECK(healed.exit == 0);
  CHECK(sftpLogsIn(host, "akeneosftp", "Main-pass-1"));
}

TEST_CASE("e2e confinement: a failing part does not hold back the revocations and grants next to it",
          "[e2e][confinement]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  ManagedHost host;
  KeyPair kept = generateKey(host.tmp().path(), "ed25519", "kept");
  KeyPair revoked = generateKey(host.tmp().path(), "ed25519", "revoked");
  DocSpec doc;
  doc.allowedSources = {"127.0.0.2/32"};
  doc.keys = {{"k-kept", kept.publicLine, true, ""}, {"k-revoked", revoked.publicLine, true, ""}};
  doc.accounts = {{"sftp-gone", "gonesftp", hashOf("Gone-pass-1"), ".", true, {}}};
  host.apply(doc);
  REQUIRE(keyLogsIn(host, revoked, kRefusedAddr));

  // Revision 2 revokes a key, an account and a source and adds an account; the first step of
  // the chroots (the unmount of the removed account's folder) fails.
  doc.revision = 2;
  doc.allowedSources = {"203.0.113.0/24"};
  doc.keys.pop_back();
  doc.accounts = {{"sftp-new", "newsftp", hashOf("New-pass-1"), ".", true, {}}};
  host.agent().setDocument(renderDocument(doc));
  const size_t starts = host.sshd().starts();
  CommandOutput failed = runCommand({agentBinary(), "--config", host.agent().configPath(), "once"}, "",
                                    std::chrono::seconds(120), {"PIM_FAILPOINT=fail-provider:sftp_chroots"});
  REQUIRE(host.sshd().waitForStart(starts));  // the narrowed drop-in was loaded
  INFO(failed.out << failed.err);
  CHECK(failed.exit == 5);
  CHECK(contains(failed.out, "partial"));
  CHECK_FALSE(keyLogsIn(host, revoked));
  CHECK_FALSE(keyLogsIn(host, kept, kRefusedAddr));
  CHECK(contains(failed.out, "unmount " + host.chrootBase() + "/gonesftp/transfer"));
  CHECK_FALSE(sftpLogsIn(host, "gonesftp", "Gone-pass-1"));
  CHECK(keyLogsIn(host, kept));
  CHECK(sftpLogsIn(host, "newsftp", "New-pass-1"));  // its own steps went through: granted, confined
  checkConfined(host, "newsftp", "New-pass-1");

  // The next cycle finishes the same generation.
  CommandOutput again = host.run({"once"});
  INFO(again.out << again.err);
  CHECK(again.exit == 0);
  CHECK(contains(again.out, "unmount " + host.chrootBase() + "/gonesftp/transfer"));
  CHECK(host.history()->size() == 2);
}
