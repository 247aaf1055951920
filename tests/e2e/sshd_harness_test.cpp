// Proves the e2e harness on its own, with a drop-in rendered by renderDropin() and users made
// by hand (useradd, chpasswd, key files written directly): a real sshd, real ssh/sftp
// clients, source addresses from 127.0.0.0/8. Runs only inside tests/e2e/in-namespace.sh.

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "providers/sshd_dropin.h"
#include "tests/e2e/harness.h"

using namespace pim::e2e;

namespace {

const char* const kKeysDir = "/etc/pim-access-agent/authorized_keys";

pim::DropinInput loginOnlyInput(const LocalUser& login, std::vector<std::string> sources) {
  pim::DropinInput in;
  in.loginUser = login.name;
  in.chrootBase = "/srv/pim-sftp";
  in.authorizedKeysDir = kKeysDir;
  in.documentSources = std::move(sources);
  return in;
}

/// The root-owned key file the drop-in names for `user`, as the agent writes it.
void writeKeysFile(const std::string& user, const std::vector<std::string>& publicLines) {
  makeDirs(kKeysDir);
  std::string text;
  for (const auto& l : publicLines) text += l + "\n";
  writeFile(std::string(kKeysDir) + "/" + user, text, 0644);
}

}  // namespace

TEST_CASE("e2e harness: login user by key only, from allowed sources only", "[e2e][harness]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  TempDir tmp;
  LocalUser login = createUser("h5login");
  setPassword("h5login", "Harness-pass-1");
  KeyPair key = generateKey(tmp.path());
  KeyPair otherKey = generateKey(tmp.path(), "ed25519", "other");
  writeKeysFile("h5login", {key.publicLine});
  // A key in the home's own authorized_keys is not one sshd reads for a managed user.
  writeAuthorizedKeys(login, {otherKey.publicLine});

  makeDirs(tmp.file("sshd_config.d"));
  const std::string dropin = tmp.file("sshd_config.d/10-pim-access-agent.conf");
  auto in = loginOnlyInput(login, {"127.0.0.1/32"});
  REQUIRE(pim::checkDropinInput(in).isOk());
  writeFile(dropin, pim::renderDropin(in));
  TestSshd sshd(TestSshd::Options{tmp.file("sshd_config.d/*.conf"), {}, true});

  // (1) The key logs in and runs a command as the user.
  auto r = sshd.sshRun("h5login", Credential::key(key), "id -un");
  INFO("ssh stderr: " << r.err << "\nsshd log:\n" << sshd.log());
  REQUIRE(r.exit == 0);
  CHECK(trim(r.out) == "h5login");

  // A key that is not in the agent's file is refused, even from the home's authorized_keys.
  auto wrongKey = sshd.sshRun("h5login", Credential::key(otherKey), "id -un");
  CHECK(wrongKey.exit != 0);
  CHECK_FALSE(contains(wrongKey.out, "h5login"));

  // (2) The right password is refused: the login user is key-only.
  auto pw = sshd.sshRun("h5login", Credential::withPassword("Harness-pass-1"), "id -un");
  CHECK(pw.exit != 0);
  CHECK_FALSE(contains(pw.out, "h5login"));
  CHECK(contains(pw.err, "Permission denied"));

  // (3) From 127.0.0.2, outside the allowed sources: refused by DenyUsers; 127.0.0.1 still works.
  auto outside = sshd.sshRun("h5login", Credential::key(key), "id -un", {}, "127.0.0.2");
  CHECK(outside.exit != 0);
  CHECK_FALSE(contains(outside.out, "h5login"));
  CHECK(contains(sshd.log(), "User h5login from 127.0.0.2 not allowed because listed in DenyUsers"));
  CHECK(sshd.sshRun("h5login", Credential::key(key), "true", {}, "127.0.0.1").exit == 0);

  // Widening the sources and reloading lets 127.0.0.2 in (the harness's reload waits for sshd).
  in.documentSources = {"127.0.0.0/30"};
  writeFile(dropin, pim::renderDropin(in));
  const size_t starts = sshd.starts();
  sshd.reload();
  CHECK(sshd.starts() == starts + 1);
  auto widened = sshd.sshRun("h5login", Credential::key(key), "id -un", {}, "127.0.0.2");
  INFO("ssh stderr: " << widened.err);
  CHECK(widened.exit == 0);
  CHECK(trim(widened.out) == "h5login");

  // Unmanaged users keep the main config's behaviour (password allowed through PAM), from the
  // allowed sources only: the allow-list applies to every user.
  createUser("h5other");
  setPassword("h5other", "Other-pass-2");
  auto other = sshd.sshRun("h5other", Credential::withPassword("Other-pass-2"), "id -un", {}, "127.0.0.2");
  INFO("ssh stderr: " << other.err);
  CHECK(other.exit == 0);
  CHECK(trim(other.out) == "h5other");
  auto otherOutside = sshd.sshRun("h5other", Credential::withPassword("Other-pass-2"), "id -un", {}, "127.0.0.5");
  CHECK(otherOutside.exit != 0);
  CHECK(contains(sshd.log(), "User h5other from 127.0.0.5 not allowed because listed in DenyUsers"));
}

