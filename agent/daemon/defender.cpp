#include "agent/daemon/defender.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>

namespace pim {

std::optional<std::string> failedAuthSource(const std::string& message) {
  // sshd: "Failed password for akeneosftp from 198.51.100.20 port 45678 ssh2", "Failed password
  // for invalid user bob from 2001:db8::5 port 1 ssh2", "Failed keyboard-interactive/pam for ...".
  // In a syslog file the line starts with "Dec  6 03:30:00 host sshd[123]: ".
  size_t at = message.find("Failed password for ");
  if (at == std::string::npos) at = message.find("Failed keyboard-interactive/pam for ");
  if (at == std::string::npos) return std::nullopt;
  const size_t from = message.rfind(" from ");
  if (from == std::string::npos || from < at) return std::nullopt;
  const size_t start = from + 6;
  const size_t end = message.find(' ', start);
  if (end == std::string::npos) return std::nullopt;
  // After " port N": the end of the message or " ssh2".
  const size_t p = afterPort(message, end);
  if (p == std::string::npos) return std::nullopt;
  const std::string rest = message.substr(p);
  if (!rest.empty() && rest != " ssh2" && rest != " ssh2\r") return std::nullopt;
  return canonicalAddress(message.substr(start, end - start));
}

std::optional<std::string> canonicalAddress(const std::string& text) {
  char buf[INET6_ADDRSTRLEN] = {};
  unsigned char bin[16];
  if (::inet_pton(AF_INET, text.c_str(), bin) == 1) return std::string(::inet_ntop(AF_INET, bin, buf, sizeof buf));
  if (::inet_pton(AF_INET6, text.c_str(), bin) == 1) return std::string(::inet_ntop(AF_INET6, bin, buf, sizeof buf));
  return std::nullopt;
}

size_t afterPort(const std::string& message, size_t at) {
  if (message.compare(at, 6, " port ") != 0) return std::string::npos;
  size_t p = at + 6;
  const size_t digits = p;
  while (p < message.size() && std::isdigit(static_cast<unsigned char>(message[p]))) ++p;
  if (p == digits || p - digits > 5) return std::string::npos;
  return p;
}

FailureCounter::FailureCounter(int64_t maxFailures, int64_t windowS, AddressRanges neverBan)
    : maxFailures_(std::max<int64_t>(maxFailures, 1)),
      windowS_(std::max<int64_t>(windowS, 1)),
      neverBan_(std::move(neverBan)) {}

bool FailureCounter::failure(const std::string& address, int64_t time) {
  if (neverBan_.containsAddress(address)) return false;
  auto& times = failures_[address];
  times.push_back(time);
  while (!times.empty() && times.front() <= time - windowS_) times.pop_front();
  if (int64_t(times.size()) < maxFailures_) return false;
  failures_.erase(address);
  return true;
}

size_t FailureCounter::tracked(int64_t now) {
  for (auto it = failures_.begin(); it != failures_.end();) {
    auto& times = it->second;
    while (!times.empty() && times.front() <= now - windowS_) times.pop_front();
    it = times.empty() ? failures_.erase(it) : std::next(it);
  }
  return failures_.size();
}

}  // namespace pim
