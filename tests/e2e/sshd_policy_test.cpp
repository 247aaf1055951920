// Issue 14, items 4, 5 and 8, end to end: exclusive keys (only the agent's root-owned file counts
// for akeneo, and nothing akeneo does to its own ~/.ssh stops a cycle), root and the allow-list
// for every user, an earlier drop-in that shadows the agent's is caught before anything is
// installed, and a reload after which sshd stops answering is undone. The agent binary (`once`,
// no --root) against a real sshd and real ssh clients; each case in its own namespace.

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "tests/e2e/harness.h"

using namespace pim::e2e;

namespace {

const char* const kLogin = "akeneo";
const char* const kHomeKeys = "/home/akeneo/.ssh/authorized_keys";

CommandOutput sshAs(ManagedHost& host, const std::string& user, const KeyPair& key,
                    const std::string& from = "127.0.0.1") {
  return host.sshd().sshRun(user, Credential::key(key), "id -un", {}, from);
}

void requireLogsIn(ManagedHost& host, const std::string& user, const KeyPair& key, const std::string& what,
                   const std::string& from = "127.0.0.1") {
  CommandOutput r = sshAs(host, user, key, from);
  INFO(what << ": ssh " << user << " from " << from << " exit " << r.exit << "\nstderr: " << r.err << "\nsshd log:\n"
            << host.sshd().log());
  REQUIRE(r.exit == 0);
  REQUIRE(trim(r.out) == user);
}

void requireRefused(ManagedHost& host, const std::string& user, const KeyPair& key, const std::string& what,
                    const std::string& from = "127.0.0.1") {
  CommandOutput r = sshAs(host, user, key, from);
  INFO(what << ": ssh " << user << " from " << from << " exit " << r.exit << "\nstdout: " << r.out
            << "\nstderr: " << r.err);
  CHECK(r.exit == 255);
  CHECK(contains(r.err, "Permission denied (publickey)"));
  CHECK_FALSE(contains(r.out, user));
}

size_t occurrencesOf(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

/// Root's home, in the namespace's private /etc/passwd, moved to the private /home (the real
/// /root is the machine's), with `key` in its authorized_keys.
void giveRootAKey(const KeyPair& key) {
  std::string passwd = readFile("/etc/passwd");
  REQUIRE(passwd.rfind("root:", 0) == 0);
  const size_t end = passwd.find('\n');
  std::string line = passwd.substr(0, end);
  size_t field = 0, at = 0;
  while (field < 5) {
    at = line.find(':', at) + 1;
    ++field;
  }
  const size_t homeEnd = line.find(':', at);
  line.replace(at, homeEnd - at, "/home/root-e2e");
  writeFile("/etc/passwd.pim-e2e", line + passwd.substr(end), 0644);
  REQUIRE(::rename("/etc/passwd.pim-e2e", "/etc/passwd") == 0);
  makeDirs("/home/root-e2e/.ssh", 0700);
  writeFile("/home/root-e2e/.ssh/authorized_keys", key.publicLine + "\n", 0600);
}

}  // namespace

TEST_CASE("e2e sshd policy: a key akeneo adds to its own authorized_keys is refused; the portal's works",
          "[e2e][sshd-policy]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  ManagedHost host;
  KeyPair portal = generateKey(host.tmp().path(), "ed25519", "portal");
  KeyPair own = generateKey(host.tmp().path(), "ed25519", "own");
  DocSpec doc;
  doc.allowedSources = {"203.0.113.0/24"};
  doc.keys = {{"k-portal", portal.publicLine, true, ""}};
  host.apply(doc);
  requireLogsIn(host, kLogin, portal, "the portal's key");

  // Logged in with the portal's key, akeneo appends a key of its own to its authorized_keys.
  CommandOutput added =
      host.sshd().sshRun(kLogin, Credential::key(portal),
                         "mkdir -p -m 700 ~/.ssh && echo '" + own.publicLine + "' >> ~/.ssh/authorized_keys");
  INFO("append: " << added.err);
  REQUIRE(added.exit == 0);
  REQUIRE(contains(readFile(kHomeKeys), own.publicLine));
  requireRefused(host, kLogin, own, "akeneo's own key");
  requireLogsIn(host, kLogin, portal, "the portal's key, still");

  // The next cycle leaves akeneo's file alone, and status says sshd ignores it.
  CommandOutput again = host.run({"once"});
  CHECK(again.exit == 0);
  CHECK(contains(readFile(kHomeKeys), own.publicLine));
  auto status = host.status();
  auto home = status->getObject("home_authorized_keys");
  REQUIRE(home);
  CHECK(home->getValue<int64_t>("key_lines") == 1);
  CHECK(home->getValue<bool>("ignored_by_sshd"));
  CHECK(home->getValue<std::string>("keys_file") == ManagedHost::kLoginKeys);
  requireRefused(host, kLogin, own, "akeneo's own key after another once");

  // Control: the same key does log in on an sshd with the same main config but without the
  // agent's drop-in, so the refusal above is the drop-in's doing.
  TestSshd bare(TestSshd::Options{"", {}, true});
  auto control = bare.sshRun(kLogin, Credential::key(own), "id -un");
  INFO("control login without the drop-in: stderr " << control.err << "\nsshd log:\n" << bare.log());
  CHECK(control.exit == 0);
  CHECK(trim(control.out) == kLogin);
}

TEST_CASE("e2e sshd policy: a symlinked ~/.ssh, a FIFO and a second END marker do not stop once",
          "[e2e][sshd-policy]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  ManagedHost host;
  KeyPair a = generateKey(host.tmp().path(), "ed25519", "a");
  KeyPair b = generateKey(host.tmp().path(), "ed25519", "b");
  KeyPair c = generateKey(host.tmp().path(), "ed25519", "c");
  KeyPair d = generateKey(host.tmp().path(), "ed25519", "d");
  DocSpec doc;
  doc.allowedSources = {"203.0.113.0/24"};
  doc.keys = {{"k-a", a.publicLine, true, ""}};
  host.apply(doc);
  requireLogsIn(host, kLogin, a, "k-a (rev 1)");
  const LocalUser user = lookupUser(kLogin);

  // 1. ~/.ssh is a symlink to /etc: once installs k-b and revokes k-a, and writes nothing there.
  mustRun({"rm", "-rf", "/home/akeneo/.ssh"});
  REQUIRE(::symlink("/etc", "/home/akeneo/.ssh") == 0);
  REQUIRE(::lchown("/home/akeneo/.ssh", user.uid, user.gid) == 0);
  doc.revision = 2;
  doc.keys = {{"k-b", b.publicLine, true, ""}};
  host.apply(doc);
  requireLogsIn(host, kLogin, b, "k-b (rev 2, symlinked .ssh)");
  requireRefused(host, kLogin, a, "k-a (rev 2, symlinked .ssh)");
  CHECK_FALSE(pathExists("/etc/authorized_keys"));
  auto status = host.status();
  CHECK_FALSE(status->getObject("home_authorized_keys")->isNull("unreadable"));

  // 2. authorized_keys is a FIFO: nothing blocks on it.
  REQUIRE(::unlink("/home/akeneo/.ssh") == 0);
  REQUIRE(::mkdir("/home/akeneo/.ssh", 0700) == 0);
  REQUIRE(::chown("/home/akeneo/.ssh", user.uid, user.gid) == 0);
  REQUIRE(::mkfifo(kHomeKeys, 0600) == 0);
  REQUIRE(::chown(kHomeKeys, user.uid, user.gid) == 0);
  doc.revision = 3;
  doc.keys = {{"k-c", c.publicLine, true, ""}};
  host.apply(doc);
  requireLogsIn(host, kLogin, c, "k-c (rev 3, FIFO)");
  requireRefused(host, kLogin, b, "k-b (rev 3, FIFO)");
  status = host.status();
  CHECK(contains(status->getObject("home_authorized_keys")->getValue<std::string>("unreadable"), "not a regular file"));

  // 3. A second END marker after 0.1's block (what made every cycle fail before).
  REQUIRE(::unlink(kHomeKeys) == 0);
  writeAuthorizedKeys(user, {"# BEGIN pim-access-agent", c.publicLine + " pim:k-c", "# END pim-access-agent",
                             "# END pim-access-agent"});
  doc.revision = 4;
  doc.keys = {{"k-d", d.publicLine, true, ""}, {"k-a", a.publicLine, true, ""}};
  host.apply(doc);
  requireLogsIn(host, kLogin, d, "k-d (rev 4, second END)");
  requireLogsIn(host, kLogin, a, "k-a (rev 4, second END)");
  requireRefused(host, kLogin, c, "k-c (rev 4: revoked, though still in the home's old block)");
  CHECK(host.status()->getObject("home_authorized_keys")->getValue<int64_t>("key_lines") == 1);
  auto history = host.history();
  REQUIRE(history->size() == 4);
  for (size_t i = 0; i < history->size(); ++i)
    CHECK(history->getObject(i)->getValue<std::string>("outcome") == "applied");
}

TEST_CASE("e2e sshd policy: root is refused from everywhere; with prohibit-password, by key from always_allow only",
          "[e2e][sshd-policy]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  ManagedHost host;  // always_allow = 127.0.0.1/32
  KeyPair rootKey = generateKey(host.tmp().path(), "ed25519", "root");
  KeyPair alice = generateKey(host.tmp().path(), "ed25519", "alice");
  giveRootAKey(rootKey);
  DocSpec doc;
  doc.allowedSources = {"127.0.0.2/32"};  // allowed for the document's users, not for root
  doc.keys = {{"k-alice", alice.publicLine, true, ""}};
  host.apply(doc);

  for (const char* from : {"127.0.0.1", "127.0.0.2", "127.0.0.3"}) {
    CommandOutput r = sshAs(host, "root", rootKey, from);
    INFO("root from " << from << ": exit " << r.exit << "\nstderr: " << r.err);
    CHECK(r.exit == 255);
    CHECK(contains(r.err, "Permission denied"));
    CHECK_FALSE(contains(r.out, "root"));
  }
  CHECK(contains(host.sshd().log(), "ROOT LOGIN REFUSED FROM 127.0.0.1"));
  // The allow-list holds for everyone: akeneo from the document's address and from always_allow,
  // not from elsewhere.
  requireLogsIn(host, kLogin, alice, "k-alice", "127.0.0.2");
  requireLogsIn(host, kLogin, alice, "k-alice", "127.0.0.1");
  requireRefused(host, kLogin, alice, "k-alice", "127.0.0.3");

  // prohibit-password: root by key, from always_allow only.
  writeFile(host.agent().configPath(),
            readFile(host.agent().configPath()) + "[sshd]\npermit_root_login = prohibit-password\n", 0600);
  CommandOutput once = host.run({"once"});
  INFO("once with prohibit-password:\n" << once.out << once.err);
  REQUIRE(once.exit == 0);
  REQUIRE(contains(readFile(ManagedHost::kDropin), "PermitRootLogin prohibit-password\n"));
  requireLogsIn(host, "root", rootKey, "root from always_allow", "127.0.0.1");
  for (const char* from : {"127.0.0.2", "127.0.0.3"}) {
    CommandOutput r = sshAs(host, "root", rootKey, from);
    INFO("root from " << from << ": exit " << r.exit << "\nstderr: " << r.err);
    CHECK(r.exit == 255);
    CHECK_FALSE(contains(r.out, "root"));
  }
  CHECK(contains(host.sshd().log(), "User root from 127.0.0.2 not allowed because listed in DenyUsers"));
}

TEST_CASE("e2e sshd policy: an earlier drop-in turning passwords back on is named; nothing installed, no reload",
          "[e2e][sshd-policy]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  ManagedHost host;
  KeyPair a = generateKey(host.tmp().path(), "ed25519", "a");
  KeyPair b = generateKey(host.tmp().path(), "ed25519", "b");
  DocSpec doc;
  doc.allowedSources = {"203.0.113.0/24"};
  doc.keys = {{"k-a", a.publicLine, true, ""}};
  host.apply(doc);
  const std::string dropin = readFile(ManagedHost::kDropin);
  const size_t starts = host.sshd().starts();
  const size_t hups = occurrencesOf(host.sshd().log(), "Received SIGHUP");

  // A drop-in that sorts before the agent's, as a cloud image might ship one.
  writeFile("/etc/ssh/sshd_config.d/05-evil.conf", "Match all\n\tPasswordAuthentication yes\n");
  doc.revision = 2;
  doc.keys = {{"k-a", a.publicLine, true, ""}, {"k-b", b.publicLine, true, ""}};
  doc.allowedSources = {"203.0.113.0/24", "198.51.100.0/24"};
  host.agent().setDocument(renderDocument(doc));
  CommandOutput r = host.run({"once"});
  INFO("once: exit " << r.exit << "\nstdout:\n" << r.out << "\nstderr:\n" << r.err);
  CHECK(r.exit == 5);
  CHECK(contains(r.err, "passwordauthentication yes for akeneo from "));
  CHECK(contains(r.err, "(want no): set by /etc/ssh/sshd_config.d/05-evil.conf (Match all, line 2)"));
  CHECK(contains(r.out, "outcome: failed"));
  // Nothing installed, sshd not reloaded; revision 2 is in force but failed: its revocations
  // apply, its grants (k-b) wait.
  CHECK(readFile(ManagedHost::kDropin) == dropin);
  CHECK(host.sshd().starts() == starts);
  CHECK(occurrencesOf(host.sshd().log(), "Received SIGHUP") == hups);
  auto status = host.status();
  CHECK(status->getValue<int64_t>("revision") == 2);
  CHECK(status->getValue<std::string>("outcome") == "failed");
  REQUIRE_FALSE(status->isNull("last_error"));
  CHECK(contains(status->getValue<std::string>("last_error"), "05-evil.conf"));
  requireLogsIn(host, kLogin, a, "k-a (kept by revision 2)");
  requireRefused(host, kLogin, b, "k-b (granted by revision 2, held back)");

  // Once the file is gone, the same document applies.
  REQUIRE(::unlink("/etc/ssh/sshd_config.d/05-evil.conf") == 0);
  CommandOutput fixed = host.run({"once"});
  INFO("once after removing it:\n" << fixed.out << fixed.err);
  CHECK(fixed.exit == 0);
  requireLogsIn(host, kLogin, b, "k-b after the repair");
}

TEST_CASE("e2e sshd policy: a reload that leaves sshd not answering fails once; the previous drop-in comes back",
          "[e2e][sshd-policy]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  // The reload command is a script rewritten below once sshd's pid is known.
  const std::string script = "/srv/e2e-reload.sh";
  writeFile(script, "#!/bin/sh\nexit 0\n", 0755);
  ManagedHost host({{"sshd.reload_command", script}});
  const std::string pid = std::to_string(host.sshd().pid());
  writeFile(script, "#!/bin/sh\nexec /bin/kill -HUP " + pid + "\n", 0755);
  KeyPair a = generateKey(host.tmp().path(), "ed25519", "a");
  DocSpec doc;
  doc.allowedSources = {"203.0.113.0/24"};
  doc.keys = {{"k-a", a.publicLine, true, ""}};
  host.apply(doc);
  requireLogsIn(host, kLogin, a, "k-a (rev 1)");
  const std::string dropin = readFile(ManagedHost::kDropin);

  // The reload now stops sshd: the TCP handshake still completes, but no banner comes.
  writeFile(script, "#!/bin/sh\nexec /bin/kill -STOP " + pid + "\n", 0755);
  doc.revision = 2;
  doc.allowedSources = {"203.0.113.0/24", "198.51.100.0/24"};
  host.agent().setDocument(renderDocument(doc));
  CommandOutput r = host.run({"once"});
  INFO("once: exit " << r.exit << "\nstdout:\n" << r.out << "\nstderr:\n" << r.err);
  ::kill(host.sshd().pid(), SIGCONT);
  CHECK(r.exit == 5);
  CHECK(contains(r.err, "sshd stopped answering on 127.0.0.1:" + std::to_string(host.sshd().port()) +
                            " after the reload: previous drop-in restored"));
  CHECK(readFile(ManagedHost::kDropin) == dropin);
  auto status = host.status();
  CHECK(status->getValue<int64_t>("revision") == 2);
  CHECK(status->getValue<std::string>("outcome") == "failed");
  requireLogsIn(host, kLogin, a, "k-a, sshd running again with revision 1's drop-in");
}

TEST_CASE("e2e sshd policy: on upgrade, 0.1's drop-in goes and akeneo's old block no longer counts",
          "[e2e][sshd-policy]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  ManagedHost host;
  KeyPair old = generateKey(host.tmp().path(), "ed25519", "old");
  KeyPair current = generateKey(host.tmp().path(), "ed25519", "current");
  // What 0.1 left: its drop-in (the home's authorized_keys for akeneo) and its managed block.
  const LocalUser user = createUser(kLogin);
  writeAuthorizedKeys(user, {"# BEGIN pim-access-agent", old.publicLine + " pim:k-old", "# END pim-access-agent"});
  const std::string legacy = "/etc/ssh/sshd_config.d/50-pim-access-agent.conf";
  writeFile(legacy,
            "# Managed by pim-access-agent. Do not edit: this file is rewritten on every change\n"
            "Match User akeneo\n\tAuthorizedKeysFile /home/akeneo/.ssh/authorized_keys\n\tAuthenticationMethods "
            "publickey\nMatch all\n");
  host.sshd().reload();
  requireLogsIn(host, kLogin, old, "0.1's key before the upgrade");
  const std::string homeText = readFile(kHomeKeys);

  DocSpec doc;
  doc.allowedSources = {"203.0.113.0/24"};
  doc.keys = {{"k-current", current.publicLine, true, ""}};
  host.apply(doc);
  CHECK_FALSE(pathExists(legacy));
  CHECK(pathExists(ManagedHost::kDropin));
  CHECK(readFile(kHomeKeys) == homeText);  // left alone
  requireLogsIn(host, kLogin, current, "the portal's key");
  requireRefused(host, kLogin, old, "0.1's key, still in the home's block");
}
