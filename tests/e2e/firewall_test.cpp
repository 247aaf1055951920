// Issue 16, end to end: the network allow-list at the firewall. The agent binary (no --root)
// keeps its nftables table in the test's private network namespace; a client namespace joined
// by a veth pair (198.51.100.0/24 and 2001:db8:1::/64, nothing else) runs real ssh, sftp and
// sshpass against a real sshd that listens there too. Loopback is always let through, so every
// refusal here is seen from the client namespace.

#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <future>
#include <thread>

#include "tests/e2e/harness.h"

using namespace pim::e2e;

namespace {

const char* const kLogin = "akeneo";
const char* const kAllowed4 = "198.51.100.10";
const char* const kRefused4 = "198.51.100.20";
const char* const kOperator4 = "198.51.100.30";
const char* const kAllowed6 = "2001:db8:1::10";
const char* const kRefused6 = "2001:db8:1::20";
const char* const kOperator6 = "2001:db8:1::30";

const std::vector<std::string> kClients{kAllowed4, kRefused4, kOperator4, kAllowed6, kRefused6, kOperator6};
const std::vector<std::string> kListen{ClientNetwork::kServer4, ClientNetwork::kServer6};
const std::map<std::string, std::string> kSettings{
    {"host.always_allow", "127.0.0.1/32, ::1/128, 198.51.100.30/32, 2001:db8:1::30/128"}};

void requireLogsIn(ManagedHost& host, const NetPath& path, const KeyPair& key, const std::string& what) {
  CommandOutput r = host.sshd().sshOver(path, kLogin, Credential::key(key), "id -un");
  INFO(what << " from " << path.from << ": ssh exit " << r.exit << "\nstderr: " << r.err << "\nsshd log:\n"
            << host.sshd().log());
  REQUIRE(r.exit == 0);
  REQUIRE(trim(r.out) == kLogin);
}

void requireConnectionRefused(ManagedHost& host, const NetPath& path, const KeyPair& key, const std::string& what) {
  CommandOutput r = host.sshd().sshOver(path, kLogin, Credential::key(key), "id -un");
  INFO(what << " from " << path.from << ": ssh exit " << r.exit << "\nstdout: " << r.out << "\nstderr: " << r.err);
  CHECK(r.exit == 255);
  CHECK(contains(r.err, "Connection refused"));
  CHECK_FALSE(contains(r.out, kLogin));
}

/// `n` wrong passwords for `user` from `path`, five at a time (sshd's PAM delays each failure by
/// about 2 s). Each attempt fails; sshd logs one failure per attempt.
void wrongPasswords(ManagedHost& host, const NetPath& path, const std::string& user, int n) {
  for (int batch = 0; batch < n; batch += 5) {
    std::vector<std::future<CommandOutput>> tries;
    for (int i = batch; i < std::min(n, batch + 5); ++i) {
      tries.push_back(std::async(std::launch::async, [&host, &path, &user, i] {
        return host.sshd().sftpOver(path, user, Credential::withPassword("wrong-" + std::to_string(i)), "pwd\n");
      }));
    }
    for (auto& t : tries) CHECK(t.get().exit != 0);
  }
}

/// The daemon's first cycle makes the table before the account (revocations first): waits until
/// `user` logs in with `password` from loopback, which is in always_allow, so that the tries made
/// before the account exists ("Failed password for invalid user") count for no client address.
void waitForAccount(ManagedHost& host, const std::string& user, const std::string& password) {
  REQUIRE(
      eventually([&] { return host.sshd().sftpBatch(user, Credential::withPassword(password), "pwd\n").exit == 0; }));
}

std::string nftTable() { return runCommand({"nft", "list", "table", "inet", "pim_access_agent"}).out; }

/// `plan` lists no action: after apply, a fresh plan is empty.
void requirePlanEmpty(ManagedHost& host) {
  CommandOutput r = host.run({"plan"});
  INFO("plan: exit " << r.exit << "\n" << r.out << "\n" << r.err);
  REQUIRE(r.exit == 0);
  CHECK(contains(r.out, "actions: 0\n"));
}

}  // namespace

