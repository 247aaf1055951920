#include "agent/daemon/login_audit.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>

#include "agent/daemon/defender.h"
#include "agent/daemon/report.h"
#include "providers/core/base64.h"
#include "providers/core/text_fields.h"

namespace pim {
namespace {

constexpr size_t kMaxUser = 256;

bool printableName(const std::string& s) {
  if (s.empty() || s.size() > kMaxUser) return false;
  return std::all_of(s.begin(), s.end(), [](unsigned char c) { return c > 0x20 && c < 0x7f; });
}

// "Accepted METHOD for USER from ADDRESS port N ssh2" and, for a key, ": TYPE SHA256:FP[ ...]".
std::optional<SshdLoginEvent> accepted(const std::string& m, size_t at) {
  size_t p = at + 9;  // "Accepted "
  const size_t methodEnd = m.find(' ', p);
  if (methodEnd == std::string::npos || m.compare(methodEnd, 5, " for ") != 0) return std::nullopt;
  SshdLoginEvent e;
  e.kind = SshdLoginEvent::Kind::kAccepted;
  e.method = m.substr(p, methodEnd - p);
  if (!printableName(e.method)) return std::nullopt;
  // The part sshd writes after the user: " from ADDRESS port N ssh2", found from the end of the
  // fixed part (the key's text after "ssh2: " holds no " from ").
  const size_t ssh2 = m.rfind(" ssh2");
  if (ssh2 == std::string::npos) return std::nullopt;
  const size_t from = m.rfind(" from ", ssh2);
  if (from == std::string::npos || from < methodEnd + 5) return std::nullopt;
  const size_t addrEnd = m.find(' ', from + 6);
  if (addrEnd == std::string::npos || afterPort(m, addrEnd) != ssh2) return std::nullopt;
  e.user = m.substr(methodEnd + 5, from - (methodEnd + 5));
  if (!printableName(e.user)) return std::nullopt;
  auto address = canonicalAddress(m.substr(from + 6, addrEnd - (from + 6)));
  if (!address) return std::nullopt;
  e.address = *address;
  std::string rest = m.substr(ssh2 + 5);
  if (!rest.empty() && rest.back() == '\r') rest.pop_back();
  if (e.method == "publickey") {
    // ": ED25519 SHA256:abc..." (a certificate adds " ID ... (serial N) CA ..." after it).
    if (rest.compare(0, 2, ": ") != 0) return std::nullopt;
    const size_t fp = rest.find(" SHA256:");
    if (fp == std::string::npos) return std::nullopt;
    size_t end = fp + 8;
    while (end < rest.size() && rest[end] != ' ') ++end;
    e.fingerprint = rest.substr(fp + 1, end - (fp + 1));
    const std::string digest = e.fingerprint.substr(7);
    if (digest.size() != 43 || !std::all_of(digest.begin(), digest.end(),
                                            [](unsigned char c) { return std::isalnum(c) || c == '+' || c == '/'; })) {
      return std::nullopt;
    }
  } else if (!rest.empty()) {
    return std::nullopt;
  }
  return e;
}

// "<lead>authenticating user NAME ADDRESS port N[: reason] [preauth]" or "<lead>invalid user ...".
std::optional<SshdLoginEvent> failed(const std::string& m, size_t after) {
  if (m.compare(after, 20, "authenticating user ") != 0 && m.compare(after, 13, "invalid user ") != 0) {
    return std::nullopt;
  }
  std::string text = m;
  if (!text.empty() && text.back() == '\r') text.pop_back();
  const std::string tail = " [preauth]";
  if (text.size() < tail.size() || text.compare(text.size() - tail.size(), tail.size(), tail) != 0) {
    return std::nullopt;
  }
  // The address is the word before the last " port N" followed by ":" or " [preauth]".
  size_t searchEnd = text.size() - tail.size();
  for (;;) {
    const size_t port = text.rfind(" port ", searchEnd);
    if (port == std::string::npos || port <= after) return std::nullopt;
    const size_t end = afterPort(text, port);
    if (end != std::string::npos && (end == text.size() - tail.size() || text.compare(end, 2, ": ") == 0)) {
      const size_t space = text.rfind(' ', port - 1);
      if (space == std::string::npos || space < after) return std::nullopt;
      auto address = canonicalAddress(text.substr(space + 1, port - space - 1));
      if (!address) return std::nullopt;
      SshdLoginEvent e;
      e.kind = SshdLoginEvent::Kind::kFailed;
      e.address = *address;
      return e;
    }
    if (port == 0) return std::nullopt;
    searchEnd = port - 1;
  }
}

}  // namespace

std::optional<SshdLoginEvent> parseSshdLogin(const std::string& message) {
  // In a syslog file the line starts with "Dec  6 03:30:00 host sshd[123]: "; the journal's
  // MESSAGE and sshd -E lines are the message alone.
  if (size_t at = message.find("Accepted "); at != std::string::npos) return accepted(message, at);
  for (const char* lead : {"Connection closed by ", "Connection reset by ", "Disconnected from ", "Disconnecting "}) {
    if (size_t at = message.find(lead); at != std::string::npos) return failed(message, at + std::string(lead).size());
  }
  return std::nullopt;
}

std::string fingerprintOfBase64(const std::string& keyBase64) {
  std::string blob;
  if (!decodeBase64(keyBase64, blob)) return {};
  return sshFingerprint(blob);
}

LoginView::LoginView(const std::vector<LoginRecord>& logins) {
  for (const auto& r : logins) {
    const LastLogin l{r.time, r.address, r.method};
    auto k = byKey_.emplace(std::make_pair(r.user, r.fingerprint), l);
    if (!k.second && r.time > k.first->second.time) k.first->second = l;
    auto u = byUser_.emplace(r.user, l);
    if (!u.second && r.time > u.first->second.time) u.first->second = l;
  }
}

std::optional<LastLogin> LoginView::lastKeyLogin(const std::string& user, const std::string& keyBase64) const {
  const std::string fp = fingerprintOfBase64(keyBase64);
  if (fp.empty()) return std::nullopt;
  auto it = byKey_.find({user, fp});
  if (it == byKey_.end()) return std::nullopt;
  return it->second;
}

std::optional<LastLogin> LoginView::lastUserLogin(const std::string& user) const {
  auto it = byUser_.find(user);
  if (it == byUser_.end()) return std::nullopt;
  return it->second;
}

Poco::Dynamic::Var lastLoginJson(const std::optional<LastLogin>& login) {
  if (!login) return Poco::Dynamic::Var();
  Poco::JSON::Object::Ptr o = new Poco::JSON::Object(Poco::JSON_PRESERVE_KEY_ORDER);
  o->set("time", isoTime(login->time));
  o->set("address", login->address);
  o->set("method", login->method);
  return o;
}

Poco::Dynamic::Var failedLoginsJson(const StateStore::LoginFailures& failures) {
  Poco::JSON::Object::Ptr o = new Poco::JSON::Object(Poco::JSON_PRESERVE_KEY_ORDER);
  o->set("total", failures.total);
  o->set("sources", failures.sources);
  Poco::JSON::Array::Ptr top = new Poco::JSON::Array;
  for (const auto& f : failures.top) {
    Poco::JSON::Object::Ptr e = new Poco::JSON::Object(Poco::JSON_PRESERVE_KEY_ORDER);
    e->set("address", f.address);
    e->set("count", f.count);
    e->set("last_time", isoTime(f.lastTime));
    top->add(e);
  }
  o->set("top", top);
  return o;
}

}  // namespace pim
