#include "providers/sudoers.h"
#include "providers/core/text_fields.h"

#include <fnmatch.h>

#include <algorithm>
#include <deque>
#include <sstream>

#include "providers/core/paths.h"
#include "providers/host/scratch_dir.h"

namespace pim {
namespace {

constexpr const char* kProvider = "sudoers";
constexpr const char* kHeader = "# Managed by pim-access-agent.";
constexpr const char* kShells = "/etc/shells";
constexpr size_t kMaxSudoersBytes = 4u << 20;
constexpr size_t kMaxShellsBytes = 1u << 20;
constexpr int kMaxLinks = 40;  // like the kernel's MAXSYMLINKS
constexpr size_t kMaxIdsShown = 10;
// The program a task runs looks commands up here, never in the user's PATH. /usr/local is left
// out: on some hosts it is writable by the staff group.
constexpr const char* kSecurePath = "/usr/sbin:/usr/bin:/sbin:/bin";

const char* const kShell = "a shell";
const char* const kInterpreter = "an interpreter (runs a program it reads from its input or a file)";
const char* const kEscape = "interactive with a shell escape (editor, pager, client, debugger)";
const char* const kRunner = "a program that runs other programs (wrapper, launcher, scheduler)";
const char* const kPrivilege = "a tool that switches users or privileges";
const char* const kHooks = "a tool that runs commands or hooks from files a user may write";

bool isWordChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
         c == '-' || c == '+';
}

// The parser's checks (agent/document/validators.h), repeated here so that nothing unchecked is
// ever written into sudoers syntax whoever built the document.
bool safeProgram(const std::string& p) {
  if (p.empty() || p[0] != '/' || p.back() == '/' || p.size() > 4096) return false;
  std::stringstream parts(p.substr(1));
  for (std::string part; std::getline(parts, part, '/');) {
    if (part.empty() || part == "." || part == "..") return false;
    if (!std::all_of(part.begin(), part.end(), isWordChar)) return false;
  }
  return true;
}

bool safeArgument(const std::string& a) {
  if (a.empty() || a.size() > 1024) return false;
  return std::all_of(a.begin(), a.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u >= 0x21 && u <= 0x7e && c != '"';
  });
}