TEST_CASE("e2e firewall: Connection refused from a refused address, for ssh and sftp, IPv4 and IPv6",
          "[e2e][firewall]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  ClientNetwork net(kClients);
  ManagedHost host(kSettings, kListen);
  KeyPair alice = generateKey(host.tmp().path(), "ed25519", "alice");
  const std::string password = "sftp-pass-1";

  DocSpec doc;
  doc.revision = 1;
  doc.keys = {{"k-alice", alice.publicLine, true, ""}};
  doc.accounts = {{"sftp-main", "akeneosftp", cryptHash(password), ".", true, {}}};
  doc.allowedSources = {"198.51.100.8/29", "2001:db8:1::10/128"};
  host.apply(doc);
  INFO("table:\n" << nftTable());
  CHECK(contains(nftTable(), "198.51.100.8/29"));
  requirePlanEmpty(host);

  for (const char* from : {kAllowed4, kAllowed6}) {
    requireLogsIn(host, net.from(from), alice, "allowed");
    CommandOutput s = host.sshd().sftpOver(net.from(from), "akeneosftp", Credential::withPassword(password), "pwd\n");
    INFO("sftp from " << from << ": " << s.exit << "\n" << s.out << s.err);
    CHECK(s.exit == 0);
  }
  for (const char* from : {kRefused4, kRefused6}) {
    requireConnectionRefused(host, net.from(from), alice, "refused");
    CommandOutput s = host.sshd().sftpOver(net.from(from), "akeneosftp", Credential::withPassword(password), "pwd\n");
    INFO("sftp from " << from << ": " << s.exit << "\n" << s.out << s.err);
    CHECK(s.exit != 0);
    CHECK(contains(s.err, "Connection refused"));
  }
  // The operators' ranges always connect, even with an empty document list.
  for (const char* from : {kOperator4, kOperator6}) requireLogsIn(host, net.from(from), alice, "always_allow");
  doc.revision = 2;
  doc.allowedSources = {};
  host.apply(doc);
  for (const char* from : {kOperator4, kOperator6})
    requireLogsIn(host, net.from(from), alice, "always_allow, empty list");
  for (const char* from : {kAllowed4, kAllowed6}) requireConnectionRefused(host, net.from(from), alice, "empty list");
  // Loopback is always let through (sshd decides there).
  CommandOutput lo = host.sshd().sshRun(kLogin, Credential::key(alice), "id -un");
  CHECK(lo.exit == 0);
  requirePlanEmpty(host);
}

