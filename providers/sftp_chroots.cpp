#include "providers/sftp_chroots.h"
#include "providers/core/text_fields.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "providers/sftp_accounts.h"
#include "providers/transfer_tree.h"

namespace pim {
namespace {

constexpr const char* kProvider = "sftp_chroots";
constexpr size_t kMaxPasswdBytes = 64u << 20;
constexpr int kMaxStackedMounts = 64;

std::string stripSlashes(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return path;
}

/// "/a/b/c" -> {"/a", "/a/b"} (strict ancestors, "/" excluded).
std::vector<std::string> ancestorsOf(const std::string& path) {
  std::vector<std::string> out;
  for (size_t pos = path.find('/', 1); pos != std::string::npos; pos = path.find('/', pos + 1)) {
    out.push_back(path.substr(0, pos));
  }
  return out;
}

/// The user whose chroot `path` is (base/U or base/U/transfer); nullopt otherwise.
std::optional<std::string> chrootUserOf(const std::string& base, const std::string& path) {
  const std::string prefix = (base == "/" ? std::string() : base) + "/";
  if (path.size() <= prefix.size() || path.compare(0, prefix.size(), prefix) != 0) return std::nullopt;
  std::string rest = path.substr(prefix.size());
  const auto slash = rest.find('/');
  if (slash == std::string::npos) return rest;
  if (rest.substr(slash) == "/transfer" && slash > 0) return rest.substr(0, slash);
  return std::nullopt;
}

bool rootOwned0755(const FileInfo& info) {
  return info.type == FileType::kDirectory && info.uid == 0 && info.gid == 0 && info.mode == kChrootMode;
}

std::string describeOwner(const FileInfo& info) {
  return "mode " + octalMode(info.mode) + " owner " + std::to_string(info.uid) + ":" + std::to_string(info.gid);
}

Action makeAction(Verb verb, const std::string& object, const std::string& detail, const std::string& before = {},
                  const std::string& after = {}) {
  const Stage stage =
      (verb == Verb::kMkdir || verb == Verb::kFix || verb == Verb::kMount) ? Stage::kPrepare : Stage::kRevoke;
  return makeProviderAction(kProvider, stage, verb, object, detail, before, after);
}

Action mkdirAction(const std::string& path) {
  return makeAction(Verb::kMkdir, path, "0755 root:root", "missing", "directory 0755 root:root");
}

Action fixAction(const std::string& path, const FileInfo& info) {
  return makeAction(Verb::kFix, path, describeOwner(info) + " -> 0755 root:root", describeOwner(info),
                    "0755 root:root");
}

}  // namespace

std::string chrootPath(const std::string& chrootBase, const std::string& username) {
  const std::string base = stripSlashes(chrootBase);
  return (base == "/" ? std::string() : base) + "/" + username;
}

std::string chrootTransferPath(const std::string& chrootBase, const std::string& username) {
  return chrootPath(chrootBase, username) + "/transfer";
}

SftpChrootsDesired sftpChrootsDesired(const Desired& desired) {
  SftpChrootsDesired d;
  d.chrootBase = stripSlashes(desired.host.chrootBase);
  d.transferRoot = stripSlashes(desired.host.transferRoot);
  for (const auto& a : desired.document.accounts) {
    if (a.username == "root" || a.username == desired.host.loginUser) continue;
    d.accounts.push_back({a.id, a.username, a.folder});
  }
  d.keepUsernames = desired.document.lockedUsernames;
  d.transferGroup = desired.host.transferGroup;
  return d;
}

Result<SftpChrootsCurrent> observeSftpChroots(const SftpChrootsDesired& desired, const Ledger& ledger, Host& host) {
  SftpChrootsCurrent current;
  const std::string base = stripSlashes(desired.chrootBase);

  auto mounts = ledger.owned(OwnedKind::kMount);
  current.ownedMounts.insert(mounts.begin(), mounts.end());
  const std::string basePrefix = (base == "/" ? std::string() : base) + "/";
  std::vector<std::string> chain{"/"};
  for (const auto& p : ancestorsOf(base)) chain.push_back(p);
  if (base != "/") chain.push_back(base);
  for (const auto& name : ledger.owned(OwnedKind::kFile)) {
    const bool inChain = std::find(chain.begin(), chain.end(), name) != chain.end();
    if (inChain || chrootUserOf(base, name)) current.ownedDirs.insert(name);
  }

  auto text = host.readFile("/etc/passwd", kMaxPasswdBytes);
  if (!text && text.status().code() != ErrorCode::kNotFound) return text.status();
  const auto users = text ? parsePasswd(*text) : std::map<std::string, UserInfo>();
  std::optional<gid_t> transferGid;
  if (!desired.transferGroup.empty()) {
    auto group = host.findGroup(desired.transferGroup);
    if (!group) return group.status();
    if (group->has_value()) transferGid = (*group)->gid;
  }
  for (const auto& a : desired.accounts) {
    auto user = users.find(a.username);
    if (user != users.end() && !ledger.owns(OwnedKind::kUser, a.username) &&
        !carriesSftpSignature(user->second, transferGid)) {
      current.foreignUsers.insert(a.username);
    }
  }

  // lstat that records unsafe paths instead of failing: a symbolic link is found, not followed.
  auto look = [&](const std::string& path) -> Status {
    if (current.paths.count(path) || current.unsafe.count(path)) return Status::ok();
    auto info = host.lstat(path);
    if (!info) {
      if (info.status().code() != ErrorCode::kUnsafe) return info.status();
      current.unsafe[path] = info.status().message();
      return Status::ok();
    }
    if (info->type == FileType::kSymlink) {
      current.unsafe[path] = path + " is a symbolic link";
    } else if (info->exists() && info->type != FileType::kDirectory) {
      current.unsafe[path] = path + " is not a directory";
    } else {
      current.paths[path] = *info;
    }
    return Status::ok();
  };

  for (const auto& p : chain) {
    if (Status s = look(p); !s) return s;
    if (current.unsafe.count(p)) break;
  }
  for (const auto& a : desired.accounts) {
    if (current.foreignUsers.count(a.username)) continue;
    if (Status s = look(chrootPath(base, a.username)); !s) return s;
    if (Status s = look(chrootTransferPath(base, a.username)); !s) return s;
    if (auto src = transferFolderPath(desired.transferRoot, a.folder)) {
      if (Status s = look(*src); !s) return s;
    }
  }
  for (const auto& d : current.ownedDirs) {
    if (Status s = look(d); !s) return s;
  }

  auto list = host.listMounts();
  if (!list) return list.status();
  for (const auto& m : *list) {
    const bool below = m.target.size() > basePrefix.size() && m.target.compare(0, basePrefix.size(), basePrefix) == 0;
    if (below || current.ownedMounts.count(m.target)) current.mounts[m.target]++;
  }
  return current;
}

std::vector<Action> planSftpChroots(const SftpChrootsDesired& desired, const SftpChrootsCurrent& current,
                                    std::vector<SkippedEntry>* skipped) {
  std::vector<Action> actions;
  const std::string base = stripSlashes(desired.chrootBase);
  auto infoOf = [&](const std::string& path) {
    auto it = current.paths.find(path);
    return it == current.paths.end() ? FileInfo{} : it->second;
  };
  auto mountCount = [&](const std::string& path) {
    auto it = current.mounts.find(path);
    return it == current.mounts.end() ? 0 : it->second;
  };
  auto skip = [&](const std::string& id, const std::string& why) {
    if (skipped) skipped->push_back({id, why});
  };

  // 1. The chain sshd checks: "/" down to the chroot base.
  std::vector<std::string> chain{"/"};
  for (const auto& p : ancestorsOf(base)) chain.push_back(p);
  if (base != "/") chain.push_back(base);
  std::string chainProblem;
  for (const auto& p : chain) {
    if (auto it = current.unsafe.find(p); it != current.unsafe.end()) {
      chainProblem = "chroot base " + base + ": " + it->second;
      break;
    }
    const FileInfo info = infoOf(p);
    if (!info.exists()) {
      actions.push_back(mkdirAction(p));
      continue;
    }
    if (info.uid != 0 || (info.mode & 022) != 0) {
      if (current.ownedDirs.count(p)) {
        actions.push_back(fixAction(p, info));
        continue;
      }
      chainProblem = "chroot base " + base + ": " + p + " has " + describeOwner(info) +
                     "; sshd refuses a chroot below a directory not owned by root or writable by group or others";
      break;
    }
  }
  if (!chainProblem.empty()) actions.clear();

  // 2. One chroot and one mount per account.
  auto accounts = desired.accounts;
  std::stable_sort(accounts.begin(), accounts.end(),
                   [](const ChrootAccount& a, const ChrootAccount& b) { return a.username < b.username; });
  std::set<std::string> wanted(desired.keepUsernames.begin(), desired.keepUsernames.end());
  std::set<std::string> seen;
  for (const auto& acc : accounts) {
    const std::string& user = acc.username;
    if (!seen.insert(user).second) continue;
    if (current.foreignUsers.count(user)) continue;  // refused by sftp_accounts: nothing made for it
    wanted.insert(user);
    if (!chainProblem.empty()) {
      skip(acc.id, chainProblem);
      continue;
    }
    const std::string chroot = chrootPath(base, user);
    const std::string tdir = chrootTransferPath(base, user);
    if (auto it = current.unsafe.find(chroot); it != current.unsafe.end()) {
      skip(acc.id, "chroot " + it->second);
      continue;
    }
    const FileInfo cinfo = infoOf(chroot);
    if (!cinfo.exists()) {
      actions.push_back(mkdirAction(chroot));
    } else if (!rootOwned0755(cinfo)) {
      if (!current.ownedDirs.count(chroot)) {
        skip(acc.id, "chroot " + chroot + " has " + describeOwner(cinfo) + " and was not created by pim-access-agent");
        continue;
      }
      actions.push_back(fixAction(chroot, cinfo));
    }

    const int stacked = mountCount(tdir);
    const auto src = transferFolderPath(desired.transferRoot, acc.folder);
    // Only the one mount the agent made there is ever replaced or taken away.
    const bool ownMount = stacked == 1 && current.ownedMounts.count(tdir) > 0;
    if (!src || current.unsafe.count(*src)) {
      // The folder is refused (transfer_tree reports it): whatever is mounted no longer matches.
      if (ownMount)
        actions.push_back(makeAction(Verb::kUnmount, tdir, "folder '" + acc.folder + "' refused", "mounted", "none"));
      continue;
    }
    if (stacked > 0) {
      const FileInfo tinfo = infoOf(tdir);
      const FileInfo sinfo = infoOf(*src);
      const bool same = stacked == 1 && sinfo.exists() && tinfo.exists() && tinfo.device == sinfo.device &&
                        tinfo.inode == sinfo.inode;
      if (!same && !ownMount) {
        skip(acc.id, "mount point " + tdir + " holds " +
                         (stacked > 1 ? std::to_string(stacked) + " mounts" : std::string("a mount")) +
                         " that pim-access-agent did not make; left alone, the account is not bound there");
        continue;
      }
      if (!same) {
        Action a = makeAction(Verb::kRemount, tdir,
                              stacked > 1 ? std::to_string(stacked) + " mounts stacked; bind " + *src
                                          : "mounted subtree is not " + *src + "; bind it",
                              "other mount", *src);
        a.payload = *src;
        actions.push_back(a);
      }
      continue;
    }
    if (auto it = current.unsafe.find(tdir); it != current.unsafe.end()) {
      skip(acc.id, "mount point " + it->second);
      continue;
    }
    const FileInfo tinfo = infoOf(tdir);
    if (!tinfo.exists()) {
      actions.push_back(mkdirAction(tdir));
    } else if (!rootOwned0755(tinfo)) {
      if (!current.ownedDirs.count(tdir)) {
        skip(acc.id,
             "mount point " + tdir + " has " + describeOwner(tinfo) + " and was not created by pim-access-agent");
        continue;
      }
      actions.push_back(fixAction(tdir, tinfo));
    }
    Action a = makeAction(Verb::kMount, tdir, "bind " + *src, "not mounted", *src);
    a.payload = *src;
    actions.push_back(a);
  }

  // 3. What the agent made for accounts that are gone: unmount, then empty directories.
  auto stale = [&](const std::string& path) {
    auto user = chrootUserOf(base, path);
    return !user || !wanted.count(*user);
  };
  std::set<std::string> unmounted;
  std::set<std::string> leftMounted;  // a mount someone else stacked there: left, with its chroot
  for (const auto& m : current.ownedMounts) {
    if (!stale(m)) continue;
    unmounted.insert(m);
    if (mountCount(m) > 1) {
      leftMounted.insert(m);
    } else if (mountCount(m) == 1) {
      actions.push_back(makeAction(Verb::kUnmount, m, "account removed", "mounted", "none"));
    } else {
      Action a = makeAction(Verb::kForget, m, "mount no longer present", "recorded", "absent");
      a.payload = ownedKindName(OwnedKind::kMount);
      actions.push_back(a);
    }
  }
  // A mount in a chroot the agent made is its own even when the record was lost.
  for (const auto& [target, count] : current.mounts) {
    auto user = chrootUserOf(base, target);
    if (!user || wanted.count(*user) || unmounted.count(target) || count == 0) continue;
    if (count > 1) {
      leftMounted.insert(target);
      continue;
    }
    if (target != chrootTransferPath(base, *user) || !current.ownedDirs.count(chrootPath(base, *user))) continue;
    actions.push_back(makeAction(Verb::kUnmount, target, "account removed", "mounted", "none"));
  }
  std::vector<std::string> dirs;
  for (const auto& d : current.ownedDirs) {
    auto user = chrootUserOf(base, d);
    if (user && stale(d) && !leftMounted.count(chrootTransferPath(base, *user))) dirs.push_back(d);
  }
  // Deeper first: transfer/ before its chroot.
  std::sort(dirs.begin(), dirs.end(), [](const std::string& a, const std::string& b) {
    return a.size() != b.size() ? a.size() > b.size() : a < b;
  });
  for (const auto& d : dirs) {
    if (infoOf(d).exists()) {
      actions.push_back(
          makeAction(Verb::kRmdir, d, "account removed (directory only, never recursive)", "directory", "absent"));
    } else if (!current.unsafe.count(d)) {
      Action a = makeAction(Verb::kForget, d, "directory no longer present", "recorded", "absent");
      a.payload = ownedKindName(OwnedKind::kFile);
      actions.push_back(a);
    }
  }
  for (auto& a : actions) {
    if (auto user = chrootUserOf(base, a.object)) a.subject = *user;
  }
  return actions;
}

SftpChrootsProvider::SftpChrootsProvider(Logger log, Ledger& ledger) : ledger_(ledger), log_(std::move(log)) {}

std::string SftpChrootsProvider::name() const { return kProvider; }

Result<std::vector<Action>> SftpChrootsProvider::plan(const Desired& desired, Host& host) {
  reports_.clear();
  const auto d = sftpChrootsDesired(desired);
  return observeAndPlan([&] { return observeSftpChroots(d, ledger_, host); },
                        [&](const SftpChrootsCurrent& current) { return planSftpChroots(d, current, &skipped_); },
                        skipped_, log_, "no chroot for");
}

Status SftpChrootsProvider::unmountAll(const std::string& target, Host& host) {
  for (int i = 0; i < kMaxStackedMounts; ++i) {
    auto list = host.listMounts();
    if (!list) return list.status();
    const bool mounted =
        std::any_of(list->begin(), list->end(), [&](const MountInfo& m) { return m.target == target; });
    if (!mounted) return Status::ok();
    Status s = host.unmount(target, false);
    if (!s && s.message().find(std::strerror(EBUSY)) != std::string::npos) {
      // An open session holds it: detach it from the tree now; the session keeps its view until
      // it ends, and nothing new can reach the folder through this chroot.
      s = host.unmount(target, true);
      if (s) {
        const std::string report = "mount " + target + " was busy: detached lazily (MNT_DETACH)";
        log_->warn("{}", report);
        reports_.push_back(report);
      }
    }
    if (!s) return s;
  }
  return Status::error(ErrorCode::kIo,
                       "unmount " + target + ": still mounted after " + std::to_string(kMaxStackedMounts) + " unmounts",
                       target);
}

std::vector<Status> SftpChrootsProvider::applyAll(const std::vector<Action>& actions, const Desired& desired,
                                                  Host& host) {
  // The intents of a batch's directories and mounts in one ledger write each, instead of one
  // durable write per directory and mount; apply() then finds them recorded.
  std::vector<std::string> dirs, mounts;
  for (const auto& a : actions) {
    if (a.verb == Verb::kMkdir && !ledger_.owns(OwnedKind::kFile, a.object)) dirs.push_back(a.object);
    if ((a.verb == Verb::kMount || a.verb == Verb::kRemount) && !ledger_.owns(OwnedKind::kMount, a.object))
      mounts.push_back(a.object);
  }
  if (dirs.size() >= 2) (void)ledger_.recordCreatedAll(OwnedKind::kFile, dirs);
  if (mounts.size() >= 2) (void)ledger_.recordCreatedAll(OwnedKind::kMount, mounts);
  return Provider::applyAll(actions, desired, host);
}

Status SftpChrootsProvider::apply(const Action& action, const Desired& desired, Host& host) {
  (void)desired;
  const std::string& path = action.object;
  if (action.verb == Verb::kMkdir) {
    // Intent first (applyAll() records a batch's at once): a crash between the two leaves a
    // record of a directory that is not there, which the next plan forgets, never a directory
    // the agent would take for someone else's.
    const bool recorded = ledger_.owns(OwnedKind::kFile, path);
    if (!recorded) {
      if (Status s = ledger_.recordCreated(OwnedKind::kFile, path); !s) return s;
    }
    Status made = host.makeDirectory(path, {kChrootMode, 0, 0});
    auto info = host.lstat(path);
    if (made && info && !rootOwned0755(*info)) {
      made =
          Status::error(ErrorCode::kUnsafe, "mkdir " + path + ": found " + describeOwner(*info) + " in the way", path);
    }
    if (!made || !info) {
      (void)ledger_.recordRemoved(OwnedKind::kFile, path);  // not made by the agent
      return made ? info.status() : made;
    }
    log_->info("created {}", path);
    return Status::ok();
  }
  if (action.verb == Verb::kFix) {
    auto info = host.lstat(path);
    if (!info) return info.status();
    if (info->type != FileType::kDirectory) {
      return Status::error(ErrorCode::kUnsafe, "fix " + path + ": no longer a directory", path);
    }
    if (Status s = host.setOwner(path, 0, 0); !s) return s;
    if (Status s = host.setMode(path, kChrootMode); !s) return s;
    log_->warn("corrected {}: {}", path, action.detail);
    return Status::ok();
  }
  if (action.verb == Verb::kMount || action.verb == Verb::kRemount) {
    auto src = host.lstat(action.payload);
    if (!src) return src.status();
    if (src->type != FileType::kDirectory) {
      return Status::error(ErrorCode::kNotFound,
                           "bind mount " + action.payload + " on " + path + ": the folder is missing", action.payload);
    }
    if (action.verb == Verb::kRemount) {
      if (Status s = unmountAll(path, host); !s) return s;
    }
    if (!ledger_.owns(OwnedKind::kMount, path)) {
      if (Status s = ledger_.recordCreated(OwnedKind::kMount, path); !s) return s;  // intent first, as for mkdir
    }
    if (Status s = host.bindMount(action.payload, path); !s) {
      (void)ledger_.recordRemoved(OwnedKind::kMount, path);
      return s;
    }
    log_->info("mounted {} on {}", action.payload, path);
    return Status::ok();
  }
  if (action.verb == Verb::kUnmount) {
    if (Status s = unmountAll(path, host); !s) return s;
    if (Status s = ledger_.recordRemoved(OwnedKind::kMount, path); !s) return s;
    log_->info("unmounted {}", path);
    return Status::ok();
  }
  if (action.verb == Verb::kRmdir) {
    auto names = host.listDirectory(path);
    if (!names) {
      if (names.status().code() == ErrorCode::kNotFound) return ledger_.recordRemoved(OwnedKind::kFile, path);
      return names.status();
    }
    if (!names->empty()) {
      const std::string report = "left " + path + " in place: not empty";
      log_->warn("{}", report);
      reports_.push_back(report);
      return Status::ok();
    }
    if (Status s = host.removeDirectory(path); !s) return s;
    if (Status s = ledger_.recordRemoved(OwnedKind::kFile, path); !s) return s;
    log_->info("removed {}", path);
    return Status::ok();
  }
  if (action.verb == Verb::kForget) {
    const auto kind = parseOwnedKind(action.payload);
    if (!kind)
      return Status::error(ErrorCode::kInternal, "sftp_chroots: forget " + path + ": unknown kind " + action.payload);
    return ledger_.recordRemoved(*kind, path);
  }
  return Status::error(ErrorCode::kInternal, "sftp_chroots: unknown action " + std::string(verbName(action.verb)));
}

}  // namespace pim