bool safeUserName(const std::string& n) {
  if (n.empty() || n.size() > 32 || !((n[0] >= 'a' && n[0] <= 'z') || n[0] == '_')) return false;
  return std::all_of(n.begin(), n.end(),
                     [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'; });
}

bool safeId(const std::string& id) {
  if (id.empty() || id.size() > 64) return false;
  return std::all_of(id.begin(), id.end(), [](char c) { return isWordChar(c) && c != '+'; });
}

std::vector<std::string> components(const std::string& path) {
  std::vector<std::string> out;
  std::stringstream ss(path);
  for (std::string part; std::getline(ss, part, '/');) {
    if (!part.empty()) out.push_back(part);
  }
  return out;
}

std::string joinPath(const std::vector<std::string>& parts) {
  std::string out;
  for (const auto& p : parts) out += "/" + p;
  return out.empty() ? "/" : out;
}

void addName(std::vector<std::string>& names, const std::string& name) {
  if (!name.empty() && std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
}

/// Resolves `program` below the host's root one component at a time (symbolic links followed by
/// hand, each one's directory seen first), recording what lstat said of every step.
ProgramFacts resolveProgram(Host& host, const std::string& program) {
  ProgramFacts f;
  addName(f.names, baseName(program));
  auto root = host.lstat("/");
  if (!root) {
    f.error = root.status().message();
    return f;
  }
  f.steps.push_back({"/", *root});
  std::deque<std::string> rest;
  for (auto& c : components(program)) rest.push_back(std::move(c));
  std::vector<std::string> done;
  int links = 0;
  while (!rest.empty()) {
    const std::string c = rest.front();
    rest.pop_front();
    if (c == ".") continue;
    if (c == "..") {
      if (!done.empty()) done.pop_back();
      continue;
    }
    std::vector<std::string> next = done;
    next.push_back(c);
    const std::string path = joinPath(next);
    auto info = host.lstat(path);
    if (!info) {
      f.error = info.status().message();
      return f;
    }
    f.steps.push_back({path, *info});
    if (!info->exists()) {
      f.error = path + ": no such file or directory";
      return f;
    }
    if (info->type == FileType::kSymlink) {
      if (++links > kMaxLinks) {
        f.error = path + ": too many levels of symbolic links";
        return f;
      }
      auto target = host.readLink(path);
      if (!target) {
        f.error = target.status().message();
        return f;
      }
      if (target->empty()) {
        f.error = path + ": empty symbolic link";
        return f;
      }
      // A link that stands for the program itself names it too (/usr/bin/python3 -> python3.11).
      if (rest.empty()) addName(f.names, baseName(*target));
      auto parts = components(*target);
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) rest.push_front(*it);
      if ((*target)[0] == '/') done.clear();
      continue;
    }
    if (rest.empty()) {
      f.resolved = path;
      addName(f.names, c);
      return f;
    }
    if (info->type != FileType::kDirectory) {
      f.error = path + ": not a directory";
      return f;
    }
    done.push_back(c);
  }
  f.error = program + ": resolves to a directory, not a file";
  return f;
}

std::string ruleOfTask(const std::string& loginUser, const SudoTask& task, const std::string& root) {
  std::string rule = loginUser + " ALL=(" + task.runAs + ") NOPASSWD: " + root + task.command.front();
  if (task.command.size() == 1) return rule + " \"\"";
  for (size_t i = 1; i < task.command.size(); ++i) rule += " " + escapeSudoersArgument(task.command[i]);
  return rule;
}

std::string idList(const std::vector<std::string>& ids) {
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i == kMaxIdsShown) return out + ", ... +" + std::to_string(ids.size() - kMaxIdsShown) + " more";
    out += (i ? ", " : "") + ids[i];
  }
  return out;
}

std::string taskSummary(const std::vector<SudoTask>& tasks) {
  std::vector<std::string> ids;
  for (const auto& t : tasks) ids.push_back(t.id);
  std::string s = std::to_string(tasks.size()) + (tasks.size() == 1 ? " task" : " tasks");
  return ids.empty() ? s : s + ": " + idList(ids);
}

Action makeAction(Verb verb, Stage stage, const std::string& detail, const std::string& before,
                  const std::string& after) {
  return makeProviderAction(kProvider, stage, verb, kSudoersFile, detail, before, after);
}

}  // namespace

