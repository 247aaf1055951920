#include "providers/host/accounts_tool.h"
#include "providers/host/account_files.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>
#include "providers/core/text_fields.h"

namespace pim {
namespace {

constexpr size_t kMaxShadowBytes = 64u << 20;

// A name goes into argv (no shell) and, for chpasswd, into a "name:hash" line: refuse anything
// that could split that line or be taken for an option.
Status checkName(const std::string& what, const std::string& name) {
  if (name.empty() || name[0] == '-' || name.find_first_of(":\n\r,") != std::string::npos) {
    return Status::error(ErrorCode::kInvalid, what + " name '" + name + "' is not usable");
  }
  return Status::ok();
}

}  // namespace

AccountsTool::AccountsTool(Host& host) : host_(host) {}

Status AccountsTool::runTool(const std::string& tool, const std::vector<std::string>& args, const std::string& input) {
  std::vector<std::string> argv{"/usr/sbin/" + tool};
  if (!host_.root().empty()) {
    // chpasswd (shadow 4.13) has no --prefix; --root chroots into the sandbox, which works
    // because with -e it neither uses PAM nor loads anything from the root after chroot.
    argv.push_back(tool == "chpasswd" ? "--root" : "--prefix");
    argv.push_back(host_.root());
  }
  argv.insert(argv.end(), args.begin(), args.end());
  std::string shown = tool;
  for (const auto& a : args) shown += " " + (a.empty() ? std::string("''") : a);
  auto r = host_.run(argv, input);
  if (!r) {
    return Status::error(ErrorCode::kCommand, shown + ": " + r.status().message());
  }
  if (r->exitCode != 0) {
    std::string err = trimmed(r->err);
    if (err.empty()) err = trimmed(r->out);
    return Status::error(ErrorCode::kCommand,
                         shown + ": exit " + std::to_string(r->exitCode) + (err.empty() ? "" : ": " + err));
  }
  return Status::ok();
}

Status AccountsTool::addGroup(const std::string& name, bool system) {
  if (Status s = checkName("group", name); !s) return s;
  std::vector<std::string> args;
  if (system) args.push_back("--system");
  args.push_back(name);
  return runTool("groupadd", args);
}

Status AccountsTool::removeGroup(const std::string& name) {
  if (Status s = checkName("group", name); !s) return s;
  return runTool("groupdel", {name});
}

Status AccountsTool::addUser(const NewUser& user) {
  if (Status s = checkName("user", user.name); !s) return s;
  std::vector<std::string> args;
  if (user.system) args.push_back("--system");
  if (!user.home.empty()) {
    args.push_back("--home-dir");
    args.push_back(user.home);
  }
  args.push_back(user.createHome ? "--create-home" : "--no-create-home");
  if (!user.shell.empty()) {
    args.push_back("--shell");
    args.push_back(user.shell);
  }
  if (user.primaryGroup.empty()) {
    args.push_back("--user-group");
  } else {
    if (Status s = checkName("group", user.primaryGroup); !s) return s;
    args.push_back("--no-user-group");
    args.push_back("--gid");
    args.push_back(user.primaryGroup);
  }
  if (!user.supplementaryGroups.empty()) {
    std::string groups;
    for (const auto& g : user.supplementaryGroups) {
      if (Status s = checkName("group", g); !s) return s;
      groups += (groups.empty() ? "" : ",") + g;
    }
    args.push_back("--groups");
    args.push_back(groups);
  }
  args.push_back(user.name);
  return runTool("useradd", args);
}

Status AccountsTool::addToGroup(const std::string& user, const std::string& group) {
  if (Status s = checkName("user", user); !s) return s;
  if (Status s = checkName("group", group); !s) return s;
  return runTool("usermod", {"--append", "--groups", group, user});
}

Status AccountsTool::setPrimaryGroup(const std::string& user, const std::string& group) {
  if (Status s = checkName("user", user); !s) return s;
  if (Status s = checkName("group", group); !s) return s;
  return runTool("usermod", {"--gid", group, user});
}

Status AccountsTool::setShell(const std::string& user, const std::string& shell) {
  if (Status s = checkName("user", user); !s) return s;
  return runTool("usermod", {"--shell", shell, user});
}

Status AccountsTool::setPasswordHash(const std::string& user, const std::string& hash) {
  if (Status s = checkName("user", user); !s) return s;
  if (hash.empty() || hash.find_first_of(":\n\r") != std::string::npos) {
    return Status::error(ErrorCode::kInvalid, "set password of " + user + ": the hash is not usable");
  }
  // The hash goes on standard input: argv is readable by every local user in /proc.
  return runTool("chpasswd", {"--encrypted"}, user + ":" + hash + "\n");
}

namespace {

/// login.defs' value of `key` (an integer), or `fallback`.
int64_t loginDefsInt(const std::string& text, const std::string& key, int64_t fallback) {
  std::stringstream ss(text);
  for (std::string line; std::getline(ss, line);) {
    std::stringstream words(line);
    std::string name;
    int64_t value = 0;
    if (words >> name && name == key && words >> value) return value;
  }
  return fallback;
}

}  // namespace

std::vector<Status> AccountsTool::addSystemUsers(const std::vector<NewUser>& users) {
  std::vector<Status> out(users.size(), Status::ok());
  auto failAll = [&](const Status& s) {
    for (auto& o : out) o = s;
    return out;
  };
  if (users.empty()) return out;
  for (size_t i = 0; i < users.size(); ++i) {
    const NewUser& u = users[i];
    if (Status s = checkName("user", u.name); !s) return failAll(s);
    if (Status s = checkName("group", u.primaryGroup); !s) return failAll(s);
    if (!u.system || u.createHome || !u.supplementaryGroups.empty() || u.home.empty() || u.shell.empty() ||
        u.home.find_first_of(" \t\n\"") != std::string::npos || u.shell.find_first_of(" \t\n\"") != std::string::npos) {
      return failAll(Status::error(ErrorCode::kInvalid, "create " + u.name + ": not a batch of plain system accounts"));
    }
  }
  // UIDs: the system range of login.defs, highest first, skipping every UID in use: the UID
  // `useradd --system --gid G` would pick, so that a batch and one useradd per account (the
  // path taken when a failpoint is armed) leave the same account files.
  auto defs = host_.readFile("/etc/login.defs", kMaxShadowBytes);
  const std::string defsText = defs ? *defs : std::string();
  const int64_t low = loginDefsInt(defsText, "SYS_UID_MIN", 100);
  const int64_t high = loginDefsInt(defsText, "SYS_UID_MAX", 999);
  auto passwdText = host_.readFile("/etc/passwd", kMaxShadowBytes);
  if (!passwdText) return failAll(passwdText.status());
  auto groupText = host_.readFile("/etc/group", kMaxShadowBytes);
  if (!groupText) return failAll(groupText.status());
  std::set<int64_t> used;
  for (const auto& entry : parsePasswd(*passwdText)) used.insert(entry.second.uid);
  const auto groups = parseGroup(*groupText);
  std::string config;
  int64_t next = high;
  for (const NewUser& u : users) {
    if (groups.count(u.primaryGroup) == 0) {
      return failAll(
          Status::error(ErrorCode::kCommand, "create " + u.name + ": group " + u.primaryGroup + " does not exist"));
    }
    while (next >= low && used.count(next)) --next;
    if (next < low) {
      return failAll(Status::error(ErrorCode::kCommand, "create " + u.name + ": no free system UID in " +
                                                            std::to_string(low) + ".." + std::to_string(high) +
                                                            " (login.defs SYS_UID_MIN/SYS_UID_MAX)"));
    }
    used.insert(next);
    config += "u " + u.name + " " + std::to_string(next) + ":" + u.primaryGroup + " - " + u.home + " " + u.shell + "\n";
  }
  std::vector<std::string> argv{"/usr/bin/systemd-sysusers"};
  if (!host_.root().empty()) argv.push_back("--root=" + host_.root());
  argv.push_back("-");
  auto r = host_.run(argv, config);
  const std::string why = !r                 ? r.status().message()
                          : r->exitCode != 0 ? "exit " + std::to_string(r->exitCode) + ": " + trimmed(r->err)
                                             : "";
  // Whatever it said, what counts is what the account files hold now.
  auto passwd = host_.readFile("/etc/passwd", kMaxShadowBytes);
  if (!passwd) return failAll(passwd.status());
  const auto made = parsePasswd(*passwd);
  std::vector<std::pair<std::string, std::string>> locked;
  for (size_t i = 0; i < users.size(); ++i) {
    const NewUser& u = users[i];
    auto it = made.find(u.name);
    if (it == made.end() || it->second.gid != groups.at(u.primaryGroup).gid || it->second.home != u.home ||
        it->second.shell != u.shell) {
      out[i] = Status::error(ErrorCode::kCommand, "create " + u.name + " (systemd-sysusers): " +
                                                      (why.empty() ? "not in /etc/passwd as asked" : why));
    } else {
      locked.emplace_back(u.name, "!");
    }
  }
  // systemd-sysusers stores "!*", useradd "!": both refuse every password; "!" keeps the
  // shadow entry the same whichever way the account was made. Should that fail, "!*" stays,
  // which is just as locked.
  (void)setPasswordHashes(locked);
  return out;
}

std::vector<Status> AccountsTool::setPasswordHashes(const std::vector<std::pair<std::string, std::string>>& entries) {
  std::vector<Status> out(entries.size(), Status::ok());
  std::string input;
  bool usable = true;
  for (const auto& [user, hash] : entries) {
    usable =
        usable && checkName("user", user).isOk() && !hash.empty() && hash.find_first_of(":\n\r") == std::string::npos;
    input += user + ":" + hash + "\n";
  }
  if (entries.empty()) return out;
  if (usable && entries.size() > 1 && runTool("chpasswd", {"--encrypted"}, input).isOk()) return out;
  // One at a time: an entry that fails is named, and the others are stored.
  for (size_t i = 0; i < entries.size(); ++i) out[i] = setPasswordHash(entries[i].first, entries[i].second);
  return out;
}

Status AccountsTool::lockPassword(const std::string& user) {
  if (Status s = checkName("user", user); !s) return s;
  return runTool("usermod", {"--lock", user});
}

Status AccountsTool::lockAccount(const std::string& user) {
  if (Status s = checkName("user", user); !s) return s;
  // Expiry day 1 (1970-01-02): pam_unix's account stage refuses the account, which stops key
  // logins too; the locked password stops password logins even without PAM.
  return runTool("usermod", {"--lock", "--expiredate", "1", user});
}

Status AccountsTool::unlockAccount(const std::string& user, const std::optional<std::string>& hash) {
  if (Status s = checkName("user", user); !s) return s;
  if (Status s = runTool("usermod", {"--expiredate", "", user}); !s) return s;
  // usermod -U is not used: it refuses to unlock "!" alone, and a fresh hash replaces the
  // locked one anyway.
  if (hash) return setPasswordHash(user, *hash);
  return lockPassword(user);
}

Status AccountsTool::removeUser(const std::string& user) {
  if (Status s = checkName("user", user); !s) return s;
  return runTool("userdel", {user});
}

namespace {

// The locks the shadow tools take before they rewrite the account files: an fcntl lock on
// /etc/.pwd.lock (lckpwdf(3); systemd-sysusers takes the same) and, for each file, FILE.lock
// holding the owner's pid (shadow's commonio; a lock whose process is gone is stale). Released,
// in reverse, on destruction. Waits up to 15 s, as lckpwdf does.
class AccountFilesLock {
 public:
  AccountFilesLock(Host& host, std::vector<std::string> files) : host_(host), files_(std::move(files)) {}
  ~AccountFilesLock() {
    for (auto it = held_.rbegin(); it != held_.rend(); ++it) ::unlink(it->c_str());
    if (fd_ >= 0) ::close(fd_);
  }
  AccountFilesLock(const AccountFilesLock&) = delete;
  AccountFilesLock& operator=(const AccountFilesLock&) = delete;

