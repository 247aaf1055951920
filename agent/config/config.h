#pragma once
// The agent's configuration: the INI file of docs/agent.md with every default, plus the
// command-line overrides. Paths in HostSettings/SshdSettings/StateSettings are host paths (the
// Host adds --root); `store.*` file paths are resolved by resolveFile().

#include <cstdint>
#include <string>

#include "providers/core/result.h"
#include "providers/core/settings.h"

namespace pim {

struct StoreSettings {
  std::string source;            // https://..., http://... or file:///path
  std::string instance;          // when set, must equal the document's "instance"
  std::string tokenFile;         // host path (prefixed by --root); read at each request
  std::string caFile;            // host path (prefixed by --root)
  std::string signingKey;        // host path (prefixed by --root), Ed25519 public key PEM
  std::string proxy;             // "" = from the environment (HTTPS_PROXY...), "none", or a proxy URL
  std::string clientCert;        // etcds://: TLS client certificate (host path, prefixed by --root)
  std::string clientKey;         // etcds://: its private key (host path, prefixed by --root)
  std::string etcdUser;          // etcd(s)://: user for /v3/auth/authenticate
  std::string etcdPasswordFile;  // etcd(s)://: that user's password (host path, prefixed by --root)
  int64_t pollIntervalS = 30;
  int64_t longPollS = 0;
  int64_t maxDocumentBytes = 4194304;
  std::string reportUrl;          // http(s):// URL the reports go to (docs/agent.md, "Reports"); "" = none
  int64_t reportIntervalS = 300;  // an unchanged, successful cycle reports at most this often
};

struct StateSettings {
  std::string db = "/var/lib/pim-access-agent/state.db";
  int64_t keepGenerations = 500;
  std::string metricsFile;  // host path of the Prometheus text file; "" : no metrics written
};

/// [defender]: sshd's failed password logins counted per source address; a source with
/// max_failures within window_s is refused by the firewall for ban_s (agent/daemon/defender.h).
struct DefenderSettings {
  bool enabled = true;
  int64_t maxFailures = 10;
  int64_t windowS = 600;
  int64_t banS = 900;
  /// "" : sshd's messages are read from the journal; otherwise a file sshd (sshd -E) or syslog
  /// writes them to, read from its end (host path, prefixed by --root).
  std::string logFile;
};

/// [audit]: the last login per key and SFTP account and the failed logins per source, from
/// sshd's messages (the defender's source: the journal or defender.log_file), kept in the state
/// database by the daemon (agent/daemon/login_audit.h).
struct AuditSettings {
  bool enabled = true;
};

struct Config {
  StoreSettings store;
  HostSettings host;
  SshdSettings sshd;
  NetworkSettings network;
  DefenderSettings defender;
  AuditSettings audit;
  StateSettings state;
  std::string root;  // --root prefix ("" for the real system)

  /// Prefixes a host path with the root (for the store.* files read directly).
  std::string resolveFile(const std::string& hostPath) const { return hostPath.empty() ? hostPath : root + hostPath; }
};

/// Checks a proxy URL as `store.proxy` and the proxy environment variables take it:
/// SCHEME://[USER[:PASSWORD]@]HOST[:PORT][/] with SCHEME http, https, socks4, socks4a, socks5 or
/// socks5h (case-insensitive), HOST a name, an IPv4 address or a bracketed IPv6 address, PORT
/// 1-65535, nothing after the authority but one "/". Errors: kInvalid with the reason; the
/// message never repeats the URL (it may hold a password).
Status checkProxyUrl(const std::string& url);

/// Parses INI text into a Config with defaults for every absent key. Errors (kInvalid) name the
/// section.key and the reason: unknown section or key, bad number, bad CIDR in always_allow, a
/// permit_root_login other than no or prohibit-password, a network.firewall other than nftables
/// or off, a defender.enabled other than true or false.
Result<Config> parseConfig(const std::string& iniText);

}  // namespace pim