const std::vector<DeniedProgram>& deniedPrograms() {
  static const std::vector<DeniedProgram> list = {
      // Shells and what hosts one: they run whatever they read.
      {"sh", kShell},
      {"ash", kShell},
      {"bash", kShell},
      {"rbash", kShell},
      {"dash", kShell},
      {"zsh*", kShell},
      {"ksh*", kShell},
      {"mksh*", kShell},
      {"pdksh", kShell},
      {"lksh", kShell},
      {"csh", kShell},
      {"bsd-csh", kShell},
      {"tcsh", kShell},
      {"fish", kShell},
      {"yash", kShell},
      {"posh", kShell},
      {"elvish", kShell},
      {"nu", kShell},
      {"xonsh", kShell},
      {"busybox", kShell},
      {"toybox", kShell},
      {"tmux", kShell},
      {"screen", kShell},
      {"byobu*", kShell},
      {"dtach", kShell},
      {"script", kShell},
      // Interpreters: a program from their standard input, which the user controls.
      {"python*", kInterpreter},
      {"pypy*", kInterpreter},
      {"perl*", kInterpreter},
      {"ruby*", kInterpreter},
      {"irb*", kInterpreter},
      {"jruby*", kInterpreter},
      {"php*", kInterpreter},
      {"node", kInterpreter},
      {"nodejs", kInterpreter},
      {"deno", kInterpreter},
      {"bun", kInterpreter},
      {"lua*", kInterpreter},
      {"tclsh*", kInterpreter},
      {"wish*", kInterpreter},
      {"expect*", kInterpreter},
      {"awk", kInterpreter},
      {"gawk", kInterpreter},
      {"mawk", kInterpreter},
      {"nawk", kInterpreter},
      {"original-awk", kInterpreter},
      {"sed", kInterpreter},
      {"guile*", kInterpreter},
      {"racket", kInterpreter},
      {"sbcl", kInterpreter},
      {"clisp", kInterpreter},
      {"ghci*", kInterpreter},
      {"runghc*", kInterpreter},
      {"R", kInterpreter},
      {"Rscript", kInterpreter},
      {"julia", kInterpreter},
      {"java", kInterpreter},
      {"jshell", kInterpreter},
      {"jrunscript", kInterpreter},
      {"groovy*", kInterpreter},
      {"scala", kInterpreter},
      {"erl", kInterpreter},
      {"escript", kInterpreter},
      {"elixir", kInterpreter},
      {"iex", kInterpreter},
      {"swipl", kInterpreter},
      {"dc", kInterpreter},
      {"ed", kInterpreter},
      {"red", kInterpreter},
      // Interactive programs with a shell escape ('!', ':!', '.shell', a pager's "!").
      {"vi", kEscape},
      {"vim*", kEscape},
      {"nvim", kEscape},
      {"view", kEscape},
      {"rview", kEscape},
      {"rvim", kEscape},
      {"ex", kEscape},
      {"nano", kEscape},
      {"rnano", kEscape},
      {"pico", kEscape},
      {"emacs*", kEscape},
      {"jed", kEscape},
      {"joe", kEscape},
      {"mcedit", kEscape},
      {"mc", kEscape},
      {"micro", kEscape},
      {"editor", kEscape},
      {"sensible-editor", kEscape},
      {"select-editor", kEscape},
      {"vipw", kEscape},
      {"vigr", kEscape},
      {"visudo", kEscape},
      {"crontab", kEscape},
      {"less", kEscape},
      {"more", kEscape},
      {"most", kEscape},
      {"pg", kEscape},
      {"pager", kEscape},
      {"sensible-pager", kEscape},
      {"man", kEscape},
      {"info", kEscape},
      {"pinfo", kEscape},
      {"lynx", kEscape},
      {"w3m", kEscape},
      {"links", kEscape},
      {"elinks", kEscape},
      {"ftp", kEscape},
      {"sftp", kEscape},
      {"ssh", kEscape},
      {"scp", kEscape},
      {"telnet", kEscape},
      {"mail", kEscape},
      {"mailx", kEscape},
      {"s-nail", kEscape},
      {"bsd-mailx", kEscape},
      {"mutt", kEscape},
      {"neomutt", kEscape},
      {"aptitude", kEscape},
      {"sqlite3", kEscape},
      {"mysql", kEscape},
      {"mariadb", kEscape},
      {"psql", kEscape},
      {"gdb*", kEscape},
      {"lldb*", kEscape},
      {"strace", kEscape},
      {"ltrace", kEscape},
      {"valgrind", kEscape},
      // Programs whose arguments name another program to run, or that read commands to run.
      {"env", kRunner},
      {"nohup", kRunner},
      {"timeout", kRunner},
      {"nice", kRunner},
      {"ionice", kRunner},
      {"chrt", kRunner},
      {"taskset", kRunner},
      {"stdbuf", kRunner},
      {"setsid", kRunner},
      {"time", kRunner},
      {"watch", kRunner},
      {"flock", kRunner},
      {"setarch", kRunner},
      {"linux32", kRunner},
      {"linux64", kRunner},
      {"xargs", kRunner},
      {"parallel", kRunner},
      {"find", kRunner},
      {"run-parts", kRunner},
      {"start-stop-daemon", kRunner},
      {"systemd-run", kRunner},
      {"systemd-nspawn", kRunner},
      {"machinectl", kRunner},
      {"at", kRunner},
      {"batch", kRunner},
      {"unbuffer", kRunner},
      {"rlwrap", kRunner},
      {"faketime", kRunner},
      {"firejail", kRunner},
      {"bwrap", kRunner},
      {"dbus-run-session", kRunner},
      {"xvfb-run", kRunner},
      {"socat", kRunner},
      {"nc", kRunner},
      {"nc.*", kRunner},
      {"ncat", kRunner},
      {"netcat*", kRunner},
      {"ssh-agent", kRunner},
      {"openvt", kRunner},
      {"cpulimit", kRunner},
      {"docker*", kRunner},
      {"podman*", kRunner},
      {"ctr", kRunner},
      {"nerdctl", kRunner},
      {"crictl", kRunner},
      {"kubectl", kRunner},
      {"lxc", kRunner},
      {"lxc-*", kRunner},
      {"runc", kRunner},
      {"crun", kRunner},
      // Tools that change who runs what.
      {"su", kPrivilege},
      {"sudo", kPrivilege},
      {"sudoedit", kPrivilege},
      {"doas", kPrivilege},
      {"pkexec", kPrivilege},
      {"runuser", kPrivilege},
      {"setpriv", kPrivilege},
      {"capsh", kPrivilege},
      {"setcap", kPrivilege},
      {"chroot", kPrivilege},
      {"nsenter", kPrivilege},
      {"unshare", kPrivilege},
      {"newgrp", kPrivilege},
      {"sg", kPrivilege},
      {"login", kPrivilege},
      // Tools that run hooks, pagers or scripts named in files of the working directory or the
      // archive they read (sudo keeps the user's working directory).
      {"git", kHooks},
      {"git-*", kHooks},
      {"hg", kHooks},
      {"svn", kHooks},
      {"tar", kHooks},
      {"cpio", kHooks},
      {"zip", kHooks},
      {"rsync", kHooks},
      {"make", kHooks},
      {"gmake", kHooks},
      {"ninja", kHooks},
      {"composer", kHooks},
      {"npm", kHooks},
      {"npx", kHooks},
      {"yarn", kHooks},
      {"pip*", kHooks},
      {"gem", kHooks},
      {"cargo", kHooks},
      {"dpkg", kHooks}};
  return list;
}

