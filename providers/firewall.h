#pragma once
// The firewall provider: the network allow-list of sshd's ports, in one nftables table the agent
// owns whole, `inet pim_access_agent`. No other table, chain or rule is ever read or touched.
//
//   table inet pim_access_agent {
//     set allow4 { type ipv4_addr; flags interval; }     the document's allowed_sources and
//     set allow6 { type ipv6_addr; flags interval; }     host.always_allow, as merged intervals
//     set ban4 { type ipv4_addr; flags timeout; }        the defender's bans (agent/daemon/defender.h)
//     set ban6 { type ipv6_addr; flags timeout; }
//     set ssh_ports { type inet_service; }               ports sshd listens on for any address
//     set ssh4 { type ipv4_addr . inet_service; }        sshd's listen points on one address
//     set ssh6 { type ipv6_addr . inet_service; }
//     chain input { type filter hook input priority filter - 10; policy accept;
//       tcp dport @ssh_ports jump gate; ip daddr . tcp dport @ssh4 jump gate; (ip6: @ssh6) }
//     chain gate {
//       ct state established,related accept     an open session survives any change
//       iifname "lo" accept                     loopback is always allowed
//       ip saddr @ban4 counter reject with tcp reset   (ip6: @ban6)
//       ip saddr @allow4 accept                 (ip6: @allow6)
//       counter reject with tcp reset           every other new connection: "Connection refused"
//     }
//   }
//
// Why the `nft` binary through Host::run and not libnftables in-process: it is the one seam every
// other system program goes through (sshd -t, useradd), so plan and apply are tested with a
// recording Host and the real thing end to end; a parser bug or leak in libnftables cannot take
// down or grow a root daemon that runs for months; `nft -c -f -` then `nft -f -` gives the same
// atomic, checked transaction; and it costs a few milliseconds only when the firewall is looked
// at (a cycle that checks the host, a drift event), never on an idle poll.
//
// Why priority `filter - 10` (-10) on the input hook: after conntrack (-200) so that `ct state`
// is known, after destination NAT (prerouting), so the port is sshd's real one, and before the
// usual filter chains (0), so that a refused client gets a reset ("Connection refused") even
// where the host's own filter would drop it silently. An accept here ends only this chain: the
// table can only restrict, never open what another table closes.
//
// Stages (providers/provider.h), so that the host never grants more than the document in force:
// the revoke stage creates the table (the first creation only restricts) or narrows it: the
// allowed sets keep only the ranges both the current and the new list allow, the gated ports
// are the union of both; the grant stage, once sshd's confining drop-in is live, opens what the
// new list adds (and ungates ports sshd left). A change that removes and adds ranges is two
// transactions. `firewall = off` removes the table in the grant stage (removing it opens).
// A table that is not exactly the agent's (flushed rules, a missing set, a rule someone added)
// lets everything through as far as the agent can tell: it is rebuilt whole, in the revoke stage,
// the defender's bans carried over. The bans are never planned: they are the defender's.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "providers/core/log.h"
#include "providers/core/result.h"
#include "providers/core/settings.h"
#include "providers/host/host.h"
#include "providers/provider.h"

namespace pim {

inline constexpr const char* kFirewallFamily = "inet";
inline constexpr const char* kFirewallTable = "pim_access_agent";
/// The input chain's priority (filter - 10).
inline constexpr int kFirewallPriority = -10;

/// A set of IPv4 and IPv6 addresses kept as sorted, disjoint, non-adjacent intervals, so that two
/// sets that admit the same addresses compare equal however they were written.
class AddressRanges {
 public:
  /// Adds "a.b.c.d", "a.b.c.d/n", "a-b" (IPv4 or IPv6). false when it does not parse (nothing
  /// added).
  bool add(const std::string& text);
  /// Addresses in both.
  AddressRanges intersect(const AddressRanges& other) const;
  /// Addresses in either.
  AddressRanges unite(const AddressRanges& other) const;
  /// Every address of `other` is in this set.
  bool covers(const AddressRanges& other) const;
  /// Whether the address (IPv4 or IPv6 literal) is in the set.
  bool containsAddress(const std::string& address) const;
  bool empty() const { return v4_.empty() && v6_.empty(); }
  bool operator==(const AddressRanges& o) const { return v4_ == o.v4_ && v6_ == o.v6_; }
  bool operator!=(const AddressRanges& o) const { return !(*this == o); }
  /// nft element texts of one family (4 or 6), in order: "a" for one address, "a/n" for an
  /// aligned block, "a-b" otherwise.
  std::vector<std::string> elements(int family) const;
  /// Both families' elements, IPv4 first.
  std::vector<std::string> all() const;

