#pragma once
// AccountsTool: a thin wrapper over the shadow tools (useradd, usermod, userdel, groupadd,
// groupdel, chpasswd) for the providers that create users and groups. Every command runs through
// Host::run with an absolute path and no shell; when the host has a root prefix, the tools get
// `--prefix <root>` so they act on <root>/etc/{passwd,shadow,group,gshadow} (chpasswd has no
// --prefix in shadow 4.13: it gets `--root <root>`, which chroots into the sandbox).
//
// Errors are kCommand and name the command and the tool's stderr; password hashes never appear
// in argv (they go to chpasswd on standard input), in messages or in logs.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "providers/core/result.h"
#include "providers/host/account_files.h"  // ShadowEntry
#include "providers/host/host.h"

namespace pim {

/// A user to create with useradd.
struct NewUser {
  std::string name;
  std::string home;         // host path ("/home/akeneo"); empty: useradd's default
  bool createHome = false;  // useradd -m (the home is created below the root prefix)
  std::string shell = "/usr/sbin/nologin";
  std::string primaryGroup;                      // existing group; empty: a new group named after the user (-U)
  std::vector<std::string> supplementaryGroups;  // existing groups
  bool system = false;                           // useradd --system (uid below UID_MIN, no aging)
};

class AccountsTool {
 public:
  /// Keeps a reference to `host`, which must outlive the tool.
  explicit AccountsTool(Host& host);

  /// groupadd [--system] NAME. Errors: kCommand (the group exists already: exit 9).
  Status addGroup(const std::string& name, bool system = true);
  /// groupdel NAME. Errors: kCommand (e.g. it is some user's primary group).
  Status removeGroup(const std::string& name);
  /// useradd with the fields of `user`; the new account's password is locked ("!") until
  /// setPasswordHash(). Errors: kCommand (name taken, missing group, ...).
  Status addUser(const NewUser& user);
  /// Adds `user` to the supplementary group `group` (usermod -a -G); a no-op if already in it.
  Status addToGroup(const std::string& user, const std::string& group);
  /// Sets the primary group (usermod -g).
  Status setPrimaryGroup(const std::string& user, const std::string& group);
  /// Sets the login shell (usermod -s).
  Status setShell(const std::string& user, const std::string& shell);
  /// Stores a crypt(3) hash as the password (chpasswd -e, the hash on standard input only).
  /// The password is then unlocked; the account expiry is not changed. Errors: kInvalid for a
  /// hash containing ':' or a newline (never echoed), kCommand.
  Status setPasswordHash(const std::string& user, const std::string& hash);
  /// Locks the password (usermod -L: "!" in front of the field); keys still work.
  Status lockPassword(const std::string& user);
  /// Locks the account for every method: password locked and account expired
  /// (usermod -L -e 1), which PAM's account stage refuses for key logins too.
  Status lockAccount(const std::string& user);
  /// Undoes lockAccount(): clears the expiry (usermod -e ""), then sets `hash` as the password
  /// or, with nullopt, leaves the password locked (key-only account).
  Status unlockAccount(const std::string& user, const std::optional<std::string>& hash);
  /// userdel NAME (never -r: homes and files are left in place). Errors: kCommand.
  Status removeUser(const std::string& user);
  /// Removes many accounts at once as userdel (without -r) removes each: their passwd and shadow
  /// lines go, their names leave the member (and gshadow administrator) lists, homes and files
  /// stay. No tool does this for many accounts (userdel rewrites and re-reads the four files per
  /// account): one lock, taken as the shadow tools take it (/etc/.pwd.lock with fcntl, as
  /// lckpwdf and systemd-sysusers do, and the FILE.lock files), and one atomic rewrite per file
  /// (shadow, gshadow, group, then passwd) for all of them. One Status per name, in order:
  /// kNotFound (not in passwd), kBusy (a process runs as the user; checked without --root only,
  /// as userdel does), kInvalid (a name only userdel handles: a group of the same name, subuid
  /// or subgid ranges, a bad name: use removeUser), or the error that stopped the rewrite.
  std::vector<Status> removeUsers(const std::vector<std::string>& names);
  /// Creates many system accounts at once: one run of systemd-sysusers (one lock and one rewrite
  /// of the account files for all of them, where useradd rewrites and re-reads them per account),
  /// each with a free UID of login.defs' system range (SYS_UID_MIN..SYS_UID_MAX, default 100..999,
  /// highest first like useradd --system), its existing primary group, its home (never created)
  /// and shell, and a locked password ("!*"). Returns one Status per user, in order: ok when the
  /// user exists afterwards with that home, shell and group. Every user must have a primaryGroup
  /// and system set; createHome and supplementary groups are not supported (kInvalid).
  std::vector<Status> addSystemUsers(const std::vector<NewUser>& users);
  /// Stores many crypt(3) hashes with one chpasswd -e (the hashes on standard input only). chpasswd
  /// writes nothing when one line fails, so on a failure each entry is tried alone. One Status per
  /// entry, in order.
  std::vector<Status> setPasswordHashes(const std::vector<std::pair<std::string, std::string>>& entries);
  /// Reads <root>/etc/shadow through the host and returns the user's entry (nullopt: no such
  /// line). Errors: the file cannot be read.
  Result<std::optional<ShadowEntry>> shadow(const std::string& user);

 private:
  /// Runs /usr/sbin/<tool> with the prefix option (when rooted) and `args`; `input` goes to its
  /// standard input. Errors: kCommand naming the tool, its arguments and its stderr.
  Status runTool(const std::string& tool, const std::vector<std::string>& args, const std::string& input = {});

  Host& host_;
};

}  // namespace pim