std::optional<std::string> deniedProgramReason(const std::string& basename) {
  for (const auto& d : deniedPrograms()) {
    if (::fnmatch(d.pattern, basename.c_str(), FNM_PERIOD) == 0) return std::string(d.reason);
  }
  return std::nullopt;
}

std::string escapeSudoersArgument(const std::string& arg) {
  std::string out;
  for (char c : arg) {
    switch (c) {
      case '\\':
        out += "\\\\\\\\";
        break;
      case ',':
      case ':':
      case '=':
      case '#':
      case '*':
      case '?':
      case '[':
      case ']':
      case '!':
      case '^':
        out += '\\';
        out += c;
        break;
      default:
        out += c;
    }
  }
  return out;
}

bool renderableTask(const std::string& loginUser, const SudoTask& task) {
  if (!safeUserName(loginUser) || !safeId(task.id) || !safeUserName(task.runAs) || task.runAs == loginUser) {
    return false;
  }
  if (task.command.empty() || task.command.size() > 65 || !safeProgram(task.command.front())) return false;
  return std::all_of(task.command.begin() + 1, task.command.end(), safeArgument);
}

std::string renderTaskRule(const std::string& loginUser, const SudoTask& task, const std::string& root) {
  return ruleOfTask(loginUser, task, root);
}

