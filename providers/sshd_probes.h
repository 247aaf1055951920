#pragma once
// The effective sshd configuration, asserted: what `sshd -T -C user=U,addr=A,...` must print for
// each kind of user and address once the agent's drop-in is in place, and, when it does not, which
// file of the configuration set the offending value. Pure functions (no I/O): the sshd provider
// runs sshd and reads the files, this decides.
//
// The probe matrix (probeMatrix()):
//   users      the login user; the SFTP accounts (one per Match block the drop-in renders, or
//              every account when another file of the configuration has a Match block with User
//              or Group criteria, which could tell accounts of one block apart); the locked
//              accounts and the denied names (the same rule); root; one unmanaged name;
//   addresses  an allowed one (inside the first range of the document, or of always_allow when
//              the document allows none), refused ones (outside every allowed range: IPv4, and
//              IPv6 when a v6 range is allowed), and for root an always_allow one.
// What must hold (checkProbe()):
//   from a refused address     every user is refused (denyusers * or the user's name);
//   login user, allowed        authenticationmethods publickey, passwordauthentication no,
//                              kbdinteractiveauthentication no, authorizedkeysfile <dir>/%u,
//                              not refused;
//   SFTP account, allowed      chrootdirectory <base>/%u, forcecommand exactly the account's
//                              (sftpForceCommand(): -R read-only, -p <requests> upload-only), the
//                              agent's authorizedkeysfile, allowtcpforwarding no,
//                              disableforwarding yes, x11forwarding no, permittty no,
//                              permittunnel no;
//   locked, denied names       refused from everywhere;
//   root                       permitrootlogin no; with prohibit-password: refused except from
//                              always_allow, where permitrootlogin is without-password (or
//                              stricter).

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "providers/core/settings.h"

namespace pim {

struct DropinInput;

/// `sshd -T` output: keyword -> values, one per line it printed (denyusers, listenaddress, ...
/// may appear several times).
using EffectiveConfig = std::map<std::string, std::vector<std::string>>;

/// Parses `sshd -T` output ("keyword value..." lines). Pure.
EffectiveConfig parseEffective(const std::string& text);

/// Whether `address` (an IPv4/IPv6 literal) lies in one of `cidrs` (canonical "a.b.c.d/n",
/// "x::/n"). Unparsable entries never match.
bool addressInRanges(const std::string& address, const std::vector<std::string>& cidrs);

/// An address inside `cidr` (the network address + 1 when the range has room for it); nullopt
/// when `cidr` does not parse.
std::optional<std::string> addressInside(const std::string& cidr);

/// Where the probes connect from.
struct ProbeAddresses {
  std::string allowed;               // "" when nothing is allowed at all
  std::string alwaysAllowed;         // inside the first always_allow range; "" when there is none
  std::vector<std::string> refused;  // outside every allowed range; empty when everything is allowed
};
ProbeAddresses probeAddresses(const DropinInput& in);

enum class ProbeRole { kLoginUser, kSftpAccount, kLocked, kDenied, kRoot, kUnmanaged };

struct Probe {
  std::string user;
  std::string address;
  ProbeRole role = ProbeRole::kUnmanaged;
};

/// The name used for "a user the agent does not manage".
inline constexpr const char* kUnmanagedProbeUser = "pim-probe-unmanaged";

/// The probes for `in`. `perAccount`: every SFTP account, locked account and denied name is
/// probed (another file has Match User/Group blocks); otherwise one of each Match block.
std::vector<Probe> probeMatrix(const DropinInput& in, const ProbeAddresses& addresses, bool perAccount);

/// One value that does not hold.
struct Mismatch {
  std::string keyword;    // as sshd -T prints it ("passwordauthentication")
  std::string effective;  // what it printed ("(none)" when absent)
  std::string want;       // what must hold, for people ("no", "*", "not *")
  std::string user;
  std::string address;
};

/// What does not hold for `probe` in `effective` (empty: everything holds). Pure.
std::vector<Mismatch> checkProbe(const Probe& probe, const EffectiveConfig& effective, const DropinInput& in);

/// One keyword line of the configuration sshd reads, in reading order.
struct ConfigLine {
  std::string file;     // the path to show (the live drop-in's, not the candidate's scratch copy)
  int line = 0;         // 1-based
  std::string keyword;  // lower case, aliases resolved ("challengeresponseauthentication" ->
                        // "kbdinteractiveauthentication")
  std::string value;    // the arguments as written, white space collapsed
  std::string match;    // the Match line in force ("" when global), as written
  bool ours = false;    // a line of the candidate drop-in
};

/// Every keyword line of a configuration, and whether any file other than the drop-in has a Match
/// block with User or Group criteria.
struct ConfigWalk {
  std::vector<ConfigLine> lines;
  bool otherUserOrGroupMatch = false;
};

/// The lower-case canonical keyword for a config-file keyword (aliases resolved). Pure.
std::string canonicalKeyword(const std::string& keyword);

/// Whether the criteria of `matchLine` ("Match User a,b Address !1.2.3.0/24,*") select a
/// connection of `user` from `address` to laddr 127.0.0.1:`port`: true, false, or nullopt when it
/// depends on something a probe does not know (Group, RDomain, an unknown criterion). "" (global)
/// is true. Pure.
std::optional<bool> matchSelects(const std::string& matchLine, const std::string& user, const std::string& address,
                                 int port);

/// Which line set `mismatch.effective` for `mismatch.keyword`, for people:
/// "set by /etc/ssh/sshd_config.d/05-cloud.conf (Match all, line 2)". sshd keeps the first value
/// of the Match blocks that select the connection, else the first global one: the lines are
/// searched in that order, for the effective value. "not set by any file: sshd's default" when no
/// line has it. Pure.
std::string attribute(const ConfigWalk& walk, const Mismatch& mismatch, int port);

/// "passwordauthentication yes for akeneo from 203.0.113.1 (want no)".
std::string describeMismatch(const Mismatch& mismatch);

}  // namespace pim
