#include "providers/sshd_probes.h"

#include <arpa/inet.h>
#include <fnmatch.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <set>
#include <sstream>

#include "providers/sshd_dropin.h"

namespace pim {
namespace {

/// An address or a network: family, 16 bytes (IPv4 in the first 4), prefix length.
struct Net {
  int family = AF_INET;
  std::array<unsigned char, 16> bytes{};
  int prefix = 32;
  int bits() const { return family == AF_INET ? 32 : 128; }
  size_t size() const { return family == AF_INET ? 4 : 16; }
};

std::optional<Net> parseAddress(const std::string& text) {
  Net n;
  if (::inet_pton(AF_INET, text.c_str(), n.bytes.data()) == 1) {
    n.family = AF_INET;
    n.prefix = 32;
    return n;
  }
  if (::inet_pton(AF_INET6, text.c_str(), n.bytes.data()) == 1) {
    n.family = AF_INET6;
    n.prefix = 128;
    return n;
  }
  return std::nullopt;
}

std::optional<Net> parseNet(const std::string& cidr) {
  auto slash = cidr.find('/');
  auto n = parseAddress(cidr.substr(0, slash));
  if (!n) return std::nullopt;
  if (slash == std::string::npos) return n;
  const std::string len = cidr.substr(slash + 1);
  if (len.empty() || len.size() > 3 || !std::all_of(len.begin(), len.end(), ::isdigit)) return std::nullopt;
  const int prefix = std::stoi(len);
  if (prefix > n->bits()) return std::nullopt;
  n->prefix = prefix;
  return n;
}

bool bitSet(const Net& n, int i) { return (n.bytes[size_t(i / 8)] >> (7 - i % 8)) & 1; }

bool contains(const Net& net, const Net& addr) {
  if (net.family != addr.family) return false;
  for (int i = 0; i < net.prefix; ++i) {
    if (bitSet(net, i) != bitSet(addr, i)) return false;
  }
  return true;
}

/// The first (low) or last (high) address of a network.
Net edge(const Net& net, bool high) {
  Net n = net;
  for (int i = net.prefix; i < net.bits(); ++i) {
    auto& byte = n.bytes[size_t(i / 8)];
    const unsigned char mask = static_cast<unsigned char>(1u << (7 - i % 8));
    byte = high ? static_cast<unsigned char>(byte | mask) : static_cast<unsigned char>(byte & ~mask);
  }
  n.prefix = n.bits();
  return n;
}

/// n + delta (+1 or -1) with carry; nullopt on wrap-around.
std::optional<Net> step(Net n, int delta) {
  for (size_t i = n.size(); i-- > 0;) {
    if (delta > 0) {
      if (n.bytes[i] != 0xff) {
        ++n.bytes[i];
        return n;
      }
      n.bytes[i] = 0;
    } else {
      if (n.bytes[i] != 0) {
        --n.bytes[i];
        return n;
      }
      n.bytes[i] = 0xff;
    }
  }
  return std::nullopt;
}

std::string text(const Net& n) {
  char buf[INET6_ADDRSTRLEN] = {};
  ::inet_ntop(n.family, n.bytes.data(), buf, sizeof buf);
  return buf;
}

std::vector<Net> parseAll(const std::vector<std::string>& cidrs) {
  std::vector<Net> out;
  for (const auto& c : cidrs) {
    if (auto n = parseNet(c)) out.push_back(*n);
  }
  return out;
}

bool inAny(const Net& addr, const std::vector<Net>& nets) {
  return std::any_of(nets.begin(), nets.end(), [&](const Net& n) { return contains(n, addr); });
}

/// An address of `family` outside every range: well-known documentation addresses first (they
/// read well in messages), then the neighbours of every range (if the ranges leave any gap, one
/// of them is in it).
std::optional<std::string> outside(int family, const std::vector<Net>& nets) {
  const std::vector<std::string> preferred =
      family == AF_INET ? std::vector<std::string>{"192.0.2.1", "198.51.100.1", "203.0.113.1", "10.255.255.1"}
                        : std::vector<std::string>{"2001:db8:ffff::1", "100::1", "fd00:ffff::1"};
  for (const auto& p : preferred) {
    auto a = parseAddress(p);
    if (a && !inAny(*a, nets)) return p;
  }
  for (const auto& n : nets) {
    if (n.family != family) continue;
    for (auto candidate : {step(edge(n, true), +1), step(edge(n, false), -1)}) {
      if (candidate && !inAny(*candidate, nets)) return text(*candidate);
    }
  }
  return std::nullopt;
}

std::string lower(std::string s) {
  for (auto& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::vector<std::string> words(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

std::string first(const EffectiveConfig& e, const std::string& key) {
  auto it = e.find(key);
  return it == e.end() || it->second.empty() ? std::string("(none)") : it->second.front();
}

/// denyusers lists `user` or "*" (sshd prints one pattern per line, or several on one line).
bool refused(const EffectiveConfig& e, const std::string& user) {
  auto it = e.find("denyusers");
  if (it == e.end()) return false;
  for (const auto& line : it->second) {
    for (const auto& w : words(line)) {
      if (w == "*" || w == user) return true;
    }
  }
  return false;
}

std::string denied(const EffectiveConfig& e) {
  auto it = e.find("denyusers");
  if (it == e.end() || it->second.empty()) return "(none)";
  std::string s;
  for (const auto& v : it->second) s += (s.empty() ? "" : " ") + v;
  return s;
}

/// sshd's match_pattern(): '*' and '?' wildcards.
bool wildcard(const std::string& pattern, const std::string& s) {
  return ::fnmatch(pattern.c_str(), s.c_str(), FNM_NOESCAPE) == 0;
}

/// The list matching of sshd's match_pattern_list() and addr_match_list(): comma-separated
/// patterns, '!' negates, a negated match wins; `match(pattern)` tests one pattern.
template <class Match>
bool matchList(const std::string& list, Match match) {
  bool positive = false;
  std::stringstream ss(list);
  for (std::string p; std::getline(ss, p, ',');) {
    const bool neg = !p.empty() && p[0] == '!';
    if (neg) p = p.substr(1);
    if (p.empty()) continue;
    if (match(p)) {
      if (neg) return false;
      positive = true;
    }
  }
  return positive;
}

/// sshd's match_pattern_list(): wildcard patterns.
bool patternList(const std::string& list, const std::string& s) {
  return matchList(list, [&](const std::string& p) { return wildcard(p, s); });
}

/// sshd's addr_match_list(): like patternList, with CIDR entries.
bool addressList(const std::string& list, const std::string& address) {
  const auto addr = parseAddress(address);
  return matchList(list, [&](const std::string& p) {
    if (p.find('/') == std::string::npos) return wildcard(p, address);
    const auto net = parseNet(p);
    return net && addr && contains(*net, *addr);
  });
}

std::string normalValue(const std::string& keyword, std::string value) {
  value.erase(std::remove(value.begin(), value.end(), '"'), value.end());
  std::string out;
  for (const auto& w : words(value)) out += (out.empty() ? "" : " ") + w;
  out = lower(out);
  if (keyword == "permitrootlogin" && out == "prohibit-password") out = "without-password";
  if (keyword == "allowtcpforwarding" && out == "all") out = "yes";
  return out;
}

}  // namespace

EffectiveConfig parseEffective(const std::string& output) {
  EffectiveConfig e;
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    auto sp = line.find(' ');
    if (sp == std::string::npos || sp == 0) continue;
    e[lower(line.substr(0, sp))].push_back(line.substr(sp + 1));
  }
  return e;
}

bool addressInRanges(const std::string& address, const std::vector<std::string>& cidrs) {
  auto addr = parseAddress(address);
  return addr && inAny(*addr, parseAll(cidrs));
}

std::optional<std::string> addressInside(const std::string& cidr) {
  auto net = parseNet(cidr);
  if (!net) return std::nullopt;
  Net low = edge(*net, false);
  if (net->bits() - net->prefix >= 2) {
    if (auto next = step(low, +1)) return text(*next);
  }
  return text(low);
}

ProbeAddresses probeAddresses(const DropinInput& in) {
  ProbeAddresses a;
  const auto allowed = allowedSources(in);
  const std::vector<std::string>& firstRanges = !in.documentSources.empty() ? in.documentSources : in.alwaysAllow;
  if (!firstRanges.empty()) a.allowed = addressInside(firstRanges.front()).value_or("");
  if (!in.alwaysAllow.empty()) a.alwaysAllowed = addressInside(in.alwaysAllow.front()).value_or("");
  const auto nets = parseAll(allowed);
  if (auto v4 = outside(AF_INET, nets)) a.refused.push_back(*v4);
  const bool v6Allowed = std::any_of(nets.begin(), nets.end(), [](const Net& n) { return n.family == AF_INET6; });
  if (v6Allowed) {
    if (auto v6 = outside(AF_INET6, nets)) a.refused.push_back(*v6);
  }
  return a;
}

std::vector<Probe> probeMatrix(const DropinInput& in, const ProbeAddresses& addresses, bool perAccount) {
  std::vector<std::string> allowedAndRefused;
  if (!addresses.allowed.empty()) allowedAndRefused.push_back(addresses.allowed);
  allowedAndRefused.insert(allowedAndRefused.end(), addresses.refused.begin(), addresses.refused.end());

  std::vector<Probe> probes;
  auto add = [&](const std::string& user, ProbeRole role, const std::vector<std::string>& from) {
    for (const auto& a : from) probes.push_back({user, a, role});
  };
  add(in.loginUser, ProbeRole::kLoginUser, allowedAndRefused);

  // The drop-in's blocks: one per credential kind of active accounts, one for locked ones.
  std::map<std::pair<int, SftpAccess>, std::vector<std::string>> activeBlocks;
  std::vector<std::string> locked;
  for (const auto& u : in.sftpUsers) {
    if (sftpEntryLocked(u)) {
      locked.push_back(u.username);
    } else {
      activeBlocks[{(u.hasPassword ? 1 : 0) + (u.hasKeys ? 2 : 0), u.access}].push_back(u.username);
    }
  }
  auto addBlock = [&](const std::vector<std::string>& users, ProbeRole role) {
    if (users.empty()) return;
    if (perAccount) {
      for (const auto& u : users) add(u, role, allowedAndRefused);
    } else {
      add(users.front(), role, allowedAndRefused);
    }
  };
  for (const auto& kv : activeBlocks) addBlock(kv.second, ProbeRole::kSftpAccount);
  // Accounts with their own sources (their own Match block): each one from inside its list, and
  // from an address the document allows but its list does not.
  const auto allowed = allowedSources(in);
  for (const auto& u : in.sftpUsers) {
    if (sftpEntryLocked(u) || u.sources.empty()) continue;
    std::vector<std::string> from;
    for (const auto& c : u.sources) {
      auto a = addressInside(c);
      if (a && addressInRanges(*a, allowed)) {
        from.push_back(*a);
        break;
      }
    }
    for (const auto& c : allowed) {
      auto a = addressInside(c);
      if (a && !addressInRanges(*a, u.sources)) {
        from.push_back(*a);
        break;
      }
    }
    for (const auto& a : from) {
      const bool known = std::any_of(probes.begin(), probes.end(),
                                     [&](const Probe& p) { return p.user == u.username && p.address == a; });
      if (!known) probes.push_back({u.username, a, ProbeRole::kSftpAccount});
    }
  }
  addBlock(locked, ProbeRole::kLocked);
  addBlock(in.deniedUsers, ProbeRole::kDenied);

  std::vector<std::string> rootFrom;
  if (!addresses.allowed.empty()) rootFrom.push_back(addresses.allowed);
  if (!addresses.alwaysAllowed.empty() && addresses.alwaysAllowed != addresses.allowed) {
    rootFrom.push_back(addresses.alwaysAllowed);
  }
  rootFrom.insert(rootFrom.end(), addresses.refused.begin(), addresses.refused.end());
  add("root", ProbeRole::kRoot, rootFrom);
  // From an allowed address nothing is asserted for a user the agent does not manage.
  add(kUnmanagedProbeUser, ProbeRole::kUnmanaged, addresses.refused);
  return probes;
}

std::vector<Mismatch> checkProbe(const Probe& probe, const EffectiveConfig& e, const DropinInput& in) {
  std::vector<Mismatch> out;
  auto want = [&](const std::string& keyword, const std::string& value) {
    const std::string got = first(e, keyword);
    if (got != value) out.push_back({keyword, got, value, probe.user, probe.address});
  };
  auto wantRefused = [&] {
    if (!refused(e, probe.user)) out.push_back({"denyusers", denied(e), "*", probe.user, probe.address});
  };
  const bool fromAllowed = addressInRanges(probe.address, allowedSources(in));
  const std::string keysFile = in.authorizedKeysDir + "/%u";

  switch (probe.role) {
    case ProbeRole::kLoginUser:
      if (!fromAllowed) {
        wantRefused();
        break;
      }
      if (refused(e, probe.user))
        out.push_back({"denyusers", denied(e), "not " + probe.user, probe.user, probe.address});
      want("authenticationmethods", "publickey");
      want("passwordauthentication", "no");
      want("kbdinteractiveauthentication", "no");
      want("authorizedkeysfile", keysFile);
      break;
    case ProbeRole::kSftpAccount: {
      // An account with its own sources: an address must be in both lists.
      auto entry = std::find_if(in.sftpUsers.begin(), in.sftpUsers.end(),
                                [&](const SftpUserEntry& u) { return u.username == probe.user; });
      const bool ownAllows =
          entry == in.sftpUsers.end() || entry->sources.empty() || addressInRanges(probe.address, entry->sources);
      if (!fromAllowed || !ownAllows) {
        wantRefused();
        break;
      }
      want("chrootdirectory", in.chrootBase + "/%u");
      // The exact command: it carries the account's access (-R, -p requests).
      want("forcecommand", sftpForceCommand(entry == in.sftpUsers.end() ? SftpAccess::kReadOnly : entry->access));
      want("authorizedkeysfile", keysFile);
      want("allowtcpforwarding", "no");
      want("disableforwarding", "yes");
      want("x11forwarding", "no");
      want("permittty", "no");
      want("permittunnel", "no");
      break;
    }
    case ProbeRole::kLocked:
    case ProbeRole::kDenied:
    case ProbeRole::kUnmanaged:
      // Unmanaged names are only probed from refused addresses; locked and denied ones are
      // refused from everywhere.
      wantRefused();
      break;
    case ProbeRole::kRoot: {
      if (!fromAllowed) wantRefused();
      const std::string prl = first(e, "permitrootlogin");
      if (in.rootLogin == RootLogin::kNo) {
        want("permitrootlogin", "no");
      } else {
        if (prl != "no" && prl != "without-password" && prl != "prohibit-password" && prl != "forced-commands-only") {
          out.push_back({"permitrootlogin", prl, "without-password", probe.user, probe.address});
        }
        if (fromAllowed && !addressInRanges(probe.address, in.alwaysAllow)) wantRefused();
      }
      break;
    }
  }
  return out;
}

std::string canonicalKeyword(const std::string& keyword) {
  std::string k = lower(keyword);
  if (k == "challengeresponseauthentication") return "kbdinteractiveauthentication";
  if (k == "pubkeyacceptedkeytypes") return "pubkeyacceptedalgorithms";
  if (k == "hostbasedacceptedkeytypes") return "hostbasedacceptedalgorithms";
  return k;
}

std::optional<bool> matchSelects(const std::string& matchLine, const std::string& user, const std::string& address,
                                 int port) {
  if (matchLine.empty()) return true;
  std::vector<std::string> w = words(matchLine);
  if (!w.empty() && lower(w[0]) == "match") w.erase(w.begin());
  // "Match all" (alone, or before nothing but a comment) selects everything.
  std::optional<bool> result = true;
  for (size_t i = 0; i < w.size(); ++i) {
    const std::string criterion = lower(w[i]);
    if (criterion[0] == '#') break;
    if (criterion == "all") continue;
    if (i + 1 >= w.size()) return std::nullopt;
    const std::string value = w[++i];
    std::optional<bool> hit;
    if (criterion == "user") {
      hit = patternList(value, user);
    } else if (criterion == "address") {
      hit = addressList(value, address);
    } else if (criterion == "host") {
      hit = patternList(value, address);  // the probes pass host=<address> (UseDNS no)
    } else if (criterion == "localaddress") {
      hit = addressList(value, "127.0.0.1");
    } else if (criterion == "localport") {
      hit = patternList(value, std::to_string(port));
    } else {
      hit = std::nullopt;  // Group, RDomain, ...: not known to a probe
    }
    if (hit && !*hit) return false;
    if (!hit) result = std::nullopt;
  }
  return result;
}

std::string attribute(const ConfigWalk& walk, const Mismatch& m, int port) {
  const std::string value = normalValue(m.keyword, m.effective);
  auto describe = [](const ConfigLine& l) {
    return "set by " + l.file + " (" + (l.match.empty() ? std::string("global") : l.match) + ", line " +
           std::to_string(l.line) + ")";
  };
  // sshd's order: the Match blocks that select the connection (first value wins), then the
  // global lines (first wins); lines whose selection a probe cannot know come after the sure ones.
  for (int pass = 0; pass < 4; ++pass) {
    for (const auto& l : walk.lines) {
      if (l.keyword != m.keyword || normalValue(l.keyword, l.value) != value) continue;
      const auto sel = matchSelects(l.match, m.user, m.address, port);
      const bool global = l.match.empty();
      if ((pass == 0 && !global && sel && *sel) || (pass == 1 && !global && !sel) || (pass == 2 && global) ||
          pass == 3) {
        return describe(l);
      }
    }
  }
  return "not set by any file: sshd's default";
}

std::string describeMismatch(const Mismatch& m) {
  return m.keyword + " " + m.effective + " for " + m.user + " from " + m.address + " (want " + m.want + ")";
}

}  // namespace pim
