// The brute-force defender's pure parts (sshd's messages, the sliding window), its log sources
// (a real log file; a real journal when journald runs here), and the nftables netlink filter of
// the firewall's drift watch (crafted messages; as root, real kernel events in a private network
// namespace).
#include "agent/daemon/defender.h"

#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <vector>

#include "agent/daemon/log_source.h"
#include "agent/daemon/nft_watch.h"
#include "providers/core/clock.h"
#include "tests/support/skip.h"
#include "tests/support/temp_dir.h"

using namespace pim;

TEST_CASE("defender: the source of a failed password, as sshd logs it", "[defender]") {
  CHECK(*failedAuthSource("Failed password for akeneosftp from 198.51.100.20 port 45678 ssh2") == "198.51.100.20");
  CHECK(*failedAuthSource("Failed password for invalid user bob from 2001:db8:0:0::5 port 1 ssh2") == "2001:db8::5");
  CHECK(*failedAuthSource("Failed keyboard-interactive/pam for akeneo from 203.0.113.4 port 22 ssh2") == "203.0.113.4");
  CHECK(*failedAuthSource("Dec  6 03:30:00 host sshd[123]: Failed password for x from 203.0.113.4 port 22 ssh2") ==
        "203.0.113.4");
  // Not a failed password.
  for (const char* other :
       {"Accepted password for akeneosftp from 198.51.100.20 port 45678 ssh2",
        "Failed publickey for akeneo from 198.51.100.20 port 1 ssh2", "Invalid user bob from 198.51.100.20 port 1",
        "Connection closed by authenticating user x 198.51.100.20 port 1 [preauth]", "", "Failed password for"}) {
    INFO(other);
    CHECK_FALSE(failedAuthSource(other));
  }
  // A user name made to look like an address frames nobody: the address sshd appends wins.
  CHECK(*failedAuthSource("Failed password for invalid user x from 203.0.113.66 port 1 ssh2 from 198.51.100.20 "
                          "port 4000 ssh2") == "198.51.100.20");
  // Hostile tails are nothing.
  for (const char* bad :
       {"Failed password for x from 198.51.100.20 port 1 ssh2 extra",
        "Failed password for x from 198.51.100.20 port ssh2",
        "Failed password for x from 198.51.100.20 port 1234567 ssh2",
        "Failed password for x from 198.51.100.999 port 1 ssh2", "Failed password for x from host.example port 1 ssh2",
        "Failed password for x from  port 1 ssh2"}) {
    INFO(bad);
    CHECK_FALSE(failedAuthSource(bad));
  }
}

TEST_CASE("defender: max_failures within the window bans, older failures do not count", "[defender]") {
  AddressRanges never;
  REQUIRE(never.add("198.51.100.30/32"));
  FailureCounter c(3, 60, never);
  CHECK_FALSE(c.failure("198.51.100.20", 1000));
  CHECK_FALSE(c.failure("198.51.100.20", 1030));
  CHECK(c.failure("198.51.100.20", 1059));        // the third within 60 s
  CHECK_FALSE(c.failure("198.51.100.20", 1060));  // counting starts again after a ban
  CHECK_FALSE(c.failure("198.51.100.21", 1000));
  CHECK_FALSE(c.failure("198.51.100.21", 1030));
  CHECK_FALSE(c.failure("198.51.100.21", 1061));  // the first one left the window
  CHECK(c.failure("198.51.100.21", 1062));
  for (int i = 0; i < 100; ++i) CHECK_FALSE(c.failure("198.51.100.30", 2000 + i));  // always_allow
  CHECK(c.tracked(1100) == 1);                                                      // .20's last failure
  CHECK(c.tracked(5000) == 0);
}

