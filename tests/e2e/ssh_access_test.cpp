// Issue "SSH access", end to end: the agent binary (`once`, no --root) installs the login user's
// keys and its sshd drop-in on the namespace's private /etc; a real sshd that Includes the
// drop-in and real ssh clients prove who gets in. Each case runs in its own namespace.

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "tests/e2e/harness.h"

using namespace pim::e2e;

namespace {

const char* const kLogin = "akeneo";
const char* const kKeysFile = ManagedHost::kLoginKeys;

/// The base64 part of a public key line: what identifies the key inside authorized_keys.
std::string blobOf(const KeyPair& key) {
  const std::string& l = key.publicLine;
  const size_t a = l.find(' ');
  const size_t b = l.find(' ', a + 1);
  return l.substr(a + 1, b == std::string::npos ? std::string::npos : b - a - 1);
}

void requireLogsIn(TestSshd& sshd, const KeyPair& key, const std::string& what) {
  CommandOutput r = sshd.sshRun(kLogin, Credential::key(key), "id -un");
  INFO(what << ": ssh exit " << r.exit << "\nstderr: " << r.err << "\nsshd log:\n" << sshd.log());
  REQUIRE(r.exit == 0);
  REQUIRE(trim(r.out) == kLogin);
}

void requireRefused(TestSshd& sshd, const KeyPair& key, const std::string& what) {
  CommandOutput r = sshd.sshRun(kLogin, Credential::key(key), "id -un");
  INFO(what << ": ssh exit " << r.exit << "\nstdout: " << r.out << "\nstderr: " << r.err);
  CHECK(r.exit == 255);
  CHECK(contains(r.err, "Permission denied (publickey)"));
  CHECK_FALSE(contains(r.out, kLogin));
}

}  // namespace

TEST_CASE("e2e ssh: a removed, an inactive and an expired key are refused after the next once", "[e2e][ssh]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  ManagedHost host;
  KeyPair keep = generateKey(host.tmp().path(), "ed25519", "keep");
  KeyPair removed = generateKey(host.tmp().path(), "ecdsa", "removed");
  KeyPair inactive = generateKey(host.tmp().path(), "ed25519", "inactive");
  KeyPair expiring = generateKey(host.tmp().path(), "rsa", "expiring");
  KeyPair expiredFromStart = generateKey(host.tmp().path(), "ed25519", "old");

  DocSpec doc;
  doc.revision = 1;
  doc.allowedSources = {"203.0.113.0/24"};
  doc.keys = {{"k-keep", keep.publicLine, true, "2099-01-01T00:00:00Z"},
              {"k-removed", removed.publicLine, true, ""},
              {"k-inactive", inactive.publicLine, true, ""},
              {"k-expiring", expiring.publicLine, true, "2099-01-01T00:00:00Z"},
              {"k-old", expiredFromStart.publicLine, true, "2020-01-01T00:00:00Z"}};
  host.apply(doc);

  // Revision 1: every active, unexpired key logs in and runs a command as akeneo.
  requireLogsIn(host.sshd(), keep, "k-keep (rev 1)");
  requireLogsIn(host.sshd(), removed, "k-removed (rev 1)");
  requireLogsIn(host.sshd(), inactive, "k-inactive (rev 1)");
  requireLogsIn(host.sshd(), expiring, "k-expiring (rev 1)");
  requireRefused(host.sshd(), expiredFromStart, "k-old, expired since 2020, never installed");

  // Revision 2: one key leaves the document, one is deactivated, one expired in the past.
  doc.revision = 2;
  doc.keys = {{"k-keep", keep.publicLine, true, "2099-01-01T00:00:00Z"},
              {"k-inactive", inactive.publicLine, false, ""},
              {"k-expiring", expiring.publicLine, true, "2021-06-01T00:00:00Z"},
              {"k-old", expiredFromStart.publicLine, true, "2020-01-01T00:00:00Z"}};
  host.apply(doc);

  requireLogsIn(host.sshd(), keep, "k-keep (rev 2)");
  requireRefused(host.sshd(), removed, "k-removed: absent from revision 2");
  requireRefused(host.sshd(), inactive, "k-inactive: active=false in revision 2");
  requireRefused(host.sshd(), expiring, "k-expiring: expires_at in the past in revision 2");

  // The agent's file holds exactly the allowed key; root owns it and its directory, so the user
  // cannot change it; nothing was written in the home.
  const std::string keys = readFile(kKeysFile);
  CHECK(contains(keys, blobOf(keep)));
  CHECK_FALSE(contains(keys, blobOf(removed)));
  CHECK_FALSE(contains(keys, blobOf(inactive)));
  CHECK_FALSE(contains(keys, blobOf(expiring)));
  CHECK_FALSE(contains(keys, blobOf(expiredFromStart)));
  struct stat st {};
  REQUIRE(::stat(kKeysFile, &st) == 0);
  CHECK((st.st_mode & 07777) == 0644);
  CHECK(st.st_uid == 0);
  REQUIRE(::stat("/etc/pim-access-agent/authorized_keys", &st) == 0);
  CHECK((st.st_mode & 07777) == 0755);
  CHECK(st.st_uid == 0);
  CHECK_FALSE(pathExists("/home/akeneo/.ssh"));
}

