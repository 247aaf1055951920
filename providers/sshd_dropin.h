#pragma once
// The sshd provider: renders the one drop-in the agent owns, checks the candidate with `sshd -t`
// and with `sshd -T -C` for a probe matrix (providers/sshd_probes.h) against the host's main
// config, installs it atomically, reloads sshd and checks that sshd still answers. sshd is never
// reloaded with a drop-in that these checks have not accepted, and a reload after which sshd
// stops answering is undone.
//
// The drop-in (the default name sorts before Debian cloud images' 50-cloud-init.conf):
//   1. PermitRootLogin no (or prohibit-password), global, before any Match block;
//   2. `Match Address !<document sources>,!<always_allow>,*` + `DenyUsers *`: EVERY user,
//      managed or not, is refused from outside the allowed sources (operators come from
//      always_allow);
//   3. with prohibit-password, root is refused from outside always_allow; an active SFTP account
//      with its own allowed_sources is refused from outside them (`Match User u Address
//      !<its sources>,*` + `DenyUsers *`): an address must be in both lists;
//   4. names the document lists but the agent cannot prove it owns, then locked accounts:
//      DenyUsers * and every method off;
//   5. the login user: public key only, keys from <authorizedKeysDir>/%u, agent forwarding;
//   6. active SFTP accounts, grouped by credential kind and access (read-write, read-only:
//      `internal-sftp -R`, upload-only: `internal-sftp -p <requests>`): internal-sftp only,
//      chrooted, keys from <authorizedKeysDir>/%u, no TTY, no forwarding;
//   7. `Match all`.
//
// sshd semantics the rendering relies on (OpenSSH 9.2): the first obtained value of a keyword
// wins among the Match blocks that select a connection, and a Match value overrides a global one,
// so an earlier file's `Match all` block can shadow ours (the probes catch it); each included
// file starts outside any Match block; `Subsystem` is not allowed in Match (so SFTP is forced
// with `ForceCommand internal-sftp`); `Match Address` takes a pattern list with CIDRs and `!`
// negation, and a list of only negations never matches, so the "outside the allowed sources"
// list ends with `*`.

#include <chrono>
#include <string>
#include <vector>

#include "providers/core/ledger.h"
#include "providers/core/log.h"
#include "providers/core/result.h"
#include "providers/core/settings.h"
#include "providers/host/host.h"
#include "providers/provider.h"
#include "providers/sshd_probes.h"

