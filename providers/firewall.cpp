#include "providers/firewall.h"
#include "providers/core/text_fields.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <Poco/Dynamic/Var.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <map>
#include <set>
#include <sstream>

#include "providers/sshd_dropin.h"
#include "providers/sshd_probes.h"

namespace pim {
namespace {

using Poco::Dynamic::Var;
using Poco::JSON::Array;
using Poco::JSON::Object;

constexpr const char* kProvider = "firewall";
constexpr size_t kMaxNftOutput = 64u << 20;
constexpr size_t kMaxShown = 8;

using Bytes = std::array<uint8_t, 16>;

// ---------------------------------------------------------------------------------------------
// Addresses as 16 big-endian bytes (IPv4 in the last 4, so that order and carries work alike).
// ---------------------------------------------------------------------------------------------

std::optional<Bytes> parseIp(const std::string& text, int family) {
  Bytes b{};
  if (family == 4) {
    in_addr a{};
    if (::inet_pton(AF_INET, text.c_str(), &a) != 1) return std::nullopt;
    std::memcpy(b.data() + 12, &a, 4);
    return b;
  }
  in6_addr a{};
  if (::inet_pton(AF_INET6, text.c_str(), &a) != 1) return std::nullopt;
  std::memcpy(b.data(), &a, 16);
  return b;
}

int familyOf(const std::string& text) { return text.find(':') == std::string::npos ? 4 : 6; }

std::string ipText(const Bytes& b, int family) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (family == 4) {
    ::inet_ntop(AF_INET, b.data() + 12, buf, sizeof buf);
  } else {
    ::inet_ntop(AF_INET6, b.data(), buf, sizeof buf);
  }
  return buf;
}

int bitsOf(int family) { return family == 4 ? 32 : 128; }

// The address with the low (bits - prefix) bits cleared (low) or set (high).
Bytes edge(Bytes b, int family, int prefix, bool high) {
  const int offset = family == 4 ? 96 : 0;
  for (int i = offset + prefix; i < 128; ++i) {
    const uint8_t mask = static_cast<uint8_t>(1u << (7 - i % 8));
    b[size_t(i / 8)] =
        high ? static_cast<uint8_t>(b[size_t(i / 8)] | mask) : static_cast<uint8_t>(b[size_t(i / 8)] & ~mask);
  }
  return b;
}

// b + 1 (false on wrap-around).
bool increment(Bytes& b) {
  for (size_t i = 16; i-- > 0;) {
    if (++b[i] != 0) return true;
  }
  return false;
}

// The prefix length when [first, last] is one aligned block, else -1.
int blockPrefix(const Bytes& first, const Bytes& last, int family) {
  for (int prefix = 0; prefix <= bitsOf(family); ++prefix) {
    if (edge(first, family, prefix, false) == first && edge(first, family, prefix, true) == last) return prefix;
  }
  return -1;
}

std::string joinShown(const std::vector<std::string>& items) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i == kMaxShown) {
      out += " +" + std::to_string(items.size() - kMaxShown) + " more";
      break;
    }
    out += (i ? " " : "") + items[i];
  }
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// AddressRanges
// ---------------------------------------------------------------------------------------------

void AddressRanges::insert(std::vector<Interval>& list, Interval in) {
  std::vector<Interval> out;
  for (const auto& cur : list) {
    // Disjoint and not adjacent: kept as it is.
    Bytes afterCur = cur.last;
    const bool curEndsBefore = increment(afterCur) && afterCur < in.first;
    Bytes afterIn = in.last;
    const bool inEndsBefore = increment(afterIn) && afterIn < cur.first;
    if (curEndsBefore || inEndsBefore) {
      out.push_back(cur);
      continue;
    }
    in.first = std::min(in.first, cur.first);
    in.last = std::max(in.last, cur.last);
  }
  out.push_back(in);
  std::sort(out.begin(), out.end(), [](const Interval& a, const Interval& b) { return a.first < b.first; });
  list = std::move(out);
}

bool AddressRanges::add(const std::string& raw) {
  const std::string text = trimmed(raw);
  if (text.empty()) return false;
  const int family = familyOf(text);
  Interval in;
  const size_t dash = text.find('-');
  const size_t slash = text.find('/');
  if (dash != std::string::npos) {
    auto a = parseIp(text.substr(0, dash), family);
    auto b = parseIp(text.substr(dash + 1), family);
    if (!a || !b || *b < *a) return false;
    in.first = *a;
    in.last = *b;
  } else if (slash != std::string::npos) {
    auto a = parseIp(text.substr(0, slash), family);
    const std::string len = text.substr(slash + 1);
    if (!a || len.empty() || len.size() > 3 || !std::all_of(len.begin(), len.end(), ::isdigit)) return false;
    const int prefix = std::stoi(len);
    if (prefix > bitsOf(family)) return false;
    in.first = edge(*a, family, prefix, false);
    in.last = edge(*a, family, prefix, true);
  } else {
    auto a = parseIp(text, family);
    if (!a) return false;
    in.first = in.last = *a;
  }
  insert(family == 4 ? v4_ : v6_, in);
  return true;
}