std::string renderSudoersFile(const std::string& loginUser, std::vector<SudoTask> tasks, const std::string& root) {
  std::sort(tasks.begin(), tasks.end(), [](const SudoTask& a, const SudoTask& b) { return a.id < b.id; });
  std::ostringstream out;
  out << kHeader << " Do not edit: this file is rewritten on every change,\n"
      << "# checked with visudo -c before it is installed, and removed when no task is granted.\n"
      << "# The sudo tasks of " << loginUser << " from the access store: " << taskSummary(tasks) << ".\n"
      << "Defaults:" << loginUser << " env_reset, !setenv, secure_path=\"" << kSecurePath
      << "\", log_allowed, log_denied, use_pty\n";
  for (const auto& t : tasks) {
    out << "\n# task " << t.id << "\n" << ruleOfTask(loginUser, t, root) << "\n";
  }
  return out.str();
}

std::vector<std::string> sudoersEntries(const std::string& text) {
  std::vector<std::string> out;
  std::string logical;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    // An odd number of trailing backslashes continues the line.
    size_t slashes = 0;
    while (slashes < line.size() && line[line.size() - 1 - slashes] == '\\') ++slashes;
    if (slashes % 2 == 1) {
      logical += line.substr(0, line.size() - 1);
      continue;
    }
    logical += line;
    const std::string t = trimmed(logical);
    logical.clear();
    if (t.empty() || (t[0] == '#' && t.rfind("#include", 0) != 0 && t.rfind("#includedir", 0) != 0)) continue;
    out.push_back(t);
  }
  if (!trimmed(logical).empty()) out.push_back(trimmed(logical));
  return out;
}

bool hasSudoersHeader(const std::string& text) { return text.rfind(kHeader, 0) == 0; }

Result<SudoersCurrent> observeSudoers(Host& host, const SudoersDesired& desired, const Ledger* ledger) {
  SudoersCurrent c;
  auto info = host.lstat(kSudoersFile);
  if (!info) return info.status();
  c.file = *info;
  if (c.file.type == FileType::kRegular) {
    auto text = host.readFile(kSudoersFile, kMaxSudoersBytes);
    if (!text) return text.status();
    c.content = std::move(*text);
  }
  c.owned = ledger != nullptr && ledger->owns(OwnedKind::kFile, kSudoersFile);

  bool any = false;
  for (const auto& t : desired.tasks) {
    if (!t.active || !renderableTask(desired.loginUser, t)) continue;
    any = true;
    if (c.programs.count(t.command.front()) == 0) {
      c.programs.emplace(t.command.front(), resolveProgram(host, t.command.front()));
    }
    if (c.runAs.count(t.runAs) == 0) {
      auto user = host.findUser(t.runAs);
      if (!user) return user.status();
      c.runAs.emplace(t.runAs, user->has_value() ? std::optional<uid_t>((*user)->uid) : std::nullopt);
    }
  }
  if (!any) return c;
  auto shells = host.lstat(kShells);
  if (!shells) return shells.status();
  if (shells->type == FileType::kRegular) {
    auto text = host.readFile(kShells, kMaxShellsBytes);
    if (!text) return text.status();
    std::istringstream lines(*text);
    for (std::string line; std::getline(lines, line);) {
      line = trimmed(line);
      if (line.empty() || line[0] != '/') continue;
      ProgramFacts shell = resolveProgram(host, line);
      if (!shell.error.empty() || shell.steps.empty()) continue;
      c.loginShells.insert({shell.steps.back().info.device, shell.steps.back().info.inode});
    }
  }
  return c;
}

