#include "agent/reconciler.h"

#include <exception>

namespace pim {

Reconciler::Reconciler(std::vector<std::unique_ptr<Provider>> providers, Logger log)
    : providers_(std::move(providers)), log_(std::move(log)) {}

Result<std::vector<Action>> Reconciler::plan(const Desired& desired, Host& host) const {
  std::vector<Action> all;
  for (const auto& provider : providers_) {
    auto actions = provider->plan(desired, host);
    if (!actions) return actions.status();
    for (auto& a : *actions) {
      log_->debug("plan {}", a.describe());
      all.push_back(std::move(a));
    }
  }
  return all;
}

Reconciler::Outcome Reconciler::apply(const Desired& desired, Host& host) const {
  Outcome outcome;
  for (const auto& provider : providers_) {
    Result<std::vector<Action>> actions = Status::ok();
    try {
      actions = provider->plan(desired, host);
    } catch (const std::exception& e) {
      // Providers do not throw by contract; a throw is a bug, but it must not leave the cycle
      // half-applied without the restore that follows a failure.
      actions = Status::error(ErrorCode::kInternal, provider->name() + ": plan threw: " + e.what());
    }
    if (!actions) {
      outcome.status = actions.status();
      log_->error("{}: {}", provider->name(), outcome.status.message());
      return outcome;
    }
    for (const auto& action : *actions) {
      Status s = Status::ok();
      try {
        s = provider->apply(action, desired, host);
      } catch (const std::exception& e) {
        s = Status::error(ErrorCode::kInternal, action.describe() + ": threw: " + e.what());
      }
      if (!s) {
        outcome.status = Status::error(s.code(), action.describe() + ": " + s.message(), s.path());
        log_->error("{}", outcome.status.message());
        return outcome;
      }
      log_->debug("applied {}", action.describe());
      outcome.applied.push_back(action);
    }
  }
  return outcome;
}

}  // namespace pim
