#pragma once
// A provider makes one aspect of the host match the document: observe -> plan -> apply.
// Concrete providers expose a typed, pure plan() for table tests; this interface is what the
// reconciler drives.

#include <cstdint>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "providers/core/log.h"
#include "providers/core/model.h"
#include "providers/core/result.h"
#include "providers/core/settings.h"
#include "providers/host/host.h"

namespace pim {

/// When, within a cycle, an action may run. A cycle applies every provider's actions stage by
/// stage, so that the host never grants more than the document in force: revocations first,
/// then the confining sshd configuration, then what prepares a grant, and credentials last,
/// only once the configuration that confines them is live (agent/agent.h).
enum class Stage {
  kRevoke,   // takes access away or changes nothing anyone can use (remove, lock, unmount, adopt)
  kConfine,  // the sshd drop-in: installed, reloaded and verified
  kPrepare,  // makes what a grant needs without granting (a locked account, a directory, a mount)
  kGrant,    // gives access: a password, a key, an unlock; only after confinement is live
};

/// "revoke", "confine", "prepare" or "grant".
inline const char* stageName(Stage stage) {
  switch (stage) {
    case Stage::kRevoke:
      return "revoke";
    case Stage::kConfine:
      return "confine";
    case Stage::kPrepare:
      return "prepare";
    case Stage::kGrant:
      return "grant";
  }
  return "?";
}

/// What an action does; verbName() is its word in logs, `plan` output and the change log.
enum class Verb {
  kAdd,              // login_user: the login user into the transfer group
  kAdopt,            // sftp_accounts: an account carrying the agent's signature, recorded as its own
  kCreate,           // login_user, sftp_accounts, firewall (the table)
  kFix,              // sftp_chroots, transfer_tree: a directory's owner or mode
  kFixDir,           // ssh_keys: the ~/.ssh directory
  kFixKeysDir,       // sftp_accounts: the SFTP keys directory
  kForget,           // sftp_accounts, sftp_chroots: a ledger record of an object no longer on the host
  kLock,             // login_user, sftp_accounts
  kLockPassword,     // sftp_accounts
  kMkdir,            // sftp_chroots, transfer_tree
  kMount,            // sftp_chroots: a bind mount
  kNarrow,           // firewall: what both the old and the new lists allow
  kRebuild,          // firewall: a table whose sets, chains or rules drifted, made again whole
  kRemount,          // sftp_chroots
  kRemove,           // sftp_accounts, sudoers, firewall
  kRemoveKeys,       // sftp_accounts
  kRemoveLegacy,     // ssh_keys: an SFTP key file of agent 0.1
  kRemoveLegacyDir,  // ssh_keys
  kRmdir,            // sftp_chroots
  kSetGroup,         // sftp_accounts
  kSetPassword,      // sftp_accounts
  kSetShell,         // sftp_accounts
  kUnlock,           // sftp_accounts
  kUnmount,          // sftp_chroots
  kWiden,            // firewall: the new list
  kWrite,            // ssh_keys, sshd_dropin, sudoers: a whole file
  kWriteKeys,        // sftp_accounts
};

/// The verb's word: "create", "set-password", "remove-legacy-dir", ...
inline const char* verbName(Verb verb) {
  switch (verb) {
    case Verb::kAdd:
      return "add";
    case Verb::kAdopt:
      return "adopt";
    case Verb::kCreate:
      return "create";
    case Verb::kFix:
      return "fix";
    case Verb::kFixDir:
      return "fix-dir";
    case Verb::kFixKeysDir:
      return "fix-keys-dir";
    case Verb::kForget:
      return "forget";
    case Verb::kLock:
      return "lock";
    case Verb::kLockPassword:
      return "lock-password";
    case Verb::kMkdir:
      return "mkdir";
    case Verb::kMount:
      return "mount";
    case Verb::kNarrow:
      return "narrow";
    case Verb::kRebuild:
      return "rebuild";
    case Verb::kRemount:
      return "remount";
    case Verb::kRemove:
      return "remove";
    case Verb::kRemoveKeys:
      return "remove-keys";
    case Verb::kRemoveLegacy:
      return "remove-legacy";
    case Verb::kRemoveLegacyDir:
      return "remove-legacy-dir";
    case Verb::kRmdir:
      return "rmdir";
    case Verb::kSetGroup:
      return "set-group";
    case Verb::kSetPassword:
      return "set-password";
    case Verb::kSetShell:
      return "set-shell";
    case Verb::kUnlock:
      return "unlock";
    case Verb::kUnmount:
      return "unmount";
    case Verb::kWiden:
      return "widen";
    case Verb::kWrite:
      return "write";
    case Verb::kWriteKeys:
      return "write-keys";
  }
  return "?";
}

/// One change to make. A small value: describe() feeds logs and `plan` output and never
/// contains secrets; `payload` carries what apply() needs (file contents, hashes) and is never
/// logged.
struct Action {
  std::string provider;           // "ssh_keys", "sftp_accounts", ...
  Verb verb = Verb::kCreate;      // what it does
  std::string object;             // a path, user name or mount point
  std::string detail;             // human-readable detail, no secrets
  std::string payload;            // data for apply(); may hold secrets; never printed
  std::string before;             // short summary of the old state for the change log (no secrets)
  std::string after;              // short summary of the new state for the change log (no secrets)
  Stage stage = Stage::kPrepare;  // when the cycle applies it
  std::string subject;            // the SFTP account (username) the action is for; empty: none in particular