std::vector<AddressRanges::Interval> AddressRanges::intersect(const std::vector<Interval>& a,
                                                              const std::vector<Interval>& b) {
  std::vector<Interval> out;
  for (const auto& x : a) {
    for (const auto& y : b) {
      Interval i{std::max(x.first, y.first), std::min(x.last, y.last)};
      if (!(i.last < i.first)) out.push_back(i);
    }
  }
  std::sort(out.begin(), out.end(), [](const Interval& l, const Interval& r) { return l.first < r.first; });
  return out;
}

AddressRanges AddressRanges::intersect(const AddressRanges& other) const {
  AddressRanges r;
  // Pieces of disjoint lists are disjoint; adjacent pieces are merged again.
  for (const auto& i : intersect(v4_, other.v4_)) insert(r.v4_, i);
  for (const auto& i : intersect(v6_, other.v6_)) insert(r.v6_, i);
  return r;
}

AddressRanges AddressRanges::unite(const AddressRanges& other) const {
  AddressRanges r = *this;
  for (const auto& i : other.v4_) insert(r.v4_, i);
  for (const auto& i : other.v6_) insert(r.v6_, i);
  return r;
}

bool AddressRanges::covers(const AddressRanges& other) const { return other.intersect(*this) == other; }

bool AddressRanges::containsAddress(const std::string& address) const {
  const int family = familyOf(address);
  auto a = parseIp(address, family);
  if (!a) return false;
  for (const auto& i : family == 4 ? v4_ : v6_) {
    if (!(*a < i.first) && !(i.last < *a)) return true;
  }
  return false;
}

std::vector<std::string> AddressRanges::elements(int family) const {
  std::vector<std::string> out;
  for (const auto& i : family == 4 ? v4_ : v6_) {
    if (i.first == i.last) {
      out.push_back(ipText(i.first, family));
      continue;
    }
    const int prefix = blockPrefix(i.first, i.last, family);
    out.push_back(prefix >= 0 ? ipText(i.first, family) + "/" + std::to_string(prefix)
                              : ipText(i.first, family) + "-" + ipText(i.last, family));
  }
  return out;
}

std::vector<std::string> AddressRanges::all() const {
  auto out = elements(4);
  auto six = elements(6);
  out.insert(out.end(), six.begin(), six.end());
  return out;
}

// ---------------------------------------------------------------------------------------------
// SshGate
// ---------------------------------------------------------------------------------------------

namespace {

template <class T>
std::vector<T> unionOf(const std::vector<T>& a, const std::vector<T>& b) {
  std::set<T> all(a.begin(), a.end());
  all.insert(b.begin(), b.end());
  return {all.begin(), all.end()};
}

template <class T>
bool includesAll(const std::vector<T>& have, const std::vector<T>& want) {
  return std::all_of(want.begin(), want.end(),
                     [&](const T& w) { return std::find(have.begin(), have.end(), w) != have.end(); });
}

}  // namespace

SshGate SshGate::unite(const SshGate& o) const {
  return SshGate{unionOf(anyPorts, o.anyPorts), unionOf(points4, o.points4), unionOf(points6, o.points6)};
}

bool SshGate::covers(const SshGate& o) const {
  return includesAll(anyPorts, o.anyPorts) && includesAll(points4, o.points4) && includesAll(points6, o.points6);
}

std::string SshGate::describe() const {
  std::string out;
  if (!anyPorts.empty()) {
    out = "ports";
    for (int p : anyPorts) out += " " + std::to_string(p);
  }
  for (const auto* list : {&points4, &points6}) {
    for (const auto& p : *list) out += (out.empty() ? "" : "; ") + p;
  }
  return out.empty() ? "nothing" : out;
}

