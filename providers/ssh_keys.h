#pragma once
// The ssh_keys provider: the login user's keys live in a file the agent owns whole,
// <authorizedKeysDir>/<login user> (HostSettings::authorizedKeysDir, root:root 0644 in a
// root:root 0755 directory), which the sshd drop-in names as the AuthorizedKeysFile of every
// managed user (`AuthorizedKeysFile <dir>/%u`):
//
//   # Managed by pim-access-agent: the SSH keys of akeneo from the access store.
//   # Do not edit: this file is rewritten on every change. sshd reads no other file for akeneo.
//   ssh-ed25519 AAAA... pim:k-alice-laptop
//
// one line per installable key (active, unexpired at `now`), "TYPE BASE64 pim:<id>", sorted by
// id; a key with its own allowed_sources gets the option the agent writes itself,
// `from="CIDR,CIDR" TYPE BASE64 pim:<id>` (sshd then refuses it from any other address; the
// document's list is sshd's Match block), never an option taken from the store's text. The key's own comment and the
// owner's free text are not written: the id is the only label, so nothing from the store other than the validated type
// and base64 reaches the file. No markers: every line is the agent's. An empty key set keeps the file with its header
// only.
//
// Nothing is written in the login user's home: a key akeneo adds to its own
// ~/.ssh/authorized_keys is ignored by sshd, and nothing akeneo does there (a symlink, a FIFO, a
// stray marker) can make a cycle fail. The file there (the managed block of agent 0.1 included)
// is never modified or removed; inspectHomeKeys() counts its key lines for `status`.
//
// Upgrade from 0.1: SFTP key files the Ledger says the agent wrote ("file") under
// kLegacySftpKeysDir are removed, then that directory when it is left empty.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "providers/core/ledger.h"
#include "providers/core/log.h"
#include "providers/core/model.h"
#include "providers/core/result.h"
#include "providers/host/host.h"
#include "providers/provider.h"

namespace pim {

inline constexpr mode_t kKeysDirMode = 0755;
inline constexpr mode_t kLoginKeysFileMode = 0644;

/// <keysDir>/<user>.
std::string loginKeysPath(const std::string& keysDir, const std::string& user);

/// The whole keys file of `user`: the header, then the keys installable at `now`, sorted by id.
/// Keys whose type, base64 or id is not a plain token are left out (the document parser rejects
/// them first; this is the last line of defence).
std::string renderKeysFile(const std::string& user, const std::vector<SshKey>& keys, int64_t now);

/// Key ids ("pim:<id>" comments) of a keys file, in file order. For `status` and tests.
std::vector<std::string> installedKeyIds(const std::string& keysFile);

/// The earliest expires_at strictly after `now` among active keys, for the daemon's expiry
/// timer; nullopt when no key will expire.
std::optional<int64_t> nextExpiry(const AccessDocument& document, int64_t now);

/// What the provider wants.
struct SshKeysDesired {
  std::string user;          // the login user
  std::string keysDir;       // host path of HostSettings::authorizedKeysDir
  std::vector<SshKey> keys;  // every key of the document; filtered by installableAt(now)
  int64_t now = 0;
};

/// What observeSshKeys() found.
struct SshKeysCurrent {
  FileInfo keysDir;                    // lstat of the keys directory
  FileInfo keysFile;                   // lstat of <keysDir>/<user>
  std::optional<std::string> content;  // the file's bytes; nullopt when missing
  /// Upgrade from 0.1 (only when keysDir is not kLegacySftpKeysDir): files the Ledger owns
  /// under kLegacySftpKeysDir, whether they still exist or not, and what else is there.
  std::vector<std::string> legacyFiles;
  FileInfo legacyDir;
  std::vector<std::string> legacyOthers;  // names in the legacy directory the Ledger does not own
};

/// Looks at the keys directory and the login user's file, and at the legacy SFTP keys directory
/// when `ledger` is given. Read-only; never looks in the user's home. Errors: kUnsafe (the
/// directory is not a directory, the file is a symbolic link or not a regular file: only root
/// can have made them in a root-owned directory, so nothing is written through them), kIo.
Result<SshKeysCurrent> observeSshKeys(Host& host, const std::string& keysDir, const std::string& user,
                                      const Ledger* ledger);

/// Pure: the actions that bring `current` to `desired`, in order. Verbs: "fix-dir" (the keys
/// directory is not 0755 root:root), "write" (object: the keys file; payload: its content; also
/// for a mode or owner other than 0644 root:root: the file is written afresh, never chmod-ed in
/// place), "remove-legacy" (object: a 0.1 SFTP key file the Ledger owns; a missing one is only
/// dropped from the Ledger), "remove-legacy-dir" (object: kLegacySftpKeysDir, once nothing else
/// is in it). Stages: keys that go away are revoked with the revocations (a change that also adds
/// keys is two writes: first the file without the removed keys, Stage::kRevoke, then the whole
/// file, Stage::kGrant, once the drop-in confining the login user is live); a write that only adds
/// is a grant, one that only removes (or fixes modes) a revocation, a first file without keys a
/// preparation; the directory fix and the legacy clean-up take access away: revocations.
std::vector<Action> planSshKeys(const SshKeysDesired& desired, const SshKeysCurrent& current);

/// What the login user's own ~/.ssh/authorized_keys holds, for `status`: sshd ignores it.
struct HomeKeysReport {
  std::string path;        // host path (home from passwd, "/home/<user>" when the user is missing)
  bool exists = false;     // false: no such file (nothing to report)
  size_t keyLines = 0;     // lines that are neither blank nor comments
  std::string unreadable;  // why it could not be read ("" when it was): a symlink, a FIFO, ...
};

/// Reads the login user's ~/.ssh/authorized_keys through the host, which refuses symbolic links
/// anywhere on the path and never blocks on a FIFO. Never fails: what went wrong is in
/// `unreadable`.
HomeKeysReport inspectHomeKeys(Host& host, const std::string& user);

class SshKeysProvider : public Provider {
 public:
  /// `ledger` (may be null: no upgrade clean-up) must outlive the provider.
  explicit SshKeysProvider(Logger log, Ledger* ledger = nullptr);

  /// "ssh_keys".
  std::string name() const override;
  /// Observes the keys file (and the legacy directory); changes nothing. Errors: see
  /// observeSshKeys().
  Result<std::vector<Action>> plan(const Desired& desired, Host& host) override;
  /// Keys of the last plan() that could not be written as a plain line (never installed).
  std::vector<SkippedEntry> skipped() const override { return skipped_; }
  /// Applies one action of plan(): the file is written atomically 0644 root:root (the directory
  /// created 0755 root:root when missing); legacy files are removed and dropped from the Ledger.
  /// Errors: kUnsafe (a symbolic link where the directory should be), kIo. Never throws.
  Status apply(const Action& action, const Desired& desired, Host& host) override;

 private:
  Logger log_;
  Ledger* ledger_ = nullptr;
  std::vector<SkippedEntry> skipped_;
};

}  // namespace pim