  Status take() {
    const std::string pwdLock = host_.realPath("/etc/.pwd.lock");
    fd_ = ::open(pwdLock.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd_ < 0) return Status::error(ErrorCode::kIo, "lock " + pwdLock + ": " + std::strerror(errno), pwdLock);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    while (::fcntl(fd_, F_SETLK, &fl) != 0) {
      if ((errno != EACCES && errno != EAGAIN) || std::chrono::steady_clock::now() > deadline) {
        return Status::error(ErrorCode::kBusy, "lock " + pwdLock + ": " + std::strerror(errno), pwdLock);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    for (const auto& f : files_) {
      if (Status s = lockFile(host_.realPath(f) + ".lock", deadline); !s) return s;
    }
    return Status::ok();
  }

 private:
  Status lockFile(const std::string& lock, std::chrono::steady_clock::time_point deadline) {
    const std::string pid = std::to_string(::getpid());
    for (;;) {
      int fd = ::open(lock.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
      if (fd >= 0) {
        const bool written = ::write(fd, pid.data(), pid.size()) == ssize_t(pid.size());
        ::close(fd);
        held_.push_back(lock);
        if (!written) return Status::error(ErrorCode::kIo, "write " + lock, lock);
        return Status::ok();
      }
      if (errno != EEXIST) return Status::error(ErrorCode::kIo, "lock " + lock + ": " + std::strerror(errno), lock);
      // Held: by a live process (wait), or stale (its process is gone: removed, as shadow does).
      std::string owner;
      if (int in = ::open(lock.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW); in >= 0) {
        char buf[32] = {};
        const ssize_t n = ::read(in, buf, sizeof buf - 1);
        ::close(in);
        if (n > 0) owner.assign(buf, size_t(n));
      }
      const long holder = std::atol(owner.c_str());
      if (holder > 0 && ::kill(pid_t(holder), 0) != 0 && errno == ESRCH) {
        ::unlink(lock.c_str());
        continue;
      }
      if (std::chrono::steady_clock::now() > deadline) {
        return Status::error(ErrorCode::kBusy, lock + " is held by process " + trimmed(owner), lock);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

  Host& host_;
  std::vector<std::string> files_;
  int fd_ = -1;
  std::vector<std::string> held_;
};

// Whether a process runs as `uid` (any of its real, effective, saved or file-system uids), as
// userdel checks before it removes a user (/proc/PID/status, "Uid:").
bool uidBusy(Host& host, const std::set<int64_t>& uids, std::set<int64_t>& busy) {
  auto pids = host.listDirectory("/proc");
  if (!pids) return false;
  for (const auto& pid : *pids) {
    if (pid.empty() || pid.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in("/proc/" + pid + "/status");
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("Uid:", 0) != 0) continue;
      std::istringstream fields(line.substr(4));
      int64_t id = 0;
      while (fields >> id) {
        if (uids.count(id)) busy.insert(id);
      }
      break;
    }
  }
  return !busy.empty();
}

// `text` (group(5) or gshadow(5)) without `names` in the comma-separated lists of fields
// `listFields`; lines that do not name them are kept byte for byte.
std::string withoutMembers(const std::string& text, const std::set<std::string>& names,
                           const std::vector<size_t>& listFields) {
  std::string out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    auto fields = splitFields(line, ':');
    bool changed = false;
    for (size_t f : listFields) {
      if (f >= fields.size() || fields[f].empty()) continue;
      std::string kept;
      for (const auto& m : splitFields(fields[f], ',')) {
        if (names.count(m)) {
          changed = true;
          continue;
        }
        kept += (kept.empty() ? "" : ",") + m;
      }
      fields[f] = kept;
    }
    if (changed) {
      line.clear();
      for (size_t i = 0; i < fields.size(); ++i) line += (i ? ":" : "") + fields[i];
    }
    out += line + "\n";
  }
  return out;
}

// `text` (passwd(5) or shadow(5)) without the lines of `names`.
std::string withoutUsers(const std::string& text, const std::set<std::string>& names) {
  std::string out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    const std::string name = line.substr(0, line.find(':'));
    if (line.find(':') != std::string::npos && names.count(name)) continue;
    out += line + "\n";
  }
  return out;
}

}  // namespace

std::vector<Status> AccountsTool::removeUsers(const std::vector<std::string>& names) {
  std::vector<Status> out(names.size(), Status::ok());
  auto failAll = [&](const Status& s) {
    for (auto& o : out) {
      if (o) o = s;
    }
    return out;
  };
  if (names.empty()) return out;
  const std::vector<std::string> files = {"/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow"};
  AccountFilesLock lock(host_, files);
  if (Status s = lock.take(); !s) return failAll(s);
  std::map<std::string, std::string> text;
  auto exists = [&](const std::string& f) {
    auto st = host_.lstat(f);
    return st && st->type != FileType::kNone;
  };
  for (const auto& f : files) {
    if (f == "/etc/gshadow" && !exists(f)) continue;  // optional, as for the shadow tools
    auto t = host_.readFile(f, kMaxShadowBytes);
    if (!t) return failAll(t.status());
    text[f] = *t;
  }
  std::string subIds;
  for (const char* f : {"/etc/subuid", "/etc/subgid"}) {
    if (!exists(f)) continue;
    auto t = host_.readFile(f, kMaxShadowBytes);
    if (!t) return failAll(t.status());
    subIds += "\n" + *t;
  }
  const auto users = parsePasswd(text["/etc/passwd"]);
  const auto groups = parseGroup(text["/etc/group"]);
  std::set<std::string> removing;
  std::map<int64_t, std::vector<size_t>> byUid;
  for (size_t i = 0; i < names.size(); ++i) {
    const std::string& name = names[i];
    auto u = users.find(name);
    if (Status s = checkName("user", name); !s) {
      out[i] = s;
    } else if (u == users.end()) {
      out[i] = Status::error(ErrorCode::kNotFound, "remove user " + name + ": not in /etc/passwd");
    } else if (groups.count(name) || subIds.find("\n" + name + ":") != std::string::npos) {
      out[i] = Status::error(ErrorCode::kInvalid, "remove user " + name + ": has its own group or subordinate ids");
    } else {
      byUid[u->second.uid].push_back(i);
    }
  }
  if (host_.root().empty() && !byUid.empty()) {
    std::set<int64_t> uids, busy;
    for (const auto& [uid, idx] : byUid) uids.insert(uid);
    if (uidBusy(host_, uids, busy)) {
      for (int64_t uid : busy) {
        for (size_t i : byUid[uid]) {
          out[i] = Status::error(ErrorCode::kBusy, "remove user " + names[i] + ": a process runs as the user");
        }
        byUid.erase(uid);
      }
    }
  }
  for (const auto& [uid, idx] : byUid) {
    for (size_t i : idx) removing.insert(names[i]);
  }
  if (removing.empty()) return out;
  // Shadow first: a crash part-way leaves an account without its password, never one more.
  for (const auto& f : {"/etc/shadow", "/etc/gshadow", "/etc/group", "/etc/passwd"}) {
    auto it = text.find(f);
    if (it == text.end()) continue;
    const std::string next = std::string(f) == "/etc/gshadow" ? withoutMembers(it->second, removing, {2, 3})
                             : std::string(f) == "/etc/group" ? withoutMembers(it->second, removing, {3})
                                                              : withoutUsers(it->second, removing);
    if (next == it->second) continue;
    auto st = host_.lstat(f);
    if (!st) return failAll(st.status());
    if (Status s = host_.writeFileAtomic(f, next, Ownership{st->mode & 07777, st->uid, st->gid}); !s) {
      return failAll(s);
    }
  }
  // Name-service caches, as the shadow tools flush them.
  if (host_.root().empty() && ::access("/usr/sbin/nscd", X_OK) == 0) {
    (void)host_.run({"/usr/sbin/nscd", "-i", "passwd"});
    (void)host_.run({"/usr/sbin/nscd", "-i", "group"});
  }
  return out;
}

Result<std::optional<ShadowEntry>> AccountsTool::shadow(const std::string& user) {
  auto text = host_.readFile("/etc/shadow", kMaxShadowBytes);
  if (!text) return text.status();
  return parseShadowEntry(*text, user);
}

}  // namespace pim
