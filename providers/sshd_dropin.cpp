#include "providers/sshd_dropin.h"

#include <fnmatch.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <set>
#include <sstream>

#include "providers/host/scratch_dir.h"

namespace pim {
namespace {

constexpr const char* kSshKeygen = "/usr/bin/ssh-keygen";
constexpr const char* kSshDir = "/etc/ssh";  // sshd resolves relative Include paths here
constexpr size_t kMaxConfigBytes = 16 * 1024 * 1024;
constexpr mode_t kDropinMode = 0644;
constexpr const char* kPrivsepMissing = "Missing privilege separation directory: ";

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

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return {};
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
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

bool validCidr(const std::string& c) {
  if (c.empty() || std::count(c.begin(), c.end(), '/') != 1) return false;
  for (unsigned char ch : c) {
    if (!(std::isxdigit(ch) || ch == '.' || ch == ':' || ch == '/')) return false;
  }
  return c.front() != '/' && c.back() != '/';
}

// The settings every key-only login shares with nothing else: no password, no keyboard
// interaction (PAM), no host-based or GSSAPI trust.
void renderLoginBlock(std::ostringstream& out, const DropinInput& in) {
  out << "\n# The login user: public key only (keys from the managed authorized_keys file);\n"
      << "# agent forwarding stays allowed for ssh -A hops between instances.\n"
      << "Match User " << in.loginUser << "\n"
      << "\tAuthorizedKeysFile " << in.loginKeysFile << "\n"
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

void renderSftpBlock(std::ostringstream& out, const DropinInput& in, const std::vector<std::string>& users,
                     bool password, bool keys) {
  const char* methods = password && keys ? "publickey password" : password ? "password" : "publickey";
  const char* what = password && keys ? "password or key" : password ? "password only" : "key only";
  out << "\n# SFTP accounts (" << what << "): internal-sftp only, chrooted, no shell, no forwarding.\n"
      << "Match User " << joinComma(users) << "\n"
      << "\tChrootDirectory " << in.chrootBase << "/%u\n"
      << "\tForceCommand internal-sftp -d /transfer -u 0007\n"
      << "\tAuthorizedKeysFile " << in.sftpKeysDir << "/%u\n"
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

}  // namespace

std::string summarizeDropin(const DropinInput& in) {
  size_t locked = 0;
  for (const auto& u : in.sftpUsers) {
    if (!u.active || (!u.hasPassword && !u.hasKeys)) ++locked;
  }
  std::string s = "login user " + in.loginUser + "; " + std::to_string(in.sftpUsers.size()) + " sftp account" +
                  (in.sftpUsers.size() == 1 ? "" : "s");
  if (locked > 0) s += " (" + std::to_string(locked) + " locked)";
  s += "; " + std::to_string(in.allowedSources.size()) + " allowed source" + (in.allowedSources.size() == 1 ? "" : "s");
  return s;
}

std::string renderDropin(const DropinInput& in) {
  std::vector<std::string> managed{in.loginUser};
  std::vector<std::string> locked;
  // Grouped by identical settings (%u makes the blocks per-user anyway): both, password, key.
  std::vector<std::string> both, passwordOnly, keyOnly;
  for (const auto& u : in.sftpUsers) {
    managed.push_back(u.username);
    if (!u.active || (!u.hasPassword && !u.hasKeys)) {
      locked.push_back(u.username);
    } else if (u.hasPassword && u.hasKeys) {
      both.push_back(u.username);
    } else if (u.hasPassword) {
      passwordOnly.push_back(u.username);
    } else {
      keyOnly.push_back(u.username);
    }
  }

  std::ostringstream out;
  out << "# Managed by pim-access-agent. Do not edit: this file is rewritten on every change\n"
      << "# and checked with sshd -t before it is installed.\n"
      << "# " << summarizeDropin(in) << "\n";

  // 1. Source restriction first: DenyUsers accumulates over every matching block, so it holds
  //    whatever the later blocks allow.
  if (in.allowedSources.empty()) {
    out << "\n# No allowed source: every managed user is refused.\n"
        << "Match User " << joinComma(managed) << "\n"
        << "\tDenyUsers *\n";
  } else {
    out << "\n# Managed users connecting from outside the allowed sources are refused.\n"
        << "Match User " << joinComma(managed) << " Address " << joinComma(in.allowedSources, "!") << ",*\n"
        << "\tDenyUsers *\n";
  }

  // 2. Locked accounts: refused for every method (password, key, keyboard-interactive/PAM).
  if (!locked.empty()) {
    out << "\n# Inactive SFTP accounts, and accounts without any credential: locked for every method.\n"
        << "Match User " << joinComma(locked) << "\n"
        << "\tDenyUsers *\n"
        << "\tPubkeyAuthentication no\n"
        << "\tPasswordAuthentication no\n"
        << "\tKbdInteractiveAuthentication no\n"
        << "\tHostbasedAuthentication no\n"
        << "\tGSSAPIAuthentication no\n"
        << "\tPermitTTY no\n"
        << "\tDisableForwarding yes\n";
  }

  // 3. The login user.
  renderLoginBlock(out, in);

  // 4. Active SFTP accounts.
  if (!both.empty()) renderSftpBlock(out, in, both, true, true);
  if (!passwordOnly.empty()) renderSftpBlock(out, in, passwordOnly, true, false);
  if (!keyOnly.empty()) renderSftpBlock(out, in, keyOnly, false, true);

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
  if (!validPath(in.loginKeysFile)) return bad("login key file", in.loginKeysFile);
  if (!validPath(in.chrootBase)) return bad("chroot base", in.chrootBase);
  if (!validPath(in.sftpKeysDir)) return bad("sftp keys directory", in.sftpKeysDir);
  std::set<std::string> seen{in.loginUser};
  for (const auto& u : in.sftpUsers) {
    if (!validName(u.username)) return bad("sftp user name", u.username);
    if (!seen.insert(u.username).second) return bad("duplicate user name", u.username);
  }
  for (const auto& c : in.allowedSources) {
    if (!validCidr(c)) return bad("allowed source", c);
  }
  return Status::ok();
}

Result<DropinInput> buildDropinInput(const Desired& desired, Host& host, const Ledger* ledger) {
  DropinInput in;
  in.loginUser = desired.host.loginUser;
  auto user = host.findUser(in.loginUser);
  if (!user) return user.status();
  std::string home = (*user && !(*user)->home.empty()) ? (*user)->home : "/home/" + in.loginUser;
  home = stripTrailingSlashes(home);
  in.loginKeysFile = host.realPath((home == "/" ? "" : home) + "/.ssh/authorized_keys");

  // A host account the agent did not create is refused by sftp_accounts; giving it an SFTP Match
  // block would chroot and confine someone else's account, so it gets none.
  auto foreign = [&](const std::string& name) -> Result<bool> {
    if (ledger == nullptr || ledger->owns("user", name)) return false;
    auto existing = host.findUser(name);
    if (!existing) return existing.status();
    return existing->has_value();
  };
  std::set<std::string> names;
  for (const auto& a : desired.document.accounts) {
    auto isForeign = foreign(a.username);
    if (!isForeign) return isForeign.status();
    if (*isForeign) continue;
    if (!names.insert(a.username).second) continue;
    in.sftpUsers.push_back({a.username, a.active, a.passwordHash.has_value(), !a.publicKeys.empty()});
  }
  for (const auto& n : desired.document.lockedUsernames) {
    auto isForeign = foreign(n);
    if (!isForeign) return isForeign.status();
    if (*isForeign) continue;
    if (!names.insert(n).second) continue;
    in.sftpUsers.push_back({n, false, false, false});
  }
  std::sort(in.sftpUsers.begin(), in.sftpUsers.end(),
            [](const SftpUserEntry& a, const SftpUserEntry& b) { return a.username < b.username; });

  in.chrootBase = stripTrailingSlashes(host.realPath(stripTrailingSlashes(desired.host.chrootBase)));
  in.sftpKeysDir = stripTrailingSlashes(host.realPath(stripTrailingSlashes(desired.host.sftpKeysDir)));

  std::set<std::string> sources;
  for (const auto& c : desired.document.allowedSources) sources.insert(c.text);
  for (const auto& c : desired.host.alwaysAllow) sources.insert(c.text);
  in.allowedSources.assign(sources.begin(), sources.end());
  return in;
}

Result<std::string> expandIncludesForValidation(const std::string& mainConfigText, const std::string& dropinPath,
                                                const std::string& candidatePath, Host& host, bool* includesDropin) {
  if (includesDropin) *includesDropin = false;
  const std::string& root = host.root();
  std::ostringstream out;
  std::istringstream lines(mainConfigText);
  std::string line;
  while (std::getline(lines, line)) {
    std::string t = trim(line);
    size_t kwEnd = t.find_first_of(" \t=");
    std::string keyword = t.substr(0, kwEnd);
    if (t.empty() || t[0] == '#' || kwEnd == std::string::npos || strcasecmp(keyword.c_str(), "include") != 0) {
      out << line << "\n";
      continue;
    }
    std::string rest = t.substr(kwEnd);
    size_t b = rest.find_first_not_of(" \t");
    if (b != std::string::npos && rest[b] == '=') rest = rest.substr(b + 1);
    out << "# was: " << t << "\n";
    for (std::string arg : splitArgs(rest)) {
      if (arg.empty()) continue;
      if (arg[0] != '/') arg = std::string(kSshDir) + "/" + arg;
      // A sandbox main config may name real (root-prefixed) paths or host paths.
      std::string hostPattern = arg;
      if (!root.empty() && arg.compare(0, root.size() + 1, root + "/") == 0) {
        hostPattern = arg.substr(root.size());
      }
      if (::fnmatch(hostPattern.c_str(), dropinPath.c_str(), FNM_PATHNAME | FNM_PERIOD) != 0) {
        out << "Include " << quoteIfNeeded(host.realPath(hostPattern)) << "\n";
        continue;
      }
      if (includesDropin) *includesDropin = true;
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
        if (::fnmatch(pattern.c_str(), n.c_str(), FNM_PERIOD) == 0) matched.push_back(n);
      }
      if (std::find(matched.begin(), matched.end(), dropinName) == matched.end()) {
        matched.push_back(dropinName);
      }
      std::sort(matched.begin(), matched.end());
      for (const auto& n : matched) {
        const std::string path = n == dropinName ? candidatePath : host.realPath(dir + "/" + n);
        out << "Include " << quoteIfNeeded(path) << "\n";
      }
    }
  }
  return out.str();
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
  std::vector<Action> actions;
  if (sameBytes && sameMeta) {
    log_->debug("plan: {} is up to date ({})", path, summarizeDropin(*in));
    return actions;
  }
  Action a;
  a.stage = Stage::kConfine;
  a.provider = name();
  a.verb = "write";
  a.object = path;
  a.detail = summarizeDropin(*in);
  if (sameBytes) a.detail += "; mode/owner to 0644 root:root";
  a.payload = std::move(text);
  a.before = info->exists() ? std::to_string(info->size) + " bytes" : "absent";
  a.after = summarizeDropin(*in);
  log_->debug("plan: {}", a.describe());
  actions.push_back(std::move(a));
  return actions;
}

Status SshdDropinProvider::validate(const std::string& dropinText, const SshdSettings& sshd, Host& host) {
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
    return Status::error(ErrorCode::kCommand, "ssh-keygen for the sshd -t check failed: " + trim(keygen->err));
  }