TEST_CASE("e2e ssh: akeneo's valid password is refused; the drop-in allows keys only", "[e2e][ssh]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  ManagedHost host;
  KeyPair key = generateKey(host.tmp().path(), "ed25519", "alice");
  DocSpec doc;
  doc.allowedSources = {"203.0.113.0/24"};
  doc.keys = {{"k-alice", key.publicLine, true, ""}};
  host.apply(doc);
  requireLogsIn(host.sshd(), key, "k-alice");

  // A known password set by hand (the agent creates akeneo with a locked one).
  const std::string password = "Akeneo-by-hand-7";
  setPassword(kLogin, password);

  auto refused = host.sshd().sshRun(kLogin, Credential::withPassword(password), "id -un");
  INFO("password login: exit " << refused.exit << "\nstdout: " << refused.out << "\nstderr: " << refused.err);
  CHECK(refused.exit != 0);
  CHECK(contains(refused.err, "Permission denied (publickey)"));  // password is not even offered
  CHECK_FALSE(contains(refused.out, kLogin));

  // Control: the same password logs in on an sshd with the same main config but without the
  // agent's drop-in, so the refusal above is the drop-in's doing, not a bad password.
  TestSshd bare(TestSshd::Options{"", {}, true});
  auto control = bare.sshRun(kLogin, Credential::withPassword(password), "id -un");
  INFO("control login without the drop-in: stderr " << control.err << "\nsshd log:\n" << bare.log());
  CHECK(control.exit == 0);
  CHECK(trim(control.out) == kLogin);
}

TEST_CASE("e2e ssh: ssh -A forwards the agent for a second hop, and only with -A", "[e2e][ssh]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  // sshd puts forwarded agent sockets in /tmp/ssh-*: every case has a private /tmp
  // (tests/e2e/in-namespace.sh), so they stay off the real machine's /tmp.
  ManagedHost host;
  KeyPair key = generateKey(host.tmp().path(), "ed25519", "hopper");
  DocSpec doc;
  doc.allowedSources = {"203.0.113.0/24"};
  doc.keys = {{"k-hopper", key.publicLine, true, ""}};
  host.apply(doc);

  SshAgent agent(host.tmp().file("agent.sock"));
  agent.add(key);
  // The second hop runs on the server as akeneo, which holds no private key of its own.
  const std::string hop =
      "ssh -F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
      "-o BatchMode=yes -o ConnectTimeout=10 -p " +
      std::to_string(host.sshd().port()) + " akeneo@127.0.0.1 id -un";

  auto forwarded =
      host.sshd().sshRun(kLogin, Credential::key(key), hop, {"-A", "-o", "IdentityAgent=" + agent.socket()});
  INFO("ssh -A: exit " << forwarded.exit << "\nstdout: " << forwarded.out << "\nstderr: " << forwarded.err
                       << "\nsshd log:\n"
                       << host.sshd().log());
  CHECK(forwarded.exit == 0);
  CHECK(trim(forwarded.out) == kLogin);

  auto notForwarded = host.sshd().sshRun(kLogin, Credential::key(key), hop, {"-o", "IdentityAgent=" + agent.socket()});
  INFO("without -A: exit " << notForwarded.exit << "\nstdout: " << notForwarded.out
                           << "\nstderr: " << notForwarded.err);
  CHECK(notForwarded.exit == 255);  // the inner ssh's exit status
  CHECK(contains(notForwarded.err, "Permission denied (publickey)"));
  CHECK_FALSE(contains(notForwarded.out, kLogin));
}

TEST_CASE("e2e ssh: a second once changes nothing; akeneo's own authorized_keys is never touched", "[e2e][ssh]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  ManagedHost host;
  KeyPair a = generateKey(host.tmp().path(), "ed25519", "a");
  KeyPair b = generateKey(host.tmp().path(), "ed25519", "b");
  KeyPair own = generateKey(host.tmp().path(), "ed25519", "own");  // akeneo's, by hand
  DocSpec doc;
  doc.allowedSources = {"203.0.113.0/24"};
  doc.keys = {{"k-a", a.publicLine, true, ""}};
  host.apply(doc);
  requireLogsIn(host.sshd(), a, "k-a");

  // The same document again: no change, no rewrite, no reload.
  const FileStamp keysBefore = stampOf(kKeysFile);
  const FileStamp dropinBefore = stampOf(ManagedHost::kDropin);
  const size_t starts = host.sshd().starts();
  CommandOutput again = host.run({"once"});
  INFO("second once:\n" << again.out << again.err);
  CHECK(again.exit == 0);
  CHECK(contains(again.out, "outcome: unchanged"));
  CHECK(contains(again.out, "changes: 0"));
  CHECK(stampOf(kKeysFile) == keysBefore);
  CHECK(stampOf(ManagedHost::kDropin) == dropinBefore);
  CHECK(host.sshd().starts() == starts);

  // akeneo's own file, with 0.1's managed block in it, survives every change byte for byte.
  const LocalUser user = lookupUser(kLogin);
  writeAuthorizedKeys(user, {"# mine", own.publicLine, "# BEGIN pim-access-agent", a.publicLine + " pim:k-a",
                             "# END pim-access-agent"});
  const std::string home = "/home/akeneo/.ssh/authorized_keys";
  const std::string ownText = readFile(home);
  const FileStamp homeBefore = stampOf(home);
  doc.revision = 2;
  doc.keys = {{"k-b", b.publicLine, true, ""}};
  host.apply(doc);
  CHECK(readFile(home) == ownText);
  CHECK(stampOf(home) == homeBefore);
  requireLogsIn(host.sshd(), b, "k-b");
  requireRefused(host.sshd(), a, "k-a after revision 2, though still in 0.1's block of the home file");
  requireRefused(host.sshd(), own, "akeneo's own key");

  // The same document again still rewrites nothing.
  const FileStamp keysAfter = stampOf(kKeysFile);
  CommandOutput third = host.run({"once"});
  CHECK(third.exit == 0);
  CHECK(contains(third.out, "changes: 0"));
  CHECK(stampOf(kKeysFile) == keysAfter);
  CHECK(stampOf(home) == homeBefore);
}
