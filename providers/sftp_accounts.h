#pragma once
// The sftp_accounts provider: one local system account per SFTP entry of the document, and one
// root-owned authorized_keys file per account.
//
// An account is created with useradd (--prefix under --root, through AccountsTool) as:
//   --system            UIDs come from the system range, away from human users' UIDs (1000+,
//                       often synced from a directory), and system accounts get no password
//                       aging: a hash managed by the store must not expire on the host's
//                       PASS_MAX_DAYS, since the user has no way to change it;
//   --no-create-home, home "/transfer"
//                       the home is only read by sshd after the chroot, where it is the mount
//                       point of the account's folder (sshd chdirs there; ForceCommand
//                       internal-sftp -d /transfer says the same). It names nothing on the host,
//                       so no tool that works on homes (userdel -r, pam_mkhomedir) can reach the
//                       chroot or the transfer tree through it;
//   --shell /usr/sbin/nologin, --gid transfer_group --no-user-group.
//
// Passwords: the store's hash is written to shadow with chpasswd -e (the hash on standard input
// only) and compared with the shadow field without ever being logged; a key-only entry
// (password_hash null) keeps a locked password ("!"). An inactive entry's account exists but is
// locked for every method: usermod -L -e 1 (locked password, and expired, so that PAM's account
// stage refuses key logins too; the sshd drop-in also denies the user). Reactivated: expiry
// cleared and the hash set again. Usernames in AccessDocument::lockedUsernames (entries that
// became invalid) are locked the same way and never removed for it.
//
// Ownership: only accounts recorded in the Ledger ("user") are ever modified or removed. The
// record is written before useradd runs (intent first), so a crash never leaves an account the
// agent does not know. An entry whose username exists on the host and is not in the Ledger is
// adopted ("adopt") when it carries the agent's signature (home /transfer, shell nologin, primary
// group transfer_group: nothing else makes such accounts), which survives the loss of the state
// database; otherwise it is refused: never taken over, never modified; it is listed in skipped()
// ("user exists and was not created by pim-access-agent"), the sshd drop-in denies it, and the
// rest of the document still applies.
//
// Stages (providers/provider.h): removals, locks, a changed password's old value and keys that
// go away are revocations; creating the (locked) account is preparation; a password, keys that
// are added and an unlock are grants, applied only once the sshd configuration naming the account
// is live. A keys file that loses some keys and gains others is written twice. Owned accounts absent from the
// document (and not locked) are removed with userdel, never -r: their files under the transfer
// root stay. The Ledger's "user" kind is shared with login_user, so only owned users that are
// SFTP accounts (home /transfer) and not the login user are ever removed by this provider. A
// removal refused because the user still runs processes leaves the account locked and is retried
// at the next cycle.
//
// Keys: <sftpKeysDir>/<username> (HostSettings::authorizedKeysDir, shared with the login user's
// file, which ssh_keys writes), root:root 0644 in a root:root 0755 directory (the user
// cannot change it, sshd can read it), one "restrict TYPE BASE64 pim:<id>" line per distinct key
// of an active entry; no file for an entry without keys, an inactive or locked entry, or a
// removed account.

#include <sys/types.h>

#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "providers/core/ledger.h"
#include "providers/core/log.h"
#include "providers/core/model.h"
#include "providers/core/result.h"
#include "providers/host/account_files.h"  // parsePasswd
#include "providers/host/accounts_tool.h"
#include "providers/host/host.h"
#include "providers/provider.h"

