#include "providers/host/accounts_tool.h"

#include <cstdlib>
#include <map>
#include <set>
#include <sstream>
#include "providers/core/text_fields.h"

namespace pim {
namespace {

constexpr size_t kMaxShadowBytes = 64u << 20;

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

// A name goes into argv (no shell) and, for chpasswd, into a "name:hash" line: refuse anything
// that could split that line or be taken for an option.
Status checkName(const std::string& what, const std::string& name) {
  if (name.empty() || name[0] == '-' || name.find_first_of(":\n\r,") != std::string::npos) {
    return Status::error(ErrorCode::kInvalid, what + " name '" + name + "' is not usable");
  }
  return Status::ok();
}

}  // namespace

std::optional<ShadowEntry> parseShadowEntry(const std::string& shadowText, const std::string& user) {
  std::stringstream ss(shadowText);
  std::string line;
  while (std::getline(ss, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    auto f = splitFields(line, ':');
    if (f.size() < 2 || f[0] != user) continue;
    ShadowEntry e;
    e.name = f[0];
    e.password = f[1];
    if (f.size() > 7 && !f[7].empty()) {
      char* end = nullptr;
      long long v = std::strtoll(f[7].c_str(), &end, 10);
      if (end != nullptr && *end == '\0') e.expireDays = v;
    }
    return e;
  }
  return std::nullopt;
}

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
  std::set<int64_t> used;
  std::map<std::string, std::string> groups;  // name -> gid
  for (const char* file : {"/etc/passwd", "/etc/group"}) {
    auto text = host_.readFile(file, kMaxShadowBytes);
    if (!text) return failAll(text.status());
    std::stringstream ss(*text);
    for (std::string line; std::getline(ss, line);) {
      auto f = splitFields(line, ':');
      if (f.size() < 3) continue;
      if (std::string(file) == "/etc/group") {
        groups[f[0]] = f[2];
      } else {
        used.insert(std::strtoll(f[2].c_str(), nullptr, 10));
      }
    }
  }
  std::string config;
  int64_t next = high;
  for (const NewUser& u : users) {
    if (!groups.count(u.primaryGroup)) {
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
  std::map<std::string, std::vector<std::string>> made;
  std::stringstream ss(*passwd);
  for (std::string line; std::getline(ss, line);) {
    auto f = splitFields(line, ':');
    if (f.size() >= 7) made[f[0]] = f;
  }
  std::vector<std::pair<std::string, std::string>> locked;
  for (size_t i = 0; i < users.size(); ++i) {
    const NewUser& u = users[i];
    auto it = made.find(u.name);
    if (it == made.end() || it->second[3] != groups[u.primaryGroup] || it->second[5] != u.home ||
        it->second[6] != u.shell) {
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

Result<std::optional<ShadowEntry>> AccountsTool::shadow(const std::string& user) {
  auto text = host_.readFile("/etc/shadow", kMaxShadowBytes);
  if (!text) return text.status();
  return parseShadowEntry(*text, user);
}

}  // namespace pim
