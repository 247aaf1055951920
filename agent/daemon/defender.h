#pragma once
// The brute-force defender for password logins: sshd's failed authentications, read as sshd
// logs them (the journal through sd-journal, or a log file: agent/daemon/log_source.h), are
// counted per source address; a source with [defender] max_failures failures within window_s
// seconds is put for ban_s seconds into the firewall's timed set (ban4/ban6 of the table inet
// pim_access_agent, providers/firewall.h), which refuses its new connections with a reset. An
// address in host.always_allow is never banned. The bans live in nftables (element timeouts: they
// end by themselves, also when the agent is stopped); the defender remembers them to put them back
// when the firewall provider rebuilt the table.
//
// FailureCounter is the pure part (table-tested); failedAuthSource() reads one message.

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "agent/config/config.h"
#include "providers/core/model.h"
#include "providers/firewall.h"

namespace pim {

/// The source address of one failed password (or keyboard-interactive) authentication sshd
/// logged ("Failed password for [invalid user] NAME from ADDRESS port N ssh2"), canonical; nullopt
/// for any other message. The address is the last " from ... port " of the line, which sshd
/// writes after the user name: a name made to look like "x from 1.2.3.4 port 1" frames nobody.
std::optional<std::string> failedAuthSource(const std::string& message);

/// The pieces of sshd's lines that the defender and the login audit (agent/daemon/login_audit.h)
/// both read: an IPv4 or IPv6 address in canonical form (inet_ntop), nullopt when `text` is not
/// one; and " port N" (1 to 5 digits) at `at`, returning the position after the digits, or npos.
std::optional<std::string> canonicalAddress(const std::string& text);
size_t afterPort(const std::string& message, size_t at);

/// Failures per address within a sliding window. Pure: time comes in with each call.
class FailureCounter {
 public:
  FailureCounter(int64_t maxFailures, int64_t windowS, AddressRanges neverBan);

  /// Counts one failure of `address` at `time` (Unix seconds). true when the address reaches
  /// maxFailures within windowS now: it is to be banned (its count starts again). Never true
  /// for an address in `neverBan`.
  bool failure(const std::string& address, int64_t time);
  /// Addresses with failures inside the window ending at `now` (others are forgotten).
  size_t tracked(int64_t now);

 private:
  int64_t maxFailures_;
  int64_t windowS_;
  AddressRanges neverBan_;
  std::map<std::string, std::deque<int64_t>> failures_;
};

/// One ban the defender made, until when (Unix seconds).
struct DefenderBan {
  std::string address;
  int64_t until = 0;
};

}  // namespace pim