TEST_CASE("e2e harness: SFTP accounts are chrooted to internal-sftp", "[e2e][harness]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  TempDir tmp;
  LocalUser login = createUser("h5admin");
  LocalUser sftp = createUser("h5sftp", {"-s", "/usr/sbin/nologin"});
  LocalUser locked = createUser("h5locked", {"-s", "/usr/sbin/nologin"});
  setPassword("h5sftp", "Sftp-pass-3");
  setPassword("h5locked", "Locked-pass-4");
  KeyPair key = generateKey(tmp.path(), "ed25519", "sftpkey");

  // The layout the SFTP provider makes: root-owned chroot with transfer/ inside, root-owned key
  // files readable by sshd acting as the user.
  makeDirs("/srv/pim-sftp/h5sftp/transfer");
  REQUIRE(::chown("/srv/pim-sftp/h5sftp/transfer", sftp.uid, sftp.gid) == 0);
  writeKeysFile("h5sftp", {key.publicLine});
  writeKeysFile("h5locked", {key.publicLine});

  pim::DropinInput in = loginOnlyInput(login, {"127.0.0.1/32"});
  in.sftpUsers = {{"h5locked", false, true, true}, {"h5sftp", true, true, true}};
  const std::string dropin = tmp.file("10-pim-access-agent.conf");
  writeFile(dropin, pim::renderDropin(in));
  TestSshd sshd(TestSshd::Options{dropin, {}, true});

  writeFile(tmp.file("upload.csv"), "sku;name\n1;chair\n");
  const std::string batch = "put " + tmp.file("upload.csv") + " upload.csv\nls -1\npwd\n";
  for (const Credential& cred : {Credential::withPassword("Sftp-pass-3"), Credential::key(key)}) {
    auto r = sshd.sftpBatch("h5sftp", cred, batch);
    INFO("sftp stderr: " << r.err << "\nsshd log:\n" << sshd.log());
    REQUIRE(r.exit == 0);
    CHECK(contains(r.out, "Remote working directory: /transfer"));
    CHECK(readFile("/srv/pim-sftp/h5sftp/transfer/upload.csv") == "sku;name\n1;chair\n");
    ::unlink("/srv/pim-sftp/h5sftp/transfer/upload.csv");
  }
  // The chroot hides the rest of the file system.
  auto root = sshd.sftpBatch("h5sftp", Credential::key(key), "ls -1 /\n");
  REQUIRE(root.exit == 0);
  CHECK(contains(root.out, "transfer"));
  CHECK_FALSE(contains(root.out, "etc"));
  // No shell: a command runs internal-sftp instead, never `id`.
  auto shell = sshd.sshRun("h5sftp", Credential::key(key), "id");
  CHECK_FALSE(contains(shell.out, "uid="));
  // Outside the allowed sources: refused.
  CHECK(sshd.sftpBatch("h5sftp", Credential::key(key), "ls\n", "127.0.0.2").exit != 0);
  // The inactive account is refused for password and key alike.
  CHECK(sshd.sftpBatch("h5locked", Credential::withPassword("Locked-pass-4"), "ls\n").exit != 0);
  CHECK(sshd.sftpBatch("h5locked", Credential::key(key), "ls\n").exit != 0);
  CHECK(contains(sshd.log(), "User h5locked from 127.0.0.1 not allowed because listed in DenyUsers"));
}

TEST_CASE("e2e harness: runCommand kills a command that runs past its time-out", "[e2e][harness]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  auto r = runCommand({"sh", "-c", "sleep 30 & sleep 30"}, {}, std::chrono::milliseconds(300));
  CHECK(r.timedOut);
  CHECK(r.exit == 128 + SIGKILL);
  auto ok = runCommand({"cat"}, "hello");
  CHECK_FALSE(ok.timedOut);
  CHECK(ok.exit == 0);
  CHECK(ok.out == "hello");
}
