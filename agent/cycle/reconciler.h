#pragma once
// Runs the providers in order: plan, or plan-and-apply. Knows nothing about the store or the
// state database; the cycle (agent/cycle/cycle.h) decides what to apply and what to restore.

#include <memory>
#include <string>
#include <vector>

#include "agent/cycle/failpoint.h"
#include "providers/core/log.h"
#include "providers/provider.h"

namespace pim {

class Reconciler {
 public:
  /// Providers run in the order given (makeProviders(), providers/provider_set.h). `failpoints`
  /// (tests only, see agent/cycle/failpoint.h) are honoured by apply(); the Agent passes them to forward
  /// applies only, never to restores.
  Reconciler(std::vector<std::unique_ptr<Provider>> providers, Logger log, FailPoints failpoints = {});

  /// Plans every provider against the host as it is; changes nothing. A provider's plan does
  /// not see the earlier providers' pending actions (the user they would create, say), so the
  /// list is what the next `once` starts with. Errors: the first provider that cannot observe.
  Result<std::vector<Action>> plan(const Desired& desired, Host& host) const;

  struct Outcome {
    Status status;                      // ok, or the first failure (provider, action, cause)
    std::vector<Action> applied;        // actions that completed, in order
    std::vector<std::string> warnings;  // problems that did not fail the cycle (sshd reload)
    bool dropinWritten = false;         // the sshd provider installed a new drop-in
    bool sshdReloaded = false;          // ... and sshd reloaded it
  };
  /// For each provider in order: plan against the current host, then apply its actions.
  /// Stops at the first failure and reports it; never throws (a provider that throws is turned
  /// into a failure), except for a failpoint crash hook's own exception. A failed sshd reload is
  /// not a failure: it is listed in `warnings`.
  Outcome apply(const Desired& desired, Host& host) const;

  /// Entries the providers refused in their last plan (a host account the agent did not create,
  /// an unsafe folder or chroot), by id, without duplicates. Valid after plan() or apply().
  std::vector<SkippedEntry> refused() const;

 private:
  std::vector<std::unique_ptr<Provider>> providers_;
  Logger log_;
  FailPoints failpoints_;
};

}  // namespace pim
