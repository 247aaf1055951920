// The login audit with a real sshd and real clients: the daemon reads sshd's messages (its -E
// file), and `status --json` and the metrics file show the last login of each key and SFTP
// account and the failed logins per source.

#include <catch2/catch.hpp>
#include <ctime>

#include "tests/e2e/harness.h"

using namespace pim::e2e;

namespace {

// The last_login object of the entry `field` == `value` in status's `list` ("" address: none).
std::pair<std::string, std::string> lastLogin(ManagedHost& host, const std::string& list, const std::string& field,
                                              const std::string& value) {
  auto entries = host.status()->getArray(list);
  for (size_t i = 0; entries && i < entries->size(); ++i) {
    auto o = entries->getObject(static_cast<unsigned>(i));
    if (o->getValue<std::string>(field) != value) continue;
    auto last = o->getObject("last_login");
    if (!last) return {"", ""};
    return {last->getValue<std::string>("address"), last->getValue<std::string>("method")};
  }
  return {"no entry", ""};
}

}  // namespace

TEST_CASE("e2e login audit: status shows the last login per key and account, and failed logins per source",
          "[e2e][audit][daemon]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  ManagedHost host(std::map<std::string, std::string>{{"store.poll_interval_s", "3600"},
                                                      {"state.metrics_file", "/srv/metrics.prom"}});
  KeyPair kx = generateKey(host.tmp().path(), "ed25519", "kx");
  KeyPair ky = generateKey(host.tmp().path(), "ed25519", "ky");
  KeyPair stranger = generateKey(host.tmp().path(), "ed25519", "stranger");
  const std::string password = "audit-pass-1";
  DocSpec doc;
  doc.keys = {{"k-x", kx.publicLine, true, ""}, {"k-y", ky.publicLine, true, ""}};
  doc.accounts = {{"sftp-main", "akeneosftp", cryptHash(password), ".", true, {}}};
  doc.allowedSources = {"203.0.113.0/24"};
  host.apply(doc);

  AgentDaemon daemon(host.agent().configPath(), host.tmp().file("daemon.log"));
  INFO("daemon log:\n" << daemon.log());
  REQUIRE(eventually([&] { return contains(daemon.log(), "read sshd's messages from " + host.sshd().logPath()); }));
  // Nothing seen yet: null, not a guess.
  CHECK(lastLogin(host, "keys", "id", "k-x").first.empty());

  const int64_t before = int64_t(std::time(nullptr));
  auto ssh = host.sshd().sshRun("akeneo", Credential::key(kx), "true");
  INFO("ssh: " << ssh.err << "\nsshd log:\n" << host.sshd().log());
  REQUIRE(ssh.exit == 0);
  auto sftp = host.sshd().sftpBatch("akeneosftp", Credential::withPassword(password), "pwd\n");
  INFO("sftp: " << sftp.err);
  REQUIRE(sftp.exit == 0);
  auto refused = host.sshd().sshRun("akeneo", Credential::key(stranger), "true");
  CHECK(contains(refused.err, "Permission denied (publickey)"));

  REQUIRE(eventually([&] { return !lastLogin(host, "accounts", "username", "akeneosftp").first.empty(); }));
  CHECK(lastLogin(host, "keys", "id", "k-x") == std::make_pair(std::string("127.0.0.1"), std::string("publickey")));
  CHECK(lastLogin(host, "keys", "id", "k-y").first.empty());  // never used
  CHECK(lastLogin(host, "accounts", "username", "akeneosftp") ==
        std::make_pair(std::string("127.0.0.1"), std::string("password")));

  auto status = host.status();
  auto keys = status->getArray("keys");
  REQUIRE(keys->size() == 2);
  const std::string when = keys->getObject(0)->getObject("last_login")->getValue<std::string>("time");
  INFO("k-x last login " << when);
  CHECK(when.size() == 20);  // 2026-12-06T08:00:00Z
  REQUIRE(eventually([&] {
    auto failed = host.status()->getObject("failed_logins");
    return failed->getValue<int64_t>("total") >= 1;
  }));
  auto failed = host.status()->getObject("failed_logins");
  auto top = failed->getArray("top");
  REQUIRE(top->size() == 1);
  CHECK(top->getObject(0)->getValue<std::string>("address") == "127.0.0.1");

  // The text status and the metrics say the same.
  CommandOutput text = host.run({"status"});
  CHECK(contains(text.out, "last login "));
  CHECK(contains(text.out, "from 127.0.0.1"));
  CHECK(contains(text.out, "no login seen"));  // k-y
  const std::string metrics = readFile("/srv/metrics.prom");
  INFO(metrics);
  CHECK(contains(metrics, "pim_access_agent_key_last_login_timestamp_seconds{id=\"k-y\"} 0\n"));
  const std::string xLine = "pim_access_agent_key_last_login_timestamp_seconds{id=\"k-x\"} ";
  const size_t at = metrics.find(xLine);
  REQUIRE(at != std::string::npos);
  const int64_t xTime = std::stoll(metrics.substr(at + xLine.size()));
  CHECK(xTime >= before - 1);
  CHECK(xTime <= int64_t(std::time(nullptr)) + 1);
}
