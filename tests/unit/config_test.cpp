#include "agent/config/config.h"

#include <catch2/catch.hpp>
#include <string>
#include <utility>
#include <vector>

TEST_CASE("config: defaults", "[config]") {
  auto c = pim::parseConfig("");
  REQUIRE(c.isOk());
}

TEST_CASE("config: sshd.permit_root_login is no or prohibit-password", "[config]") {
  auto d = pim::parseConfig("");
  REQUIRE(d.isOk());
  CHECK(d->sshd.permitRootLogin == pim::RootLogin::kNo);
  CHECK(d->sshd.dropin == "/etc/ssh/sshd_config.d/10-pim-access-agent.conf");
  CHECK(d->host.authorizedKeysDir == "/etc/pim-access-agent/authorized_keys");
  auto p = pim::parseConfig("[sshd]\npermit_root_login = prohibit-password\n");
  REQUIRE(p.isOk());
  CHECK(p->sshd.permitRootLogin == pim::RootLogin::kProhibitPassword);
  CHECK(pim::parseConfig("[sshd]\npermit_root_login = no\n")->sshd.permitRootLogin == pim::RootLogin::kNo);
  for (const char* bad : {"yes", "without-password", "forced-commands-only", "", "No"}) {
    INFO(bad);
    auto r = pim::parseConfig(std::string("[sshd]\npermit_root_login = ") + bad + "\n");
    REQUIRE_FALSE(r.isOk());
    CHECK(r.status().code() == pim::ErrorCode::kInvalid);
    CHECK(r.status().message().find("sshd.permit_root_login") != std::string::npos);
  }
}

TEST_CASE("config: [network] firewall and [defender]", "[config][firewall]") {
  auto d = pim::parseConfig("");
  REQUIRE(d.isOk());
  CHECK(d->network.firewall == pim::FirewallMode::kNftables);
  CHECK(d->network.managed);
  CHECK(d->network.nftBinary == "/usr/sbin/nft");
  CHECK(d->defender.enabled);
  CHECK(d->defender.maxFailures == 10);
  CHECK(d->defender.windowS == 600);
  CHECK(d->defender.banS == 900);
  CHECK(d->defender.logFile.empty());
  CHECK(d->audit.enabled);
  auto c = pim::parseConfig(
      "[network]\nfirewall = off\nnft_binary = /opt/nft\n[defender]\nenabled = false\nmax_failures = 3\n"
      "window_s = 60\nban_s = 30\nlog_file = /var/log/auth.log\n[audit]\nenabled = false\n");
  REQUIRE(c.isOk());
  CHECK(c->network.firewall == pim::FirewallMode::kOff);
  CHECK(c->network.nftBinary == "/opt/nft");
  CHECK_FALSE(c->defender.enabled);
  CHECK(c->defender.maxFailures == 3);
  CHECK(c->defender.windowS == 60);
  CHECK(c->defender.banS == 30);
  CHECK(c->defender.logFile == "/var/log/auth.log");
  CHECK_FALSE(c->audit.enabled);
  for (const auto& [text, key] :
       std::vector<std::pair<std::string, std::string>>{{"[network]\nfirewall = iptables\n", "network.firewall"},
                                                        {"[network]\nfirewall =\n", "network.firewall"},
                                                        {"[network]\nnft_binary = nft\n", "network.nft_binary"},
                                                        {"[defender]\nenabled = yes\n", "defender.enabled"},
                                                        {"[defender]\nmax_failures = 0\n", "defender.max_failures"},
                                                        {"[defender]\nwindow_s = -1\n", "defender.window_s"},
                                                        {"[defender]\nban_s = soon\n", "defender.ban_s"},
                                                        {"[defender]\nlog_file = auth.log\n", "defender.log_file"},
                                                        {"[defender]\nbogus = 1\n", "defender.bogus"},
                                                        {"[audit]\nenabled = 1\n", "audit.enabled"},
                                                        {"[audit]\nlog_file = /x\n", "audit.log_file"}}) {
    INFO(text);
    auto r = pim::parseConfig(text);
    REQUIRE_FALSE(r.isOk());
    CHECK(r.status().message().find(key) != std::string::npos);
  }
}

TEST_CASE("config: store.proxy is empty (the environment), none, or a proxy URL", "[config][proxy]") {
  for (const char* good : {"", "none", "http://proxy.example:3128", "HTTP://proxy.example", "https://10.0.0.1:8443/",
                           "socks5h://[2001:db8::1]:1080", "http://user:pa%40ss@proxy.example:3128"}) {
    INFO("'" << good << "'");
    auto c = pim::parseConfig(std::string("[store]\nproxy = ") + good + "\n");
    INFO(c.status().toString());
    REQUIRE(c.isOk());
    CHECK(c->store.proxy == good);
  }
  for (const char* bad : {"proxy.example:3128", "ftp://proxy.example", "http://", "http://proxy.example:0",
                          "http://proxy.example:65536", "http://proxy.example:x", "http://proxy.example/path",
                          "http://proxy.example?x=1", "http://[::1", "http://user:s3cret@", "http://a b"}) {
    INFO("'" << bad << "'");
    auto c = pim::parseConfig(std::string("[store]\nproxy = ") + bad + "\n");
    REQUIRE_FALSE(c.isOk());
    CHECK(c.status().code() == pim::ErrorCode::kInvalid);
    CHECK(c.status().message().find("store.proxy") != std::string::npos);
    CHECK(c.status().message().find("s3cret") == std::string::npos);
  }
}

TEST_CASE("config: store.report_url is empty (no reports) or an http(s) URL; report_interval_s 1..86400",
          "[config][report]") {
  auto d = pim::parseConfig("");
  REQUIRE(d.isOk());
  CHECK(d->store.reportUrl.empty());
  CHECK(d->store.reportIntervalS == 300);
  auto c = pim::parseConfig(
      "[store]\nreport_url = https://portal.example/v1/instances/i-1/access/report\nreport_interval_s = 60\n");
  INFO(c.status().toString());
  REQUIRE(c.isOk());
  CHECK(c->store.reportUrl == "https://portal.example/v1/instances/i-1/access/report");
  CHECK(c->store.reportIntervalS == 60);
  for (const char* bad : {"portal.example/report", "ftp://portal.example/r", "file:///tmp/r", "https://a b/r",
                          "http://user:s3cret@ x/"}) {
    INFO("'" << bad << "'");
    auto r = pim::parseConfig(std::string("[store]\nreport_url = ") + bad + "\n");
    REQUIRE_FALSE(r.isOk());
    CHECK(r.status().code() == pim::ErrorCode::kInvalid);
    CHECK(r.status().message().find("store.report_url") != std::string::npos);
    CHECK(r.status().message().find("s3cret") == std::string::npos);
  }
  for (const char* bad : {"0", "-1", "86401", "5m", ""}) {
    INFO("'" << bad << "'");
    auto r = pim::parseConfig(std::string("[store]\nreport_interval_s = ") + bad + "\n");
    REQUIRE_FALSE(r.isOk());
    CHECK(r.status().message().find("store.report_interval_s") != std::string::npos);
  }
}
