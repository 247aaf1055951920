#include "agent/cycle/adopt.h"

#include "providers/host/account_files.h"
#include "providers/sftp_accounts.h"

namespace pim {

Result<AdoptionCounts> adoptFromHost(Host& host, const HostSettings& settings, Ledger& ledger, Logger log) {
  AdoptionCounts counts;
  auto group = host.findGroup(settings.transferGroup);
  if (!group) return group.status();
  if (!group->has_value()) return counts;  // nothing of ours can exist without the group
  if (Status s = ledger.recordCreated(OwnedKind::kGroup, settings.transferGroup); !s) return s;
  ++counts.groups;

  auto passwd = host.readFile("/etc/passwd", 64u << 20);
  if (!passwd) return passwd.status();
  std::vector<std::string> users;
  for (const auto& [name, user] : parsePasswd(*passwd)) {
    if (name != settings.loginUser && carriesSftpSignature(user, (*group)->gid)) users.push_back(name);
  }
  auto mounts = host.listMounts();
  if (!mounts) return mounts.status();
  for (const auto& user : users) {
    if (Status s = ledger.recordCreated(OwnedKind::kUser, user); !s) return s;
    ++counts.users;
    const std::string chroot = settings.chrootBase + "/" + user;
    for (const std::string& path : {chroot, chroot + "/transfer", settings.authorizedKeysDir + "/" + user}) {
      auto info = host.lstat(path);
      if (info && info->exists() && info->type != FileType::kSymlink) {
        if (Status s = ledger.recordCreated(OwnedKind::kFile, path); !s) return s;
        ++counts.files;
      }
    }
    for (const auto& m : *mounts) {
      if (m.target == chroot + "/transfer") {
        if (Status s = ledger.recordCreated(OwnedKind::kMount, m.target); !s) return s;
        ++counts.mounts;
        break;
      }
    }
  }
  if (counts.users > 0 || counts.mounts > 0 || counts.files > 0) {
    log->warn(
        "state database new or rebuilt: re-adopted {} SFTP account(s), {} mount(s), {} path(s) and the group {} from "
        "the host",
        counts.users, counts.mounts, counts.files, settings.transferGroup);
  }
  return counts;
}

}  // namespace pim