SshGate sshGateOf(const std::vector<std::string>& listenAddresses, const std::vector<std::string>& ports) {
  std::set<int> any;
  std::set<std::string> four, six;
  auto portOf = [](const std::string& s) -> int {
    if (s.empty() || s.size() > 5 || !std::all_of(s.begin(), s.end(), ::isdigit)) return 0;
    const int p = std::stoi(s);
    return p > 0 && p <= 65535 ? p : 0;
  };
  for (const auto& line : listenAddresses) {
    std::istringstream words(line);
    std::string w;
    words >> w;  // "0.0.0.0:22", "[::]:22", "198.51.100.1:2222", maybe followed by "rdomain x"
    std::string address;
    size_t colon;
    if (!w.empty() && w[0] == '[') {
      const size_t close = w.find(']');
      if (close == std::string::npos) continue;
      address = w.substr(1, close - 1);
      colon = w.find(':', close);
    } else {
      colon = w.rfind(':');
      address = w.substr(0, colon);
    }
    if (colon == std::string::npos) continue;
    const int port = portOf(w.substr(colon + 1));
    if (port == 0) continue;
    if (address == "0.0.0.0" || address == "::") {
      any.insert(port);
    } else if (parseIp(address, 4)) {
      four.insert(ipText(*parseIp(address, 4), 4) + " " + std::to_string(port));
    } else if (parseIp(address, 6)) {
      six.insert(ipText(*parseIp(address, 6), 6) + " " + std::to_string(port));
    }
  }
  if (listenAddresses.empty()) {
    for (const auto& p : ports) {
      if (int port = portOf(trimmed(p))) any.insert(port);
    }
    if (any.empty()) any.insert(22);
  }
  return SshGate{{any.begin(), any.end()}, {four.begin(), four.end()}, {six.begin(), six.end()}};
}

// ---------------------------------------------------------------------------------------------
// The table as the agent makes it, and as nft lists it.
// ---------------------------------------------------------------------------------------------

