#pragma once
// The sftp_chroots provider: every SFTP account (active or inactive) has a chroot
// chroot_base/USERNAME, root:root 0755, holding transfer/ (root:root 0755 when nothing is mounted
// on it), onto which transfer_root/FOLDER is bind-mounted.
//
// sshd refuses a ChrootDirectory unless every component of its path, from "/", is owned by root
// and not writable by group or others. The chain "/", ..., chroot_base is checked (host paths:
// "/" is the --root directory); missing components are created root:root 0755, a wrong one that
// the agent created (Ledger "file") is fixed, and a wrong one that it did not create is reported
// as an error naming the path, its mode and owner: every account is then listed in skipped()
// with that reason and gets no new chroot or mount (sshd would refuse the login anyway), while
// removals still go ahead.
//
// Mounts are read from host.listMounts() (mountinfo). A mount at chroot/transfer is right when
// it is the only one there and shows the folder itself (same device and inode, through
// FileInfo::device/inode), otherwise it is replaced (unmount + bind mount): a folder change, a
// stacked mount, a mount of something else. Missing mounts are made again (after a reboot the
// first cycle re-creates them). Mounts and directories the agent made are recorded in the Ledger
// ("mount": the target; "file": the directory); only those are ever removed. For an account gone
// from the document: unmount (a busy mount is detached lazily, MNT_DETACH, and reported in
// reports()), then rmdir transfer/ and the chroot, never recursively and never anything under the
// transfer root. Accounts in AccessDocument::lockedUsernames keep their chroot and mount as they
// are. An entry whose username exists on the host and is not owned (refused by sftp_accounts)
// gets no chroot.
//
// A mount the agent did not make (not recorded, and not in a chroot directory the agent made) on
// an account's mount point is never unmounted or replaced: the account is reported in skipped()
// and not bound there (the cycle keeps it locked).
//
// Stages (providers/provider.h): unmounts, removals of directories and replacing a wrong mount
// are revocations; directories and new mounts prepare a grant.

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "providers/core/ledger.h"
#include "providers/core/log.h"
#include "providers/core/model.h"
#include "providers/core/result.h"
#include "providers/host/host.h"
#include "providers/provider.h"

namespace pim {

inline constexpr mode_t kChrootMode = 0755;

struct ChrootAccount {
  std::string id;
  std::string username;
  std::string folder;  // "." or "a/b", relative to the transfer root
};

struct SftpChrootsDesired {
  std::string chrootBase;    // host path
  std::string transferRoot;  // host path
  std::vector<ChrootAccount> accounts;
  std::vector<std::string> keepUsernames;  // their chroot and mount are left as they are
  std::string transferGroup;               // for the agent's signature on accounts it made
};

/// What observeSftpChroots() found.
struct SftpChrootsCurrent {
  /// Usernames of the document that exist, are not owned and do not carry the agent's signature.
  std::set<std::string> foreignUsers;
  /// lstat of "/", the chroot base's ancestors, the base, each chroot, each chroot/transfer (seen
  /// through a mount when mounted), each folder, and each owned directory (kNone: missing).
  std::map<std::string, FileInfo> paths;
  /// Paths that cannot be used, with why (a symbolic link on the way, not a directory).
  std::map<std::string, std::string> unsafe;
  /// Number of mounts stacked at each mount point below the chroot base or owned.
  std::map<std::string, int> mounts;
  std::set<std::string> ownedMounts;  // Ledger "mount"
  std::set<std::string> ownedDirs;    // Ledger "file" at, above or below the chroot base
};

/// chrootBase/username and chrootBase/username/transfer.
std::string chrootPath(const std::string& chrootBase, const std::string& username);
std::string chrootTransferPath(const std::string& chrootBase, const std::string& username);

/// Desired state: every account of the document (the reserved names root and the login user
/// left out), lockedUsernames kept.
SftpChrootsDesired sftpChrootsDesired(const Desired& desired);

/// Reads passwd, the Ledger, mountinfo and lstat of every path planning needs. Read-only.
/// Errors: read errors (kIo) of passwd or mountinfo; unsafe paths are recorded, not errors.
Result<SftpChrootsCurrent> observeSftpChroots(const SftpChrootsDesired& desired, const Ledger& ledger, Host& host);

/// Pure: the actions that bring `current` to `desired`, in order. Verbs: "mkdir" (object: a
/// directory, created root:root 0755), "fix" (object: a directory the agent made: chown
/// root:root, chmod 0755), "mount" (object: chroot/transfer; payload: the folder's host path),
/// "remount" (same, replacing what is mounted there), "unmount" (object: mount point), "rmdir"
/// (object: an empty directory the agent made), "forget" (object: a Ledger name that no longer
/// exists; payload: its kind). Accounts that cannot get a chroot are appended to `*skipped`.
std::vector<Action> planSftpChroots(const SftpChrootsDesired& desired, const SftpChrootsCurrent& current,
                                    std::vector<SkippedEntry>* skipped = nullptr);

class SftpChrootsProvider : public Provider {
 public:
  /// `ledger` records the mounts and directories made; it must outlive the provider.
  SftpChrootsProvider(Logger log, Ledger& ledger);

  /// "sftp_chroots".
  std::string name() const override;
  /// Observes and plans; changes nothing. Accounts without a usable chroot are available from
  /// skipped() until the next plan(). Errors: see observeSftpChroots().
  Result<std::vector<Action>> plan(const Desired& desired, Host& host) override;
  /// Applies one action of plan(): mkdir/chmod/chown through the Host (never through a symbolic
  /// link), bind mounts and unmounts (a busy mount is detached lazily and reported), rmdir of an
  /// empty directory (a directory that is not empty is left in place and reported). Records
  /// "mount" and "file" in the Ledger. Errors: kNotFound (the folder to mount is missing),
  /// kUnsafe, kIo. Never throws.
  Status apply(const Action& action, const Desired& desired, Host& host) override;

  /// Records the intents of the batch's directories and mounts in one ledger write each, then
  /// applies the actions one by one (Provider::applyAll).
  std::vector<Status> applyAll(const std::vector<Action>& actions, const Desired& desired, Host& host) override;
  /// Accounts refused by the last plan(), by account id, with the reason.
  std::vector<SkippedEntry> skipped() const override { return skipped_; }
  /// What apply() did that a person should know: busy mounts detached lazily, directories left
  /// because they were not empty. Cleared by plan().
  std::vector<std::string> reports() const override { return reports_; }

 private:
  Status unmountAll(const std::string& target, Host& host);

  Ledger& ledger_;
  Logger log_;
  std::vector<SkippedEntry> skipped_;
  std::vector<std::string> reports_;
};

}  // namespace pim
