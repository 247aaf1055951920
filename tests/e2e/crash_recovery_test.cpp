// Crash recovery with real bind mounts: the agent is killed (PIM_FAILPOINT=crash-..., SIGKILL)
// after it made the mounts of a new generation; the next start must take them away again with
// the accounts and chroots of that generation, and leave the previous generation's mount as it
// was. The unit tests (tests/unit/agent_cycle_test.cpp) cover the files and accounts at many
// crash points; the mounts need the private mount namespace of in-namespace.sh.

#include <sys/stat.h>

#include <catch2/catch.hpp>

#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "tests/e2e/harness.h"

using namespace pim::e2e;

namespace {

/// Bind mounts below the chroot base: mount point -> mounted subtree (mountinfo fields 5 and 4).
std::map<std::string, std::string> chrootMounts() {
  std::map<std::string, std::string> out;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, dev, root, target;
    fields >> id >> parent >> dev >> root >> target;
    if (target.rfind("/srv/pim-sftp/", 0) == 0) out[target] = root;
  }
  return out;
}

std::string document(int revision, const std::string& key, bool withPartners) {
  const std::string hash = cryptHash("transfer-e2e");
  std::string accounts = R"({"id": "sftp-main", "username": "akeneosftp", "password_hash": ")" + hash +
                         R"(", "folder": ".", "active": true, "public_keys": []})";
  if (withPartners) {
    accounts += R"(, {"id": "sftp-partner", "username": "partnersftp", "password_hash": ")" + hash +
                R"(", "folder": "imports/erp", "active": true, "public_keys": []})";
    accounts += R"(, {"id": "sftp-export", "username": "exportsftp", "password_hash": ")" + hash +
                R"(", "folder": "exports", "active": true, "public_keys": []})";
  }
  return R"({"version": 1, "revision": )" + std::to_string(revision) +
         R"(, "instance": "e2e", "ssh": {"keys": [{"id": "k-alice", "owner": "alice@example.com", "public_key": ")" +
         key + R"(", "active": true, "expires_at": null}]}, "sftp": {"accounts": [)" + accounts +
         R"(]}, "network": {"allowed_sources": ["127.0.0.0/8"]}})";
}

}  // namespace

TEST_CASE("e2e crash: kill -9 after a generation's bind mounts, the next start takes them away", "[e2e][crash]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  TempDir tmp;
  KeyPair alice = generateKey(tmp.path(), "ed25519", "alice");
  AgentSandbox agent;
  agent.setDocument(document(1, alice.publicLine, false));
  CommandOutput first = agent.once();
  INFO(first.out << first.err);
  REQUIRE(first.exit == 0);
  const auto mountsA = chrootMounts();
  REQUIRE(mountsA.size() == 1);
  REQUIRE(mountsA.count("/srv/pim-sftp/akeneosftp/transfer") == 1);

  agent.setDocument(document(2, alice.publicLine, true));
  CommandOutput crashed = runCommand({agentBinary(), "--config", agent.configPath(), "once"}, "",
                                     std::chrono::seconds(120), {"PIM_FAILPOINT=crash-before-provider:sshd"});
  INFO(crashed.err);
  REQUIRE(crashed.exit == 128 + 9);
  const auto mountsCrashed = chrootMounts();
  CHECK(mountsCrashed.size() == 3);  // the crash came after every mount of generation 2
  CHECK(mountsCrashed.at("/srv/pim-sftp/partnersftp/transfer").find("imports/erp") != std::string::npos);

  // The next start, with the store out of reach: only the recovery runs.
  const std::string parked = agent.documentPath() + ".parked";
  REQUIRE(::rename(agent.documentPath().c_str(), parked.c_str()) == 0);
  CommandOutput recovered = agent.once();
  INFO(recovered.out << recovered.err);
  CHECK(recovered.exit == 4);
  CHECK(chrootMounts() == mountsA);
  struct stat st {};
  CHECK(::stat("/srv/pim-sftp/partnersftp", &st) != 0);
  CHECK(::stat("/srv/pim-sftp/exportsftp", &st) != 0);
  const std::string passwd = readFile("/etc/passwd");
  CHECK(passwd.find("partnersftp:") == std::string::npos);
  CHECK(passwd.find("exportsftp:") == std::string::npos);
  CHECK(passwd.find("akeneosftp:") != std::string::npos);
  CommandOutput history = agent.run({"history"});
  CHECK_THAT(history.out, Catch::Contains("interrupted"));

  // The store back: generation 2 applies as on a clean host.
  REQUIRE(::rename(parked.c_str(), agent.documentPath().c_str()) == 0);
  CommandOutput again = agent.once();
  INFO(again.out << again.err);
  CHECK(again.exit == 0);
  CHECK(chrootMounts() == mountsCrashed);
}