namespace pim {

struct SftpUserEntry {
  std::string username;
  bool active = true;
  bool hasPassword = false;
  bool hasKeys = false;
  SftpAccess access = SftpAccess::kReadWrite;
  /// The account's own allowed_sources (canonical CIDRs, sorted): refused from any other address
  /// (its own Match block). Empty: the document's list alone.
  std::vector<std::string> sources = {};
  bool operator==(const SftpUserEntry& o) const {
    return username == o.username && active == o.active && hasPassword == o.hasPassword && hasKeys == o.hasKeys &&
           access == o.access && sources == o.sources;
  }
};

/// The internal-sftp request list an upload-only account gets (-p: everything else is refused):
/// create and write files (open, write, close, fsync), make directories (mkdir), and what a
/// client needs to start (realpath for its working directory, limits). No read, readdir/opendir
/// (listing), stat/lstat/fstat, setstat/fsetstat (truncating, chmod), remove, rmdir, rename,
/// posix-rename, symlink, hardlink, copy-data, ... (`internal-sftp -Q requests`, OpenSSH 9.2).
inline constexpr const char* kUploadOnlyRequests = "open,close,write,mkdir,realpath,fsync,limits";

/// The ForceCommand of an SFTP account: "internal-sftp -d /transfer -u 0007", plus " -R" for
/// read-only, plus " -p <kUploadOnlyRequests>" for upload-only. Pure.
std::string sftpForceCommand(SftpAccess access);

/// An inactive account, or one without any credential: refused for every method.
inline bool sftpEntryLocked(const SftpUserEntry& u) { return !u.active || (!u.hasPassword && !u.hasKeys); }

/// Everything the drop-in depends on. Paths are REAL paths (root-prefixed), since a real sshd
/// reads them.
struct DropinInput {
  std::string loginUser;
  std::vector<SftpUserEntry> sftpUsers;      // sorted by username, unique
  std::vector<std::string> deniedUsers;      // sorted, unique: listed by the document, not provably ours
  std::string chrootBase;                    // ChrootDirectory = chrootBase/%u
  std::string authorizedKeysDir;             // AuthorizedKeysFile = authorizedKeysDir/%u (root-owned)
  std::vector<std::string> documentSources;  // the document's CIDRs, canonical, deduplicated, sorted
  std::vector<std::string> alwaysAllow;      // host.always_allow, canonical, deduplicated, sorted
  RootLogin rootLogin = RootLogin::kNo;
};

/// documentSources and alwaysAllow together, deduplicated, sorted: where anyone may come from.
std::vector<std::string> allowedSources(const DropinInput& in);

/// Renders the whole drop-in. Pure: same input -> same bytes. Expects an input that passed
/// checkDropinInput() (names and paths are written into sshd_config syntax as they are).
std::string renderDropin(const DropinInput& in);

/// Checks that every name, path and CIDR can be written into sshd_config safely: user names of
/// [A-Za-z0-9_.-] (not starting with '-' or '.'), each name in one role only, absolute paths
/// without white space, quotes, '%', '#' or control characters, CIDRs of hex digits, '.', ':'
/// and one '/'. Errors: kInvalid naming the offending field.
Status checkDropinInput(const DropinInput& in);

/// One line for logs, plan output and the drop-in's header, no secrets: "login user akeneo; 3
/// sftp accounts (1 locked); 1 denied name; 2 sources from the document + 2 always_allow; root
/// login no".
std::string summarizeDropin(const DropinInput& in);

/// Builds the input from the desired state and the host: the SFTP accounts of the document plus
/// its lockedUsernames (as inactive), the document's sources and always_allow, root login from
/// the [sshd] settings, and every path mapped with host.realPath(). With a ledger, names the
/// document lists that exist on the host but were not created by the agent (sftp_accounts refuses
/// them) become deniedUsers: they get a deny-all block, never an SFTP block that would chroot
/// someone else's account, and never nothing. Errors: the passwd lookup failed.
Result<DropinInput> buildDropinInput(const Desired& desired, Host& host, const Ledger* ledger = nullptr);

/// Rewrites the text of sshd's main config into a validation copy for `sshd -t`: every
/// `Include` whose glob would match the drop-in (host path `dropinPath`, or its real path) is
/// replaced by explicit Include lines of the files it matches on the host, in sorted order, with
/// the drop-in replaced by `candidatePath` (and the candidate inserted at its sorted position when
/// the drop-in does not exist yet) and the host paths in `omit` left out (a legacy drop-in removed
/// by the same apply). Other Include arguments are made absolute (relative ones are relative to
/// /etc/ssh) and mapped with host.realPath(). Reads only directory listings through `host`.
/// `*includesDropin` (optional) is set to whether some Include matched the drop-in.
/// Errors: kInvalid for an Include whose directory part has wildcards and could match the
/// drop-in; listing errors from the host.
Result<std::string> expandIncludesForValidation(const std::string& mainConfigText, const std::string& dropinPath,
                                                const std::string& candidatePath, Host& host,
                                                bool* includesDropin = nullptr,
                                                const std::vector<std::string>& omit = {});

/// Every keyword line of the configuration sshd reads when `candidateText` stands in for the
/// drop-in: the main config (`mainConfigText`, shown as sshd.mainConfig), then its Include lines
/// expanded as expandIncludesForValidation() does, recursively (16 levels), files read through
/// `host`. Unreadable files are skipped (sshd -t has read them). For attributing a value.
Result<ConfigWalk> walkConfiguration(const std::string& mainConfigText, const SshdSettings& sshd,
                                     const std::string& candidatePath, const std::string& candidateText, Host& host,
                                     const std::vector<std::string>& omit = {});

/// Where sshd listens, from `sshd -T`: the address to connect to (127.0.0.1 or ::1 for a wildcard
/// listener, else the first listen address) and its port.
struct ListenPoint {
  std::string address = "127.0.0.1";
  int port = 22;
  std::string describe() const;  // "127.0.0.1:22", "[::1]:22"
};
/// Picks the listen point from `sshd -T` output (defaults when it names none). Pure.
ListenPoint listenPointOf(const EffectiveConfig& global);

/// `sshd -T` of the configuration installed now (the main config with its Includes, the live
/// drop-in as it is; a minimal main config in a bare sandbox), with a throw-away host key so that
/// it runs anywhere. Where sshd listens, for the reload check and the firewall
/// (providers/firewall.h). Errors: kCommand when ssh-keygen or sshd -T fail.
Result<EffectiveConfig> liveEffectiveConfig(const SshdSettings& sshd, Host& host);

/// Whether `sshd.dropin` differs from kLegacyDropin and kLegacyDropin is a regular file whose
/// first line is the agent's header: then it is removed by the apply that installs the drop-in.
Result<bool> legacyDropinPresent(const SshdSettings& sshd, Host& host);

/// The provider (name "sshd"): one "write" action when the rendered drop-in differs from the
/// installed one (bytes, or mode/owner other than 0644 root:root), or when a legacy drop-in
/// must go.
class SshdDropinProvider : public Provider {
 public:
  /// `ledger` (may be null: no ownership filter) must outlive the provider.
  explicit SshdDropinProvider(Logger log, const Ledger* ledger = nullptr);

