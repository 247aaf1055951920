// The smallest agent scenario, written with the harness: one `once` against a real sshd that
// the agent reloads itself, then real ssh and sftp clients. The full scenarios follow this shape.

#include <sys/stat.h>

#include <catch2/catch.hpp>

#include "tests/e2e/harness.h"

using namespace pim::e2e;

namespace {

const char* const kDocument = R"({
  "version": 1,
  "revision": 1,
  "instance": "e2e",
  "ssh": {"keys": [
    {"id": "k-alice", "owner": "alice@example.com", "public_key": "@ALICE@", "active": true, "expires_at": null}
  ]},
  "sftp": {"accounts": [
    {"id": "sftp-main", "username": "akeneosftp", "password_hash": "@HASH@", "folder": ".", "active": true,
     "public_keys": []}
  ]},
  "network": {"allowed_sources": ["203.0.113.0/24"]}
})";

}  // namespace

TEST_CASE("e2e agent: once installs what a real sshd then enforces", "[e2e][agent]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  TempDir tmp;
  KeyPair alice = generateKey(tmp.path(), "ed25519", "alice");
  TestSshd sshd(TestSshd::Options{"/etc/ssh/sshd_config.d/*.conf", {}, true});
  // always_allow = 127.0.0.1 only: 127.0.0.2 stands for an address outside every allowed range.
  AgentSandbox agent({{"sshd.reload_command", sshd.reloadCommand()}, {"host.always_allow", "127.0.0.1/32"}});
  agent.setDocument(
      replaceAll(replaceAll(kDocument, "@ALICE@", alice.publicLine), "@HASH@", cryptHash("transfer-demo-1")));

  const size_t starts = sshd.starts();
  CommandOutput once = agent.once();
  INFO("agent stdout:\n" << once.out << "\nagent stderr:\n" << once.err);
  REQUIRE(once.exit == 0);
  REQUIRE(sshd.waitForStart(starts));  // the agent reloaded sshd with its reload_command

  auto login = sshd.sshRun("akeneo", Credential::key(alice), "id -un");
  INFO("ssh stderr: " << login.err << "\nsshd log:\n" << sshd.log());
  CHECK(login.exit == 0);
  CHECK(trim(login.out) == "akeneo");
  CHECK(sshd.sshRun("akeneo", Credential::key(alice), "true", {}, "127.0.0.2").exit != 0);

  writeFile(tmp.file("in.csv"), "a;b\n");
  auto put = sshd.sftpBatch("akeneosftp", Credential::withPassword("transfer-demo-1"),
                            "put " + tmp.file("in.csv") + " in.csv\n");
  INFO("sftp stderr: " << put.err);
  CHECK(put.exit == 0);
  CHECK(readFile(agent.setting("host.transfer_root") + "/in.csv") == "a;b\n");

  // A second `once` with the same document leaves the drop-in alone (no new file: same inode).
  struct stat before {
  }, after{};
  const std::string dropin = "/etc/ssh/sshd_config.d/10-pim-access-agent.conf";
  REQUIRE(::stat(dropin.c_str(), &before) == 0);
  CommandOutput again = agent.once();
  CHECK(again.exit == 0);
  REQUIRE(::stat(dropin.c_str(), &after) == 0);
  CHECK(after.st_ino == before.st_ino);
}
