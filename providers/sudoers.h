#pragma once
// The sudoers provider: the document's sudo tasks (sudo.tasks[]) in one file the agent owns whole,
// kSudoersFile (/etc/sudoers.d/pim-access-agent, root:root 0440; sudo reads it through Debian's
// `@includedir /etc/sudoers.d`):
//
//   # Managed by pim-access-agent. Do not edit: this file is rewritten on every change,
//   # checked with visudo -c before it is installed, and removed when no task is granted.
//   # The sudo tasks of akeneo from the access store: 2 tasks.
//   Defaults:akeneo env_reset, !setenv, secure_path="/usr/sbin:/usr/bin:/sbin:/bin", ...
//
//   # task restart-php
//   akeneo ALL=(root) NOPASSWD: /usr/bin/systemctl restart php8.2-fpm
//   # task whoami
//   akeneo ALL=(www-data) NOPASSWD: /usr/bin/whoami ""
//
// One rule per active task the host accepts, sorted by id: the login user may run exactly that
// command line, as `run_as`, without a password (the login user has none). Each argument is
// escaped (escapeSudoersArgument()) so that it matches only itself: no wildcard, regular
// expression, separator or comment ever reaches sudoers unescaped; a task without arguments gets
// `""`, which forbids any. The Defaults log every use (log_allowed, log_denied: syslog authpriv
// on Debian), reset the environment and fix PATH, so a task's program never sees the user's PATH.
//
// Host checks (checkTask(), pure, on what observeSudoers() saw; a refused task is skipped and
// reported by id, and never rendered): the program is an absolute path to an existing regular,
// executable file owned by root and not writable by group or others, every directory on the way
// to it (symbolic links resolved, each link's directory too) owned by root and not writable by
// group or others, so that no user can replace it; no name on the way (the given one, every link,
// the real file) is on the deny list (deniedProgramReason(): shells, interpreters, programs with
// a shell escape, programs that run another program), and the real file is not one of the login
// shells of /etc/shells (by device and inode, so a hard link or another name of a shell is
// refused too); run_as is root or an existing system user (uid < 1000), never the login user.
//
// Ownership: the file is the agent's when the Ledger records it ("file") or when its first line
// is the agent's header (a rebuilt state database); anything else at that path (a file someone
// else wrote, a symbolic link, a directory) is never touched, and every active task is reported
// as skipped. The file is recorded in the Ledger before it is first written.
//
// Stages: tasks that go away or change are revoked with the revocations, tasks that are added are
// a grant (written once the cycle's sshd configuration is live). A change with both is two writes:
// first the file with only the tasks it already grants and the document still wants (removed when
// none remain), Stage::kRevoke, then the whole file, Stage::kGrant. A file whose mode or owner is
// not 0440 root:root (which sudo may or may not read) counts as granting nothing it holds. An empty
// task list removes the file (Stage::kRevoke).
//
// Every candidate is checked with `visudo -c -f` on a copy in a scratch directory under /tmp
// (never in /etc/sudoers.d, where sudo would read it) before it replaces the live file atomically
// (a temporary ".pim-access-agent.pim-XXXX" in /etc/sudoers.d, which sudo ignores for its '.',
// then a rename). A grant that visudo refuses installs nothing; a revocation that visudo refuses
// (or that cannot be checked) removes the live file instead: revocations never wait.

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "providers/core/ledger.h"
#include "providers/core/log.h"
#include "providers/core/model.h"
#include "providers/core/result.h"
#include "providers/host/host.h"
#include "providers/provider.h"

