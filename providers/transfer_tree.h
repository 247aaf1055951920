#pragma once
// The transfer_tree provider: the transfer root and every SFTP account's folder exist.
//
//   - the transfer group exists (created as a system group when missing, recorded in the Ledger
//     as "group"; the login_user provider normally made it already);
//   - missing parents of the transfer root are created root:root 0755;
//   - the transfer root and every component of an account's folder are directories of mode 02770
//     and group transfer_group (created root:transfer_group; for existing ones, a wrong mode or
//     group is corrected, the owner is never changed, as the permission contract says);
//   - folders are never removed.
//
// The tree below the transfer root is writable by the transfer group, so an SFTP user can plant
// a symbolic link (or a file) where a folder is wanted. Such a folder is refused: nothing is
// created through it, and the account is reported in skipped() with the reason; the rest of the
// document still applies (a user-planted link must not hold back anyone's revocation). A
// symbolic link at or above the transfer root itself is a host configuration problem and fails
// plan() with kUnsafe.

#include <sys/types.h>

#include <map>
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

inline constexpr mode_t kTransferDirectoryMode = 02770;
inline constexpr mode_t kTransferParentMode = 0755;

/// The host path of `folder` ("." or "a/b") below `transferRoot`; "." and empty components are
/// dropped. nullopt for a folder that is absolute or has a ".." component (the document parser
/// rejects those first; this is the last line of defence).
std::optional<std::string> transferFolderPath(const std::string& transferRoot, const std::string& folder);

/// One account's folder, by account id (for skipped()).
struct TransferFolder {
  std::string id;
  std::string folder;  // "." or "a/b", relative to the transfer root
};

struct TransferTreeDesired {
  std::string transferRoot;   // host path
  std::string transferGroup;  // group name
  std::vector<TransferFolder> folders;
};

/// What observeTransferTree() found.
struct TransferTreeCurrent {
  std::optional<gid_t> groupGid;  // nullopt: the group does not exist
  /// lstat of every path planning looks at: the transfer root's ancestors, the root, and each
  /// component of each folder (type kNone: missing).
  std::map<std::string, FileInfo> paths;
  /// Folder components that cannot be used, with why (symbolic link, not a directory).
  std::map<std::string, std::string> unsafe;
};

/// Desired state from the document and the host settings: every account of the document, in
/// document order (inactive ones too: their chroot still shows the folder).
TransferTreeDesired transferTreeDesired(const Desired& desired);

/// Looks at the group and at every path of `desired`. Read-only. Errors: kUnsafe when the
/// transfer root or one of its ancestors is a symbolic link or not a directory; read errors of
/// /etc/group or lstat (kIo).
Result<TransferTreeCurrent> observeTransferTree(const TransferTreeDesired& desired, Host& host);

/// Pure: the actions that bring `current` to `desired`, in the order they must run (group, then
/// directories top-down). Verbs: "create-group" (object: group), "mkdir" (object: path; detail
/// "0755 root:root" or "2770 root:<group>"), "fix" (object: path; mode and/or group corrected).
/// Folders with an unsafe component plan nothing and are appended to `*skipped` (when given).
std::vector<Action> planTransferTree(const TransferTreeDesired& desired, const TransferTreeCurrent& current,
                                     std::vector<SkippedEntry>* skipped = nullptr);

class TransferTreeProvider : public Provider {
 public:
  /// `ledger` records the group when this provider creates it; it must outlive the provider.
  TransferTreeProvider(Logger log, Ledger& ledger);

  /// "transfer_tree".
  std::string name() const override;
  /// Observes and plans; changes nothing. Refused folders are available from skipped() until
  /// the next plan(). Errors: see observeTransferTree().
  Result<std::vector<Action>> plan(const Desired& desired, Host& host) override;
  /// Applies one action of plan(): groupadd --system (recorded as "group"), mkdir with the
  /// mode and owner of the action (never through a symbolic link), or chmod/chgrp of an existing
  /// directory (owner kept). Errors: kNotFound (the transfer group vanished), kUnsafe (a symbolic
  /// link appeared), kIo, kCommand. Never throws.
  Status apply(const Action& action, const Desired& desired, Host& host) override;

  /// Accounts whose folder was refused by the last plan(), by account id, with the reason.
  std::vector<SkippedEntry> skipped() const override { return skipped_; }

 private:
  Ledger& ledger_;
  Logger log_;
  std::vector<SkippedEntry> skipped_;
};

}  // namespace pim