namespace {

struct SetSpec {
  const char* name;
  const char* type;   // as in the nft script
  const char* json;   // "type" as nft -j prints it, in canonical JSON (no white space)
  const char* flags;  // "interval", "timeout" or ""
};

const SetSpec kSets[] = {
    {"allow4", "ipv4_addr", "\"ipv4_addr\"", "interval"},
    {"allow6", "ipv6_addr", "\"ipv6_addr\"", "interval"},
    {"ban4", "ipv4_addr", "\"ipv4_addr\"", "timeout"},
    {"ban6", "ipv6_addr", "\"ipv6_addr\"", "timeout"},
    {"ssh_ports", "inet_service", "\"inet_service\"", ""},
    {"ssh4", "ipv4_addr . inet_service", "[\"ipv4_addr\",\"inet_service\"]", ""},
    {"ssh6", "ipv6_addr . inet_service", "[\"ipv6_addr\",\"inet_service\"]", ""},
};

struct RuleSpec {
  const char* chain;
  const char* text;  // as in the nft script
  const char* json;  // its "expr" as nft 1.0 lists it
};

const RuleSpec kRules[] = {
    {"input", "tcp dport @ssh_ports jump gate",
     R"([{"match":{"op":"==","left":{"payload":{"protocol":"tcp","field":"dport"}},"right":"@ssh_ports"}},)"
     R"({"jump":{"target":"gate"}}])"},
    {"input", "ip daddr . tcp dport @ssh4 jump gate",
     R"([{"match":{"op":"==","left":{"concat":[{"payload":{"protocol":"ip","field":"daddr"}},)"
     R"({"payload":{"protocol":"tcp","field":"dport"}}]},"right":"@ssh4"}},{"jump":{"target":"gate"}}])"},
    {"input", "ip6 daddr . tcp dport @ssh6 jump gate",
     R"([{"match":{"op":"==","left":{"concat":[{"payload":{"protocol":"ip6","field":"daddr"}},)"
     R"({"payload":{"protocol":"tcp","field":"dport"}}]},"right":"@ssh6"}},{"jump":{"target":"gate"}}])"},
    {"gate", "ct state established,related accept",
     R"([{"match":{"op":"in","left":{"ct":{"key":"state"}},"right":["established","related"]}},{"accept":null}])"},
    {"gate", "iifname \"lo\" accept",
     R"([{"match":{"op":"==","left":{"meta":{"key":"iifname"}},"right":"lo"}},{"accept":null}])"},
    {"gate", "ip saddr @ban4 counter reject with tcp reset",
     R"([{"match":{"op":"==","left":{"meta":{"key":"l4proto"}},"right":6}},)"
     R"({"match":{"op":"==","left":{"payload":{"protocol":"ip","field":"saddr"}},"right":"@ban4"}},)"
     R"({"counter":{"packets":0,"bytes":0}},{"reject":{"type":"tcp reset"}}])"},
    {"gate", "ip6 saddr @ban6 counter reject with tcp reset",
     R"([{"match":{"op":"==","left":{"meta":{"key":"l4proto"}},"right":6}},)"
     R"({"match":{"op":"==","left":{"payload":{"protocol":"ip6","field":"saddr"}},"right":"@ban6"}},)"
     R"({"counter":{"packets":0,"bytes":0}},{"reject":{"type":"tcp reset"}}])"},
    {"gate", "ip saddr @allow4 accept",
     R"([{"match":{"op":"==","left":{"payload":{"protocol":"ip","field":"saddr"}},"right":"@allow4"}},)"
     R"({"accept":null}])"},
    {"gate", "ip6 saddr @allow6 accept",
     R"([{"match":{"op":"==","left":{"payload":{"protocol":"ip6","field":"saddr"}},"right":"@allow6"}},)"
     R"({"accept":null}])"},
    {"gate", "counter reject with tcp reset",
     R"([{"match":{"op":"==","left":{"meta":{"key":"l4proto"}},"right":6}},)"
     R"({"counter":{"packets":0,"bytes":0}},{"reject":{"type":"tcp reset"}}])"},
};

std::string tableRef() { return std::string(kFirewallFamily) + " " + kFirewallTable; }

// Canonical JSON of a value: object members sorted by name (Poco's default), counters zeroed.
void canonical(const Var& v, std::ostream& out);

void canonicalObject(const Object& o, std::ostream& out) {
  std::vector<std::string> names = o.getNames();
  std::sort(names.begin(), names.end());
  out << '{';
  bool first = true;
  for (const auto& n : names) {
    out << (first ? "" : ",") << '"' << n << "\":";
    first = false;
    if (n == "counter" && !o.get(n).isEmpty()) {
      out << R"({"bytes":0,"packets":0})";
    } else {
      canonical(o.get(n), out);
    }
  }
  out << '}';
}

void canonical(const Var& v, std::ostream& out) {
  if (v.isEmpty()) {
    out << "null";
  } else if (v.type() == typeid(Object::Ptr)) {
    canonicalObject(*v.extract<Object::Ptr>(), out);
  } else if (v.type() == typeid(Array::Ptr)) {
    const Array& a = *v.extract<Array::Ptr>();
    out << '[';
    for (size_t i = 0; i < a.size(); ++i) {
      out << (i ? "," : "");
      canonical(a.get(static_cast<unsigned>(i)), out);
    }
    out << ']';
  } else if (v.isString()) {
    out << '"' << v.extract<std::string>() << '"';
  } else if (v.isBoolean()) {
    out << (v.extract<bool>() ? "true" : "false");
  } else {
    out << v.toString();
  }
}

std::string canonicalText(const Var& v) {
  std::ostringstream out;
  canonical(v, out);
  return out.str();
}

// The canonical form of one of the JSON literals above.
std::string canonicalLiteral(const char* json) {
  Poco::JSON::Parser parser;
  return canonicalText(parser.parse(json));
}

std::string str(const Object& o, const std::string& name) {
  if (!o.has(name)) return {};
  const Var v = o.get(name);
  return v.isString() ? v.extract<std::string>() : std::string();
}

Object::Ptr objectOf(const Var& v) {
  return !v.isEmpty() && v.type() == typeid(Object::Ptr) ? v.extract<Object::Ptr>() : nullptr;
}
Array::Ptr arrayOf(const Var& v) {
  return !v.isEmpty() && v.type() == typeid(Array::Ptr) ? v.extract<Array::Ptr>() : nullptr;
}

// An element of an interval set as nft -j prints it: "a", {"prefix": {"addr", "len"}},
// {"range": [a, b]}, or any of them wrapped in {"elem": {"val": ...}}.
std::optional<std::string> elementText(const Var& e) {
  if (e.isString()) return e.extract<std::string>();
  Object::Ptr o = objectOf(e);
  if (!o) return std::nullopt;
  if (o->has("elem")) {
    Object::Ptr inner = objectOf(o->get("elem"));
    if (!inner || !inner->has("val")) return std::nullopt;
    return elementText(inner->get("val"));
  }
  if (o->has("prefix")) {
    Object::Ptr p = objectOf(o->get("prefix"));
    if (!p || !p->has("len") || !p->get("len").isInteger()) return std::nullopt;
    return str(*p, "addr") + "/" + std::to_string(p->get("len").convert<int>());
  }
  if (o->has("range")) {
    Array::Ptr r = arrayOf(o->get("range"));
    if (!r || r->size() != 2 || !r->get(0).isString() || !r->get(1).isString()) return std::nullopt;
    return r->get(0).extract<std::string>() + "-" + r->get(1).extract<std::string>();
  }
  return std::nullopt;
}

}  // namespace