TEST_CASE("e2e firewall: a narrowed range is refused at the next cycle, an open session survives, rollback restores",
          "[e2e][firewall]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  ClientNetwork net(kClients);
  ManagedHost host(kSettings, kListen);
  KeyPair alice = generateKey(host.tmp().path(), "ed25519", "alice");

  DocSpec doc;
  doc.revision = 1;
  doc.keys = {{"k-alice", alice.publicLine, true, ""}};
  doc.allowedSources = {"198.51.100.8/29", "2001:db8:1::/112"};
  host.apply(doc);
  requireLogsIn(host, net.from(kAllowed4), alice, "rev 1");
  requireLogsIn(host, net.from(kAllowed6), alice, "rev 1");
  requireConnectionRefused(host, net.from(kRefused4), alice, "rev 1");

  // A session open from .10 while revision 2 removes its range and adds .16/29 (where .20 is).
  auto session = std::async(std::launch::async, [&]() {
    return host.sshd().sshOver(net.from(kAllowed4), kLogin, Credential::key(alice), "sleep 10; echo survived");
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  doc.revision = 2;
  doc.allowedSources = {"198.51.100.16/29", "2001:db8:1::20/128"};
  CommandOutput applied = host.apply(doc);
  // Two transactions: the removed range closed in the revoke stage, the new one opened last.
  INFO(applied.out << applied.err);
  CHECK(contains(applied.out, "firewall: narrow"));
  CHECK(contains(applied.out, "firewall: widen"));
  // The narrowing was in force while the session was still open.
  REQUIRE(session.wait_for(std::chrono::seconds(0)) != std::future_status::ready);
  requireConnectionRefused(host, net.from(kAllowed4), alice, "a new connection while the session is open");
  CommandOutput open = session.get();
  INFO("the session opened before the narrowing: exit " << open.exit << "\n" << open.out << open.err);
  CHECK(open.exit == 0);
  CHECK(contains(open.out, "survived"));

  requireConnectionRefused(host, net.from(kAllowed4), alice, "rev 2: range removed");
  requireConnectionRefused(host, net.from(kAllowed6), alice, "rev 2: range removed");
  requireLogsIn(host, net.from(kRefused4), alice, "rev 2: range added");
  requireLogsIn(host, net.from(kRefused6), alice, "rev 2: range added");

  // rollback 1 restores the first sets.
  CommandOutput rb = host.run({"rollback", "1"});
  INFO(rb.out << rb.err);
  REQUIRE(rb.exit == 0);
  requireLogsIn(host, net.from(kAllowed4), alice, "after rollback");
  requireLogsIn(host, net.from(kAllowed6), alice, "after rollback");
  requireConnectionRefused(host, net.from(kRefused4), alice, "after rollback");
  requirePlanEmpty(host);
}

TEST_CASE("e2e firewall: firewall = off removes the table; every address reaches sshd again", "[e2e][firewall]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  ClientNetwork net(kClients);
  ManagedHost host(kSettings, kListen);
  KeyPair alice = generateKey(host.tmp().path(), "ed25519", "alice");
  DocSpec doc;
  doc.keys = {{"k-alice", alice.publicLine, true, ""}};
  doc.allowedSources = {"198.51.100.8/29"};
  host.apply(doc);
  requireConnectionRefused(host, net.from(kRefused4), alice, "firewall on");

  const std::string config = host.agent().configPath();
  writeFile(config, readFile(config) + "\n[network]\nfirewall = off\n", 0600);
  CommandOutput off = host.run({"once"});
  INFO(off.out << off.err);
  REQUIRE(off.exit == 0);
  CHECK(contains(off.out, "firewall: remove"));
  CHECK_FALSE(contains(runCommand({"nft", "list", "tables"}).out, "pim_access_agent"));
  // sshd refuses the address itself now (its drop-in), after the TCP handshake.
  CommandOutput r = host.sshd().sshOver(net.from(kRefused4), kLogin, Credential::key(alice), "id -un");
  INFO(r.err);
  CHECK(r.exit == 255);
  CHECK_FALSE(contains(r.err, "Connection refused"));
  CHECK(contains(r.err, "Permission denied"));
  requireLogsIn(host, net.from(kAllowed4), alice, "firewall off");
  requirePlanEmpty(host);

  // A host without nft, the firewall on: exit 2 naming the key, before anything changes.
  writeFile(config, readFile(config) + "\n[network]\nfirewall = nftables\nnft_binary = /nonexistent/nft\n", 0600);
  CommandOutput missing = host.run({"once"});
  INFO(missing.out << missing.err);
  CHECK(missing.exit == 2);
  CHECK(contains(missing.err, "network.firewall"));
  CHECK(contains(missing.err, "/nonexistent/nft"));
  CHECK_FALSE(contains(runCommand({"nft", "list", "tables"}).out, "pim_access_agent"));
}

TEST_CASE("e2e firewall: a flushed or deleted table is back within 5 s with a daemon", "[e2e][firewall][daemon]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  ClientNetwork net(kClients);
  auto settings = kSettings;
  settings["store.poll_interval_s"] = "3600";  // the repair must not wait for a poll
  ManagedHost host(settings, kListen);
  KeyPair alice = generateKey(host.tmp().path(), "ed25519", "alice");
  DocSpec doc;
  doc.keys = {{"k-alice", alice.publicLine, true, ""}};
  doc.allowedSources = {"198.51.100.8/29"};
  host.agent().setDocument(renderDocument(doc));
  AgentDaemon daemon(host.agent().configPath(), host.tmp().file("daemon.log"));
  INFO("daemon log:\n" << daemon.log());
  auto gated = [] { return contains(nftTable(), "reject with tcp reset"); };
  REQUIRE(eventually(gated));
  REQUIRE(eventually([&] { return contains(daemon.log(), "daemon started"); }));
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // past the drift spacing of the first cycle

  for (const std::vector<std::string>& tamper :
       {std::vector<std::string>{"nft", "flush", "table", "inet", "pim_access_agent"},
        std::vector<std::string>{"nft", "delete", "table", "inet", "pim_access_agent"},
        std::vector<std::string>{"nft", "flush", "ruleset"}}) {
    INFO("tamper: " << tamper[1] << " " << tamper[2]);
    mustRun(tamper);
    const auto start = std::chrono::steady_clock::now();
    REQUIRE_FALSE(gated());
    CHECK(eventually(gated, std::chrono::seconds(5)));
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
    WARN("repaired in " << took.count() << " ms");
    requireConnectionRefused(host, net.from(kRefused4), alice, "after the repair");
    requireLogsIn(host, net.from(kAllowed4), alice, "after the repair");
    std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  }
  // Each repair is a generation of its own (cause drift).
  CHECK(contains(host.run({"history"}).out, "drift"));
}

TEST_CASE("e2e firewall: a key's and an account's own allowed_sources admit them only from there",
          "[e2e][firewall][sources]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  const char* const kOther4 = "198.51.100.11";
  const char* const kOther6 = "2001:db8:1::11";
  std::vector<std::string> clients = kClients;
  clients.push_back(kOther4);
  clients.push_back(kOther6);
  ClientNetwork net(clients);
  ManagedHost host(kSettings, kListen);
  KeyPair alice = generateKey(host.tmp().path(), "ed25519", "alice");
  KeyPair bob = generateKey(host.tmp().path(), "ed25519", "bob");
  const std::string password = "sftp-pass-2";

  DocSpec doc;
  doc.allowedSources = {"198.51.100.8/29", "2001:db8:1::/112"};
  doc.keys = {{"k-alice", alice.publicLine, true, "", {"198.51.100.10/32", "2001:db8:1::10/128"}},
              {"k-bob", bob.publicLine, true, ""}};
  DocAccount own{"sftp-own", "ownsftp", cryptHash(password), ".", true, {}};
  own.allowedSources = {"198.51.100.10/32", "2001:db8:1::10/128"};
  doc.accounts = {own, {"sftp-any", "anysftp", cryptHash(password), ".", true, {}}};
  host.apply(doc);
  CHECK(contains(readFile(ManagedHost::kLoginKeys), "from=\"198.51.100.10/32,2001:db8:1::10/128\" ssh-ed25519"));

  auto sftp = [&](const char* from, const char* user) {
    return host.sshd().sftpOver(net.from(from), user, Credential::withPassword(password), "pwd\n");
  };
  for (const char* from : {kAllowed4, kAllowed6}) {
    requireLogsIn(host, net.from(from), alice, "alice inside her list");
    requireLogsIn(host, net.from(from), bob, "bob");
    CommandOutput r = sftp(from, "ownsftp");
    INFO(r.out << r.err);
    CHECK(r.exit == 0);
  }
  for (const char* from : {kOther4, kOther6}) {
    // The firewall admits the document's list; sshd refuses the entry outside its own.
    CommandOutput a = host.sshd().sshOver(net.from(from), kLogin, Credential::key(alice), "id -un");
    INFO("alice from " << from << ": " << a.exit << " " << a.err);
    CHECK(a.exit == 255);
    CHECK(contains(a.err, "Permission denied"));
    requireLogsIn(host, net.from(from), bob, "bob without a list of his own");
    CommandOutput r = sftp(from, "ownsftp");
    INFO("ownsftp from " << from << ": " << r.out << r.err);
    CHECK(r.exit != 0);
    CHECK(contains(r.err, "Permission denied"));
    CHECK(sftp(from, "anysftp").exit == 0);
  }
  // Outside the document's list, the firewall refuses everyone.
  requireConnectionRefused(host, net.from(kRefused4), alice, "outside both lists");
  requirePlanEmpty(host);
}

TEST_CASE("e2e firewall: 10 wrong passwords from one address get it refused for the ban time, always_allow never",
          "[e2e][firewall][defender]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  ClientNetwork net(kClients);
  auto settings = kSettings;
  settings["store.poll_interval_s"] = "3600";
  settings["state.metrics_file"] = "/srv/metrics.prom";
  ManagedHost host(settings, kListen);
  const std::string password = "right-pass";
  DocSpec doc;
  doc.allowedSources = {"198.51.100.8/29", "2001:db8:1::10/128"};
  doc.accounts = {{"sftp-main", "akeneosftp", cryptHash(password), ".", true, {}}};
  host.agent().setDocument(renderDocument(doc));
  AgentDaemon daemon(host.agent().configPath(), host.tmp().file("daemon.log"));
  INFO("daemon log:\n" << daemon.log());
  REQUIRE(eventually([] { return contains(nftTable(), "reject with tcp reset"); }));
  REQUIRE(eventually([&] { return contains(daemon.log(), "defender: 10 failed password logins"); }));

  auto attempt = [&](const char* from, const std::string& pw) {
    return host.sshd().sftpOver(net.from(from), "akeneosftp", Credential::withPassword(pw), "pwd\n");
  };
  waitForAccount(host, "akeneosftp", password);
  for (const char* from : {kAllowed4, kAllowed6, kOperator4}) {
    REQUIRE(attempt(from, password).exit == 0);
    wrongPasswords(host, net.from(from), "akeneosftp", 10);
  }
  for (const char* from : {kAllowed4, kAllowed6}) {
    INFO("banned " << from << "\nsshd log:\n" << host.sshd().log());
    CHECK(eventually([&] { return contains(attempt(from, password).err, "Connection refused"); },
                     std::chrono::seconds(5)));
  }
  // always_allow is never banned: it still logs in.
  CHECK(attempt(kOperator4, password).exit == 0);
  auto status = host.status();
  auto bans = status->getArray("bans");
  REQUIRE(bans);
  CHECK(bans->size() == 2);
  for (size_t i = 0; i < bans->size(); ++i) {
    auto b = bans->getObject(static_cast<unsigned>(i));
    INFO(b->getValue<std::string>("address"));
    CHECK(b->getValue<int64_t>("expires_in_s") > 800);
    CHECK(b->getValue<int64_t>("expires_in_s") <= 900);
  }
  CHECK(contains(host.run({"status"}).out, "198.51.100.10  refused for"));
  CHECK(eventually([] { return contains(readFile("/srv/metrics.prom"), "pim_access_agent_bans_total 2"); }));
}

TEST_CASE("e2e firewall: the 10th wrong password bans, not the 9th; the ban ends after ban_s",
          "[e2e][firewall][defender]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  ClientNetwork net(kClients);
  auto settings = kSettings;
  settings["store.poll_interval_s"] = "3600";
  settings["defender.ban_s"] = "12";
  ManagedHost host(settings, kListen);
  const std::string password = "right-pass";
  DocSpec doc;
  doc.allowedSources = {"198.51.100.8/29", "2001:db8:1::10/128"};
  doc.accounts = {{"sftp-main", "akeneosftp", cryptHash(password), ".", true, {}}};
  host.agent().setDocument(renderDocument(doc));
  AgentDaemon daemon(host.agent().configPath(), host.tmp().file("daemon.log"));
  INFO("daemon log:\n" << daemon.log());
  REQUIRE(eventually([&] { return contains(daemon.log(), "ban it for 12 s"); }));
  auto attempt = [&](const char* from) {
    return host.sshd().sftpOver(net.from(from), "akeneosftp", Credential::withPassword(password), "pwd\n");
  };
  waitForAccount(host, "akeneosftp", password);
  REQUIRE(attempt(kAllowed6).exit == 0);

  // 9 failures: below max_failures, the address still logs in (given the defender time to read).
  wrongPasswords(host, net.from(kAllowed6), "akeneosftp", 9);
  std::this_thread::sleep_for(std::chrono::seconds(2));
  CommandOutput nine = attempt(kAllowed6);
  INFO("after 9 failures: " << nine.exit << " " << nine.err);
  CHECK(nine.exit == 0);
  CHECK_FALSE(contains(daemon.log(), "banned for"));

  // The 10th: refused from then on, for ban_s.
  wrongPasswords(host, net.from(kAllowed6), "akeneosftp", 1);
  const auto tenth = std::chrono::steady_clock::now();
  REQUIRE(eventually([&] { return contains(attempt(kAllowed6).err, "Connection refused"); }, std::chrono::seconds(5)));
  CHECK(contains(daemon.log(), "2001:db8:1::10 banned for 12 s"));
  // Other addresses are not concerned.
  CHECK(attempt(kAllowed4).exit == 0);
  std::this_thread::sleep_for(tenth + std::chrono::seconds(7) - std::chrono::steady_clock::now());
  CommandOutput during = attempt(kAllowed6);
  INFO("7 s after the ban: " << during.err);
  CHECK(contains(during.err, "Connection refused"));
  // The element's timeout ends the ban by itself: the address logs in again.
  REQUIRE(eventually([&] { return attempt(kAllowed6).exit == 0; }, std::chrono::seconds(15)));
  const auto lifted = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - tenth);
  WARN("ban lifted " << lifted.count() << " s after the 10th failure");
  CHECK(lifted.count() >= 10);
  CHECK_FALSE(contains(nftTable(), "2001:db8:1::10 timeout"));
}

TEST_CASE("e2e firewall: the defender reads sshd's failures from a real journal (sd-journal)",
          "[e2e][firewall][defender][journal]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  if (!pim::test::runsHere(
          ::access("/lib/systemd/systemd-journald", X_OK) == 0 && ::access("/usr/bin/systemd-cat", X_OK) == 0,
          "systemd-journald or systemd-cat is not installed (apt-get install systemd)")) {
    return;
  }
  // A journald of the namespace's own (its /run is private): the agent reads it through sd-journal
  // as it reads the host's.
  makeDirs("/run/systemd/journal");
  Background journald({"/lib/systemd/systemd-journald"}, "/run/journald.log");
  REQUIRE(eventually([] { return pathExists("/run/systemd/journal/stdout"); }));
  ClientNetwork net(kClients);
  auto settings = kSettings;
  settings["store.poll_interval_s"] = "3600";
  settings["defender.log_file"] = "";  // the journal
  settings["defender.max_failures"] = "3";
  ManagedHost host(settings, kListen);
  // sshd's own lines into the journal, as sshd (what ssh.service's sshd does through syslog).
  Background forward({"sh", "-c", "tail -n0 -F " + host.sshd().logPath() + " | systemd-cat -t sshd"},
                     "/run/forward.log");
  const std::string password = "right-pass";
  DocSpec doc;
  doc.allowedSources = {"198.51.100.8/29"};
  doc.accounts = {{"sftp-main", "akeneosftp", cryptHash(password), ".", true, {}}};
  host.agent().setDocument(renderDocument(doc));
  AgentDaemon daemon(host.agent().configPath(), host.tmp().file("daemon.log"));
  INFO("daemon log:\n" << daemon.log());
  REQUIRE(eventually([&] { return contains(daemon.log(), "sshd's messages from the journal"); }));
  REQUIRE(eventually([] { return contains(nftTable(), "reject with tcp reset"); }));
  auto attempt = [&](const std::string& pw) {
    return host.sshd().sftpOver(net.from(kAllowed4), "akeneosftp", Credential::withPassword(pw), "pwd\n");
  };
  waitForAccount(host, "akeneosftp", password);
  // Any local user can log as "sshd" (systemd-cat -t sshd): its forged failures frame nobody
  // (only root's messages count) and its forged logins are not recorded.
  const std::string forged =
      "Failed password for akeneosftp from 198.51.100.11 port 1 ssh2\n"
      "Failed password for akeneosftp from 198.51.100.11 port 2 ssh2\n"
      "Failed password for akeneosftp from 198.51.100.11 port 3 ssh2\n";
  auto forge = [](const std::string& lines) {
    return runCommand({"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "systemd-cat", "-t", "sshd"},
                      lines)
        .exit;
  };
  REQUIRE(forge(forged) == 0);
  REQUIRE(attempt(password).exit == 0);
  REQUIRE(forge("Accepted password for akeneosftp from 198.51.100.11 port 4 ssh2\n") == 0);
  for (int i = 0; i < 3; ++i) CHECK(attempt("wrong").exit != 0);
  INFO("journal:\n" << runCommand({"journalctl", "-t", "sshd", "--no-pager", "-o", "cat"}).out);
  // The forged lines are in the journal (written before the real ones, read before them).
  CHECK(contains(runCommand({"journalctl", "-t", "sshd", "--no-pager", "-o", "cat"}).out, "198.51.100.11 port 3"));
  CHECK(eventually([&] { return contains(attempt(password).err, "Connection refused"); }, std::chrono::seconds(5)));
  CHECK(contains(daemon.log(), "198.51.100.10 banned for 900 s"));
  CHECK_FALSE(contains(daemon.log(), "198.51.100.11 banned"));
  CHECK_FALSE(contains(nftTable(), "198.51.100.11"));
  // The real password login is the account's last one, from the client's address.
  auto lastLogin = [&]() -> std::string {
    auto accounts = host.status()->getArray("accounts");
    if (!accounts || accounts->size() != 1) return "no account";
    auto last = accounts->getObject(0)->getObject("last_login");
    return last ? last->getValue<std::string>("address") : "none";
  };
  CHECK(eventually([&] { return lastLogin() != "none"; }));
  CHECK(lastLogin() == "198.51.100.10");
}