std::string checkTask(const SudoersDesired& desired, const SudoTask& task, const SudoersCurrent& current) {
  if (!renderableTask(desired.loginUser, task)) return "cannot be written safely into sudoers";
  const std::string& program = task.command.front();
  auto it = current.programs.find(program);
  if (it == current.programs.end()) return "program: " + program + ": not looked at";
  const ProgramFacts& f = it->second;
  for (const auto& name : f.names) {
    if (auto why = deniedProgramReason(name)) {
      return "program: " + program + (name == baseName(program) ? "" : " (" + name + ")") + " is " + *why +
             ": never granted through sudo";
    }
  }
  if (!f.error.empty()) return "program: " + f.error;
  for (size_t i = 0; i < f.steps.size(); ++i) {
    const PathStep& s = f.steps[i];
    const bool last = i + 1 == f.steps.size();
    if (s.info.type == FileType::kSymlink) continue;
    if (last) {
      if (s.info.type != FileType::kRegular) return "program: " + s.path + " is not a regular file";
      if (s.info.uid != 0)
        return "program: " + s.path + " is not owned by root (uid " + std::to_string(s.info.uid) + ")";
      if (s.info.mode & 022) {
        return "program: " + s.path + " is writable by group or others (mode " + octalMode(s.info.mode) + ")";
      }
      if ((s.info.mode & 0111) == 0)
        return "program: " + s.path + " is not executable (mode " + octalMode(s.info.mode) + ")";
      if (current.loginShells.count({s.info.device, s.info.inode}) != 0) {
        return "program: " + s.path + " is a login shell (listed in /etc/shells): never granted through sudo";
      }
      continue;
    }
    if (s.info.type != FileType::kDirectory) return "program: " + s.path + " is not a directory";
    if (s.info.uid != 0) {
      return "program: directory " + s.path + " is not owned by root (uid " + std::to_string(s.info.uid) +
             "): whoever owns it could replace the program";
    }
    if (s.info.mode & 022) {
      return "program: directory " + s.path + " is writable by group or others (mode " + octalMode(s.info.mode) +
             "): the program could be replaced";
    }
  }
  auto user = current.runAs.find(task.runAs);
  if (user == current.runAs.end() || !user->second) return "run_as: no user '" + task.runAs + "' on this host";
  if (task.runAs == desired.loginUser) return "run_as: '" + task.runAs + "' is the login user";
  if (*user->second > kMaxSystemUid) {
    return "run_as: '" + task.runAs + "' is not a system user (uid " + std::to_string(*user->second) + " > " +
           std::to_string(kMaxSystemUid) + ")";
  }
  return {};
}

