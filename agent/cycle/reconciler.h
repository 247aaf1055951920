#pragma once
// Runs the providers (in the order of providers/provider_set.cpp) for one desired state: plan, or
// converge. Knows nothing about the store or the state database; the cycle (agent/cycle/cycle.h)
// decides what to converge to and records what happened.
//
// Converging keeps the invariant of the agent: at no moment does the host grant more than the
// document. Every provider's actions carry a stage (providers/provider.h) and are applied stage
// by stage across providers:
//   1. revoke   keys, passwords and accounts that go away, locks, unmounts: never held back by
//               anything else, including a failure of another provider;
//   2. confine  the sshd drop-in for the document: checked, installed, reloaded and verified (or
//               a reload still pending from an earlier cycle retried);
//   3. prepare  what a grant needs (a locked account, directories, bind mounts), and
//   4. grant    passwords, keys and unlocks,
// where 3 and 4 run only once the configuration of step 2 is live. Failures are isolated: a
// provider that cannot plan, or an action that fails, is recorded and the rest goes on; an SFTP
// account with a failed step gets no grant and is contained (locked) instead.
//
// Entries the providers refuse (a folder that is not a safe directory, an unusable chroot or
// mount point) are converged as locked entries: an account that cannot be confined is never
// granted anything ("skipped means locked").

#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "agent/cycle/failpoint.h"
#include "providers/core/log.h"
#include "providers/provider.h"

namespace pim {

/// One part of a convergence that failed: the provider, the action (or "plan"), the subject it
/// concerned (an SFTP username, or empty) and why.
struct FailedPart {
  std::string provider;
  std::string action;
  std::string subject;
  std::string error;
  std::string describe() const { return action + ": " + error; }
};

class Reconciler {
 public:
  /// Providers run in the order given (makeProviders(), providers/provider_set.h). `failpoints`
  /// (tests only, see agent/cycle/failpoint.h) are honoured by converge(); the Agent passes them
  /// to forward cycles only.
  Reconciler(std::vector<std::unique_ptr<Provider>> providers, Logger log, FailPoints failpoints = {});

  /// Every provider's plan, in the providers' order, as converge() applies them.
  struct ProviderPlans {
    std::vector<std::vector<Action>> actions;  // per provider, in the provider's order
    std::vector<bool> planned;                 // false: the provider could not plan
    std::vector<FailedPart> failures;
    std::vector<SkippedEntry> refused;
    std::set<std::string> lockIds;  // account ids refused by a provider that confines them
  };
  /// What a convergence would start from: the refused entries, the document as it will be
  /// converged (refused accounts locked) and every action in the order converge() applies them
  /// (by stage, then provider). Changes nothing. Reads each file of the host once.
  struct Plan {
    std::vector<Action> actions;
    std::vector<SkippedEntry> refused;  // by the providers, by id, without duplicates
    std::vector<FailedPart> failures;   // providers that could not observe the host
    AccessDocument effective;           // the document with refused accounts moved to lockedUsernames
    ProviderPlans byProvider;           // what converge(plan, ...) starts from
  };
  Plan plan(const Desired& desired, Host& host) const;

  struct Outcome {
    std::vector<Action> applied;        // actions that completed, in order
    std::vector<FailedPart> failures;   // what did not (empty: everything applied)
    std::vector<SkippedEntry> refused;  // entries the providers refused (converged locked)
    std::vector<std::string> warnings;  // worth an operator's eye but not a failure
    bool confined = true;               // false: the confining configuration is not live, no grant made
    bool dropinWritten = false;         // the sshd provider installed a new drop-in
    bool sshdReloaded = false;          // sshd reloaded (and answered, when it did before)
    std::string reloadFailure;          // set when a drop-in is in place that sshd did not load
    /// ok when everything applied; otherwise an error naming every failed part.
    Status status() const;
  };
  /// Converges the host to `desired` stage by stage (see above). `reloadPending`: a drop-in is
  /// in place that sshd did not load yet; it is reloaded before anything is granted. With
  /// `revokeOnly`, only the revoke stage runs (recovery from a cycle that keeps crashing). Never
  /// throws, except for a failpoint crash hook's own exception.
  Outcome converge(const Desired& desired, Host& host, bool reloadPending, bool revokeOnly = false) const;
  /// The same, starting from `planned`: what plan() of this reconciler (the same providers) made
  /// for the same `desired`, nothing having changed on the host since (the drift check of a
  /// cycle, handed to its convergence: the host is observed once per cycle). The sshd drop-in is
  /// still planned again after the revocations, as in the other form. With a failpoint armed
  /// before a provider (tests), the providers plan again so that it fires.
  Outcome converge(Plan planned, const Desired& desired, Host& host, bool reloadPending) const;

  /// Called before the sshd provider replaces the drop-in, to record that a reload is owed from
  /// then on (intent first): an agent killed between the write and the reload leaves the next
  /// cycle a drop-in that matches the document but that sshd never loaded. An error stops the
  /// write (nothing is granted).
  void onDropinWrite(std::function<Status()> hook) { beforeDropinWrite_ = std::move(hook); }

 private:
  std::vector<std::unique_ptr<Provider>> providers_;
  Logger log_;
  FailPoints failpoints_;
  std::function<Status()> beforeDropinWrite_;

  Outcome convergeFrom(ProviderPlans plans, const AccessDocument& effective, const Desired& desired, Host& host,
                       bool reloadPending, bool revokeOnly) const;
};

}  // namespace pim