  std::string name() const override { return "sshd"; }
  /// Renders the drop-in and compares it with the installed one (missing = empty). Read-only.
  /// Errors: unsafe names/paths in the input (kInvalid), unreadable drop-in (from the host).
  Result<std::vector<Action>> plan(const Desired& desired, Host& host) override;
  /// Installs action.payload, the API the cycle builds on:
  ///  1. check(): `sshd -t`, then the probe matrix with `sshd -T -C` against the same validation
  ///     configuration (the legacy drop-in left out). A rejection or a mismatch installs nothing
  ///     and returns the error (kCommand; a mismatch names the keyword, the effective and the
  ///     wanted value, and the file that set it): the previous configuration stays.
  ///  2. notes whether sshd answers on its listen point (banner within 2 s), writes the drop-in
  ///     (0644 root:root, directory created 0755 if missing), removes the legacy drop-in, and
  ///     runs reload().
  ///  3. when sshd answered before and does not answer within 2 s after the reload (a failed
  ///     reload command included), puts the previous drop-in (and legacy file) back byte for
  ///     byte, or removes the new one when there was none, reloads again and returns kCommand
  ///     "sshd stopped answering on 127.0.0.1:22 after the reload: previous drop-in restored".
  /// Returns ok when the drop-in is installed and sshd reloaded and answers (or did not answer
  /// before either: a --root sandbox, a stopped sshd); ok with lastReloadFailure() non-empty when
  /// the drop-in is installed but the reload command failed (sshd still answers, with its previous
  /// configuration until a reload: the caller keeps grants waiting and retries with
  /// reloadAndVerify()); an error when nothing was installed, or when the previous drop-in was
  /// restored. Never throws.
  Status apply(const Action& action, const Desired& desired, Host& host) override;

  /// `sshd -t` of `dropinText` in a scratch directory under /tmp: against a validation copy of the
  /// host's main config (see expandIncludesForValidation) when it exists, else against a minimal
  /// main config with a throw-away host key. Creates sshd's missing privilege separation
  /// directory (0755) when sshd -t asks for it. Changes nothing below the root. Errors: kCommand
  /// "sshd -t rejected the candidate drop-in: <stderr>"; kIo/kCommand when the scratch files or
  /// the throw-away key could not be made.
  Status validate(const std::string& dropinText, const SshdSettings& sshd, Host& host);
  /// validate(), then the probe matrix for `in` against the same configuration. Errors: those of
  /// validate(); kCommand "sshd -T: the candidate drop-in would grant more than the document: ..."
  /// with every mismatch and the file that set it.
  Status check(const std::string& dropinText, const DropinInput& in, const SshdSettings& sshd, Host& host);
  /// Runs sshd.reloadCommand (split on spaces, no shell; a bare program name is looked up in the
  /// standard system directories). Errors: kCommand with the command's output.
  Status reload(const SshdSettings& sshd, Host& host);
  /// For a pending reload: reload(), then the same check as apply() that sshd, if it answered
  /// before, answers again within 2 s; nothing is restored. Errors: reload()'s, or kCommand
  /// "sshd stopped answering on ... after the reload".
  Status reloadAndVerify(const SshdSettings& sshd, Host& host);
  /// Why the last apply() could not reload sshd; empty when it reloaded (or wrote nothing).
  const std::string& lastReloadFailure() const { return lastReloadFailure_; }
  /// The probes of the last check() (or apply()) and how long they took, for tests and logs.
  const std::vector<Probe>& lastProbes() const { return lastProbes_; }
  std::chrono::milliseconds lastProbeTime() const { return lastProbeTime_; }

  /// How long sshd has to answer before and after a reload (2 s; tests lower it).
  void setAnswerTimeout(std::chrono::milliseconds t) { answerTimeout_ = t; }

 private:
  struct Checked;
  Status checkInto(const std::string& dropinText, const DropinInput* in, const SshdSettings& sshd, Host& host,
                   const std::vector<std::string>& omit, Checked* out);
  Result<ListenPoint> liveListenPoint(const SshdSettings& sshd, Host& host);
  bool answers(const ListenPoint& at, Host& host, std::chrono::milliseconds timeout);
  bool answersAfterReload(const ListenPoint& at, Host& host);

  Logger log_;
  const Ledger* ledger_ = nullptr;
  std::string lastReloadFailure_;
  std::vector<Probe> lastProbes_;
  std::chrono::milliseconds lastProbeTime_{0};
  std::chrono::milliseconds answerTimeout_{2000};
};

}  // namespace pim
