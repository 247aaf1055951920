// The firewall provider: address ranges, sshd's gate, `nft -j -p` parsing (fixtures listed by nft
// 1.0.6 from tests/golden/nft-table.nft), the plan table with its stages, hostile input, and,
// as root, a real nft round trip in a private network namespace (after apply a fresh plan is
// empty; the narrow/widen transactions keep an established conntrack-free state exact).
#include "providers/firewall.h"

#include <sched.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <functional>
#include <sstream>

#include "providers/host/real_host.h"
#include "tests/support/skip.h"

using namespace pim;

namespace {

std::string golden(const std::string& name) {
  std::ifstream in(std::string(PIM_SOURCE_DIR) + "/tests/golden/" + name);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

AddressRanges ranges(std::initializer_list<const char*> items) {
  AddressRanges r;
  for (const char* i : items) REQUIRE(r.add(i));
  return r;
}

SshGate port22() { return SshGate{{22}, {}, {}}; }

FirewallCurrent intact(const AddressRanges& allowed, const SshGate& gate = port22()) {
  FirewallCurrent c;
  c.present = true;
  c.intact = true;
  c.allowed = allowed;
  c.gate = gate;
  return c;
}

std::vector<std::string> verbs(const std::vector<Action>& actions) {
  std::vector<std::string> out;
  for (const auto& a : actions) out.push_back(std::string(verbName(a.verb)) + "@" + stageName(a.stage));
  return out;
}

}  // namespace

TEST_CASE("AddressRanges merges, intersects and prints nft elements", "[firewall]") {
  AddressRanges r = ranges({"198.51.100.0/25", "198.51.100.128/25", "127.0.0.1/32", "2001:db8::/32", "::1"});
  CHECK(r.elements(4) == std::vector<std::string>{"127.0.0.1", "198.51.100.0/24"});
  CHECK(r.elements(6) == std::vector<std::string>{"::1", "2001:db8::/32"});
  CHECK(r.containsAddress("198.51.100.77"));
  CHECK_FALSE(r.containsAddress("198.51.101.1"));
  CHECK(r.containsAddress("2001:db8:ffff::5"));
  CHECK_FALSE(r.containsAddress("2001:db9::1"));

  // Overlaps and adjacency fold into one interval; order of insertion does not matter.
  CHECK(ranges({"10.0.0.0/8", "10.1.0.0/16"}) == ranges({"10.1.0.0/16", "10.0.0.0/8"}));
  CHECK(ranges({"10.0.0.5-10.0.0.9", "10.0.0.10"}).elements(4) == std::vector<std::string>{"10.0.0.5-10.0.0.10"});

  AddressRanges a = ranges({"198.51.100.0/24", "203.0.113.0/24"});
  AddressRanges b = ranges({"198.51.100.128/25", "192.0.2.0/24"});
  CHECK(a.intersect(b).elements(4) == std::vector<std::string>{"198.51.100.128/25"});
  CHECK(a.unite(b).elements(4) == std::vector<std::string>{"192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"});
  CHECK(a.covers(ranges({"198.51.100.7"})));
  CHECK_FALSE(a.covers(b));
  CHECK(a.covers(AddressRanges{}));
  // IPv4 and IPv6 never mix.
  CHECK(ranges({"0.0.0.0/0"}).intersect(ranges({"::/0"})).empty());
  CHECK(ranges({"0.0.0.0/0"}).elements(4) == std::vector<std::string>{"0.0.0.0/0"});
  CHECK(ranges({"::/0"}).elements(6) == std::vector<std::string>{"::/0"});
}

TEST_CASE("AddressRanges refuses what is not an address, a prefix or a range", "[firewall]") {
  AddressRanges r;
  for (const char* bad : {"", "x", "1.2.3.4/33", "1.2.3.4/", "1.2.3.4/-1", "::/129", "1.2.3.9-1.2.3.1", "1.2.3.4-::1",
                          "1.2.3", "256.1.1.1", "1.2.3.4/1234", "fe80::1%eth0", "1.2.3.4 5"}) {
    INFO(bad);
    CHECK_FALSE(r.add(bad));
  }
  CHECK(r.empty());
}

TEST_CASE("sshGateOf reads sshd -T's listen addresses, or its ports", "[firewall]") {
  CHECK(sshGateOf({"0.0.0.0:22", "[::]:22"}, {"22"}) == SshGate{{22}, {}, {}});
  CHECK(sshGateOf({"198.51.100.1:2222", "[2001:db8::1]:22", "0.0.0.0:22"}, {"22"}) ==
        SshGate{{22}, {"198.51.100.1 2222"}, {"2001:db8::1 22"}});
  CHECK(sshGateOf({}, {"2222", "22"}) == SshGate{{22, 2222}, {}, {}});
  CHECK(sshGateOf({}, {}) == SshGate{{22}, {}, {}});
  // What does not parse is left out, never a wildcard.
  CHECK(sshGateOf({"garbage", "1.2.3.4:99999", "[::1"}, {}).empty());
}

TEST_CASE("parseFirewallJson reads the table nft lists", "[firewall]") {
  auto c = parseFirewallJson(golden("nft-table.json"));
  INFO(c.status().message());
  REQUIRE(c);
  CHECK(c->present);
  INFO(c->drift);
  CHECK(c->intact);
  CHECK(c->allowed ==
        ranges({"127.0.0.1", "198.51.100.0/25", "198.51.100.200-198.51.100.210", "::1", "2001:db8:42::/48"}));
  CHECK(c->gate == SshGate{{22}, {"198.51.100.1 2222"}, {}});
  REQUIRE(c->bans.size() == 1);
  CHECK(c->bans[0].address == "203.0.113.9");
  CHECK(c->bans[0].expiresIn == 899);
}

TEST_CASE("parseFirewallJson: a flushed table is not the agent's, a missing one is absent", "[firewall]") {
  auto flushed = parseFirewallJson(golden("nft-table-flushed.json"));
  REQUIRE(flushed);
  CHECK(flushed->present);
  CHECK_FALSE(flushed->intact);
  CHECK_THAT(flushed->drift, Catch::Contains("chain gate holds 0 rules"));

  auto empty = parseFirewallJson(R"({"nftables": [{"metainfo": {"version": "1.0.6"}}]})");
  REQUIRE(empty);
  CHECK_FALSE(empty->present);
}

TEST_CASE("parseFirewallJson notices a changed rule, set or chain", "[firewall]") {
  const std::string base = golden("nft-table.json");
  auto changed = [&](const std::string& from, const std::string& to) {
    std::string text = base;
    auto at = text.find(from);
    REQUIRE(at != std::string::npos);
    text.replace(at, from.size(), to);
    auto c = parseFirewallJson(text);
    REQUIRE(c);
    return *c;
  };
  CHECK_FALSE(changed("\"tcp reset\"", "\"icmp host-unreachable\"").intact);
  CHECK_FALSE(
      changed("\"right\": \"@allow4\"}}, {\"accept\": null}", "\"right\": \"@allow4\"}}, {\"drop\": null}").intact);
  CHECK_FALSE(changed("\"prio\": -10", "\"prio\": 10").intact);
  CHECK_FALSE(changed("\"flags\": [\"interval\"]", "\"flags\": [\"constant\"]").intact);
  CHECK_FALSE(changed("\"name\": \"gate\"", "\"name\": \"other\"").intact);
  // Counters change all the time: they are not drift.
  CHECK(changed("\"packets\": 0", "\"packets\": 12345").intact);
}

TEST_CASE("parseFirewallJson: hostile input is an error or drift, never a crash", "[firewall]") {
  for (const char* bad : {"", "null", "[]", "{", "{\"nftables\": 5}", "{\"nftables\": [5]}",
                          "{\"nftables\": [{\"set\": 5}]}", "{\"nftables\": [{\"rule\": []}]}", "\"x\""}) {
    INFO(bad);
    auto c = parseFirewallJson(bad);
    if (c) CHECK_FALSE(c->intact);
  }
  // Elements of the wrong family or shape are drift.
  const std::string weird =
      R"({"nftables": [{"table": {"family": "inet", "name": "pim_access_agent"}},)"
      R"({"set": {"name": "allow4", "type": "ipv4_addr", "flags": ["interval"], "elem": ["::1", {"range": [1, 2]}, {"prefix": {"addr": "1.2.3.0", "len": "x"}}]}},)"
      R"({"set": {"name": "ssh_ports", "type": "inet_service", "elem": ["ssh", 1e99]}},)"
      R"({"set": {"name": "ssh4", "type": ["ipv4_addr", "inet_service"], "elem": [{"concat": [1]}]}}]})";
  auto c = parseFirewallJson(weird);
  REQUIRE(c);
  CHECK(c->present);
  CHECK_FALSE(c->intact);
}

TEST_CASE("planFirewall table: stages keep the host within the document", "[firewall]") {
  const AddressRanges oldList = ranges({"127.0.0.1", "198.51.100.0/24", "203.0.113.0/24"});
  FirewallDesired want{true, ranges({"127.0.0.1", "198.51.100.0/24", "192.0.2.0/24"}), port22()};

  SECTION("no table: created whole in the revoke stage (it only restricts)") {
    auto a = planFirewall(want, FirewallCurrent{});
    CHECK(verbs(a) == std::vector<std::string>{"create@revoke"});
    CHECK(a[0].payload == renderFirewallTable(want.allowed, want.gate, {}));
  }
  SECTION("a table that is not the agent's: rebuilt whole, the bans carried over") {
    FirewallCurrent c = intact(oldList);
    c.intact = false;
    c.drift = "chain gate holds 0 rules";
    c.bans = {{"203.0.113.9", 600}, {"2001:db8::9", 0}};
    auto a = planFirewall(want, c);
    CHECK(verbs(a) == std::vector<std::string>{"rebuild@revoke"});
    CHECK_THAT(a[0].payload, Catch::Contains("203.0.113.9 timeout 600s"));
    CHECK_THAT(a[0].payload, !Catch::Contains("2001:db8::9"));  // expired
  }
  SECTION("the same list: nothing") { CHECK(planFirewall(want, intact(want.allowed)).empty()); }
  SECTION("removed and added ranges: two transactions, the narrowing first") {
    auto a = planFirewall(want, intact(oldList));
    REQUIRE(verbs(a) == std::vector<std::string>{"narrow@revoke", "widen@grant"});
    // The revoke keeps only what both lists allow; the grant adds the new range.
    CHECK_THAT(a[0].payload, Catch::Contains("flush set inet pim_access_agent allow4"));
    CHECK_THAT(a[0].payload, Catch::Contains("{ 127.0.0.1, 198.51.100.0/24 }"));
    CHECK_THAT(a[0].payload, !Catch::Contains("203.0.113.0"));
    CHECK_THAT(a[0].payload, !Catch::Contains("192.0.2.0"));
    CHECK_THAT(a[0].detail, Catch::Contains("-203.0.113.0/24"));
    CHECK_THAT(a[1].payload, Catch::Contains("{ 127.0.0.1, 192.0.2.0/24, 198.51.100.0/24 }"));
    CHECK_THAT(a[1].detail, Catch::Contains("+192.0.2.0/24"));
    // Only the set that changed is touched: never the bans, never the gate.
    for (const auto& act : a) {
      CHECK_THAT(act.payload, !Catch::Contains("ban4"));
      CHECK_THAT(act.payload, !Catch::Contains("ssh_ports"));
      CHECK_THAT(act.payload, !Catch::Contains("allow6"));
    }
  }
  SECTION("only removed: one revoke") {
    auto a = planFirewall(FirewallDesired{true, ranges({"127.0.0.1"}), port22()}, intact(oldList));
    CHECK(verbs(a) == std::vector<std::string>{"narrow@revoke"});
  }
  SECTION("only added: one grant") {
    auto a = planFirewall(FirewallDesired{true, oldList.unite(ranges({"2001:db8::/32"})), port22()}, intact(oldList));
    CHECK(verbs(a) == std::vector<std::string>{"widen@grant"});
    CHECK_THAT(a[0].payload, Catch::Contains("add element inet pim_access_agent allow6 { 2001:db8::/32 }"));
  }
  SECTION("an empty document list leaves always_allow") {
    auto a = planFirewall(FirewallDesired{true, ranges({"127.0.0.1/32", "::1/128"}), port22()}, intact(oldList));
    CHECK(verbs(a) == std::vector<std::string>{"narrow@revoke", "widen@grant"});
  }
  SECTION("sshd moves to another port: the new one gated first, the old one freed last") {
    auto a = planFirewall(FirewallDesired{true, oldList, SshGate{{2222}, {}, {}}}, intact(oldList));
    REQUIRE(verbs(a) == std::vector<std::string>{"narrow@revoke", "widen@grant"});
    CHECK_THAT(a[0].payload, Catch::Contains("ssh_ports { 22, 2222 }"));
    CHECK_THAT(a[1].payload, Catch::Contains("ssh_ports { 2222 }"));
  }
  SECTION("off: the table is removed in the grant stage, and nothing when there is none") {
    auto a = planFirewall(FirewallDesired{false, {}, {}}, intact(oldList));
    CHECK(verbs(a) == std::vector<std::string>{"remove@grant"});
    CHECK(a[0].payload == "delete table inet pim_access_agent\n");
    CHECK(planFirewall(FirewallDesired{false, {}, {}}, FirewallCurrent{}).empty());
  }
}

TEST_CASE("renderFirewallTable matches the golden script nft accepted", "[firewall]") {
  const std::string text = renderFirewallTable(
      ranges({"127.0.0.1", "198.51.100.0/25", "198.51.100.200-198.51.100.210", "::1", "2001:db8:42::/48"}),
      SshGate{{22}, {"198.51.100.1 2222"}, {}}, {{"203.0.113.9", 900}});
  CHECK(text == golden("nft-table.nft"));
}

TEST_CASE("banScript bans one address in its family's set", "[firewall]") {
  CHECK(*banScript("198.51.100.9", 900) == "add element inet pim_access_agent ban4 { 198.51.100.9 timeout 900s }\n");
  CHECK(*banScript("2001:db8::9", 60) == "add element inet pim_access_agent ban6 { 2001:db8::9 timeout 60s }\n");
  CHECK_FALSE(banScript("198.51.100.9 }; flush ruleset; {", 1));
  CHECK_FALSE(banScript("", 1));
}

namespace {

// Runs `body` in a child process in a new network namespace (and a private mount namespace);
// its exit code says what failed (0: every check held). The test process's own namespaces are
// never changed.
int inPrivateNetwork(const std::function<int()>& body) {
  pid_t pid = ::fork();
  if (pid == 0) {
    if (::unshare(CLONE_NEWNET | CLONE_NEWNS) != 0) ::_exit(100);
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) ::_exit(103);
    int rc = 101;
    try {
      rc = body();
    } catch (...) {
      rc = 102;
    }
    ::_exit(rc);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 200;
}

}  // namespace

TEST_CASE("firewall: real nft in a private network namespace, after apply a fresh plan is empty", "[firewall][root]") {
  if (!test::runsAsRoot("nft in a private network namespace")) return;
  if (!test::runsHere(::access("/usr/sbin/nft", X_OK) == 0, "nft is not installed (apt-get install nftables)")) return;
  const int rc = inPrivateNetwork([]() {
    RealHost host("", makeLogger("test.host"));
    NetworkSettings net;
    AddressRanges first = ranges({"127.0.0.1", "198.51.100.0/24", "203.0.113.0/24", "::1"});
    FirewallDesired want{true, first, SshGate{{22}, {"198.51.100.1 2222"}, {}}};
    auto converge = [&](const FirewallDesired& d) -> int {
      auto current = observeFirewall(host, net);
      if (!current) return 10;
      for (const auto& a : planFirewall(d, *current)) {
        if (!runNftScript(host, net, a.payload)) return 11;
      }
      auto after = observeFirewall(host, net);
      if (!after) return 12;
      if (d.present != after->present || (d.present && !after->intact)) return 13;
      if (!planFirewall(d, *after).empty()) return 14;
      return 0;
    };
    if (int r = converge(want)) return r;
    // A ban survives a change of the lists, and a rebuild.
    auto ban = banScript("192.0.2.66", 900);
    if (!ban || !runNftScript(host, net, *ban)) return 20;
    want.allowed = ranges({"127.0.0.1", "198.51.100.0/25", "192.0.2.0/24", "2001:db8::/32", "::1"});
    if (int r = converge(want)) return 30 + r;
    auto mid = observeFirewall(host, net);
    if (!mid || mid->bans.size() != 1) return 40;
    auto flush = host.run({"/usr/sbin/nft", "flush", "table", "inet", "pim_access_agent"});
    if (!flush || flush->exitCode != 0) return 41;
    auto drifted = observeFirewall(host, net);
    if (!drifted || drifted->intact || !drifted->present) return 42;
    if (int r = converge(want)) return 50 + r;
    auto rebuilt = observeFirewall(host, net);
    if (!rebuilt || rebuilt->bans.size() != 1 || rebuilt->bans[0].address != "192.0.2.66") return 60;
    // A script nft refuses changes nothing.
    if (runNftScript(host, net, "add element inet pim_access_agent allow4 { 300.1.1.1 }\n")) return 70;
    if (int r = converge(FirewallDesired{false, {}, {}})) return 80 + r;
    auto gone = observeFirewall(host, net);
    if (!gone || gone->present) return 90;
    return 0;
  });
  CHECK(rc == 0);
}

TEST_CASE("firewall: a host without /etc/protocols (a minbase root) finds its table intact", "[firewall][root]") {
  // nft names protocols from /etc/protocols: without it, `meta l4proto tcp` lists as 6, and a
  // table read by name would be "drifted" after every rebuild (the loop the package test's boot found).
  if (!test::runsAsRoot("nft in a private network namespace")) return;
  if (!test::runsHere(::access("/usr/sbin/nft", X_OK) == 0, "nft is not installed (apt-get install nftables)")) return;
  const int rc = inPrivateNetwork([]() {
    for (const char* f : {"/etc/protocols", "/etc/services"}) {
      if (::access(f, F_OK) == 0 && ::mount("/dev/null", f, nullptr, MS_BIND, nullptr) != 0) return 1;
    }
    RealHost host("", makeLogger("test.host"));
    NetworkSettings net;
    FirewallDesired want{true, ranges({"127.0.0.1", "198.51.100.0/24"}), SshGate{{22}, {}, {}}};
    auto before = observeFirewall(host, net);
    if (!before) return 2;
    for (const auto& a : planFirewall(want, *before)) {
      if (!runNftScript(host, net, a.payload)) return 3;
    }
    auto after = observeFirewall(host, net);
    if (!after) return 4;
    if (!after->present) return 5;
    if (!after->intact) return 6;
    if (!planFirewall(want, *after).empty()) return 7;
    return 0;
  });
  CHECK(rc == 0);
}
