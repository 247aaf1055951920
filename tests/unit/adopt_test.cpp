#include "agent/cycle/adopt.h"

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include "providers/host/real_host.h"

namespace fs = std::filesystem;

TEST_CASE("adopt: after a rebuilt database, only the agent's own SFTP accounts and paths are re-adopted", "[adopt]") {
  char tmpl[] = "/tmp/pim-adopt-XXXXXX";
  const fs::path dir = ::mkdtemp(tmpl);
  fs::create_directories(dir / "etc");
  fs::create_directories(dir / "srv/pim-sftp/akeneosftp/transfer");
  fs::create_directories(dir / "etc/pim-access-agent/authorized_keys");
  std::ofstream(dir / "etc/pim-access-agent/authorized_keys/akeneosftp") << "";
  std::ofstream(dir / "etc/group") << "root:x:0:\npimtransfer:x:998:akeneo\nstaff:x:50:\n";
  std::ofstream(dir / "etc/passwd")
      << "root:x:0:0:root:/root:/bin/bash\n"
      << "akeneo:x:1000:1000::/home/akeneo:/bin/bash\n"
      << "akeneosftp:x:997:998::/transfer:/usr/sbin/nologin\n"     // the agent's signature
      << "operator:x:996:998::/home/operator:/usr/sbin/nologin\n"  // same group, own home: not ours
      << "other:x:995:50::/transfer:/usr/sbin/nologin\n";          // another group: not ours
  pim::RealHost host(dir.string(), pim::nullLogger());
  pim::HostSettings settings;
  pim::MemoryLedger ledger;
  auto counts = pim::adoptFromHost(host, settings, ledger, pim::nullLogger());
  REQUIRE(counts.isOk());
  CHECK(counts->users == 1);
  CHECK(ledger.owned(pim::OwnedKind::kUser) == std::vector<std::string>{"akeneosftp"});
  CHECK(!ledger.owns(pim::OwnedKind::kUser, "akeneo"));
  CHECK(ledger.owns(pim::OwnedKind::kGroup, "pimtransfer"));
  CHECK(ledger.owns(pim::OwnedKind::kFile, "/srv/pim-sftp/akeneosftp"));
  CHECK(ledger.owns(pim::OwnedKind::kFile, "/srv/pim-sftp/akeneosftp/transfer"));
  CHECK(ledger.owns(pim::OwnedKind::kFile, "/etc/pim-access-agent/authorized_keys/akeneosftp"));
  fs::remove_all(dir);
}

TEST_CASE("adopt: a host without the transfer group adopts nothing", "[adopt]") {
  char tmpl[] = "/tmp/pim-adopt-XXXXXX";
  const fs::path dir = ::mkdtemp(tmpl);
  fs::create_directories(dir / "etc");
  std::ofstream(dir / "etc/group") << "root:x:0:\n";
  std::ofstream(dir / "etc/passwd") << "root:x:0:0:root:/root:/bin/bash\n";
  pim::RealHost host(dir.string(), pim::nullLogger());
  pim::MemoryLedger ledger;
  auto counts = pim::adoptFromHost(host, pim::HostSettings{}, ledger, pim::nullLogger());
  REQUIRE(counts.isOk());
  CHECK(counts->users == 0);
  CHECK(ledger.owned(pim::OwnedKind::kGroup).empty());
  fs::remove_all(dir);
}
