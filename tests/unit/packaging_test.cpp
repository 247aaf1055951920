// The default configuration shipped by the Debian package (debian/agent.ini): it parses, it
// names every key the parser knows with its true default, and it leaves the store unset.
#include <catch2/catch.hpp>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "agent/config/config.h"

namespace {

std::string readText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string shippedConfig() { return readText(std::string(PIM_SOURCE_DIR) + "/debian/agent.ini"); }

// The shipped file with every commented-out "key = value" line turned into a setting.
std::string uncommented(const std::string& text) {
  static const std::regex commentedKey(R"(^;([a-z_]+ =.*)$)");
  std::istringstream in(text);
  std::ostringstream out;
  for (std::string line; std::getline(in, line);) out << std::regex_replace(line, commentedKey, "$1") << '\n';
  return out.str();
}

// "section.key" of every setting line ("key = value") under its [section].
std::set<std::string> keysOf(const std::string& text) {
  static const std::regex section(R"(^\[([a-z]+)\]\s*$)");
  static const std::regex setting(R"(^([a-z_]+) =.*$)");
  std::set<std::string> keys;
  std::string current;
  std::istringstream in(text);
  std::smatch m;
  for (std::string line; std::getline(in, line);) {
    if (std::regex_match(line, m, section)) current = m[1];
    if (std::regex_match(line, m, setting)) keys.insert(current + "." + std::string(m[1]));
  }
  return keys;
}

}  // namespace

TEST_CASE("packaging: the shipped agent.ini parses to the defaults with no store", "[packaging][config]") {
  auto shipped = pim::parseConfig(shippedConfig());
  INFO(shipped.status().toString());
  REQUIRE(shipped.isOk());
  CHECK(shipped->store.source.empty());  // the operator must set it: `run` exits 2 until then
}

TEST_CASE("packaging: every key of agent.ini, uncommented, is known and shows its default", "[packaging][config]") {
  const std::string text = uncommented(shippedConfig());
  auto parsed = pim::parseConfig(text);  // an unknown or misspelt key fails here
  INFO(parsed.status().toString());
  REQUIRE(parsed.isOk());
  const pim::Config d;
  const pim::Config& c = *parsed;
  CHECK(c.store.source == d.store.source);
  CHECK(c.store.instance == d.store.instance);
  CHECK(c.store.tokenFile == d.store.tokenFile);
  CHECK(c.store.caFile == d.store.caFile);
  CHECK(c.store.signingKey == d.store.signingKey);
  CHECK(c.store.proxy == d.store.proxy);
  CHECK(c.store.pollIntervalS == d.store.pollIntervalS);
  CHECK(c.store.longPollS == d.store.longPollS);
  CHECK(c.store.maxDocumentBytes == d.store.maxDocumentBytes);
  CHECK(c.store.reportUrl == d.store.reportUrl);
  CHECK(c.store.reportIntervalS == d.store.reportIntervalS);
  CHECK(c.store.clientCert == d.store.clientCert);
  CHECK(c.store.clientKey == d.store.clientKey);
  CHECK(c.store.etcdUser == d.store.etcdUser);
  CHECK(c.store.etcdPasswordFile == d.store.etcdPasswordFile);
  CHECK(c.host.loginUser == d.host.loginUser);
  CHECK(c.host.transferRoot == d.host.transferRoot);
  CHECK(c.host.transferGroup == d.host.transferGroup);
  CHECK(c.host.chrootBase == d.host.chrootBase);
  CHECK(c.host.alwaysAllow == d.host.alwaysAllow);
  CHECK(c.sshd.mainConfig == d.sshd.mainConfig);
  CHECK(c.sshd.dropin == d.sshd.dropin);
  CHECK(c.sshd.binary == d.sshd.binary);
  CHECK(c.sshd.reloadCommand == d.sshd.reloadCommand);
  CHECK(c.sshd.permitRootLogin == d.sshd.permitRootLogin);
  CHECK(c.network.firewall == d.network.firewall);
  CHECK(c.network.nftBinary == d.network.nftBinary);
  CHECK(c.defender.enabled == d.defender.enabled);
  CHECK(c.defender.maxFailures == d.defender.maxFailures);
  CHECK(c.defender.windowS == d.defender.windowS);
  CHECK(c.defender.banS == d.defender.banS);
  CHECK(c.defender.logFile == d.defender.logFile);
  CHECK(c.audit.enabled == d.audit.enabled);
  CHECK(c.state.db == d.state.db);
  CHECK(c.state.metricsFile == d.state.metricsFile);

  // Every key of the contract's config block (docs/agent.md) plus the metrics file.
  const std::set<std::string> expected = {"store.source",
                                          "store.instance",
                                          "store.token_file",
                                          "store.ca_file",
                                          "store.signing_key",
                                          "store.proxy",
                                          "store.poll_interval_s",
                                          "store.long_poll_s",
                                          "store.max_document_bytes",
                                          "store.report_url",
                                          "store.report_interval_s",
                                          "store.client_cert",
                                          "store.client_key",
                                          "store.etcd_user",
                                          "store.etcd_password_file",
                                          "host.login_user",
                                          "host.transfer_root",
                                          "host.transfer_group",
                                          "host.chroot_base",
                                          "host.always_allow",
                                          "sshd.main_config",
                                          "sshd.dropin",
                                          "sshd.binary",
                                          "sshd.reload_command",
                                          "sshd.permit_root_login",
                                          "network.firewall",
                                          "network.nft_binary",
                                          "defender.enabled",
                                          "defender.max_failures",
                                          "defender.window_s",
                                          "defender.ban_s",
                                          "defender.log_file",
                                          "audit.enabled",
                                          "state.db",
                                          "state.metrics_file"};
  CHECK(keysOf(text) == expected);
}

TEST_CASE("packaging: a key the parser does not know would be caught", "[packaging][config]") {
  // Guards the test above: uncommenting must reach the parser's unknown-key check.
  auto parsed = pim::parseConfig(uncommented(shippedConfig() + "\n[state]\n;no_such_key = 1\n"));
  REQUIRE_FALSE(parsed.isOk());
  CHECK(parsed.status().message().find("state.no_such_key") != std::string::npos);
}