  std::string config;
  auto main = host.lstat(sshd.mainConfig);
  if (!main) return main.status();
  if (main->exists()) {
    auto text = host.readFile(sshd.mainConfig, kMaxConfigBytes);
    if (!text) return text.status();
    bool included = false;
    auto expanded = expandIncludesForValidation(*text, sshd.dropin, candidate, host, &included);
    if (!expanded) return expanded.status();
    config = *expanded;
    if (!included) {
      log_->warn("{} does not Include {}: the drop-in has no effect until it does", sshd.mainConfig, sshd.dropin);
      config += "# the main config does not include the drop-in; checked on its own terms\nInclude " + candidate + "\n";
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
  }
  if (Status s = dir.writeFile("sshd_config", config); !s) return s;

  const std::vector<std::string> argv{sshd.binary, "-t", "-f", dir.file("sshd_config"), "-o", "HostKey=" + hostKey};
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto r = host.run(argv);
    if (!r) return r.status();
    if (r->exitCode == 0) return Status::ok();
    // sshd -t needs its privilege separation directory, which systemd creates at service start;
    // on a host (or container) where sshd never ran, create it like the service would.
    auto pos = r->err.find(kPrivsepMissing);
    if (attempt == 0 && pos != std::string::npos) {
      std::string privsep = trim(r->err.substr(pos + std::strlen(kPrivsepMissing)));
      privsep = privsep.substr(0, privsep.find('\n'));
      if (validPath(privsep) && ::mkdir(privsep.c_str(), 0755) == 0 && ::chmod(privsep.c_str(), 0755) == 0) {
        log_->info("created sshd's privilege separation directory {}", privsep);
        continue;
      }
    }
    std::string why = trim(r->err);
    if (why.empty()) why = "exit code " + std::to_string(r->exitCode);
    return Status::error(ErrorCode::kCommand, "sshd -t rejected the candidate drop-in: " + why, sshd.dropin);
  }
  return Status::error(ErrorCode::kCommand, "sshd -t rejected the candidate drop-in", sshd.dropin);
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
    std::string why = trim(r->err.empty() ? r->out : r->err);
    if (why.empty()) why = "exit code " + std::to_string(r->exitCode);
    return Status::error(ErrorCode::kCommand, "reload sshd (" + sshd.reloadCommand + "): " + why);
  }
  return Status::ok();
}