Result<FirewallCurrent> parseFirewallJson(const std::string& json) {
  auto invalid = [](const std::string& why) {
    return Status::error(ErrorCode::kInvalid, "nft -j list table " + tableRef() + ": " + why);
  };
  Var root;
  try {
    Poco::JSON::Parser parser;
    root = parser.parse(json);
  } catch (const std::exception& e) {
    return invalid("not JSON");
  }
  try {
    Object::Ptr top = objectOf(root);
    if (!top || !top->has("nftables")) return invalid("no \"nftables\" list");
    Array::Ptr items = arrayOf(top->get("nftables"));
    if (!items) return invalid("\"nftables\" is not a list");

    FirewallCurrent c;
    std::vector<std::string> drift;
    std::map<std::string, const SetSpec*> wantSets;
    for (const auto& s : kSets) wantSets[s.name] = &s;
    std::set<std::string> seenSets;
    std::map<std::string, std::vector<std::string>> rules;  // chain -> canonical exprs, in order
    std::set<std::string> chains;
    for (size_t i = 0; i < items->size(); ++i) {
      Object::Ptr item = objectOf(items->get(static_cast<unsigned>(i)));
      if (!item) return invalid("an entry is not an object");
      if (item->has("metainfo")) continue;
      if (item->has("table")) {
        Object::Ptr t = objectOf(item->get("table"));
        if (t && str(*t, "name") == kFirewallTable && str(*t, "family") == kFirewallFamily) c.present = true;
        continue;
      }
      if (item->has("set")) {
        Object::Ptr s = objectOf(item->get("set"));
        if (!s) return invalid("a set is not an object");
        const std::string name = str(*s, "name");
        auto spec = wantSets.find(name);
        if (spec == wantSets.end()) {
          drift.push_back("unknown set " + name);
          continue;
        }
        seenSets.insert(name);
        const std::string type = s->has("type") ? canonicalText(s->get("type")) : "";
        std::string flags;
        if (s->has("flags")) {
          Array::Ptr f = arrayOf(s->get("flags"));
          if (f) {
            for (size_t j = 0; j < f->size(); ++j)
              flags += (j ? "," : "") + f->get(static_cast<unsigned>(j)).toString();
          }
        }
        // The literals are written in canonical form already (a bare string cannot be parsed alone).
        if (type != spec->second->json || flags != spec->second->flags) {
          drift.push_back("set " + name + " has type " + type + " flags '" + flags + "'");
          continue;
        }
        Array::Ptr elems = s->has("elem") ? arrayOf(s->get("elem")) : nullptr;
        if (!elems) continue;
        for (size_t j = 0; j < elems->size(); ++j) {
          const Var e = elems->get(static_cast<unsigned>(j));
          if (name == "allow4" || name == "allow6") {
            auto text = elementText(e);
            if (!text || !c.allowed.add(*text) || (familyOf(*text) == 4) != (name == "allow4")) {
              drift.push_back("set " + name + " has an element the agent cannot read");
            }
          } else if (name == "ban4" || name == "ban6") {
            Object::Ptr o = objectOf(e);
            Object::Ptr inner = o && o->has("elem") ? objectOf(o->get("elem")) : nullptr;
            FirewallBan ban;
            if (inner && inner->has("val") && inner->get("val").isString()) {
              ban.address = inner->get("val").extract<std::string>();
              if (inner->has("expires") && inner->get("expires").isInteger()) {
                ban.expiresIn = inner->get("expires").convert<int64_t>();
              }
            } else if (e.isString()) {
              ban.address = e.extract<std::string>();  // without a timeout: until removed
            }
            if (!ban.address.empty()) c.bans.push_back(ban);
          } else if (name == "ssh_ports") {
            if (e.isInteger()) {
              c.gate.anyPorts.push_back(e.convert<int>());
            } else {
              drift.push_back("set ssh_ports has an element that is not a port");
            }
          } else {
            Object::Ptr o = objectOf(e);
            Array::Ptr pair = o && o->has("concat") ? arrayOf(o->get("concat")) : nullptr;
            if (!pair || pair->size() != 2 || !pair->get(0).isString() || !pair->get(1).isInteger()) {
              drift.push_back("set " + name + " has an element that is not address . port");
              continue;
            }
            (name == "ssh4" ? c.gate.points4 : c.gate.points6)
                .push_back(pair->get(0).extract<std::string>() + " " + std::to_string(pair->get(1).convert<int>()));
          }
        }
        continue;
      }
      if (item->has("chain")) {
        Object::Ptr ch = objectOf(item->get("chain"));
        if (!ch) return invalid("a chain is not an object");
        const std::string name = str(*ch, "name");
        chains.insert(name);
        if (name == "input") {
          const bool base = str(*ch, "type") == "filter" && str(*ch, "hook") == "input" && ch->has("prio") &&
                            ch->get("prio").isInteger() && ch->get("prio").convert<int>() == kFirewallPriority &&
                            str(*ch, "policy") == "accept";
          if (!base) drift.push_back("chain input is not hooked as the agent hooks it");
        } else if (name == "gate") {
          if (ch->has("hook")) drift.push_back("chain gate is hooked");
        } else {
          drift.push_back("unknown chain " + name);
        }
        continue;
      }
      if (item->has("rule")) {
        Object::Ptr r = objectOf(item->get("rule"));
        if (!r) return invalid("a rule is not an object");
        rules[str(*r, "chain")].push_back(r->has("expr") ? canonicalText(r->get("expr")) : "");
        continue;
      }
      drift.push_back("an object the agent does not make");
    }
    if (!c.present) return c;
    for (const auto& s : kSets) {
      if (!seenSets.count(s.name)) drift.push_back("set " + std::string(s.name) + " is missing");
    }
    for (const char* name : {"input", "gate"}) {
      if (!chains.count(name)) drift.push_back("chain " + std::string(name) + " is missing");
    }
    std::map<std::string, std::vector<std::string>> want;
    for (const auto& r : kRules) want[r.chain].push_back(canonicalLiteral(r.json));
    for (const auto& [chain, exprs] : want) {
      const auto& have = rules[chain];
      if (have.size() != exprs.size()) {
        drift.push_back("chain " + chain + " holds " + std::to_string(have.size()) + " rules, not the agent's " +
                        std::to_string(exprs.size()));
        continue;
      }
      for (size_t i = 0; i < exprs.size(); ++i) {
        if (have[i] != exprs[i]) {
          drift.push_back("chain " + chain + " rule " + std::to_string(i + 1) + " is not the agent's");
          break;
        }
      }
    }
    for (const auto& [chain, exprs] : rules) {
      if (!want.count(chain) && !exprs.empty()) drift.push_back("rules in unknown chain " + chain);
    }
    std::sort(c.gate.anyPorts.begin(), c.gate.anyPorts.end());
    std::sort(c.gate.points4.begin(), c.gate.points4.end());
    std::sort(c.gate.points6.begin(), c.gate.points6.end());
    c.intact = drift.empty();
    for (const auto& d : drift) c.drift += (c.drift.empty() ? "" : "; ") + d;
    return c;
  } catch (const std::exception& e) {
    return invalid(std::string("unexpected content: ") + e.what());
  }
}

