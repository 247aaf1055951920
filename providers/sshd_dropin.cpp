#include "providers/sshd_dropin.h"
#include "providers/core/text_fields.h"

#include <fnmatch.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "providers/host/scratch_dir.h"
#include "providers/sftp_accounts.h"

namespace pim {
namespace {

constexpr const char* kSshKeygen = "/usr/bin/ssh-keygen";
constexpr const char* kSshDir = "/etc/ssh";  // sshd resolves relative Include paths here
constexpr size_t kMaxConfigBytes = 16 * 1024 * 1024;
constexpr mode_t kDropinMode = 0644;
constexpr const char* kPrivsepMissing = "Missing privilege separation directory: ";
constexpr const char* kHeader = "# Managed by pim-access-agent";
constexpr int kMaxIncludeDepth = 16;
constexpr size_t kMaxMismatchesShown = 5;
// After the reload command returns, sshd may not have handled its SIGHUP yet: the old listener
// would still answer. A short pause first makes that unlikely (sshd re-executes within
// milliseconds of the signal).
constexpr std::chrono::milliseconds kSettleAfterReload{100};
constexpr std::chrono::milliseconds kRetryPause{50};

std::string joinComma(const std::vector<std::string>& items, const std::string& prefix = {}) {
  std::string out;
  for (const auto& s : items) {
    if (!out.empty()) out += ',';
    out += prefix + s;
  }
  return out;
}

std::string stripTrailingSlashes(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

std::string dirName(const std::string& p) {
  auto pos = p.rfind('/');
  if (pos == std::string::npos) return ".";
  if (pos == 0) return "/";
  return p.substr(0, pos);
}

std::string baseName(const std::string& p) {
  auto pos = p.rfind('/');
  return pos == std::string::npos ? p : p.substr(pos + 1);
}

bool hasGlob(const std::string& s) { return s.find_first_of("*?[") != std::string::npos; }

bool validName(const std::string& n) {
  if (n.empty() || n.size() > 64 || n[0] == '-' || n[0] == '.') return false;
  for (unsigned char c : n) {
    if (!(std::isalnum(c) || c == '_' || c == '-' || c == '.')) return false;
  }
  return true;
}

bool validPath(const std::string& p) {
  if (p.empty() || p[0] != '/') return false;
  for (unsigned char c : p) {
    if (c < 0x21 || c == 0x7f || c == '"' || c == '\'' || c == '%' || c == '#' || c == '\\') {
      return false;
    }
  }
  return true;
}

/// Runs `argv` (sshd -t or -T): they need sshd's privilege separation directory, which systemd
/// creates at service start; on a host (or container) where sshd never ran, it is created as the
/// service would, and sshd run again.
Result<CommandResult> runSshdCheck(Host& host, const std::vector<std::string>& argv, spdlog::logger* log) {
  for (int attempt = 0;; ++attempt) {
    auto r = host.run(argv);
    if (!r || r->exitCode == 0 || attempt > 0) return r;
    auto pos = r->err.find(kPrivsepMissing);
    if (pos == std::string::npos) return r;
    std::string privsep = trimmed(r->err.substr(pos + std::strlen(kPrivsepMissing)));
    privsep = privsep.substr(0, privsep.find('\n'));
    if (!validPath(privsep) || ::mkdir(privsep.c_str(), 0755) != 0 || ::chmod(privsep.c_str(), 0755) != 0) return r;
    if (log != nullptr) log->info("created sshd's privilege separation directory {}", privsep);
  }
}

bool validCidr(const std::string& c) {
  if (c.empty() || std::count(c.begin(), c.end(), '/') != 1) return false;
  for (unsigned char ch : c) {
    if (!(std::isxdigit(ch) || ch == '.' || ch == ':' || ch == '/')) return false;
  }
  return c.front() != '/' && c.back() != '/';
}

std::string plural(size_t n, const std::string& one, const std::string& many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

// Every method off: what a user the drop-in refuses gets, besides DenyUsers.
void renderDenyAll(std::ostringstream& out, const std::vector<std::string>& users) {
  out << "Match User " << joinComma(users) << "\n"
      << "\tDenyUsers *\n"
      << "\tPubkeyAuthentication no\n"
      << "\tPasswordAuthentication no\n"
      << "\tKbdInteractiveAuthentication no\n"
      << "\tHostbasedAuthentication no\n"
      << "\tGSSAPIAuthentication no\n"
      << "\tPermitTTY no\n"
      << "\tDisableForwarding yes\n";
}

// The settings every key-only login shares with nothing else: no password, no keyboard
// interaction (PAM), no host-based or GSSAPI trust.
void renderLoginBlock(std::ostringstream& out, const DropinInput& in) {
  out << "\n# The login user: public key only, keys from the agent's root-owned file (never\n"
      << "# ~/.ssh/authorized_keys); agent forwarding stays allowed for ssh -A hops between instances.\n"
      << "Match User " << in.loginUser << "\n"
      << "\tAuthorizedKeysFile " << in.authorizedKeysDir << "/%u\n"
      << "\tAuthenticationMethods publickey\n"
      << "\tPubkeyAuthentication yes\n"
      << "\tPasswordAuthentication no\n"
      << "\tKbdInteractiveAuthentication no\n"
      << "\tHostbasedAuthentication no\n"
      << "\tGSSAPIAuthentication no\n"
      << "\tKerberosAuthentication no\n"
      << "\tPermitEmptyPasswords no\n"
      << "\tAllowAgentForwarding yes\n";
}

// The order of the credential blocks: password or key (0), password only (1), key only (2).
int sftpCredentialOrder(const SftpUserEntry& u) { return u.hasPassword && u.hasKeys ? 0 : u.hasPassword ? 1 : 2; }

void renderSftpBlock(std::ostringstream& out, const DropinInput& in, const std::vector<std::string>& users,
                     bool password, bool keys, SftpAccess access) {
  const char* methods = password && keys ? "publickey password" : password ? "password" : "publickey";
  std::string what = password && keys ? "password or key" : password ? "password only" : "key only";
  if (access == SftpAccess::kReadOnly) what += ", read-only: no write, rename, remove or mkdir";
  if (access == SftpAccess::kUploadOnly) what += ", upload-only: no read, list, rename or remove";
  out << "\n# SFTP accounts (" << what << "): internal-sftp only, chrooted, no shell, no forwarding.\n"
      << "Match User " << joinComma(users) << "\n"
      << "\tChrootDirectory " << in.chrootBase << "/%u\n"
      << "\tForceCommand " << sftpForceCommand(access) << "\n"
      << "\tAuthorizedKeysFile " << in.authorizedKeysDir << "/%u\n"
      << "\tAuthenticationMethods " << methods << "\n"
      << "\tPubkeyAuthentication " << (keys ? "yes" : "no") << "\n"
      << "\tPasswordAuthentication " << (password ? "yes" : "no") << "\n"
      << "\tKbdInteractiveAuthentication no\n"
      << "\tHostbasedAuthentication no\n"
      << "\tGSSAPIAuthentication no\n"
      << "\tKerberosAuthentication no\n"
      << "\tPermitEmptyPasswords no\n"
      << "\tPermitTTY no\n"
      << "\tAllowTcpForwarding no\n"
      << "\tAllowAgentForwarding no\n"
      << "\tAllowStreamLocalForwarding no\n"
      << "\tX11Forwarding no\n"
      << "\tPermitTunnel no\n"
      << "\tDisableForwarding yes\n"
      << "\tPermitUserRC no\n";
}

// Splits the argument part of a config line the way sshd does for simple cases: white space
// separates, double quotes group.
std::vector<std::string> splitArgs(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  bool inQuote = false, have = false;
  for (char c : s) {
    if (c == '"') {
      inQuote = !inQuote;
      have = true;
    } else if (!inQuote && (c == ' ' || c == '\t')) {
      if (have) out.push_back(cur);
      cur.clear();
      have = false;
    } else {
      cur += c;
      have = true;
    }
  }
  if (have) out.push_back(cur);
  return out;
}

std::string quoteIfNeeded(const std::string& s) {
  return s.find_first_of(" \t") == std::string::npos ? s : "\"" + s + "\"";
}

// A bare program name ("systemctl") is looked up here: Host::run() executes a path, not a name.
std::string resolveProgram(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  for (const char* dir : {"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"}) {
    std::string p = std::string(dir) + "/" + name;
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return {};
}

/// A config line split into its keyword and the rest ("Include=a b" too); keyword "" for blank
/// lines and comments.
std::pair<std::string, std::string> splitKeyword(const std::string& line) {
  const std::string t = trimmed(line);
  if (t.empty() || t[0] == '#') return {};
  size_t kwEnd = t.find_first_of(" \t=");
  if (kwEnd == std::string::npos) return {t, ""};
  std::string rest = t.substr(kwEnd);
  size_t b = rest.find_first_not_of(" \t");
  if (b != std::string::npos && rest[b] == '=') rest = rest.substr(b + 1);
  return {t.substr(0, kwEnd), trimmed(rest)};
}

/// What one argument of a main-config Include stands for in the validation copy.
struct IncludeTarget {
  std::string path;  // a real path, or a real-path pattern sshd expands itself
  bool candidate = false;
};

/// The files one argument of a main-config Include stands for in the validation copy: a pattern
/// that matches neither the drop-in nor an omitted file stays a pattern (sshd expands it); one
/// that does is expanded here, the drop-in replaced by the candidate (inserted when it does not
/// exist yet) and omitted files left out.
Result<std::vector<IncludeTarget>> expandIncludeArg(std::string arg, const std::string& dropinPath,
                                                    const std::string& candidatePath, Host& host,
                                                    const std::vector<std::string>& omit, bool* includesDropin) {
  if (arg == candidatePath) return std::vector<IncludeTarget>{{candidatePath, true}};
  const std::string& root = host.root();
  if (arg[0] != '/') arg = std::string(kSshDir) + "/" + arg;
  // A sandbox main config may name real (root-prefixed) paths or host paths.
  std::string hostPattern = arg;
  if (!root.empty() && arg.compare(0, root.size() + 1, root + "/") == 0) hostPattern = arg.substr(root.size());
  const bool matchesDropin = ::fnmatch(hostPattern.c_str(), dropinPath.c_str(), FNM_PATHNAME | FNM_PERIOD) == 0;
  const bool matchesOmitted = std::any_of(omit.begin(), omit.end(), [&](const std::string& o) {
    return ::fnmatch(hostPattern.c_str(), o.c_str(), FNM_PATHNAME | FNM_PERIOD) == 0;
  });
  if (!matchesDropin && !matchesOmitted) return std::vector<IncludeTarget>{{host.realPath(hostPattern), false}};
  if (matchesDropin && includesDropin) *includesDropin = true;
  const std::string dir = dirName(hostPattern);
  const std::string pattern = baseName(hostPattern);
  if (hasGlob(dir)) {
    return Status::error(ErrorCode::kInvalid,
                         "sshd main config: Include " + arg +
                             " has wildcards in its directory part; cannot validate the drop-in against it");
  }
  std::vector<std::string> names;
  auto listed = host.listDirectory(dir);
  if (listed) {
    names = *listed;
  } else if (listed.status().code() != ErrorCode::kNotFound) {
    return listed.status();
  }
  const std::string dropinName = baseName(dropinPath);
  std::vector<std::string> matched;
  for (const auto& n : names) {
    const std::string full = (dir == "/" ? "" : dir) + "/" + n;
    if (std::find(omit.begin(), omit.end(), full) != omit.end()) continue;
    if (::fnmatch(pattern.c_str(), n.c_str(), FNM_PERIOD) == 0) matched.push_back(n);
  }
  if (matchesDropin && std::find(matched.begin(), matched.end(), dropinName) == matched.end()) {
    matched.push_back(dropinName);
  }
  std::sort(matched.begin(), matched.end());
  std::vector<IncludeTarget> out;
  for (const auto& n : matched) {
    const bool isDropin = matchesDropin && n == dropinName && dirName(dropinPath) == dir;
    out.push_back({isDropin ? candidatePath : host.realPath((dir == "/" ? "" : dir) + "/" + n), isDropin});
  }
  return out;
}

/// The host path of a real path below the root; nullopt for a path outside it.
std::optional<std::string> hostPathOf(const std::string& real, const std::string& root) {
  if (root.empty()) return real;
  if (real.compare(0, root.size() + 1, root + "/") == 0) return real.substr(root.size());
  return std::nullopt;
}

/// Collects the keyword lines of a configuration for walkConfiguration().
class ConfigWalker {
 public:
  ConfigWalker(const SshdSettings& sshd, const std::string& candidatePath, const std::string& candidateText, Host& host,
               const std::vector<std::string>& omit)
      : sshd_(sshd), candidatePath_(candidatePath), candidateText_(candidateText), host_(host), omit_(omit) {}

  Status walk(const std::string& text, const std::string& shownAs, bool ours, const std::string& inherited, int depth) {
    std::string match = inherited;
    std::istringstream lines(text);
    int lineNo = 0;
    for (std::string line; std::getline(lines, line);) {
      ++lineNo;
      auto [keyword, rest] = splitKeyword(line);
      if (keyword.empty()) continue;
      const std::string kw = canonicalKeyword(keyword);
      if (kw == "match") {
        match = trimmed(line);
        if (!ours) {
          std::istringstream criteria(rest);
          for (std::string c; criteria >> c;) {
            if (strcasecmp(c.c_str(), "user") == 0 || strcasecmp(c.c_str(), "group") == 0) {
              result_.otherUserOrGroupMatch = true;
            }
          }
        }
        continue;
      }
      if (kw == "include") {
        if (depth >= kMaxIncludeDepth) continue;
        for (const auto& arg : splitArgs(rest)) {
          if (arg.empty()) continue;
          if (Status s = include(arg, match, depth); !s) return s;
        }
        continue;
      }
      ConfigLine l;
      l.file = shownAs;
      l.line = lineNo;
      l.keyword = kw;
      for (const auto& a : splitArgs(rest)) l.value += (l.value.empty() ? "" : " ") + a;
      l.match = match;
      l.ours = ours;
      result_.lines.push_back(std::move(l));
    }
    return Status::ok();
  }

  ConfigWalk take() { return std::move(result_); }

 private:
  Status include(const std::string& arg, const std::string& match, int depth) {
    std::vector<IncludeTarget> targets;
    if (depth == 0) {
      // The main config's Include lines are the ones the validation copy rewrites.
      auto t = expandIncludeArg(arg, sshd_.dropin, candidatePath_, host_, omit_, nullptr);
      if (!t) return t.status();
      targets = std::move(*t);
    } else {
      // sshd reads a nested Include as written (relative: below /etc/ssh), not below the root.
      targets.push_back({arg[0] == '/' ? arg : std::string(kSshDir) + "/" + arg, false});
    }
    for (const auto& t : targets) {
      if (t.candidate) {
        if (Status s = walk(candidateText_, host_.realPath(sshd_.dropin), true, match, depth + 1); !s) return s;
        continue;
      }
      for (const auto& real : expand(t.path)) {
        auto hostPath = hostPathOf(real, host_.root());
        if (!hostPath) continue;
        auto text = host_.readFile(*hostPath, kMaxConfigBytes);
        if (!text) continue;  // sshd -t read it; whatever hides it from us hides nothing it set
        if (Status s = walk(*text, real, false, match, depth + 1); !s) return s;
      }
    }
    return Status::ok();
  }

  /// A real path, or a real-path pattern expanded like glob(3): sorted, no dot files unless the
  /// pattern says so.
  std::vector<std::string> expand(const std::string& real) {
    if (!hasGlob(real)) return {real};
    auto hostPattern = hostPathOf(real, host_.root());
    if (!hostPattern) return {};
    const std::string dir = dirName(*hostPattern);
    if (hasGlob(dir)) return {};
    auto names = host_.listDirectory(dir);
    if (!names) return {};
    std::vector<std::string> out;
    for (const auto& n : *names) {
      if (::fnmatch(baseName(*hostPattern).c_str(), n.c_str(), FNM_PERIOD) == 0) {
        out.push_back(host_.realPath((dir == "/" ? "" : dir) + "/" + n));
      }
    }
    return out;
  }

  const SshdSettings& sshd_;
  const std::string& candidatePath_;
  const std::string& candidateText_;
  Host& host_;
  const std::vector<std::string>& omit_;
  ConfigWalk result_;
};

/// A file as it was, to put it back.
struct SavedFile {
  std::string path;
  bool existed = false;
  std::string content;
  Ownership own;
};

Result<SavedFile> saveFile(Host& host, const std::string& path) {
  SavedFile f;
  f.path = path;
  auto info = host.lstat(path);
  if (!info) return info.status();
  if (!info->exists()) return f;
  auto text = host.readFile(path, kMaxConfigBytes);
  if (!text) return text.status();
  f.existed = true;
  f.content = std::move(*text);
  f.own = {mode_t(info->mode & 07777), info->uid, info->gid};
  return f;
}

Status restoreFile(Host& host, const SavedFile& f) {
  if (!f.existed) return host.removeFile(f.path);
  return host.writeFileAtomic(f.path, f.content, f.own);
}

}  // namespace

std::string sftpForceCommand(SftpAccess access) {
  std::string command = "internal-sftp -d /transfer -u 0007";
  if (access == SftpAccess::kReadOnly) command += " -R";
  if (access == SftpAccess::kUploadOnly) command += std::string(" -p ") + kUploadOnlyRequests;
  return command;
}

std::vector<std::string> allowedSources(const DropinInput& in) {
  std::set<std::string> all(in.documentSources.begin(), in.documentSources.end());
  all.insert(in.alwaysAllow.begin(), in.alwaysAllow.end());
  return {all.begin(), all.end()};
}

std::string summarizeDropin(const DropinInput& in) {
  size_t locked = 0, readOnly = 0, uploadOnly = 0;
  for (const auto& u : in.sftpUsers) {
    if (sftpEntryLocked(u)) {
      ++locked;
    } else if (u.access == SftpAccess::kReadOnly) {
      ++readOnly;
    } else if (u.access == SftpAccess::kUploadOnly) {
      ++uploadOnly;
    }
  }
  std::string s = "login user " + in.loginUser + "; " + plural(in.sftpUsers.size(), "sftp account", "sftp accounts");
  std::string notes;
  if (locked > 0) notes += std::to_string(locked) + " locked";
  if (readOnly > 0) notes += (notes.empty() ? "" : ", ") + std::to_string(readOnly) + " read-only";
  if (uploadOnly > 0) notes += (notes.empty() ? "" : ", ") + std::to_string(uploadOnly) + " upload-only";
  if (!notes.empty()) s += " (" + notes + ")";
  if (!in.deniedUsers.empty()) s += "; " + plural(in.deniedUsers.size(), "denied name", "denied names");
  const size_t own = size_t(std::count_if(in.sftpUsers.begin(), in.sftpUsers.end(), [](const SftpUserEntry& u) {
    return !sftpEntryLocked(u) && !u.sources.empty();
  }));
  if (own > 0) s += "; " + plural(own, "account with its", "accounts with their") + " own sources";
  s += "; " + plural(in.documentSources.size(), "source", "sources") + " from the document + " +
       std::to_string(in.alwaysAllow.size()) + " always_allow";
  s += "; root login ";
  s += in.rootLogin == RootLogin::kNo ? "no" : "by key from always_allow";
  return s;
}

std::string renderDropin(const DropinInput& in) {
  std::vector<std::string> locked;
  // Grouped by identical settings (%u makes the blocks per-user anyway): credentials (both,
  // password, key), then access (read-write, read-only, upload-only).
  std::map<std::pair<int, SftpAccess>, std::vector<std::string>> blocks;
  for (const auto& u : in.sftpUsers) {
    if (sftpEntryLocked(u)) {
      locked.push_back(u.username);
    } else {
      blocks[{sftpCredentialOrder(u), u.access}].push_back(u.username);
    }
  }
  const std::vector<std::string> allowed = allowedSources(in);

  std::ostringstream out;
  out << kHeader << ". Do not edit: this file is rewritten on every change\n"
      << "# and checked with sshd -t and sshd -T (the effective settings of every role) before it is\n"
      << "# installed.\n"
      << "# " << summarizeDropin(in) << "\n";

  // 1. Global, before any Match block.
  out << "\n# Root: " << (in.rootLogin == RootLogin::kNo ? "never over SSH." : "by key only, from always_allow only.")
      << "\n"
      << "PermitRootLogin " << (in.rootLogin == RootLogin::kNo ? "no" : "prohibit-password") << "\n";

  // 2. Source restriction for everyone: DenyUsers accumulates over every matching block, so it
  //    holds whatever the later blocks allow.
  if (allowed.empty()) {
    out << "\n# No allowed source (neither the document nor always_allow): every user is refused.\n"
        << "Match all\n"
        << "\tDenyUsers *\n";
  } else {
    out << "\n# Every user, managed or not, connecting from outside the allowed sources (the\n"
        << "# document's and always_allow) is refused.\n"
        << "Match Address " << joinComma(allowed, "!") << ",*\n"
        << "\tDenyUsers *\n";
  }

  // 3. Root by key, from the operators' ranges only.
  if (in.rootLogin == RootLogin::kProhibitPassword) {
    if (in.alwaysAllow.empty()) {
      out << "\n# Root: no always_allow range, so refused from everywhere.\n"
          << "Match User root\n"
          << "\tDenyUsers *\n";
    } else {
      out << "\n# Root: refused from outside always_allow.\n"
          << "Match User root Address " << joinComma(in.alwaysAllow, "!") << ",*\n"
          << "\tDenyUsers *\n";
    }
  }

  // 3b. Accounts with their own sources: refused from anywhere else (DenyUsers accumulates with
  //     the document-wide block above, so an address must be in both lists).
  for (const auto& u : in.sftpUsers) {
    if (sftpEntryLocked(u) || u.sources.empty()) continue;
    out << "\n# SFTP account " << u.username << ": only from its own allowed_sources.\n"
        << "Match User " << u.username << " Address " << joinComma(u.sources, "!") << ",*\n"
        << "\tDenyUsers *\n";
  }

  // 4. Names the agent may not confine as its own, then locked accounts: refused for every
  //    method (password, key, keyboard-interactive/PAM).
  if (!in.deniedUsers.empty()) {
    out << "\n# Names of the document that exist on the host but were not created by the agent:\n"
        << "# refused for every method.\n";
    renderDenyAll(out, in.deniedUsers);
  }
  if (!locked.empty()) {
    out << "\n# Inactive SFTP accounts, and accounts without any credential: locked for every method.\n";
    renderDenyAll(out, locked);
  }

  // 5. The login user.
  renderLoginBlock(out, in);

  // 6. Active SFTP accounts.
  for (const auto& [key, users] : blocks) {
    renderSftpBlock(out, in, users, key.first != 2, key.first != 1, key.second);
  }

  out << "\n# End of the managed blocks: what follows applies to everyone again.\n"
      << "Match all\n";
  return out.str();
}

Status checkDropinInput(const DropinInput& in) {
  auto bad = [](const std::string& what, const std::string& value) {
    return Status::error(ErrorCode::kInvalid,
                         "sshd drop-in: " + what + " '" + value + "' cannot be written safely into sshd_config");
  };
  if (!validName(in.loginUser)) return bad("login user", in.loginUser);
  if (in.loginUser == "root") return bad("login user", in.loginUser);
  if (!validPath(in.chrootBase)) return bad("chroot base", in.chrootBase);
  if (!validPath(in.authorizedKeysDir)) return bad("authorized keys directory", in.authorizedKeysDir);
  std::set<std::string> seen{in.loginUser, "root"};
  for (const auto& u : in.sftpUsers) {
    if (!validName(u.username)) return bad("sftp user name", u.username);
    if (!seen.insert(u.username).second) return bad("duplicate user name", u.username);
    for (const auto& c : u.sources) {
      if (!validCidr(c)) return bad("allowed source of " + u.username, c);
    }
  }
  for (const auto& n : in.deniedUsers) {
    if (!validName(n)) return bad("denied user name", n);
    if (!seen.insert(n).second) return bad("duplicate user name", n);
  }
  for (const auto& c : in.documentSources) {
    if (!validCidr(c)) return bad("allowed source", c);
  }
  for (const auto& c : in.alwaysAllow) {
    if (!validCidr(c)) return bad("always_allow source", c);
  }
  return Status::ok();
}

Result<DropinInput> buildDropinInput(const Desired& desired, Host& host, const Ledger* ledger) {
  DropinInput in;
  in.loginUser = desired.host.loginUser;
  in.rootLogin = desired.sshd.permitRootLogin;

  // A host account the agent did not create is refused by sftp_accounts; giving it an SFTP Match
  // block would chroot and confine someone else's account, and giving it nothing would leave a
  // name the document lists unconfined: it is denied.
  // An unrecorded account with the agent's signature is the agent's own (sftp_accounts adopts it).
  std::optional<std::optional<gid_t>> transferGid;
  auto foreign = [&](const std::string& name) -> Result<bool> {
    if (ledger == nullptr || ledger->owns(OwnedKind::kUser, name)) return false;
    auto existing = host.findUser(name);
    if (!existing) return existing.status();
    if (!existing->has_value()) return false;
    if (!transferGid) {
      auto group = host.findGroup(desired.host.transferGroup);
      if (!group) return group.status();
      transferGid = group->has_value() ? std::optional<gid_t>((*group)->gid) : std::nullopt;
    }
    return !carriesSftpSignature(**existing, *transferGid);
  };
  std::set<std::string> names;
  std::set<std::string> denied;
  auto add = [&](const std::string& name, SftpUserEntry entry) -> Status {
    if (names.count(name) || denied.count(name)) return Status::ok();
    auto isForeign = foreign(name);
    if (!isForeign) return isForeign.status();
    if (*isForeign) {
      denied.insert(name);
    } else {
      names.insert(name);
      in.sftpUsers.push_back(std::move(entry));
    }
    return Status::ok();
  };
  for (const auto& a : desired.document.accounts) {
    if (Status s = add(a.username, {a.username, a.active, a.passwordHash.has_value(), !a.publicKeys.empty(), a.access,
                                    a.allowedSources});
        !s) {
      return s;
    }
  }
  for (const auto& n : desired.document.lockedUsernames) {
    if (Status s = add(n, {n, false, false, false, {}}); !s) return s;
  }
  std::sort(in.sftpUsers.begin(), in.sftpUsers.end(),
            [](const SftpUserEntry& a, const SftpUserEntry& b) { return a.username < b.username; });
  in.deniedUsers.assign(denied.begin(), denied.end());

  in.chrootBase = stripTrailingSlashes(host.realPath(stripTrailingSlashes(desired.host.chrootBase)));
  in.authorizedKeysDir = stripTrailingSlashes(host.realPath(stripTrailingSlashes(desired.host.authorizedKeysDir)));

  std::set<std::string> sources, always;
  for (const auto& c : desired.document.allowedSources) sources.insert(c.text);
  for (const auto& c : desired.host.alwaysAllow) always.insert(c.text);
  in.documentSources.assign(sources.begin(), sources.end());
  in.alwaysAllow.assign(always.begin(), always.end());
  return in;
}

Result<std::string> expandIncludesForValidation(const std::string& mainConfigText, const std::string& dropinPath,
                                                const std::string& candidatePath, Host& host, bool* includesDropin,
                                                const std::vector<std::string>& omit) {
  if (includesDropin) *includesDropin = false;
  std::ostringstream out;
  std::istringstream lines(mainConfigText);
  std::string line;
  while (std::getline(lines, line)) {
    auto [keyword, rest] = splitKeyword(line);
    if (keyword.empty() || strcasecmp(keyword.c_str(), "include") != 0) {
      out << line << "\n";
      continue;
    }
    out << "# was: " << trimmed(line) << "\n";
    for (const std::string& arg : splitArgs(rest)) {
      if (arg.empty()) continue;
      auto targets = expandIncludeArg(arg, dropinPath, candidatePath, host, omit, includesDropin);
      if (!targets) return targets.status();
      for (const auto& t : *targets) out << "Include " << quoteIfNeeded(t.path) << "\n";
    }
  }
  return out.str();
}

Result<ConfigWalk> walkConfiguration(const std::string& mainConfigText, const SshdSettings& sshd,
                                     const std::string& candidatePath, const std::string& candidateText, Host& host,
                                     const std::vector<std::string>& omit) {
  ConfigWalker walker(sshd, candidatePath, candidateText, host, omit);
  if (Status s = walker.walk(mainConfigText, host.realPath(sshd.mainConfig), false, "", 0); !s) return s;
  return walker.take();
}

std::string ListenPoint::describe() const {
  return (address.find(':') == std::string::npos ? address : "[" + address + "]") + ":" + std::to_string(port);
}

ListenPoint listenPointOf(const EffectiveConfig& global) {
  struct Candidate {
    std::string address;
    int port = 22;
  };
  std::vector<Candidate> listed;
  auto it = global.find("listenaddress");
  if (it != global.end()) {
    for (const auto& v : it->second) {
      std::istringstream words(v);
      std::string w;
      words >> w;  // "127.0.0.1:22", "[::]:22", then maybe "rdomain x"
      Candidate c;
      size_t colon;
      if (!w.empty() && w[0] == '[') {
        size_t close = w.find(']');
        if (close == std::string::npos) continue;
        c.address = w.substr(1, close - 1);
        colon = w.find(':', close);
      } else {
        colon = w.rfind(':');
        c.address = w.substr(0, colon);
      }
      if (colon != std::string::npos) c.port = std::atoi(w.c_str() + colon + 1);
      if (c.port <= 0 || c.port > 65535) continue;
      listed.push_back(c);
    }
  }
  ListenPoint p;
  auto portIt = global.find("port");
  if (portIt != global.end() && !portIt->second.empty()) p.port = std::atoi(portIt->second.front().c_str());
  if (p.port <= 0 || p.port > 65535) p.port = 22;
  // Loopback first (any sshd that listens there answers a local probe), then the wildcards
  // through loopback, then the first address sshd names.
  auto pick = [&](auto pred, const std::string& as) -> bool {
    for (const auto& c : listed) {
      if (pred(c.address)) {
        p.address = as.empty() ? c.address : as;
        p.port = c.port;
        return true;
      }
    }
    return false;
  };
  if (pick([](const std::string& a) { return a.rfind("127.", 0) == 0; }, "") ||
      pick([](const std::string& a) { return a == "0.0.0.0"; }, "127.0.0.1") ||
      pick([](const std::string& a) { return a == "::1"; }, "") ||
      pick([](const std::string& a) { return a == "::"; }, "::1") ||
      pick([](const std::string&) { return true; }, "")) {
    return p;
  }
  return p;
}

Result<bool> legacyDropinPresent(const SshdSettings& sshd, Host& host) {
  if (sshd.dropin == kLegacyDropin) return false;
  auto info = host.lstat(kLegacyDropin);
  if (!info) return info.status();
  if (info->type != FileType::kRegular) return false;
  auto text = host.readFile(kLegacyDropin, kMaxConfigBytes);
  if (!text) return text.status();
  return text->compare(0, std::strlen(kHeader), kHeader) == 0;
}

SshdDropinProvider::SshdDropinProvider(Logger log, const Ledger* ledger) : log_(std::move(log)), ledger_(ledger) {}

Result<std::vector<Action>> SshdDropinProvider::plan(const Desired& desired, Host& host) {
  auto in = buildDropinInput(desired, host, ledger_);
  if (!in) return in.status();
  if (Status s = checkDropinInput(*in); !s) return s;
  std::string text = renderDropin(*in);

  const std::string& path = desired.sshd.dropin;
  auto info = host.lstat(path);
  if (!info) return info.status();
  bool sameBytes = false;
  bool sameMeta = false;
  if (info->type == FileType::kRegular) {
    auto current = host.readFile(path, kMaxConfigBytes);
    if (!current) return current.status();
    sameBytes = *current == text;
    sameMeta = (info->mode & 07777) == kDropinMode && info->uid == 0 && info->gid == 0;
  }
  auto legacy = legacyDropinPresent(desired.sshd, host);
  if (!legacy) return legacy.status();
  std::vector<Action> actions;
  if (sameBytes && sameMeta && !*legacy) {
    log_->debug("plan: {} is up to date ({})", path, summarizeDropin(*in));
    return actions;
  }
  Action a = makeProviderAction(name(), Stage::kConfine, Verb::kWrite, path, summarizeDropin(*in));
  if (sameBytes && !sameMeta) a.detail += "; mode/owner to 0644 root:root";
  if (*legacy) a.detail += std::string("; removes the drop-in of agent 0.1, ") + kLegacyDropin;
  a.payload = std::move(text);
  a.before = info->exists() ? std::to_string(info->size) + " bytes" : "absent";
  a.after = summarizeDropin(*in);
  actions.push_back(std::move(a));
  logPlan(log_, actions);
  return actions;
}

struct SshdDropinProvider::Checked {
  ListenPoint listen;
};

Status SshdDropinProvider::checkInto(const std::string& dropinText, const DropinInput* in, const SshdSettings& sshd,
                                     Host& host, const std::vector<std::string>& omit, Checked* out) {
  ScratchDir dir("pim-sshd-check.");
  if (!dir.valid()) return dir.status();
  const std::string candidate = dir.file(baseName(sshd.dropin));
  if (Status s = dir.writeFile(baseName(sshd.dropin), dropinText); !s) return s;

  // A throw-away host key: sshd -t refuses to run without one, and what is checked here is
  // the drop-in, not the host's keys.
  const std::string hostKey = dir.file("hostkey");
  auto keygen = host.run({kSshKeygen, "-q", "-t", "ed25519", "-N", "", "-C", "pim-sshd-check", "-f", hostKey});
  if (!keygen) return keygen.status();
  if (keygen->exitCode != 0) {
    return Status::error(ErrorCode::kCommand, "ssh-keygen for the sshd -t check failed: " + trimmed(keygen->err));
  }

  std::string config;
  std::string walked;  // the main config as walkConfiguration() reads it
  auto main = host.lstat(sshd.mainConfig);
  if (!main) return main.status();
  if (main->exists()) {
    auto text = host.readFile(sshd.mainConfig, kMaxConfigBytes);
    if (!text) return text.status();
    bool included = false;
    auto expanded = expandIncludesForValidation(*text, sshd.dropin, candidate, host, &included, omit);
    if (!expanded) return expanded.status();
    config = *expanded;
    walked = *text;
    if (!included) {
      log_->warn("{} does not Include {}: the drop-in has no effect until it does", sshd.mainConfig, sshd.dropin);
      config += "# the main config does not include the drop-in; checked on its own terms\nInclude " + candidate + "\n";
      walked += "\nInclude " + candidate + "\n";
    }
  } else {
    config =
        "# minimal main config to check the drop-in of a sandbox\n"
        "HostKey " +
        hostKey +
        "\n"
        "UsePAM no\n"
        "PidFile none\n"
        "Include " +
        candidate + "\n";
    walked = config;
  }
  if (Status s = dir.writeFile("sshd_config", config); !s) return s;

  // Runs sshd on the validation configuration (runSshdCheck: creates a missing privilege
  // separation directory).
  auto runSshd = [&](std::vector<std::string> extra) -> Result<CommandResult> {
    std::vector<std::string> argv{sshd.binary, "-f", dir.file("sshd_config"), "-o", "HostKey=" + hostKey};
    argv.insert(argv.begin() + 1, extra.begin(), extra.end());
    return runSshdCheck(host, argv, log_.get());
  };

  auto t = runSshd({"-t"});
  if (!t) return t.status();
  if (t->exitCode != 0) {
    std::string why = trimmed(t->err);
    if (why.empty()) why = "exit code " + std::to_string(t->exitCode);
    return Status::error(ErrorCode::kCommand, "sshd -t rejected the candidate drop-in: " + why, sshd.dropin);
  }
  if (in == nullptr) return Status::ok();

  const auto started = std::chrono::steady_clock::now();
  auto global = runSshd({"-T"});
  if (!global) return global.status();
  if (global->exitCode != 0) {
    return Status::error(ErrorCode::kCommand, "sshd -T of the candidate configuration failed: " + trimmed(global->err),
                         sshd.dropin);
  }
  const ListenPoint listen = listenPointOf(parseEffective(global->out));
  auto walk = walkConfiguration(walked, sshd, candidate, dropinText, host, omit);
  if (!walk) return walk.status();

  lastProbes_ = probeMatrix(*in, probeAddresses(*in), walk->otherUserOrGroupMatch);
  std::vector<std::string> problems;
  for (const auto& probe : lastProbes_) {
    const std::string spec = "user=" + probe.user + ",addr=" + probe.address + ",host=" + probe.address +
                             ",laddr=127.0.0.1,lport=" + std::to_string(listen.port);
    auto r = runSshd({"-T", "-C", spec});
    if (!r) return r.status();
    if (r->exitCode != 0) {
      return Status::error(ErrorCode::kCommand, "sshd -T -C " + spec + " failed: " + trimmed(r->err), sshd.dropin);
    }
    for (const auto& m : checkProbe(probe, parseEffective(r->out), *in)) {
      problems.push_back(describeMismatch(m) + ": " + attribute(*walk, m, listen.port));
    }
  }
  lastProbeTime_ = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
  log_->info("sshd -T: {} probes of the effective configuration{} in {} ms{}", lastProbes_.size(),
             walk->otherUserOrGroupMatch ? " (every account: another file matches on User or Group)" : "",
             lastProbeTime_.count(), problems.empty() ? "" : ": " + std::to_string(problems.size()) + " mismatches");
  if (!problems.empty()) {
    std::string msg = "sshd -T: the candidate drop-in would grant more than the document: ";
    for (size_t i = 0; i < problems.size() && i < kMaxMismatchesShown; ++i) msg += (i ? "; " : "") + problems[i];
    if (problems.size() > kMaxMismatchesShown) {
      msg += "; and " + std::to_string(problems.size() - kMaxMismatchesShown) + " more";
    }
    return Status::error(ErrorCode::kCommand, msg + "; nothing installed", sshd.dropin);
  }
  if (out != nullptr) out->listen = listen;
  return Status::ok();
}

Status SshdDropinProvider::validate(const std::string& dropinText, const SshdSettings& sshd, Host& host) {
  return checkInto(dropinText, nullptr, sshd, host, {}, nullptr);
}

Status SshdDropinProvider::check(const std::string& dropinText, const DropinInput& in, const SshdSettings& sshd,
                                 Host& host) {
  auto legacy = legacyDropinPresent(sshd, host);
  if (!legacy) return legacy.status();
  std::vector<std::string> omit;
  if (*legacy) omit.push_back(kLegacyDropin);
  return checkInto(dropinText, &in, sshd, host, omit, nullptr);
}

Status SshdDropinProvider::reload(const SshdSettings& sshd, Host& host) {
  std::vector<std::string> argv;
  std::istringstream words(sshd.reloadCommand);
  for (std::string w; words >> w;) argv.push_back(w);
  if (argv.empty()) {
    log_->info("sshd.reload_command is empty: sshd not reloaded");
    return Status::ok();
  }
  std::string program = resolveProgram(argv[0]);
  if (program.empty()) {
    return Status::error(ErrorCode::kCommand, "reload sshd: " + argv[0] + ": command not found");
  }
  argv[0] = program;
  auto r = host.run(argv);
  if (!r) return r.status();
  if (r->exitCode != 0) {
    std::string why = trimmed(r->err.empty() ? r->out : r->err);
    if (why.empty()) why = "exit code " + std::to_string(r->exitCode);
    return Status::error(ErrorCode::kCommand, "reload sshd (" + sshd.reloadCommand + "): " + why);
  }
  return Status::ok();
}

bool SshdDropinProvider::answers(const ListenPoint& at, Host& host, std::chrono::milliseconds timeout) {
  auto r = host.sshAnswers(at.address, at.port, timeout);
  if (!r) {
    log_->warn("probe sshd on {}: {}", at.describe(), r.status().message());
    return false;
  }
  return *r;
}

bool SshdDropinProvider::answersAfterReload(const ListenPoint& at, Host& host) {
  const auto deadline = std::chrono::steady_clock::now() + answerTimeout_;
  std::this_thread::sleep_for(std::min(kSettleAfterReload, answerTimeout_));
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    if (answers(at, host, left)) return true;
    std::this_thread::sleep_for(std::min(kRetryPause, left));
  }
}

Result<EffectiveConfig> liveEffectiveConfig(const SshdSettings& sshd, Host& host) {
  // The installed configuration as it is: the live drop-in stands in for itself.
  auto live = saveFile(host, sshd.dropin);
  if (!live) return live.status();
  ScratchDir dir("pim-sshd-check.");
  if (!dir.valid()) return dir.status();
  const std::string candidate = dir.file(baseName(sshd.dropin));
  if (Status s = dir.writeFile(baseName(sshd.dropin), live->content); !s) return s;
  const std::string hostKey = dir.file("hostkey");
  auto keygen = host.run({kSshKeygen, "-q", "-t", "ed25519", "-N", "", "-C", "pim-sshd-check", "-f", hostKey});
  if (!keygen) return keygen.status();
  if (keygen->exitCode != 0) return Status::error(ErrorCode::kCommand, "ssh-keygen failed: " + trimmed(keygen->err));
  std::string config = "HostKey " + hostKey + "\nUsePAM no\nPidFile none\nInclude " + candidate + "\n";
  auto main = host.lstat(sshd.mainConfig);
  if (!main) return main.status();
  if (main->exists()) {
    auto text = host.readFile(sshd.mainConfig, kMaxConfigBytes);
    if (!text) return text.status();
    auto expanded = expandIncludesForValidation(*text, sshd.dropin, candidate, host);
    if (!expanded) return expanded.status();
    config = *expanded;
  }
  if (Status s = dir.writeFile("sshd_config", config); !s) return s;
  auto r = runSshdCheck(host, {sshd.binary, "-T", "-f", dir.file("sshd_config"), "-o", "HostKey=" + hostKey}, nullptr);
  if (!r) return r.status();
  if (r->exitCode != 0) {
    return Status::error(ErrorCode::kCommand, "sshd -T of the installed configuration failed: " + trimmed(r->err));
  }
  return parseEffective(r->out);
}

Result<ListenPoint> SshdDropinProvider::liveListenPoint(const SshdSettings& sshd, Host& host) {
  auto effective = liveEffectiveConfig(sshd, host);
  if (!effective) return effective.status();
  return listenPointOf(*effective);
}

Status SshdDropinProvider::reloadAndVerify(const SshdSettings& sshd, Host& host) {
  try {
    auto at = liveListenPoint(sshd, host);
    if (!at) log_->warn("{}: sshd's answer after the reload cannot be checked", at.status().message());
    const bool before = at && answers(*at, host, answerTimeout_);
    if (Status s = reload(sshd, host); !s) return s;
    if (before && !answersAfterReload(*at, host)) {
      return Status::error(ErrorCode::kCommand, "sshd stopped answering on " + at->describe() + " after the reload");
    }
    return Status::ok();
  } catch (const std::exception& e) {
    return Status::error(ErrorCode::kInternal, std::string("sshd: reload: ") + e.what());
  }
}

Status SshdDropinProvider::apply(const Action& action, const Desired& desired, Host& host) {
  lastReloadFailure_.clear();
  lastProbes_.clear();
  if (action.provider != name() || action.verb != Verb::kWrite || action.object != desired.sshd.dropin) {
    return Status::error(ErrorCode::kInternal, "sshd: cannot apply " + action.describe());
  }
  const SshdSettings& sshd = desired.sshd;
  try {
    auto in = buildDropinInput(desired, host, ledger_);
    if (!in) return in.status();
    auto legacy = legacyDropinPresent(sshd, host);
    if (!legacy) return legacy.status();
    std::vector<std::string> omit;
    if (*legacy) omit.push_back(kLegacyDropin);

    Checked checked;
    if (Status s = checkInto(action.payload, &*in, sshd, host, omit, &checked); !s) {
      log_->error("{}: {}", action.describe(), s.message());
      return s;
    }

    // What is there now, to put back if sshd stops answering with the new configuration.
    auto previous = saveFile(host, sshd.dropin);
    if (!previous) return previous.status();
    std::optional<SavedFile> previousLegacy;
    if (*legacy) {
      auto saved = saveFile(host, kLegacyDropin);
      if (!saved) return saved.status();
      previousLegacy = std::move(*saved);
    }
    const bool answeredBefore = answers(checked.listen, host, answerTimeout_);

    const std::string dir = dirName(sshd.dropin);
    if (Status s = host.makeDirectories(dir, {0755, 0, 0}); !s) return s;
    if (Status s = host.writeFileAtomic(sshd.dropin, action.payload, {kDropinMode, 0, 0}); !s) {
      log_->error("{}: {}", action.describe(), s.message());
      return s;
    }
    log_->info("wrote {} ({})", sshd.dropin, action.detail);
    if (previousLegacy) {
      // Validated without it: sshd must not read it with the new drop-in.
      if (Status s = host.removeFile(kLegacyDropin); !s) {
        if (Status r = restoreFile(host, *previous); !r) log_->error("restore {}: {}", sshd.dropin, r.message());
        return Status::error(s.code(), "remove the drop-in of agent 0.1: " + s.message() + "; new drop-in withdrawn",
                             kLegacyDropin);
      }
      log_->info("removed {} (the drop-in of agent 0.1)", kLegacyDropin);
    }

    if (Status s = reload(sshd, host); !s) {
      lastReloadFailure_ = s.message();
      log_->warn("{}; sshd keeps its previous configuration until reloaded", s.message());
    }
    if (!answeredBefore) {
      log_->debug("sshd did not answer on {} before the reload: nothing to verify", checked.listen.describe());
    } else if (!answersAfterReload(checked.listen, host)) {
      const std::string why =
          "sshd stopped answering on " + checked.listen.describe() + " after the reload: previous drop-in restored";
      log_->error("{}", why);
      if (Status r = restoreFile(host, *previous); !r) log_->error("restore {}: {}", sshd.dropin, r.message());
      if (previousLegacy) {
        if (Status r = restoreFile(host, *previousLegacy); !r)
          log_->error("restore {}: {}", kLegacyDropin, r.message());
      }
      if (Status r = reload(sshd, host); !r) log_->error("{}", r.message());
      lastReloadFailure_.clear();
      return Status::error(ErrorCode::kCommand, why, sshd.dropin);
    }
    if (lastReloadFailure_.empty()) log_->info("reloaded sshd ({})", sshd.reloadCommand);
    return Status::ok();
  } catch (const std::exception& e) {
    return Status::error(ErrorCode::kInternal, "sshd: " + action.describe() + ": " + e.what());
  }
}

}  // namespace pim
