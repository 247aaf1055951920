#include "providers/host/accounts_tool.h"

#include <cstdlib>
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