SudoersPlan planSudoers(const SudoersDesired& desired, const SudoersCurrent& current) {
  SudoersPlan p;
  std::vector<SudoTask> accepted;
  for (const auto& t : desired.tasks) {
    if (!t.active) continue;
    const std::string why = checkTask(desired, t, current);
    if (why.empty()) {
      accepted.push_back(t);
    } else {
      p.refused.push_back({t.id, why});
    }
  }
  std::sort(accepted.begin(), accepted.end(), [](const SudoTask& a, const SudoTask& b) { return a.id < b.id; });

  const bool exists = current.file.exists();
  const bool ours = !exists || (current.content && (current.owned || hasSudoersHeader(*current.content)));
  if (!ours) {
    for (const auto& t : accepted) {
      p.refused.push_back(
          {t.id, std::string(kSudoersFile) + " exists and was not written by pim-access-agent: left alone"});
    }
    return p;
  }
  p.granted = accepted;
  const bool metaOk = current.content && (current.file.mode & 07777) == kSudoersFileMode && current.file.uid == 0 &&
                      current.file.gid == 0;
  // What the live file grants: its entries, when sudo surely reads it as the agent wrote it.
  std::set<std::string> present;
  if (metaOk) {
    for (auto& e : sudoersEntries(*current.content)) present.insert(std::move(e));
  }
  const std::string before = !exists ? "absent" : std::to_string(present.size()) + " entries";

  if (accepted.empty()) {
    if (exists) {
      p.actions.push_back(makeAction(Verb::kRemove, Stage::kRevoke, "no sudo task granted", before, "absent"));
    }
    return p;
  }
  const std::string want = renderSudoersFile(desired.loginUser, accepted, desired.root);
  if (metaOk && *current.content == want) return p;

  std::vector<SudoTask> kept;
  std::vector<std::string> added;
  for (const auto& t : accepted) {
    if (present.count(ruleOfTask(desired.loginUser, t, desired.root)) != 0) {
      kept.push_back(t);
    } else {
      added.push_back(t.id);
    }
  }
  const std::set<std::string> wanted = [&] {
    auto entries = sudoersEntries(want);
    return std::set<std::string>(entries.begin(), entries.end());
  }();
  size_t dropped = 0;
  for (const auto& e : present) dropped += wanted.count(e) == 0 ? 1 : 0;
  std::string changes;
  if (!added.empty()) changes = "grants " + idList(added);
  if (dropped > 0)
    changes += (changes.empty() ? "" : "; ") + std::string("revokes ") + std::to_string(dropped) +
               (dropped == 1 ? " entry" : " entries");
  if (exists && !metaOk) changes += (changes.empty() ? "" : "; ") + std::string("mode/owner to 0440 root:root");
  if (changes.empty()) changes = "rewrite";

  if (added.empty()) {
    Action a =
        makeAction(Verb::kWrite, Stage::kRevoke, changes + "; " + taskSummary(accepted), before, taskSummary(accepted));
    a.payload = want;
    p.actions.push_back(std::move(a));
    return p;
  }
  if (exists) {
    // First take away what the document no longer grants; the new tasks wait for confinement.
    if (kept.empty()) {
      p.actions.push_back(
          makeAction(Verb::kRemove, Stage::kRevoke, "revoked before new tasks are granted", before, "absent"));
    } else {
      const std::string narrowed = renderSudoersFile(desired.loginUser, kept, desired.root);
      if (!metaOk || narrowed != *current.content) {
        Action r = makeAction(Verb::kWrite, Stage::kRevoke,
                              "revoked before new tasks are granted; " + taskSummary(kept), before, taskSummary(kept));
        r.payload = narrowed;
        p.actions.push_back(std::move(r));
      }
    }
  }
  Action g = makeAction(Verb::kWrite, Stage::kGrant, changes + "; " + taskSummary(accepted),
                        kept.empty() ? "absent" : taskSummary(kept), taskSummary(accepted));
  g.payload = want;
  p.actions.push_back(std::move(g));
  return p;
}

std::vector<std::string> installedTaskIds(const std::string& loginUser, const std::vector<SudoTask>& tasks,
                                          const std::string& root, const std::string& content) {
  std::vector<std::string> ids;
  if (!hasSudoersHeader(content)) return ids;
  const auto entries = sudoersEntries(content);
  const std::set<std::string> present(entries.begin(), entries.end());
  for (const auto& t : tasks) {
    if (t.active && renderableTask(loginUser, t) && present.count(ruleOfTask(loginUser, t, root)) != 0) {
      ids.push_back(t.id);
    }
  }
  return ids;
}

SudoersProvider::SudoersProvider(Logger log, Ledger* ledger, std::string visudo)
    : log_(std::move(log)), ledger_(ledger), visudo_(std::move(visudo)) {}

Result<std::vector<Action>> SudoersProvider::plan(const Desired& desired, Host& host) {
  refused_.clear();
  SudoersDesired want{desired.host.loginUser, host.root(), desired.document.sudoTasks};
  auto current = observeSudoers(host, want, ledger_);
  if (!current) return current.status();
  SudoersPlan p = planSudoers(want, *current);
  for (const auto& r : p.refused) log_->debug("sudo task {} skipped: {}", r.id, r.reason);  // the cycle logs it
  refused_ = std::move(p.refused);
  logPlan(log_, p.actions);
  return p.actions;
}

