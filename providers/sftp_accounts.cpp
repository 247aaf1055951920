#include "providers/sftp_accounts.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include "providers/core/text_fields.h"

namespace pim {
namespace {

constexpr const char* kProvider = "sftp_accounts";
constexpr size_t kMaxAccountsFileBytes = 64u << 20;
constexpr size_t kMaxKeysFileBytes = 1u << 20;

/// Reads a file through the host; a missing file reads as empty.
Result<std::string> readOptional(Host& host, const std::string& path) {
  auto text = host.readFile(path, kMaxAccountsFileBytes);
  if (!text && text.status().code() == ErrorCode::kNotFound) return std::string();
  return text;
}

// The stage of each verb within a cycle (providers/provider.h): what takes access away runs
// first, credentials last. "write-keys" is decided by planKeysFile().
Stage stageOf(Verb verb) {
  if (verb == Verb::kCreate || verb == Verb::kSetGroup) return Stage::kPrepare;
  if (verb == Verb::kSetPassword || verb == Verb::kUnlock || verb == Verb::kWriteKeys) return Stage::kGrant;
  // adopt, set-shell, lock-password, lock, remove, forget, remove-keys, fix-keys-dir (a keys
  // directory others can write lets them plant keys)
  return Stage::kRevoke;
}

Action makeAction(Verb verb, const std::string& object, const std::string& detail, const std::string& before = {},
                  const std::string& after = {}) {
  Action a = makeProviderAction(kProvider, stageOf(verb), verb, object, detail, before, after);
  a.subject = object;
  return a;
}

bool fullyLocked(const ShadowEntry& e) {
  return !e.password.empty() && e.password[0] == '!' && e.expireDays && *e.expireDays == 1;
}

/// What a freshly created account looks like (useradd: "!" password, no expiry).
ShadowEntry freshShadow(const std::string& name) {
  ShadowEntry e;
  e.name = name;
  e.password = "!";
  return e;
}

/// Password and expiry of an owned account of the document.
void planCredentials(const SftpAccount& account, const ShadowEntry& shadow, std::vector<Action>& actions) {
  const std::string& name = account.username;
  if (!account.active) {
    if (!fullyLocked(shadow)) {
      actions.push_back(makeAction(Verb::kLock, name, "inactive: password locked and account expired",
                                   shadow.expireDays ? "expired" : "usable", "locked"));
    }
    return;
  }
  if (shadow.expireDays) {
    Action a = makeAction(Verb::kUnlock, name,
                          account.passwordHash ? "active: expiry cleared, password hash from the store"
                                               : "active: expiry cleared, key-only (password locked)",
                          "locked", account.passwordHash ? "password from the store" : "key-only");
    if (account.passwordHash) a.payload = *account.passwordHash;
    actions.push_back(a);
    return;
  }
  if (account.passwordHash) {
    if (shadow.password != *account.passwordHash) {
      // The old password is revoked with the other revocations; the new one is a grant, set
      // once the configuration confining the account is live.
      if (!shadow.passwordLocked()) {
        actions.push_back(makeAction(Verb::kLockPassword, name,
                                     "the store changed the password: the old one revoked first", "another hash",
                                     "locked"));
      }
      Action a = makeAction(Verb::kSetPassword, name, "password hash from the store",
                            shadow.passwordLocked() ? "locked" : "another hash", "password from the store");
      a.payload = *account.passwordHash;
      actions.push_back(a);
    }
  } else if (!shadow.passwordLocked()) {
    actions.push_back(makeAction(Verb::kLockPassword, name, "key-only: password locked", "password set", "key-only"));
  }
}

/// The key lines of a keys file (comments and blank lines left out).
std::set<std::string> keyLines(const std::string& content) {
  std::set<std::string> lines;
  std::stringstream ss(content);
  for (std::string line; std::getline(ss, line);) {
    if (!line.empty() && line[0] != '#') lines.insert(line);
  }
  return lines;
}

/// `content` without the key lines that `kept` does not have.
std::string onlyLinesIn(const std::string& content, const std::set<std::string>& kept) {
  std::string out;
  std::stringstream ss(content);
  for (std::string line; std::getline(ss, line);) {
    if (line.empty() || line[0] == '#' || kept.count(line)) out += line + "\n";
  }
  return out;
}

/// The keys file of one managed name: written when `content` is not empty, removed otherwise.
/// A change that both removes and adds keys is two writes: the removal with the revocations,
/// the new keys as a grant.
void planKeysFile(const SftpAccountsDesired& desired, const SftpAccountsCurrent& current, const std::string& name,
                  const std::string& content, size_t keyCount, std::vector<Action>& actions) {
  const std::string path = sftpKeysPath(desired.sftpKeysDir, name);
  auto it = current.keysFiles.find(name);
  auto withSubject = [&](Action a) {
    a.subject = name;
    return a;
  };
  if (content.empty()) {
    if (it != current.keysFiles.end()) {
      actions.push_back(
          withSubject(makeAction(Verb::kRemoveKeys, path, "no key allowed for " + name, "keys file", "none")));
    }
    return;
  }
  const std::string detail = std::to_string(keyCount) + (keyCount == 1 ? " key" : " keys") + " for " + name;
  Stage stage = Stage::kGrant;
  if (it != current.keysFiles.end()) {
    const auto& f = it->second;
    const bool sameMeta =
        f.info.type == FileType::kRegular && f.info.mode == kSftpKeysFileMode && f.info.uid == 0 && f.info.gid == 0;
    if (sameMeta && f.content == content) return;
    const std::set<std::string> before =
        f.info.type == FileType::kRegular ? keyLines(f.content) : std::set<std::string>{};
    const std::set<std::string> after = keyLines(content);
    const bool adds = std::any_of(after.begin(), after.end(), [&](const std::string& l) { return !before.count(l); });
    const bool removes =
        std::any_of(before.begin(), before.end(), [&](const std::string& l) { return !after.count(l); });
    if (!adds) {
      stage = Stage::kRevoke;  // fewer keys, or the same keys with the right mode and owner
    } else if (removes || !sameMeta) {
      const std::string kept = onlyLinesIn(content, before);
      if (keyLines(kept).empty()) {
        actions.push_back(withSubject(
            makeAction(Verb::kRemoveKeys, path, "keys revoked before new ones for " + name, "keys file", "none")));
      } else {
        Action r = withSubject(makeAction(Verb::kWriteKeys, path, "keys revoked before new ones for " + name,
                                          "other content", "fewer keys"));
        r.stage = Stage::kRevoke;
        r.payload = kept;
        actions.push_back(r);
      }
    }
  }
  Action a =
      withSubject(makeAction(Verb::kWriteKeys, path, detail, it == current.keysFiles.end() ? "none" : "other content",
                             std::to_string(keyCount) + " keys"));
  a.stage = stage;
  a.payload = content;
  actions.push_back(a);
}

size_t distinctKeyCount(const SftpAccount& account) {
  std::vector<std::string> seen;
  for (const auto& k : account.publicKeys) {
    if (std::find(seen.begin(), seen.end(), k.identity()) == seen.end()) seen.push_back(k.identity());
  }
  return seen.size();
}

}  // namespace

bool carriesSftpSignature(const UserInfo& user, std::optional<gid_t> transferGid) {
  return user.home == kSftpHome && user.shell == kSftpShell && transferGid && user.gid == *transferGid;
}

std::string sftpKeysPath(const std::string& keysDir, const std::string& username) {
  return (keysDir == "/" ? std::string() : keysDir) + "/" + username;
}

std::string renderSftpKeys(const SftpAccount& account) {
  if (!account.active || account.publicKeys.empty()) return {};
  std::string out = "# pim-access-agent: keys of SFTP account " + account.username + " (" + account.id +
                    "); this file is rewritten by the agent\n";
  std::vector<std::string> seen;
  for (const auto& k : account.publicKeys) {
    if (std::find(seen.begin(), seen.end(), k.identity()) != seen.end()) continue;
    seen.push_back(k.identity());
    // "restrict": no forwarding, pty or rc, even if the drop-in's Match block did not apply.
    out += "restrict " + k.identity() + " pim:" + account.id + "\n";
  }
  return out;
}

SftpAccountsDesired sftpAccountsDesired(const Desired& desired) {
  SftpAccountsDesired d;
  d.loginUser = desired.host.loginUser;
  d.transferGroup = desired.host.transferGroup;
  d.sftpKeysDir = desired.host.authorizedKeysDir;
  d.accounts = desired.document.accounts;
  d.lockedUsernames = desired.document.lockedUsernames;
  return d;
}

Result<SftpAccountsCurrent> observeSftpAccounts(const SftpAccountsDesired& desired, const Ledger& ledger, Host& host) {
  SftpAccountsCurrent current;
  auto owned = ledger.owned(OwnedKind::kUser);
  current.ownedUsers.insert(owned.begin(), owned.end());

  std::set<std::string> names(current.ownedUsers.begin(), current.ownedUsers.end());
  for (const auto& a : desired.accounts) names.insert(a.username);
  names.insert(desired.lockedUsernames.begin(), desired.lockedUsernames.end());

  auto group = host.findGroup(desired.transferGroup);
  if (!group) return group.status();
  if (*group) current.groupGid = (*group)->gid;

  auto passwd = readOptional(host, "/etc/passwd");
  if (!passwd) return passwd.status();
  for (auto& [name, user] : parsePasswd(*passwd)) {
    if (names.count(name)) current.users.emplace(name, user);
  }

  auto shadow = readOptional(host, "/etc/shadow");
  if (!shadow) return shadow.status();
  for (auto& [name, entry] : parseShadow(*shadow)) {
    if (names.count(name)) current.shadow.emplace(name, entry);
  }

  auto dir = host.lstat(desired.sftpKeysDir);
  if (!dir) return dir.status();
  current.keysDir = *dir;
  if (dir->exists()) {
    if (dir->type != FileType::kDirectory) {
      return Status::error(ErrorCode::kUnsafe,
                           "keys directory " + desired.sftpKeysDir + ": not a directory (or a symbolic link)",
                           desired.sftpKeysDir);
    }
    auto list = host.listDirectory(desired.sftpKeysDir);
    if (!list) return list.status();
    for (const auto& name : *list) {
      if (!names.count(name)) continue;
      const std::string path = sftpKeysPath(desired.sftpKeysDir, name);
      auto info = host.lstat(path);
      if (!info) return info.status();
      if (!info->exists()) continue;
      SftpKeysFileState state;
      state.info = *info;
      if (info->type == FileType::kRegular) {
        auto text = host.readFile(path, kMaxKeysFileBytes);
        if (!text) return text.status();
        state.content = *text;
      } else if (info->type == FileType::kSymlink || info->type == FileType::kDirectory) {
        return Status::error(ErrorCode::kUnsafe, "keys file " + path + ": not a regular file", path);
      }
      current.keysFiles.emplace(name, state);
    }
  }
  return current;
}

std::vector<Action> planSftpAccounts(const SftpAccountsDesired& desired, const SftpAccountsCurrent& current,
                                     std::vector<SkippedEntry>* skipped) {
  std::vector<Action> actions;
  std::vector<Action> keyActions;
  std::vector<Action> removals;
  std::set<std::string> managed;  // names whose keys file this provider decides

  auto accounts = desired.accounts;
  std::sort(accounts.begin(), accounts.end(),
            [](const SftpAccount& a, const SftpAccount& b) { return a.username < b.username; });
  std::set<std::string> documentNames;
  for (const auto& account : accounts) {
    const std::string& name = account.username;
    documentNames.insert(name);
    if (name == "root" || name == desired.loginUser) {
      if (skipped) skipped->push_back({account.id, "username " + name + " is reserved"});
      continue;
    }
    const bool exists = current.users.count(name) > 0;
    const bool owned = current.ownedUsers.count(name) > 0;
    if (exists && !owned) {
      if (!carriesSftpSignature(current.users.at(name), current.groupGid)) {
        if (skipped) {
          skipped->push_back({account.id, "user " + name + " exists and was not created by pim-access-agent"});
        }
        continue;
      }
      // The state database lost it (new, rebuilt or restored from elsewhere): the host proves it.
      actions.push_back(makeAction(Verb::kAdopt, name,
                                   std::string("carries the agent's signature: home ") + kSftpHome + ", shell " +
                                       kSftpShell + ", group " + desired.transferGroup,
                                   "not recorded", "recorded as the agent's"));
    }
    managed.insert(name);
    ShadowEntry shadow = freshShadow(name);
    if (!exists) {
      actions.push_back(makeAction(Verb::kCreate, name,
                                   "system account, group " + desired.transferGroup + ", shell " + kSftpShell +
                                       ", home " + kSftpHome + " (in the chroot)",
                                   "absent", account.active ? "account" : "locked account"));
    } else {
      const UserInfo& user = current.users.at(name);
      if (user.shell != kSftpShell) {
        actions.push_back(makeAction(Verb::kSetShell, name, user.shell + " -> " + kSftpShell, user.shell, kSftpShell));
      }
      if (current.groupGid && user.gid != *current.groupGid) {
        actions.push_back(makeAction(Verb::kSetGroup, name,
                                     "gid " + std::to_string(user.gid) + " -> " + desired.transferGroup,
                                     "gid " + std::to_string(user.gid), desired.transferGroup));
      }
      auto it = current.shadow.find(name);
      shadow = it != current.shadow.end() ? it->second : ShadowEntry{name, "", std::nullopt};
    }
    const size_t firstCredential = actions.size();
    planCredentials(account, shadow, actions);
    // A new account is created first: what locks it (inactive) comes after, not with the
    // revocations that run before anything is created.
    if (!exists) {
      for (size_t i = firstCredential; i < actions.size(); ++i) {
        if (actions[i].stage == Stage::kRevoke) actions[i].stage = Stage::kPrepare;
      }
    }
    planKeysFile(desired, current, name, renderSftpKeys(account), distinctKeyCount(account), keyActions);
  }

  std::set<std::string> lockedNames(desired.lockedUsernames.begin(), desired.lockedUsernames.end());
  for (const auto& name : lockedNames) {
    if (documentNames.count(name) || !current.ownedUsers.count(name) || !current.users.count(name)) continue;
    managed.insert(name);
    auto it = current.shadow.find(name);
    if (it == current.shadow.end() || !fullyLocked(it->second)) {
      actions.push_back(
          makeAction(Verb::kLock, name, "entry invalid in the document: account locked", "usable", "locked"));
    }
    planKeysFile(desired, current, name, "", 0, keyActions);
  }

  for (const auto& name : current.ownedUsers) {
    if (documentNames.count(name) || lockedNames.count(name)) continue;
    // The Ledger's "user" kind is shared with login_user: only accounts made as SFTP accounts
    // (home /transfer, which nothing else uses) are removed here, never the login user, a former
    // login user or any other user the agent made.
    if (name == desired.loginUser) continue;
    auto user = current.users.find(name);
    if (user != current.users.end() && user->second.home != kSftpHome) continue;
    managed.insert(name);
    planKeysFile(desired, current, name, "", 0, keyActions);
    if (user != current.users.end()) {
      removals.push_back(
          makeAction(Verb::kRemove, name, "absent from the document: userdel, files kept", "account", "absent"));
    } else {
      removals.push_back(
          makeAction(Verb::kForget, name, "no longer on the host: dropped from the ledger", "recorded", "absent"));
    }
  }

  // The keys directory must satisfy sshd's StrictModes before any file in it is useful, and a
  // directory others can write lets them plant keys.
  const FileInfo& dir = current.keysDir;
  if (dir.exists() && (dir.mode != kSftpKeysDirMode || dir.uid != 0 || dir.gid != 0)) {
    Action fix = makeAction(
        Verb::kFixKeysDir, desired.sftpKeysDir,
        octalMode(dir.mode) + " " + std::to_string(dir.uid) + ":" + std::to_string(dir.gid) + " -> 0755 root:root",
        octalMode(dir.mode), "0755 root:root");
    fix.subject.clear();
    actions.push_back(fix);
  }
  // Keys go after the accounts exist; removed accounts lose their keys before the account goes.
  actions.insert(actions.end(), keyActions.begin(), keyActions.end());
  actions.insert(actions.end(), removals.begin(), removals.end());
  return actions;
}

SftpAccountsProvider::SftpAccountsProvider(Logger log, Ledger& ledger) : ledger_(ledger), log_(std::move(log)) {}

std::vector<Status> SftpAccountsProvider::applyAll(const std::vector<Action>& actions, const Desired& desired,
                                                   Host& host) {
  std::vector<Status> out(actions.size(), Status::ok());
  std::vector<bool> done(actions.size(), false);
  std::set<std::string> failed;
  auto settle = [&](size_t i, Status s) {
    if (!s) failed.insert(actions[i].subject);
    out[i] = std::move(s);
    done[i] = true;
  };
  AccountsTool tool(host);

  // 1. New accounts: recorded as the agent's in one ledger write (intent first), then made by
  //    one run of systemd-sysusers instead of a useradd each (which rewrites and re-reads the
  //    account files every time: 64 ms per account). A single one goes through apply().
  std::vector<size_t> creates;
  for (size_t i = 0; i < actions.size(); ++i) {
    if (actions[i].verb == Verb::kCreate) creates.push_back(i);
  }
  if (creates.size() >= 2) {
    auto passwd = host.readFile("/etc/passwd", kMaxAccountsFileBytes);
    const auto existing = passwd ? parsePasswd(*passwd) : std::map<std::string, UserInfo>{};
    std::vector<size_t> fresh;
    std::vector<std::string> names;
    std::vector<NewUser> users;
    for (size_t i : creates) {
      const std::string& name = actions[i].object;
      if (!passwd) {
        settle(i, passwd.status());
      } else if (existing.count(name)) {
        settle(i, ledger_.owns(OwnedKind::kUser, name)
                      ? Status::ok()
                      : Status::error(ErrorCode::kUnsafe, "create user " + name +
                                                              ": exists and was not created by "
                                                              "pim-access-agent"));
      } else {
        fresh.push_back(i);
        names.push_back(name);
        NewUser user;
        user.name = name;
        user.home = kSftpHome;
        user.shell = kSftpShell;
        user.primaryGroup = desired.host.transferGroup;
        user.system = true;
        users.push_back(std::move(user));
      }
    }
    if (!fresh.empty()) {
      if (Status s = ledger_.recordCreatedAll(OwnedKind::kUser, names); !s) {
        for (size_t i : fresh) settle(i, s);
      } else {
        const std::vector<Status> made = tool.addSystemUsers(users);
        auto after = host.readFile("/etc/passwd", kMaxAccountsFileBytes);
        const auto now = after ? parsePasswd(*after) : std::map<std::string, UserInfo>{};
        for (size_t k = 0; k < fresh.size(); ++k) {
          if (!made[k] && after && !now.count(names[k])) (void)ledger_.recordRemoved(OwnedKind::kUser, names[k]);
          settle(fresh[k], made[k]);
        }
        log_->info("created {} SFTP accounts (locked until their passwords or keys are granted)", fresh.size());
      }
    }
  }

  // 2. Passwords: one chpasswd -e for all of them (each account checked as the agent's first).
  std::vector<size_t> passwords;
  std::vector<std::pair<std::string, std::string>> hashes;
  for (size_t i = 0; i < actions.size(); ++i) {
    if (done[i] || actions[i].verb != Verb::kSetPassword || !mayRun(actions[i], failed)) continue;
    if (!ledger_.owns(OwnedKind::kUser, actions[i].object)) continue;  // apply() refuses it below, by name
    passwords.push_back(i);
    hashes.emplace_back(actions[i].object, actions[i].payload);
  }
  if (passwords.size() >= 2) {
    const std::vector<Status> set = tool.setPasswordHashes(hashes);
    for (size_t k = 0; k < passwords.size(); ++k) {
      if (set[k]) log_->info("{}", actions[passwords[k]].describe());
      settle(passwords[k], set[k]);
    }
  }

  // 3. Keys files: their intents in one ledger write.
  std::vector<std::string> keyFiles;
  for (size_t i = 0; i < actions.size(); ++i) {
    if (!done[i] && actions[i].verb == Verb::kWriteKeys && mayRun(actions[i], failed))
      keyFiles.push_back(actions[i].object);
  }
  if (keyFiles.size() >= 2) {
    if (Status s = ledger_.recordCreatedAll(OwnedKind::kFile, keyFiles); !s) {
      for (size_t i = 0; i < actions.size(); ++i) {
        if (!done[i] && actions[i].verb == Verb::kWriteKeys) settle(i, s);
      }
    }
  }

  // 4. The rest, in order; the removals (last, after the keys they had) as one rewrite of the
  //    account files instead of a userdel each.
  for (size_t i = 0; i < actions.size(); ++i) {
    if (!done[i] && actions[i].verb == Verb::kRemove) removeBatch(actions, i, tool, settle, failed, done);
    if (done[i]) continue;
    if (!mayRun(actions[i], failed)) {
      out[i] = Status::error(ErrorCode::kInternal, kNotAppliedAfterFailure);
      continue;
    }
    settle(i, apply(actions[i], desired, host));
  }
  return out;
}

void SftpAccountsProvider::removeBatch(const std::vector<Action>& actions, size_t first, AccountsTool& tool,
                                       const std::function<void(size_t, Status)>& settle,
                                       const std::set<std::string>& failed, const std::vector<bool>& done) {
  std::vector<size_t> batch;
  std::vector<std::string> names;
  for (size_t i = first; i < actions.size(); ++i) {
    if (done[i] || actions[i].verb != Verb::kRemove || !mayRun(actions[i], failed)) continue;
    if (!ledger_.owns(OwnedKind::kUser, actions[i].object)) continue;  // apply() refuses it, by name
    batch.push_back(i);
    names.push_back(actions[i].object);
  }
  if (batch.size() < 2) return;
  const std::vector<Status> removed = tool.removeUsers(names);
  std::vector<std::string> gone;
  std::vector<size_t> goneIdx;
  for (size_t k = 0; k < batch.size(); ++k) {
    const size_t i = batch[k];
    const Status& r = removed[k];
    if (r) {
      gone.push_back(names[k]);
      goneIdx.push_back(i);
    } else if (r.code() == ErrorCode::kBusy && r.message().find("a process runs as the user") != std::string::npos) {
      // As userdel's exit 8: an open SFTP session; locked now, removed at the next cycle.
      Status l = tool.lockAccount(names[k]);
      if (l) {
        const std::string report = "user " + names[k] + " still runs processes: locked now, removal retried next cycle";
        log_->warn("{}", report);
        reports_.push_back(report);
      }
      settle(i, l);
    } else if (r.code() != ErrorCode::kInvalid) {
      settle(i, r);
    }
    // kInvalid: a name only userdel handles; apply() removes it alone.
  }
  if (gone.empty()) return;
  Status recorded = ledger_.recordRemovedAll(OwnedKind::kUser, gone);
  for (size_t k = 0; k < goneIdx.size(); ++k) {
    if (recorded) log_->info("{}", actions[goneIdx[k]].describe());
    settle(goneIdx[k], recorded);
  }
}

std::vector<Action> SftpAccountsProvider::containActions(const std::string& subject, const Desired& desired,
                                                         Host& host) {
  (void)desired;
  if (subject.empty() || !ledger_.owns(OwnedKind::kUser, subject)) return {};
  auto user = host.findUser(subject);
  if (!user || !user->has_value()) return {};
  AccountsTool tool(host);
  auto shadow = tool.shadow(subject);
  if (shadow && shadow->has_value() && fullyLocked(**shadow)) return {};
  return {makeAction(Verb::kLock, subject, "contained: an earlier step for this account failed", "usable", "locked")};
}

std::string SftpAccountsProvider::name() const { return kProvider; }

Result<std::vector<Action>> SftpAccountsProvider::plan(const Desired& desired, Host& host) {
  reports_.clear();
  const auto d = sftpAccountsDesired(desired);
  return observeAndPlan([&] { return observeSftpAccounts(d, ledger_, host); },
                        [&](const SftpAccountsCurrent& current) { return planSftpAccounts(d, current, &skipped_); },
                        skipped_, log_);
}

Status SftpAccountsProvider::apply(const Action& action, const Desired& desired, Host& host) {
  AccountsTool tool(host);
  const std::string& name = action.object;

  if (action.verb == Verb::kCreate) {
    auto existing = host.findUser(name);
    if (!existing) return existing.status();
    if (*existing) {
      if (ledger_.owns(OwnedKind::kUser, name)) return Status::ok();
      return Status::error(ErrorCode::kUnsafe,
                           "create user " + name + ": exists and was not created by pim-access-agent");
    }
    NewUser user;
    user.name = name;
    user.home = kSftpHome;
    user.createHome = false;
    user.shell = kSftpShell;
    user.primaryGroup = desired.host.transferGroup;
    user.system = true;
    // Intent first: the account is recorded before useradd runs, so that a crash between the two
    // can never leave an account that nobody knows about (the next plan removes or keeps it, or
    // forgets the record when useradd never ran).
    if (Status s = ledger_.recordCreated(OwnedKind::kUser, name); !s) return s;
    if (Status s = tool.addUser(user); !s) {
      auto now = host.findUser(name);
      if (now && !now->has_value()) (void)ledger_.recordRemoved(OwnedKind::kUser, name);
      return s;
    }
    log_->info("created SFTP account {} (locked until its password or keys are granted)", name);
    return Status::ok();
  }

  if (action.verb == Verb::kAdopt) {
    auto existing = host.findUser(name);
    if (!existing) return existing.status();
    if (!existing->has_value()) return Status::error(ErrorCode::kNotFound, "adopt user " + name + ": no such user");
    const UserInfo& u = **existing;
    auto group = host.findGroup(desired.host.transferGroup);
    if (!group) return group.status();
    if (u.home != kSftpHome || u.shell != kSftpShell || !group->has_value() || u.gid != (*group)->gid) {
      return Status::error(ErrorCode::kUnsafe, "adopt user " + name + ": no longer carries the agent's signature");
    }
    if (Status s = ledger_.recordCreated(OwnedKind::kUser, name); !s) return s;
    log_->warn("adopted SFTP account {}: not in the state database, but it carries the agent's signature", name);
    return Status::ok();
  }

  if (action.verb == Verb::kWriteKeys || action.verb == Verb::kRemoveKeys || action.verb == Verb::kFixKeysDir) {
    const std::string& path = action.object;
    if (action.verb == Verb::kFixKeysDir) {
      if (Status s = host.setOwner(path, 0, 0); !s) return s;
      if (Status s = host.setMode(path, kSftpKeysDirMode); !s) return s;
      log_->warn("corrected keys directory {}: {}", path, action.detail);
      return Status::ok();
    }
    if (action.verb == Verb::kWriteKeys) {
      if (Status s = host.makeDirectories(desired.host.authorizedKeysDir, {kSftpKeysDirMode, 0, 0}); !s) return s;
      // (Recorded first when applyAll() wrote the intents of a batch: one write for all.)
      if (!ledger_.owns(OwnedKind::kFile, path)) {
        if (Status s = ledger_.recordCreated(OwnedKind::kFile, path); !s) return s;
      }
      if (Status s = host.writeFileAtomic(path, action.payload, {kSftpKeysFileMode, 0, 0}); !s) return s;
      log_->info("wrote {} ({})", path, action.detail);
      return Status::ok();
    }
    if (Status s = host.removeFile(path); !s) return s;
    if (Status s = ledger_.recordRemoved(OwnedKind::kFile, path); !s) return s;
    log_->info("removed {}", path);
    return Status::ok();
  }

  if (action.verb == Verb::kForget) {
    auto existing = host.findUser(name);
    if (!existing) return existing.status();
    if (*existing) return Status::error(ErrorCode::kInternal, "forget user " + name + ": the user exists again");
    log_->warn("user {} was removed outside the agent; dropped from the ledger", name);
    return ledger_.recordRemoved(OwnedKind::kUser, name);
  }

  // Everything below changes an existing account: only ever one the agent created.
  if (!ledger_.owns(OwnedKind::kUser, name)) {
    return Status::error(ErrorCode::kUnsafe, std::string(verbName(action.verb)) + " user " + name +
                                                 ": refused, the account was not created by pim-access-agent");
  }
  Status s;
  if (action.verb == Verb::kSetShell) {
    s = tool.setShell(name, kSftpShell);
  } else if (action.verb == Verb::kSetGroup) {
    s = tool.setPrimaryGroup(name, desired.host.transferGroup);
  } else if (action.verb == Verb::kSetPassword) {
    s = tool.setPasswordHash(name, action.payload);
  } else if (action.verb == Verb::kLockPassword) {
    s = tool.lockPassword(name);
  } else if (action.verb == Verb::kLock) {
    s = tool.lockAccount(name);
  } else if (action.verb == Verb::kUnlock) {
    s = tool.unlockAccount(name, action.payload.empty() ? std::nullopt : std::optional<std::string>(action.payload));
  } else if (action.verb == Verb::kRemove) {
    s = tool.removeUser(name);
    if (!s && s.message().find(": exit 8") != std::string::npos) {
      // userdel refuses while the user runs processes (an open SFTP session): keep the account
      // locked so nothing new gets in, and remove it at the next cycle.
      if (Status l = tool.lockAccount(name); !l) return l;
      const std::string report = "user " + name + " still runs processes: locked now, removal retried next cycle";
      log_->warn("{}", report);
      reports_.push_back(report);
      return Status::ok();
    }
    if (s) s = ledger_.recordRemoved(OwnedKind::kUser, name);
  } else {
    return Status::error(ErrorCode::kInternal, "sftp_accounts: unknown action " + std::string(verbName(action.verb)));
  }
  if (!s) return s;
  log_->info("{}", action.describe());
  return Status::ok();
}

}  // namespace pim
