#pragma once
// The login audit (docs/agent.md, "Login audit"): sshd's own messages about logins, read from the
// same source as the defender (agent/daemon/log_source.h: the journal, root's sshd messages only,
// or [defender] log_file), become the last successful login per user and key fingerprint and the
// failed logins per source address, kept in the state database (state/state_store.h) and shown
// by `status`, the metrics and the report. The key ids are found at display time through the
// fingerprints of the keys of the document in force, so a key keeps its history whatever its id.
//
// parseSshdLogin() is the pure part: one message in, one event out (table- and fuzz-tested).

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <Poco/Dynamic/Var.h>

#include "state/state_store.h"

namespace pim {

/// One login sshd reported.
struct SshdLoginEvent {
  enum class Kind {
    kAccepted,  // "Accepted METHOD for USER from ADDRESS port N ssh2[: TYPE SHA256:...]"
    kFailed,    // a connection that ended during authentication (one per connection)
  };
  Kind kind = Kind::kAccepted;
  std::string user;         // kAccepted: the account that logged in
  std::string method;       // kAccepted: publickey, password, keyboard-interactive/pam, ...
  std::string fingerprint;  // kAccepted publickey: "SHA256:..." ("" for other methods)
  std::string address;      // the client's address, canonical (inet_ntop)
};

/// The login event in one sshd message; nullopt for any other message. A failed login is a
/// connection that ended during authentication: "Connection closed by", "Connection reset by",
/// "Disconnected from" or "Disconnecting" an "authenticating user" or "invalid user", "[preauth]"
/// (sshd writes one of them per connection, whatever the method and the number of attempts).
/// The address is the one sshd wrote last, after the user name: a name made to look like an
/// address frames nobody.
std::optional<SshdLoginEvent> parseSshdLogin(const std::string& message);

/// The last login of one user and key, and the failures of one source, as `status`, the metrics
/// and the report show them for the document in force.
struct LastLogin {
  int64_t time = 0;
  std::string address;
  std::string method;
};

/// What the document in force's keys and accounts last did, from the state's login records.
class LoginView {
 public:
  /// Indexes `logins` once: each look-up is then a map search (status and the metrics ask for
  /// every key of a document that may hold 10,000).
  explicit LoginView(const std::vector<LoginRecord>& logins);
  /// The last login of `user` with the key whose blob (base64, as in the document) is `keyBase64`.
  std::optional<LastLogin> lastKeyLogin(const std::string& user, const std::string& keyBase64) const;
  /// The last login of `user`, any method.
  std::optional<LastLogin> lastUserLogin(const std::string& user) const;

 private:
  std::map<std::pair<std::string, std::string>, LastLogin> byKey_;  // (user, fingerprint): the newest
  std::map<std::string, LastLogin> byUser_;                         // user: the newest, any method
};

/// {"time": "2026-12-06T08:00:00Z", "address": "198.51.100.20", "method": "publickey"}, or null
/// (never logged in since the audit began), as `status --json` and the report write it.
Poco::Dynamic::Var lastLoginJson(const std::optional<LastLogin>& login);
/// {"total": N, "sources": M, "top": [{"address", "count", "last_time"}, ...]}.
Poco::Dynamic::Var failedLoginsJson(const StateStore::LoginFailures& failures);

/// The key's "SHA256:..." fingerprint from its base64 blob ("" when the base64 is not valid).
std::string fingerprintOfBase64(const std::string& keyBase64);

}  // namespace pim
