#pragma once
// The sshd provider: renders the one drop-in the agent owns (Match blocks per role), checks the
// candidate with `sshd -t` against the host's main config, installs it atomically and reloads
// sshd. sshd is never reloaded with a drop-in that `sshd -t` has not accepted.
//
// sshd semantics the rendering relies on (OpenSSH 9.2): the first obtained value of a keyword
// wins, across drop-ins and Match blocks; DenyUsers inside Match accumulates; `Subsystem` is not
// allowed in Match (so SFTP is forced with `ForceCommand internal-sftp`); `Match Address` takes a
// pattern list with CIDRs and `!` negation, and a list of only negations never matches, so the
// "outside the allowed sources" list ends with `*`.

#include <string>
#include <vector>

#include "providers/core/ledger.h"
#include "providers/core/log.h"
#include "providers/core/result.h"
#include "providers/core/settings.h"
#include "providers/host/host.h"
#include "providers/provider.h"

namespace pim {

struct SftpUserEntry {
  std::string username;
  bool active = true;
  bool hasPassword = false;
  bool hasKeys = false;
  bool operator==(const SftpUserEntry& o) const {
    return username == o.username && active == o.active && hasPassword == o.hasPassword && hasKeys == o.hasKeys;
  }
};

/// Everything the drop-in depends on. Paths are REAL paths (root-prefixed), since a real sshd
/// reads them.
struct DropinInput {
  std::string loginUser;
  std::string loginKeysFile;                // the login user's authorized_keys
  std::vector<SftpUserEntry> sftpUsers;     // sorted by username, unique
  std::string chrootBase;                   // ChrootDirectory = chrootBase/%u
  std::string sftpKeysDir;                  // AuthorizedKeysFile = sftpKeysDir/%u (root-owned)
  std::vector<std::string> allowedSources;  // canonical CIDRs, deduplicated, sorted
};

/// Renders the whole drop-in. Pure: same input -> same bytes. Expects an input that passed
/// checkDropinInput() (names and paths are written into sshd_config syntax as they are).
std::string renderDropin(const DropinInput& in);

/// Checks that every name, path and CIDR can be written into sshd_config safely: user names of
/// [A-Za-z0-9_.-] (not starting with '-' or '.'), absolute paths without white space, quotes,
/// '%', '#' or control characters, CIDRs of hex digits, '.', ':' and one '/'.
/// Errors: kInvalid naming the offending field.
Status checkDropinInput(const DropinInput& in);

/// One line for logs and plan output, no secrets:
/// "login user akeneo; 3 sftp accounts (1 locked); 4 allowed sources".
std::string summarizeDropin(const DropinInput& in);

/// Builds the input from the desired state and the host: the login user's home from
/// host.findUser() ("/home/<user>" when the user does not exist yet), the SFTP accounts of the
/// document plus its lockedUsernames (as inactive), allowed sources = document + always_allow,
/// and every path mapped with host.realPath(). Errors: the passwd lookup failed.
/// With a ledger, SFTP usernames that exist on the host but were not created by the agent are left
/// out (sftp_accounts refuses them; the drop-in must not confine someone else's account).
Result<DropinInput> buildDropinInput(const Desired& desired, Host& host, const Ledger* ledger = nullptr);

/// Rewrites the text of sshd's main config into a validation copy for `sshd -t`: every
/// `Include` whose glob would match the drop-in (host path `dropinPath`, or its real path) is
/// replaced by explicit Include lines of the files it matches on the host, in sorted order, with
/// the drop-in replaced by `candidatePath` (and the candidate inserted at its sorted position when
/// the drop-in does not exist yet). Other Include arguments are made absolute (relative ones are
/// relative to /etc/ssh) and mapped with host.realPath(). Reads only directory listings through
/// `host`. `*includesDropin` (optional) is set to whether some Include matched the drop-in.
/// Errors: kInvalid for an Include whose directory part has wildcards and could match the
/// drop-in; listing errors from the host.
Result<std::string> expandIncludesForValidation(const std::string& mainConfigText, const std::string& dropinPath,
                                                const std::string& candidatePath, Host& host,
                                                bool* includesDropin = nullptr);

/// The provider (name "sshd"): one "write" action when the rendered drop-in differs from the
/// installed one (bytes, or mode/owner other than 0644 root:root).
class SshdDropinProvider : public Provider {
 public:
  /// `ledger` (may be null: no ownership filter) must outlive the provider.
  explicit SshdDropinProvider(Logger log, const Ledger* ledger = nullptr);

  std::string name() const override { return "sshd"; }
  /// Renders the drop-in and compares it with the installed one (missing = empty). Read-only.
  /// Errors: unsafe names/paths in the input (kInvalid), unreadable drop-in (from the host).
  Result<std::vector<Action>> plan(const Desired& desired, Host& host) override;
  /// Validates action.payload with validate(), then installs it (0644 root:root, drop-in
  /// directory created 0755 if missing) and runs reload(). Nothing is installed when validation
  /// fails. A failed reload is NOT an apply failure: the new drop-in is in place and sshd keeps
  /// running with its old configuration until the next reload; it is logged as a warning and
  /// reported through lastReloadFailure(). Never throws.
  Status apply(const Action& action, const Desired& desired, Host& host) override;

  /// Checks `dropinText` with `<sshd.binary> -t` in a scratch directory under /tmp: against a
  /// validation copy of the host's main config (see expandIncludesForValidation) when it exists,
  /// else against a minimal main config with a throw-away host key. Creates sshd's missing
  /// privilege separation directory (0755) when sshd -t asks for it. Changes nothing below the
  /// root. Errors: kCommand "sshd -t rejected the candidate drop-in: <stderr>"; kIo/kCommand when
  /// the scratch files or the throw-away key could not be made.
  Status validate(const std::string& dropinText, const SshdSettings& sshd, Host& host);
  /// Runs sshd.reloadCommand (split on spaces, no shell; a bare program name is looked up in the
  /// standard system directories). Errors: kCommand with the command's output.
  Status reload(const SshdSettings& sshd, Host& host);
  /// Why the last apply() could not reload sshd; empty when it reloaded (or wrote nothing).
  const std::string& lastReloadFailure() const { return lastReloadFailure_; }

 private:
  Logger log_;
  const Ledger* ledger_ = nullptr;
  std::string lastReloadFailure_;
};

}  // namespace pim
