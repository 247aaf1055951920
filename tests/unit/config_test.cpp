#include "agent/config/config.h"

#include <catch2/catch.hpp>

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