Status SshdDropinProvider::apply(const Action& action, const Desired& desired, Host& host) {
  lastReloadFailure_.clear();
  if (action.provider != name() || action.verb != "write" || action.object != desired.sshd.dropin) {
    return Status::error(ErrorCode::kInternal, "sshd: cannot apply " + action.describe());
  }
  try {
    if (Status s = validate(action.payload, desired.sshd, host); !s) {
      log_->error("{}: {}", action.describe(), s.message());
      return s;
    }
    const std::string dir = dirName(desired.sshd.dropin);
    if (Status s = host.makeDirectories(dir, {0755, 0, 0}); !s) return s;
    if (Status s = host.writeFileAtomic(desired.sshd.dropin, action.payload, {kDropinMode, 0, 0}); !s) {
      log_->error("{}: {}", action.describe(), s.message());
      return s;
    }
    log_->info("wrote {} ({})", desired.sshd.dropin, action.detail);
    // The drop-in is in place; sshd keeps serving with its old configuration until it reloads,
    // so a failed reload is reported, not turned into an apply failure that would roll back a
    // file sshd -t has accepted.
    if (Status s = reload(desired.sshd, host); !s) {
      lastReloadFailure_ = s.message();
      log_->warn("{}; sshd keeps its previous configuration until reloaded", s.message());
    } else {
      log_->info("reloaded sshd ({})", desired.sshd.reloadCommand);
    }
    return Status::ok();
  } catch (const std::exception& e) {
    return Status::error(ErrorCode::kInternal, "sshd: " + action.describe() + ": " + e.what());
  }
}

}  // namespace pim