Result<FirewallCurrent> observeFirewall(Host& host, const NetworkSettings& network) {
  auto r = host.run({network.nftBinary, "-j", "-p", "list", "table", kFirewallFamily, kFirewallTable});
  if (!r) return Status::error(ErrorCode::kCommand, "nft -j list table " + tableRef() + ": " + r.status().message());
  if (r->exitCode != 0) {
    // nft says "No such file or directory" for a table that does not exist.
    if (r->err.find("No such file or directory") != std::string::npos) return FirewallCurrent{};
    return Status::error(ErrorCode::kCommand, "nft -j list table " + tableRef() + ": " + trimmed(r->err));
  }
  if (r->out.size() > kMaxNftOutput) return Status::error(ErrorCode::kInvalid, "nft output too large");
  return parseFirewallJson(r->out);
}

// ---------------------------------------------------------------------------------------------
// Scripts and the plan.
// ---------------------------------------------------------------------------------------------

namespace {

std::string elementList(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& i : items) out += (out.empty() ? "" : ", ") + i;
  return out;
}

std::vector<std::string> pointElements(const std::vector<std::string>& points) {
  std::vector<std::string> out;
  for (const auto& p : points) {
    const size_t sp = p.find(' ');
    out.push_back(p.substr(0, sp) + " . " + p.substr(sp + 1));
  }
  return out;
}

std::vector<std::string> portElements(const std::vector<int>& ports) {
  std::vector<std::string> out;
  for (int p : ports) out.push_back(std::to_string(p));
  return out;
}