  std::string describe() const {
    std::string s = provider + ": " + verbName(verb) + " " + object;
    if (!detail.empty()) s += " (" + detail + ")";
    return s;
  }
};

/// An action of `provider`: the fields every provider fills (`payload` and `subject` stay empty
/// for the caller to set when it needs them). Pure.
inline Action makeProviderAction(std::string provider, Stage stage, Verb verb, std::string object, std::string detail,
                                 std::string before = {}, std::string after = {}) {
  Action a;
  a.provider = std::move(provider);
  a.verb = verb;
  a.object = std::move(object);
  a.detail = std::move(detail);
  a.before = std::move(before);
  a.after = std::move(after);
  a.stage = stage;
  return a;
}

/// Logs a plan at debug: first the entries it skipped, as "`skippedAs` ID: REASON" (the cycle
/// reports them to the operator), then "plan: " and each action's describe().
inline void logPlan(const Logger& log, const std::vector<Action>& actions,
                    const std::vector<SkippedEntry>& skipped = {}, const char* skippedAs = "skipped") {
  for (const auto& s : skipped) log->debug("{} {}: {}", skippedAs, s.id, s.reason);
  for (const auto& a : actions) log->debug("plan: {}", a.describe());
}

/// The plan() of a provider whose whole plan is `plan(observe())`: clears `skipped`, observes the
/// host with `observe()` (a Result; its error is returned as is), plans with `plan(current)`, which
/// may add to `skipped`, and logs the plan with logPlan().
template <class Observe, class Plan>
Result<std::vector<Action>> observeAndPlan(Observe observe, Plan plan, std::vector<SkippedEntry>& skipped,
                                           const Logger& log, const char* skippedAs = "skipped") {
  skipped.clear();
  auto current = observe();
  if (!current) return current.status();
  std::vector<Action> actions = plan(*current);
  logPlan(log, actions, skipped, skippedAs);
  return actions;
}

/// What every provider is asked to reach.
struct Desired {
  const AccessDocument& document;
  const HostSettings& host;
  const SshdSettings& sshd;
  int64_t now = 0;  // Unix seconds, from the injected clock
  /// [network]: the firewall (providers/firewall.h). Every caller that converges a real host
  /// passes the config's; the default (managed, nftables) is what a host gets without a config.
  NetworkSettings network = {};
};

class Provider {
 public:
  virtual ~Provider() = default;
  /// Stable name used in logs, actions and the change log ("ssh_keys").
  virtual std::string name() const = 0;
  /// Observes the host and returns the actions that make it match `desired`. Changes nothing.
  /// Errors: observation failed (unreadable file, unsafe path); the cycle must stop.
  virtual Result<std::vector<Action>> plan(const Desired& desired, Host& host) = 0;
  /// Applies one action that this provider's plan() returned. Never throws.
  virtual Status apply(const Action& action, const Desired& desired, Host& host) = 0;
  /// Applies several actions of this provider's last plan, of one stage, and returns one Status
  /// per action, in order. The default applies them one by one; a provider may batch (one process
  /// for many accounts) as long as each subject's actions keep their order and an action of a
  /// subject whose earlier action failed is not applied (its Status says so). Never throws.
  virtual std::vector<Status> applyAll(const std::vector<Action>& actions, const Desired& desired, Host& host);
  /// Entries the last plan() refused (a foreign user, an unsafe folder), by id with the reason;
  /// they are reported with the document's skipped entries.
  virtual std::vector<SkippedEntry> skipped() const { return {}; }
  /// Notes from the last apply() that an operator should see (a mount detached lazily, ...).
  virtual std::vector<std::string> reports() const { return {}; }
  /// The actions that take every access away from `subject` (an SFTP account's username) after
  /// a failure left it half-made: an existing account the agent owns is locked. Empty when this
  /// provider grants nothing to subjects. Reads the host; changes nothing.
  virtual std::vector<Action> containActions(const std::string& subject, const Desired& desired, Host& host) {
    (void)subject;
    (void)desired;
    (void)host;
    return {};
  }
};

/// What applyAll() answers for an action it did not apply because an earlier step of its subject
/// (or a subject-less step of its provider) failed: that failure is the one reported.
inline constexpr const char* kNotAppliedAfterFailure = "not applied: an earlier step for it failed";

/// Whether `action` may still run after the failures of `failed` (the subjects with a failed step,
/// "" for a step that concerned no subject): revocations always run; anything else waits for none
/// of its subject's steps, nor a subject-less step of its provider, to have failed.
inline bool mayRun(const Action& action, const std::set<std::string>& failed) {
  if (action.stage == Stage::kRevoke) return true;
  return !failed.count("") && (action.subject.empty() || !failed.count(action.subject));
}

inline std::vector<Status> Provider::applyAll(const std::vector<Action>& actions, const Desired& desired, Host& host) {
  std::vector<Status> out;
  out.reserve(actions.size());
  std::set<std::string> failed;
  for (const auto& a : actions) {
    if (!mayRun(a, failed)) {
      out.push_back(Status::error(ErrorCode::kInternal, kNotAppliedAfterFailure));
      continue;
    }
    out.push_back(apply(a, desired, host));
    if (!out.back()) failed.insert(a.subject);
  }
  return out;
}

}  // namespace pim