 private:
  struct Interval {
    std::array<uint8_t, 16> first{};
    std::array<uint8_t, 16> last{};
    bool operator==(const Interval& o) const { return first == o.first && last == o.last; }
  };
  static void insert(std::vector<Interval>& list, Interval in);
  static std::vector<Interval> intersect(const std::vector<Interval>& a, const std::vector<Interval>& b);
  std::vector<Interval> v4_, v6_;
};

/// What sshd's new connections are gated on: ports it listens on for every address, and listen
/// points on one address ("198.51.100.1 22", "2001:db8::1 22").
struct SshGate {
  std::vector<int> anyPorts;         // sorted, unique
  std::vector<std::string> points4;  // "ADDRESS PORT", sorted, unique
  std::vector<std::string> points6;
  bool operator==(const SshGate& o) const {
    return anyPorts == o.anyPorts && points4 == o.points4 && points6 == o.points6;
  }
  bool operator!=(const SshGate& o) const { return !(*this == o); }
  bool empty() const { return anyPorts.empty() && points4.empty() && points6.empty(); }
  /// Everything in either.
  SshGate unite(const SshGate& o) const;
  /// Everything of `o` is gated here.
  bool covers(const SshGate& o) const;
  /// "ports 22; 198.51.100.1 2222".
  std::string describe() const;
};

/// The gate for `sshd -T` output: every `listenaddress` (0.0.0.0 and :: stand for every address),
/// or every `port` when sshd names no listen address. Pure.
SshGate sshGateOf(const std::vector<std::string>& listenAddresses, const std::vector<std::string>& ports);

/// One ban of the defender: an address and the seconds it has left.
struct FirewallBan {
  std::string address;
  int64_t expiresIn = 0;
};

/// What observeFirewall() found.
struct FirewallCurrent {
  bool present = false;  // the table exists
  bool intact = false;   // its sets, chains and rules are exactly the agent's
  std::string drift;     // why it is not intact ("" when it is, or absent)
  AddressRanges allowed;
  SshGate gate;
  std::vector<FirewallBan> bans;
};

/// Parses `nft -j -p list table inet pim_access_agent` output. Pure. Errors: kInvalid when it is
/// not the JSON nft prints (never throws on hostile input).
Result<FirewallCurrent> parseFirewallJson(const std::string& json);

/// Runs `nft -j -p list table inet pim_access_agent` through `host` (`-p`: protocols as numbers,
/// whether or not the host has /etc/protocols; a minbase root has none, and the name nft prints
/// would otherwise depend on it). A missing table is a
/// FirewallCurrent with present false. Errors: kCommand (nft missing or failing, with its
/// message), kInvalid (unreadable output).
Result<FirewallCurrent> observeFirewall(Host& host, const NetworkSettings& network);

/// What the provider wants.
struct FirewallDesired {
  bool present = true;    // false: [network] firewall = off
  AddressRanges allowed;  // the document's sources + always_allow
  SshGate gate;
};

/// The whole table as an nft script that replaces it atomically (the table is created if
/// missing, deleted and made again in one transaction), with `bans` carried over. Pure.
std::string renderFirewallTable(const AddressRanges& allowed, const SshGate& gate,
                                const std::vector<FirewallBan>& bans);

/// Pure: the actions that bring `current` to `desired` (see the stages above). Verbs: "create"
/// (no table: the whole table, revoke stage), "rebuild" (a table that is not the agent's: the
/// whole table, revoke stage), "narrow" (revoke stage), "widen" (grant stage), "remove" (off:
/// grant stage). The payload is the nft script of one transaction.
std::vector<Action> planFirewall(const FirewallDesired& desired, const FirewallCurrent& current);

/// The nft script that bans `address` for `seconds` (ban4 or ban6). Errors: kInvalid when it is
/// not an IPv4/IPv6 literal.
Result<std::string> banScript(const std::string& address, int64_t seconds);

/// Runs one nft script as one transaction: `nft -c -f -` first (a script nft refuses changes
/// nothing), then `nft -f -`. Errors: kCommand with nft's message.
Status runNftScript(Host& host, const NetworkSettings& network, const std::string& script);

class FirewallProvider : public Provider {
 public:
  explicit FirewallProvider(Logger log);

  /// "firewall".
  std::string name() const override { return "firewall"; }
  /// Not managed (under --root): nothing. Otherwise observes the table and, with the firewall on,
  /// sshd's listen points (`sshd -T` of the installed configuration, providers/sshd_dropin.h).
  /// Changes nothing. Errors: nft or sshd -T failed (the table stays as it is).
  Result<std::vector<Action>> plan(const Desired& desired, Host& host) override;
  /// Runs the action's script as one checked transaction. Errors: kCommand. Never throws.
  Status apply(const Action& action, const Desired& desired, Host& host) override;

 private:
  Logger log_;
};

}  // namespace pim
