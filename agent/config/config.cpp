#include "agent/config/config.h"
#include "providers/core/text_fields.h"

#include <strings.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <functional>
#include <map>
#include <sstream>

#include "agent/document/validators.h"

namespace pim {
namespace {

// A comment starts at ';' or '#' at the start of the line or after white space, so that
// "source = https://x/a;b" keeps its ';' while "poll_interval_s = 30 ; seconds" drops the note.
std::string stripComment(const std::string& line) {
  for (size_t i = 0; i < line.size(); ++i) {
    if ((line[i] == ';' || line[i] == '#') && (i == 0 || line[i - 1] == ' ' || line[i - 1] == '\t')) {
      return line.substr(0, i);
    }
  }
  return line;
}

Status invalid(const std::string& key, const std::string& why) {
  return Status::error(ErrorCode::kInvalid, "config " + key + ": " + why);
}

Status setInt(int64_t& out, const std::string& key, const std::string& v, int64_t min, int64_t max) {
  if (v.empty()) return invalid(key, "empty value, expected an integer");
  errno = 0;
  char* end = nullptr;
  long long n = std::strtoll(v.c_str(), &end, 10);
  if (errno != 0 || end == v.c_str() || *end != '\0') return invalid(key, "not an integer: " + v);
  if (n < min || n > max) {
    return invalid(key, "out of range [" + std::to_string(min) + ", " + std::to_string(max) + "]: " + v);
  }
  out = n;
  return Status::ok();
}

Status setPath(std::string& out, const std::string& key, const std::string& v, bool allowEmpty) {
  if (v.empty()) {
    if (!allowEmpty) return invalid(key, "must not be empty");
    out.clear();
    return Status::ok();
  }
  if (v[0] != '/') return invalid(key, "must be an absolute path: " + v);
  for (unsigned char c : v) {
    if (c < 0x20 || c == 0x7f) return invalid(key, "control character in path");
  }
  out = v;
  return Status::ok();
}

Status setBool(bool& out, const std::string& key, const std::string& v) {
  if (v == "true") {
    out = true;
  } else if (v == "false") {
    out = false;
  } else {
    return invalid(key, "must be true or false, not '" + v + "'");
  }
  return Status::ok();
}

Status setName(std::string& out, const std::string& key, const std::string& v) {
  Status s = checkUsername(v);
  if (!s) return invalid(key, s.message());
  out = v;
  return Status::ok();
}

Status setCidrs(std::vector<Cidr>& out, const std::string& key, const std::string& v) {
  std::vector<Cidr> result;
  std::stringstream ss(v);
  std::string item;
  while (std::getline(ss, item, ',')) {
    item = trimmed(item);
    if (item.empty()) continue;
    auto c = parseCidr(item);
    if (!c) return invalid(key, c.status().message());
    result.push_back(*c);
  }
  out = std::move(result);
  return Status::ok();
}

Status setProxy(std::string& out, const std::string& key, const std::string& v) {
  if (!v.empty() && v != "none") {
    Status s = checkProxyUrl(v);
    if (!s) return invalid(key, s.message());
  }
  out = v;
  return Status::ok();
}

// The form only (http:// or https://, no white space or control character); the store client
// checks the rest when it is made. Never echoed: a URL may carry credentials.
Status setReportUrl(std::string& out, const std::string& key, const std::string& v) {
  if (!v.empty()) {
    const bool scheme = strncasecmp(v.c_str(), "https://", 8) == 0 || strncasecmp(v.c_str(), "http://", 7) == 0;
    if (!scheme) return invalid(key, "expected an http:// or https:// URL, or nothing (no reports)");
    for (unsigned char c : v) {
      if (c <= 0x20 || c == 0x7f) return invalid(key, "white space or control character in URL");
    }
  }
  out = v;
  return Status::ok();
}

using Setter = std::function<Status(Config&, const std::string& key, const std::string& value)>;

const std::map<std::string, Setter>& setters() {
  static const std::map<std::string, Setter> table = {
      {"store.source",
       [](Config& c, const std::string&, const std::string& v) {
         c.store.source = v;
         return Status::ok();
       }},
      {"store.instance",
       [](Config& c, const std::string&, const std::string& v) {
         c.store.instance = v;
         return Status::ok();
       }},
      {"store.token_file",
       [](Config& c, const std::string& k, const std::string& v) { return setPath(c.store.tokenFile, k, v, true); }},
      {"store.ca_file",
       [](Config& c, const std::string& k, const std::string& v) { return setPath(c.store.caFile, k, v, true); }},
      {"store.signing_key",
       [](Config& c, const std::string& k, const std::string& v) { return setPath(c.store.signingKey, k, v, true); }},
      {"store.proxy",
       [](Config& c, const std::string& k, const std::string& v) { return setProxy(c.store.proxy, k, v); }},
      {"store.client_cert",
       [](Config& c, const std::string& k, const std::string& v) { return setPath(c.store.clientCert, k, v, true); }},
      {"store.client_key",
       [](Config& c, const std::string& k, const std::string& v) { return setPath(c.store.clientKey, k, v, true); }},
      {"store.etcd_user",
       [](Config& c, const std::string& k, const std::string& v) {
         if (v.size() > 128 ||
             std::any_of(v.begin(), v.end(), [](unsigned char ch) { return ch <= 0x20 || ch == 0x7f; })) {
           return invalid(k, "at most 128 characters, no white space or control character");
         }
         c.store.etcdUser = v;
         return Status::ok();
       }},
      {"store.etcd_password_file", [](Config& c, const std::string& k,
                                      const std::string& v) { return setPath(c.store.etcdPasswordFile, k, v, true); }},
      {"store.poll_interval_s", [](Config& c, const std::string& k,
                                   const std::string& v) { return setInt(c.store.pollIntervalS, k, v, 1, 86400); }},
      {"store.long_poll_s",
       [](Config& c, const std::string& k, const std::string& v) { return setInt(c.store.longPollS, k, v, 0, 3600); }},
      {"store.max_document_bytes",
       [](Config& c, const std::string& k, const std::string& v) {
         return setInt(c.store.maxDocumentBytes, k, v, 1024, int64_t(1) << 30);
       }},
      {"store.report_url",
       [](Config& c, const std::string& k, const std::string& v) { return setReportUrl(c.store.reportUrl, k, v); }},
      {"store.report_interval_s", [](Config& c, const std::string& k,
                                     const std::string& v) { return setInt(c.store.reportIntervalS, k, v, 1, 86400); }},
      {"host.login_user",
       [](Config& c, const std::string& k, const std::string& v) { return setName(c.host.loginUser, k, v); }},
      {"host.transfer_root",
       [](Config& c, const std::string& k, const std::string& v) { return setPath(c.host.transferRoot, k, v, false); }},
      {"host.transfer_group",
       [](Config& c, const std::string& k, const std::string& v) { return setName(c.host.transferGroup, k, v); }},
      {"host.chroot_base",
       [](Config& c, const std::string& k, const std::string& v) { return setPath(c.host.chrootBase, k, v, false); }},
      {"host.always_allow",
       [](Config& c, const std::string& k, const std::string& v) { return setCidrs(c.host.alwaysAllow, k, v); }},
      {"sshd.main_config",
       [](Config& c, const std::string& k, const std::string& v) { return setPath(c.sshd.mainConfig, k, v, false); }},
      {"sshd.dropin",
       [](Config& c, const std::string& k, const std::string& v) { return setPath(c.sshd.dropin, k, v, false); }},
      {"sshd.binary",
       [](Config& c, const std::string& k, const std::string& v) { return setPath(c.sshd.binary, k, v, false); }},
      {"sshd.reload_command",
       [](Config& c, const std::string&, const std::string& v) {
         c.sshd.reloadCommand = v;
         return Status::ok();
       }},
      {"sshd.permit_root_login",
       [](Config& c, const std::string& k, const std::string& v) {
         if (v == "no") {
           c.sshd.permitRootLogin = RootLogin::kNo;
         } else if (v == "prohibit-password") {
           c.sshd.permitRootLogin = RootLogin::kProhibitPassword;
         } else {
           return invalid(k, "must be no or prohibit-password, not '" + v + "'");
         }
         return Status::ok();
       }},
      {"network.firewall",
       [](Config& c, const std::string& k, const std::string& v) {
         if (v == "nftables") {
           c.network.firewall = FirewallMode::kNftables;
         } else if (v == "off") {
           c.network.firewall = FirewallMode::kOff;
         } else {
           return invalid(k, "must be nftables or off, not '" + v + "'");
         }
         return Status::ok();
       }},
      {"network.nft_binary",
       [](Config& c, const std::string& k, const std::string& v) { return setPath(c.network.nftBinary, k, v, false); }},
      {"defender.enabled",
       [](Config& c, const std::string& k, const std::string& v) { return setBool(c.defender.enabled, k, v); }},
      {"defender.max_failures", [](Config& c, const std::string& k,
                                   const std::string& v) { return setInt(c.defender.maxFailures, k, v, 1, 1000000); }},
      {"defender.window_s", [](Config& c, const std::string& k,
                               const std::string& v) { return setInt(c.defender.windowS, k, v, 1, 86400); }},
      {"defender.ban_s", [](Config& c, const std::string& k,
                            const std::string& v) { return setInt(c.defender.banS, k, v, 1, 30 * 86400); }},
      {"audit.enabled",
       [](Config& c, const std::string& k, const std::string& v) { return setBool(c.audit.enabled, k, v); }},
      {"defender.log_file",
       [](Config& c, const std::string& k, const std::string& v) { return setPath(c.defender.logFile, k, v, true); }},
      {"state.db",
       [](Config& c, const std::string& k, const std::string& v) { return setPath(c.state.db, k, v, false); }},
      {"state.metrics_file",
       [](Config& c, const std::string& k, const std::string& v) { return setPath(c.state.metricsFile, k, v, true); }},
  };
  return table;
}

}  // namespace

Status checkProxyUrl(const std::string& url) {
  auto bad = [](const std::string& why) { return Status::error(ErrorCode::kInvalid, why); };
  for (unsigned char c : url) {
    if (c <= 0x20 || c == 0x7f) return bad("white space or control character in the proxy URL");
  }
  const auto sep = url.find("://");
  if (sep == std::string::npos) return bad("expected SCHEME://HOST[:PORT], e.g. http://proxy.example:3128");
  std::string scheme = url.substr(0, sep);
  std::transform(scheme.begin(), scheme.end(), scheme.begin(), [](unsigned char c) { return std::tolower(c); });
  static const char* const kSchemes[] = {"http", "https", "socks4", "socks4a", "socks5", "socks5h"};
  if (std::find(std::begin(kSchemes), std::end(kSchemes), scheme) == std::end(kSchemes)) {
    return bad("unsupported proxy scheme '" + scheme.substr(0, 16) +
               "' (expected http, https, socks4, socks4a, socks5 or socks5h)");
  }
  std::string authority = url.substr(sep + 3);
  if (!authority.empty() && authority.back() == '/') authority.pop_back();
  if (authority.find_first_of("/?#") != std::string::npos) return bad("a proxy URL has no path, query or fragment");
  // User information is passed on to the proxy; only its shape is checked here.
  const auto at = authority.rfind('@');
  if (at != std::string::npos) authority = authority.substr(at + 1);
  std::string host = authority;
  std::string port;
  if (!authority.empty() && authority.front() == '[') {
    const auto close = authority.find(']');
    if (close == std::string::npos) return bad("unterminated [IPv6 address] in the proxy URL");
    host = authority.substr(1, close - 1);
    const std::string rest = authority.substr(close + 1);
    if (!rest.empty() && rest.front() != ':') return bad("unexpected characters after the [IPv6 address]");
    if (!rest.empty()) port = rest.substr(1);
    if (host.empty() || host.find_first_not_of("0123456789abcdefABCDEF:.") != std::string::npos) {
      return bad("malformed IPv6 address in the proxy URL");
    }
  } else {
    const auto colon = authority.rfind(':');
    if (colon != std::string::npos) {
      host = authority.substr(0, colon);
      port = authority.substr(colon + 1);
      if (port.empty()) return bad("empty port in the proxy URL");
    }
    const bool hostOk = !host.empty() && std::all_of(host.begin(), host.end(), [](unsigned char c) {
      return std::isalnum(c) || c == '.' || c == '-' || c == '_';
    });
    if (!hostOk) return bad("the proxy URL has no valid host");
  }
  if (!port.empty()) {
    if (port.size() > 5 || !std::all_of(port.begin(), port.end(), [](unsigned char c) { return std::isdigit(c); }) ||
        std::stoi(port) < 1 || std::stoi(port) > 65535) {
      return bad("the proxy port must be a number from 1 to 65535");
    }
  }
  return Status::ok();
}

Result<Config> parseConfig(const std::string& iniText) {
  Config config;
  std::string section;
  std::stringstream in(iniText);
  std::string raw;
  int lineNo = 0;
  while (std::getline(in, raw)) {
    ++lineNo;
    std::string line = trimmed(stripComment(raw));
    if (line.empty()) continue;
    const std::string where = "line " + std::to_string(lineNo);
    if (line.front() == '[') {
      if (line.back() != ']')
        return Status::error(ErrorCode::kInvalid, "config " + where + ": unterminated section header");
      section = trimmed(line.substr(1, line.size() - 2));
      if (section != "store" && section != "host" && section != "sshd" && section != "network" &&
          section != "defender" && section != "audit" && section != "state") {
        return Status::error(ErrorCode::kInvalid, "config " + where + ": unknown section [" + section + "]");
      }
      continue;
    }
    auto eq = line.find('=');
    if (eq == std::string::npos)
      return Status::error(ErrorCode::kInvalid, "config " + where + ": expected key = value");
    std::string key = trimmed(line.substr(0, eq));
    std::string value = trimmed(line.substr(eq + 1));
    if (section.empty())
      return Status::error(ErrorCode::kInvalid, "config " + where + ": key '" + key + "' outside a section");
    std::string full = section + "." + key;
    auto it = setters().find(full);
    if (it == setters().end()) return Status::error(ErrorCode::kInvalid, "config " + where + ": unknown key " + full);
    Status s = it->second(config, full, value);
    if (!s) return s;
  }
  return config;
}

}  // namespace pim