namespace pim {

inline constexpr const char* kSudoersFile = "/etc/sudoers.d/pim-access-agent";
inline constexpr const char* kVisudo = "/usr/sbin/visudo";
inline constexpr mode_t kSudoersFileMode = 0440;
inline constexpr mode_t kSudoersDirMode = 0750;
/// The highest uid of a system user a task may run as (Debian: UID_MAX of system users is 999).
inline constexpr uid_t kMaxSystemUid = 999;

/// One pattern of the deny list (fnmatch(3) on a basename) and why it is refused.
struct DeniedProgram {
  const char* pattern;
  const char* reason;
};
/// The deny list, documented in docs/access-document.md.
const std::vector<DeniedProgram>& deniedPrograms();
/// Why a program named `basename` is refused ("a shell", ...), nullopt when it is not listed.
std::optional<std::string> deniedProgramReason(const std::string& basename);

/// One fixed argument written for a sudoers Cmnd so that it matches only itself: '\' becomes
/// "\\\\" (one level for the sudoers parser, one for fnmatch), the sudoers separators ',', ':',
/// '=' and the comment sign '#' get one '\', the wildcards '*', '?', '[', ']', and '!' and '^'
/// (a leading '^' would start a regular expression) get one '\' that sudoers passes on to
/// fnmatch. Expects an argument that passed checkSudoArgument() (printable ASCII, no white space,
/// no '"'). Pure.
std::string escapeSudoersArgument(const std::string& arg);

/// Whether a task can be written safely at all (the parser's rules, checked again: the last line
/// of defence before sudoers syntax). Pure.
bool renderableTask(const std::string& loginUser, const SudoTask& task);

/// "akeneo ALL=(root) NOPASSWD: /usr/bin/systemctl restart php8.2-fpm": the rule of one task.
/// `root` is the host's root prefix ("" for the real system): the program is named by its real
/// path, the file that was checked. Pure.
std::string renderTaskRule(const std::string& loginUser, const SudoTask& task, const std::string& root);

/// The whole file for `tasks` (already accepted; sorted by id here). Pure.
std::string renderSudoersFile(const std::string& loginUser, std::vector<SudoTask> tasks, const std::string& root);

/// The logical lines of a sudoers text (lines continued with a trailing '\' joined), without the
/// blank lines and comments: what sudo parses as entries. Pure.
std::vector<std::string> sudoersEntries(const std::string& text);

/// Whether `text` starts with the agent's header line.
bool hasSudoersHeader(const std::string& text);

/// One path the program's resolution looked at, with what lstat said.
struct PathStep {
  std::string path;  // host path
  FileInfo info;
};

/// What observeSudoers() found about one program path.
struct ProgramFacts {
  std::vector<PathStep> steps;     // "/", every directory, every symbolic link, and the final file
  std::vector<std::string> names;  // the given basename, each link's basename, the real file's
  std::string resolved;            // the real file's host path ("" when resolution failed)
  std::string error;               // why it could not be resolved ("" when it was)
};

/// What observeSudoers() found.
struct SudoersCurrent {
  FileInfo file;                                        // lstat of kSudoersFile
  std::optional<std::string> content;                   // its bytes when it is a regular file
  bool owned = false;                                   // the Ledger records it
  std::map<std::string, ProgramFacts> programs;         // by program path (active tasks only)
  std::map<std::string, std::optional<uid_t>> runAs;    // run_as name -> uid; nullopt: no such user
  std::set<std::pair<uint64_t, uint64_t>> loginShells;  // (device, inode) of /etc/shells' programs
};

/// What the provider wants.
struct SudoersDesired {
  std::string loginUser;
  std::string root;  // Host::root(): the rendered program paths carry it
  std::vector<SudoTask> tasks;
};

/// Looks at the file, the programs and run_as users of the active tasks, and /etc/shells.
/// Read-only. Errors: kIo (a file or directory could not be read); what is wrong with a program
/// is a fact (ProgramFacts::error), not an error.
Result<SudoersCurrent> observeSudoers(Host& host, const SudoersDesired& desired, const Ledger* ledger);

/// Why the host refuses `task` ("program: /usr/bin/vim.basic is an editor (shell escape)"), or ""
/// when it accepts it. Pure.
std::string checkTask(const SudoersDesired& desired, const SudoTask& task, const SudoersCurrent& current);

/// The plan: the actions (verbs "write", payload the file, and "remove"; see the stages above),
/// the tasks refused by the host (by id) and the tasks the file grants once applied.
struct SudoersPlan {
  std::vector<Action> actions;
  std::vector<SkippedEntry> refused;
  std::vector<SudoTask> granted;
};
SudoersPlan planSudoers(const SudoersDesired& desired, const SudoersCurrent& current);

/// The ids of `tasks` whose rule is in force in `content` (the live file, when it is the agent's
/// and 0440 root:root), for `status`. Pure.
std::vector<std::string> installedTaskIds(const std::string& loginUser, const std::vector<SudoTask>& tasks,
                                          const std::string& root, const std::string& content);

class SudoersProvider : public Provider {
 public:
  /// `ledger` (may be null: only the header proves ownership) must outlive the provider.
  /// `visudo` is the checker run on every candidate (tests pass another program).
  explicit SudoersProvider(Logger log, Ledger* ledger = nullptr, std::string visudo = kVisudo);

  /// "sudoers".
  std::string name() const override { return "sudoers"; }
  /// Observes and plans (see planSudoers()); changes nothing. Errors: see observeSudoers().
  Result<std::vector<Action>> plan(const Desired& desired, Host& host) override;
  /// Applies one action of plan(): "write" checks the payload with visudo, records the file in
  /// the Ledger and writes it atomically 0440 root:root (the directory made 0750 root:root when
  /// missing); "remove" removes it. A file that is no longer the agent's is never touched
  /// (kUnsafe). Errors: kCommand (visudo refused the candidate or could not run: for a revocation,
  /// the live file was removed instead), kIo. Never throws.
  Status apply(const Action& action, const Desired& desired, Host& host) override;
  /// The tasks the last plan() refused, by id.
  std::vector<SkippedEntry> skipped() const override { return refused_; }

  /// `visudo -c -f` on a scratch copy of `content`. Errors: kCommand with visudo's message.
  Status check(const std::string& content, Host& host) const;

 private:
  Logger log_;
  Ledger* ledger_ = nullptr;
  std::string visudo_;
  std::vector<SkippedEntry> refused_;
};

}  // namespace pim
