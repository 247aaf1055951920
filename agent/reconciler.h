#pragma once
// Runs the providers in order: plan, or plan-and-apply. Knows nothing about the store or the
// state database; the cycle (agent/cycle.h) decides what to apply and what to restore.

#include <memory>
#include <vector>

#include "providers/log.h"
#include "providers/provider.h"

namespace pim {

class Reconciler {
 public:
  /// Providers run in the order given (login_user, ssh_keys, transfer_tree, sftp_accounts,
  /// sftp_chroots, sshd).
  Reconciler(std::vector<std::unique_ptr<Provider>> providers, Logger log);

  /// Plans every provider against the host as it is; changes nothing. A provider's plan does
  /// not see the earlier providers' pending actions (the user they would create, say), so the
  /// list is what the next `once` starts with. Errors: the first provider that cannot observe.
  Result<std::vector<Action>> plan(const Desired& desired, Host& host) const;

  struct Outcome {
    Status status;                 // ok, or the first failure (provider, action, cause)
    std::vector<Action> applied;   // actions that completed, in order
  };
  /// For each provider in order: plan against the current host, then apply its actions.
  /// Stops at the first failure and reports it; never throws.
  Outcome apply(const Desired& desired, Host& host) const;

 private:
  std::vector<std::unique_ptr<Provider>> providers_;
  Logger log_;
};

}  // namespace pim