TEST_CASE("defender: a log file is read from its end, line by line, and after a rotation", "[defender]") {
  test::TempDir dir;
  const std::string path = dir.path() + "/sshd.log";
  auto append = [&](const std::string& text) {
    std::ofstream out(path, std::ios::app);
    out << text;
  };
  append("Failed password for old from 198.51.100.1 port 1 ssh2\n");
  FixedClock clock(1'700'000'000);  // a line's time is when it is read
  auto source = openFileSource(path, "", clock);
  REQUIRE(source);
  LogSource& s = **source;
  CHECK(s.fd() >= 0);
  CHECK(s.read(100)->empty());  // what was there before was logged before
  append("Failed password for x from 198.51.100.2 port 1 ssh2\npartial");
  auto got = s.read(100);
  REQUIRE(got);
  REQUIRE(got->size() == 1);
  CHECK((*got)[0].text == "Failed password for x from 198.51.100.2 port 1 ssh2");
  CHECK((*got)[0].time == 1'700'000'000);
  append(" line\n");
  clock.set(1'700'000'042);
  got = s.read(100);
  REQUIRE(got->size() == 1);
  CHECK((*got)[0].text == "partial line");
  CHECK((*got)[0].time == 1'700'000'042);
  // A cursor resumes where it stopped.
  const std::string cursor = s.cursor();
  append("after the cursor\n");
  auto again = openFileSource(path, cursor, clock);
  REQUIRE(again);
  got = (*again)->read(100);
  REQUIRE(got->size() == 1);
  CHECK((*got)[0].text == "after the cursor");
  // Rotation: a new file under the name is read from its start.
  REQUIRE(::rename(path.c_str(), (path + ".1").c_str()) == 0);
  append("in the new file\n");
  got = s.read(100);
  REQUIRE(got);
  REQUIRE_FALSE(got->empty());
  CHECK(got->back().text == "in the new file");
}

namespace {

// One nfnetlink message of nftables: type, then string attributes.
std::vector<uint8_t> nftMessage(int type, const std::vector<std::pair<uint16_t, std::string>>& attrs) {
  std::vector<uint8_t> out(NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(nfgenmsg)), 0);
  for (const auto& [t, value] : attrs) {
    nlattr a{};
    a.nla_type = t;
    a.nla_len = uint16_t(NLA_HDRLEN + value.size() + 1);
    std::vector<uint8_t> bytes(NLA_ALIGN(a.nla_len), 0);
    std::memcpy(bytes.data(), &a, sizeof a);
    std::memcpy(bytes.data() + NLA_HDRLEN, value.c_str(), value.size());
    out.insert(out.end(), bytes.begin(), bytes.end());
  }
  nlmsghdr h{};
  h.nlmsg_len = uint32_t(out.size());
  h.nlmsg_type = uint16_t((NFNL_SUBSYS_NFTABLES << 8) | type);
  std::memcpy(out.data(), &h, sizeof h);
  return out;
}

bool concerns(const std::vector<uint8_t>& m) {
  return nftMessagesConcern(m.data(), m.size(), "pim_access_agent", {"ban4", "ban6"});
}

}  // namespace

TEST_CASE("nft watch: which netlink messages are the firewall's drift", "[firewall][netlink]") {
  CHECK(concerns(nftMessage(NFT_MSG_DELTABLE, {{NFTA_TABLE_NAME, "pim_access_agent"}})));
  CHECK(concerns(nftMessage(NFT_MSG_DELRULE, {{NFTA_RULE_TABLE, "pim_access_agent"}, {NFTA_RULE_CHAIN, "gate"}})));
  CHECK(concerns(nftMessage(NFT_MSG_NEWCHAIN, {{NFTA_CHAIN_TABLE, "pim_access_agent"}})));
  CHECK(concerns(nftMessage(NFT_MSG_DELSETELEM,
                            {{NFTA_SET_ELEM_LIST_TABLE, "pim_access_agent"}, {NFTA_SET_ELEM_LIST_SET, "allow4"}})));
  // The defender's bans, other tables, generations: not drift.
  CHECK_FALSE(concerns(nftMessage(NFT_MSG_NEWSETELEM,
                                  {{NFTA_SET_ELEM_LIST_TABLE, "pim_access_agent"}, {NFTA_SET_ELEM_LIST_SET, "ban4"}})));
  CHECK_FALSE(concerns(nftMessage(NFT_MSG_DELTABLE, {{NFTA_TABLE_NAME, "filter"}})));
  CHECK_FALSE(concerns(nftMessage(NFT_MSG_NEWRULE, {{NFTA_RULE_TABLE, "pim_access_agent_other"}})));
  CHECK_FALSE(concerns(nftMessage(NFT_MSG_NEWGEN, {})));
  // Two messages in one datagram: the second one counts.
  auto both = nftMessage(NFT_MSG_NEWGEN, {});
  auto del = nftMessage(NFT_MSG_DELTABLE, {{NFTA_TABLE_NAME, "pim_access_agent"}});
  both.insert(both.end(), del.begin(), del.end());
  CHECK(concerns(both));
  // Malformed input is read as far as it is well formed, never past its end.
  for (size_t cut = 0; cut < del.size(); ++cut)
    CHECK_FALSE(nftMessagesConcern(del.data(), cut, "pim_access_agent", {}));
  auto lying = del;
  lying[0] = 0xff;  // nlmsg_len larger than the datagram
  CHECK_FALSE(concerns(lying));
}

TEST_CASE("nft watch: real kernel events in a private network namespace", "[firewall][netlink][root]") {
  if (!test::runsAsRoot("an nftables netlink socket in a private network namespace")) return;
  if (!test::runsHere(::access("/usr/sbin/nft", X_OK) == 0, "nft is not installed (apt-get install nftables)")) return;
  pid_t pid = ::fork();
  if (pid == 0) {
    if (::unshare(CLONE_NEWNET) != 0) ::_exit(100);
    uv_loop_t loop;
    uv_loop_init(&loop);
    int changes = 0;
    NftWatch watch(
        &loop, "pim_access_agent", {"ban4"}, [&] { ++changes; }, nullLogger());
    if (!watch.start()) ::_exit(101);
    auto nft = [](const char* script) {
      std::string cmd = std::string("/usr/sbin/nft '") + script + "'";
      return std::system(cmd.c_str()) == 0;
    };
    auto settle = [&] {
      for (int i = 0; i < 20; ++i) uv_run(&loop, UV_RUN_NOWAIT), ::usleep(5000);
    };
    if (!nft("add table inet other")) ::_exit(102);
    settle();
    if (changes != 0) ::_exit(103);
    if (!nft("add table inet pim_access_agent; add set inet pim_access_agent ban4 { type ipv4_addr; flags timeout; }"))
      ::_exit(104);
    settle();
    if (changes == 0) ::_exit(105);
    const int before = changes;
    if (!nft("add element inet pim_access_agent ban4 { 192.0.2.1 timeout 60s }")) ::_exit(106);
    settle();
    if (changes != before) ::_exit(107);
    if (!nft("delete table inet pim_access_agent")) ::_exit(108);
    settle();
    if (changes == before) ::_exit(109);
    watch.stop();
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}