// The elements of each data set for a state.
std::map<std::string, std::vector<std::string>> dataSets(const AddressRanges& allowed, const SshGate& gate) {
  return {{"allow4", allowed.elements(4)},
          {"allow6", allowed.elements(6)},
          {"ssh_ports", portElements(gate.anyPorts)},
          {"ssh4", pointElements(gate.points4)},
          {"ssh6", pointElements(gate.points6)}};
}

// One transaction that sets the data sets that differ from `from` to `to`.
std::string updateScript(const std::map<std::string, std::vector<std::string>>& from,
                         const std::map<std::string, std::vector<std::string>>& to) {
  std::string out;
  for (const auto& [name, elems] : to) {
    auto it = from.find(name);
    if (it != from.end() && it->second == elems) continue;
    out += "flush set " + tableRef() + " " + name + "\n";
    if (!elems.empty()) out += "add element " + tableRef() + " " + name + " { " + elementList(elems) + " }\n";
  }
  return out;
}

std::string rangesDelta(const AddressRanges& from, const AddressRanges& to) {
  std::vector<std::string> changes;
  for (const auto& e : to.all()) {
    auto f = from.all();
    if (std::find(f.begin(), f.end(), e) == f.end()) changes.push_back("+" + e);
  }
  for (const auto& e : from.all()) {
    auto t = to.all();
    if (std::find(t.begin(), t.end(), e) == t.end()) changes.push_back("-" + e);
  }
  return joinShown(changes);
}

std::string summary(const AddressRanges& allowed, const SshGate& gate) {
  const size_t n = allowed.all().size();
  return std::to_string(n) + (n == 1 ? " range" : " ranges") + " allowed to " + gate.describe();
}

Action makeAction(Verb verb, Stage stage, const std::string& detail, const std::string& before,
                  const std::string& after, std::string payload) {
  Action a = makeProviderAction(kProvider, stage, verb, "table " + tableRef(), detail, before, after);
  a.payload = std::move(payload);
  return a;
}

}  // namespace

std::string renderFirewallTable(const AddressRanges& allowed, const SshGate& gate,
                                const std::vector<FirewallBan>& bans) {
  const auto data = dataSets(allowed, gate);
  std::map<std::string, std::vector<std::string>> banned;
  for (const auto& b : bans) {
    if (b.expiresIn <= 0) continue;
    const std::string set = familyOf(b.address) == 4 ? "ban4" : "ban6";
    banned[set].push_back(b.address + " timeout " + std::to_string(b.expiresIn) + "s");
  }
  std::ostringstream out;
  // Created if missing, then deleted and made again: one transaction, never a moment without it.
  out << "table " << tableRef() << " {}\n"
      << "delete table " << tableRef() << "\n"
      << "table " << tableRef() << " {\n";
  for (const auto& s : kSets) {
    out << "\tset " << s.name << " {\n\t\ttype " << s.type << "\n";
    if (*s.flags) out << "\t\tflags " << s.flags << "\n";
    auto d = data.find(s.name);
    const std::vector<std::string>& elems = d != data.end() ? d->second : banned[s.name];
    if (!elems.empty()) out << "\t\telements = { " << elementList(elems) << " }\n";
    out << "\t}\n";
  }
  out << "\tchain input {\n\t\ttype filter hook input priority filter - 10; policy accept;\n";
  for (const auto& r : kRules) {
    if (std::string(r.chain) == "input") out << "\t\t" << r.text << "\n";
  }
  out << "\t}\n\tchain gate {\n";
  for (const auto& r : kRules) {
    if (std::string(r.chain) == "gate") out << "\t\t" << r.text << "\n";
  }
  out << "\t}\n}\n";
  return out.str();
}