Status SudoersProvider::check(const std::string& content, Host& host) const {
  ScratchDir dir("pim-sudoers-check.");
  if (!dir.valid()) return dir.status();
  // The same name as the live file: visudo's messages then name a file an operator recognises.
  const std::string name = baseName(kSudoersFile);
  if (Status s = dir.writeFile(name, content); !s) return s;
  auto r = host.run({visudo_, "-c", "-f", dir.file(name)});
  if (!r) return Status::error(ErrorCode::kCommand, "visudo -c: " + r.status().message(), kSudoersFile);
  if (r->exitCode != 0) {
    std::string why = trimmed(r->err.empty() ? r->out : r->err + " " + r->out);
    if (why.empty()) why = "exit code " + std::to_string(r->exitCode);
    return Status::error(ErrorCode::kCommand, "visudo -c refused the candidate sudoers file: " + why, kSudoersFile);
  }
  return Status::ok();
}

Status SudoersProvider::apply(const Action& action, const Desired& desired, Host& host) {
  (void)desired;
  try {
    if (action.provider != name() || action.object != kSudoersFile ||
        (action.verb != Verb::kWrite && action.verb != Verb::kRemove)) {
      return Status::error(ErrorCode::kInternal, "sudoers: cannot apply " + action.describe());
    }
    // Whatever plan() saw, a file that is not the agent's is never touched.
    auto info = host.lstat(kSudoersFile);
    if (!info) return info.status();
    if (info->exists()) {
      bool ours = false;
      if (info->type == FileType::kRegular) {
        auto text = host.readFile(kSudoersFile, kMaxSudoersBytes);
        if (!text) return text.status();
        ours = (ledger_ != nullptr && ledger_->owns(OwnedKind::kFile, kSudoersFile)) || hasSudoersHeader(*text);
      }
      if (!ours) {
        return Status::error(ErrorCode::kUnsafe,
                             std::string(kSudoersFile) + " was not written by pim-access-agent: left alone",
                             kSudoersFile);
      }
    }
    auto remove = [&]() -> Status {
      if (Status s = host.removeFile(kSudoersFile); !s) return s;
      if (ledger_ != nullptr) {
        if (Status s = ledger_->recordRemoved(OwnedKind::kFile, kSudoersFile); !s) return s;
      }
      log_->info("removed {} ({})", kSudoersFile, action.detail);
      return Status::ok();
    };
    if (action.verb == Verb::kRemove) return remove();

    if (Status s = check(action.payload, host); !s) {
      if (action.stage != Stage::kRevoke || !info->exists()) {
        log_->error("{}: {}; nothing installed", action.describe(), s.message());
        return Status::error(s.code(), s.message() + "; nothing installed", kSudoersFile);
      }
      // A revocation never waits: without a checked narrower file, no task is granted at all.
      log_->error("{}: {}; removing the file instead", action.describe(), s.message());
      if (Status r = remove(); !r)
        return Status::error(r.code(), s.message() + "; and removing it failed: " + r.message());
      return Status::error(s.code(), s.message() + "; removed " + kSudoersFile + " instead (every task revoked)",
                           kSudoersFile);
    }
    // Recorded first: a crash after the write never leaves a file the agent does not know.
    if (ledger_ != nullptr) {
      if (Status s = ledger_->recordCreated(OwnedKind::kFile, kSudoersFile); !s) return s;
    }
    const std::string dir = parentOf(kSudoersFile);
    if (Status s = host.makeDirectories(dir, {kSudoersDirMode, 0, 0}); !s) return s;
    if (Status s = host.writeFileAtomic(kSudoersFile, action.payload, {kSudoersFileMode, 0, 0}); !s) return s;
    log_->info("wrote {} ({})", kSudoersFile, action.detail);
    return Status::ok();
  } catch (const std::exception& e) {
    return Status::error(ErrorCode::kInternal, "sudoers: " + action.describe() + ": " + e.what());
  }
}

}  // namespace pim