namespace pim {

inline constexpr const char* kSftpShell = "/usr/sbin/nologin";
inline constexpr const char* kSftpHome = "/transfer";
inline constexpr mode_t kSftpKeysDirMode = 0755;
inline constexpr mode_t kSftpKeysFileMode = 0644;

/// True when `user` is an account the agent made as an SFTP account: home "/transfer" (which
/// nothing else uses), shell nologin and the transfer group (gid `transferGid`) as primary group.
/// The agent recognises its own accounts by it when the state database lacks them. Pure.
bool carriesSftpSignature(const UserInfo& user, std::optional<gid_t> transferGid);

/// <keysDir>/<username>.
std::string sftpKeysPath(const std::string& keysDir, const std::string& username);

/// The keys file of an account: a comment line, then "restrict TYPE BASE64 pim:<id>\n" per
/// distinct key in document order. Empty when the account is inactive or has no keys (then no
/// file is wanted). Pure.
std::string renderSftpKeys(const SftpAccount& account);

struct SftpAccountsDesired {
  std::string loginUser;
  std::string transferGroup;
  std::string sftpKeysDir;  // host path: HostSettings::authorizedKeysDir
  std::vector<SftpAccount> accounts;
  std::vector<std::string> lockedUsernames;
};

/// An existing keys file.
struct SftpKeysFileState {
  FileInfo info;
  std::string content;
};

/// What observeSftpAccounts() found, for the names that matter (the document's usernames, the
/// locked ones and the owned ones).
struct SftpAccountsCurrent {
  std::optional<gid_t> groupGid;                       // nullopt: the transfer group does not exist
  std::map<std::string, UserInfo> users;               // passwd entries
  std::map<std::string, ShadowEntry> shadow;           // shadow entries (secrets: never log)
  std::set<std::string> ownedUsers;                    // Ledger "user"
  FileInfo keysDir;                                    // lstat of the keys directory
  std::map<std::string, SftpKeysFileState> keysFiles;  // by username, files that exist
};

/// Desired state from the document and the host settings.
SftpAccountsDesired sftpAccountsDesired(const Desired& desired);

/// Reads passwd, shadow and group once, the Ledger's users and the keys files. Read-only.
/// Errors: kUnsafe when the keys directory or a keys file is a symbolic link or not what it
/// should be; read errors (kIo).
Result<SftpAccountsCurrent> observeSftpAccounts(const SftpAccountsDesired& desired, const Ledger& ledger, Host& host);

/// Pure: the actions that bring `current` to `desired`, in the order they must run. Verbs (object
/// is the username unless said): "create", "adopt" (an unrecorded account with the agent's
/// signature), "set-shell", "set-group", "set-password" (payload: the hash), "lock-password"
/// (key-only, or a changed password's old value), "lock" (inactive or invalid entry), "unlock"
/// (reactivated; payload: the hash, empty for key-only), "remove" (userdel), "forget" (owned but
/// gone from the host: dropped from the Ledger), "fix-keys-dir", "write-keys" (object: the keys
/// file; payload: its content), "remove-keys" (object: the keys file). Refused entries (foreign
/// user, reserved name) plan nothing and are appended to `*skipped` when given.
std::vector<Action> planSftpAccounts(const SftpAccountsDesired& desired, const SftpAccountsCurrent& current,
                                     std::vector<SkippedEntry>* skipped = nullptr);

class SftpAccountsProvider : public Provider {
 public:
  /// `ledger` says which users the agent owns and records the ones it creates and removes; it
  /// must outlive the provider.
  SftpAccountsProvider(Logger log, Ledger& ledger);

  /// "sftp_accounts".
  std::string name() const override;
  /// Observes and plans; changes nothing. Refused entries are available from skipped() until the
  /// next plan(). Errors: see observeSftpAccounts().
  Result<std::vector<Action>> plan(const Desired& desired, Host& host) override;
  /// Applies one action of plan() through AccountsTool / the Host. Every change to an existing
  /// account first checks that the Ledger owns it (kUnsafe otherwise); "create" refuses a name
  /// that appeared meanwhile and is not owned. Records "user" and "file" in the Ledger.
  /// Errors: kUnsafe, kCommand (the shadow tool's message, never a hash), kIo. Never throws.
  Status apply(const Action& action, const Desired& desired, Host& host) override;

  /// Entries refused by the last plan(), by account id, with the reason.
  std::vector<SkippedEntry> skipped() const override { return skipped_; }
  /// Things apply() did that a person should know (a removal deferred because the user still
  /// runs processes). Cleared by plan().
  std::vector<std::string> reports() const override { return reports_; }
  /// Batches what one process can do for many accounts: the new accounts (intents in one ledger
  /// write, then one systemd-sysusers run), the passwords (one chpasswd -e), the intents of the
  /// keys files (one ledger write), the removals (one rewrite of the account files,
  /// AccountsTool::removeUsers, and one ledger write); the rest goes through apply() in order.
  std::vector<Status> applyAll(const std::vector<Action>& actions, const Desired& desired, Host& host) override;
  /// A "lock" of `subject` when it is an owned, existing account not yet locked for every method.
  std::vector<Action> containActions(const std::string& subject, const Desired& desired, Host& host) override;

 private:
  /// Removes the owned accounts of the "remove" actions from `first` on in one batch (when
  /// there are two or more), settling each; a name the batch leaves to userdel stays undone.
  void removeBatch(const std::vector<Action>& actions, size_t first, AccountsTool& tool,
                   const std::function<void(size_t, Status)>& settle, const std::set<std::string>& failed,
                   const std::vector<bool>& done);

  Ledger& ledger_;
  Logger log_;
  std::vector<SkippedEntry> skipped_;
  std::vector<std::string> reports_;
};

}  // namespace pim