std::vector<Action> planFirewall(const FirewallDesired& desired, const FirewallCurrent& current) {
  std::vector<Action> actions;
  if (!desired.present) {
    if (current.present) {
      // Removing the table opens the network: a grant, once sshd confines the document.
      actions.push_back(makeAction(Verb::kRemove, Stage::kGrant, "[network] firewall = off", "present", "absent",
                                   "delete table " + tableRef() + "\n"));
    }
    return actions;
  }
  const std::string want = summary(desired.allowed, desired.gate);
  if (!current.present || !current.intact) {
    // No table (or not the agent's) lets everything through: the whole table only restricts.
    const bool create = !current.present;
    actions.push_back(makeAction(
        create ? Verb::kCreate : Verb::kRebuild, Stage::kRevoke, create ? want : current.drift + "; rebuilt: " + want,
        create ? "absent" : current.drift, want, renderFirewallTable(desired.allowed, desired.gate, current.bans)));
    return actions;
  }
  const auto have = dataSets(current.allowed, current.gate);
  // Revoke: only what both lists allow, every port either gates.
  const AddressRanges midAllowed = current.allowed.intersect(desired.allowed);
  const SshGate midGate = current.gate.unite(desired.gate);
  const auto mid = dataSets(midAllowed, midGate);
  const auto end = dataSets(desired.allowed, desired.gate);
  const std::string narrow = updateScript(have, mid);
  if (!narrow.empty()) {
    std::string detail = rangesDelta(current.allowed, midAllowed);
    if (midGate != current.gate) detail += (detail.empty() ? "" : "; ") + std::string("gate ") + midGate.describe();
    actions.push_back(makeAction(Verb::kNarrow, Stage::kRevoke, detail, summary(current.allowed, current.gate),
                                 summary(midAllowed, midGate), narrow));
  }
  const std::string widen = updateScript(mid, end);
  if (!widen.empty()) {
    std::string detail = rangesDelta(midAllowed, desired.allowed);
    if (midGate != desired.gate)
      detail += (detail.empty() ? "" : "; ") + std::string("gate ") + desired.gate.describe();
    actions.push_back(makeAction(Verb::kWiden, Stage::kGrant, detail, summary(midAllowed, midGate), want, widen));
  }
  return actions;
}

Result<std::string> banScript(const std::string& address, int64_t seconds) {
  const int family = familyOf(address);
  auto ip = parseIp(address, family);
  if (!ip) return Status::error(ErrorCode::kInvalid, "ban: not an IP address: " + address);
  return "add element " + tableRef() + (family == 4 ? " ban4" : " ban6") + " { " + ipText(*ip, family) + " timeout " +
         std::to_string(std::max<int64_t>(seconds, 1)) + "s }\n";
}

Status runNftScript(Host& host, const NetworkSettings& network, const std::string& script) {
  auto check = host.run({network.nftBinary, "-c", "-f", "-"}, script);
  if (!check) return Status::error(ErrorCode::kCommand, "nft -c -f -: " + check.status().message());
  if (check->exitCode != 0) {
    return Status::error(ErrorCode::kCommand, "nft -c rejected the transaction: " + trimmed(check->err));
  }
  auto r = host.run({network.nftBinary, "-f", "-"}, script);
  if (!r) return Status::error(ErrorCode::kCommand, "nft -f -: " + r.status().message());
  if (r->exitCode != 0) return Status::error(ErrorCode::kCommand, "nft -f -: " + trimmed(r->err));
  return Status::ok();
}

FirewallProvider::FirewallProvider(Logger log) : log_(std::move(log)) {}

Result<std::vector<Action>> FirewallProvider::plan(const Desired& desired, Host& host) {
  if (!desired.network.managed) return std::vector<Action>{};
  auto current = observeFirewall(host, desired.network);
  if (!current) return current.status();
  FirewallDesired want;
  want.present = desired.network.firewall == FirewallMode::kNftables;
  if (want.present) {
    for (const auto& c : desired.document.allowedSources) want.allowed.add(c.text);
    for (const auto& c : desired.host.alwaysAllow) want.allowed.add(c.text);
    auto effective = liveEffectiveConfig(desired.sshd, host);
    if (!effective)
      return Status::error(effective.status().code(), "firewall: where sshd listens: " + effective.status().message());
    auto field = [&](const char* key) {
      auto it = effective->find(key);
      return it == effective->end() ? std::vector<std::string>{} : it->second;
    };
    want.gate = sshGateOf(field("listenaddress"), field("port"));
  }
  if (current->present && !current->intact) log_->warn("table {} drifted: {}", tableRef(), current->drift);
  auto actions = planFirewall(want, *current);
  logPlan(log_, actions);
  return actions;
}

Status FirewallProvider::apply(const Action& action, const Desired& desired, Host& host) {
  try {
    if (action.provider != kProvider || action.payload.empty()) {
      return Status::error(ErrorCode::kInternal, "firewall: cannot apply " + action.describe());
    }
    if (Status s = runNftScript(host, desired.network, action.payload); !s) {
      return Status::error(
          s.code(), "firewall: " + std::string(verbName(action.verb)) + " " + action.object + ": " + s.message());
    }
    log_->info("{} {} ({})", verbName(action.verb), action.object, action.detail);
    return Status::ok();
  } catch (const std::exception& e) {
    return Status::error(ErrorCode::kInternal, "firewall: " + action.describe() + ": " + e.what());
  }
}

}  // namespace pim
