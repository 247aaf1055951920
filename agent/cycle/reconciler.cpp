#include "agent/cycle/reconciler.h"

#include <algorithm>

#include <exception>

#include "providers/sshd_dropin.h"

namespace pim {

namespace {

Status injected(const std::string& what) {
  return Status::error(ErrorCode::kInternal, "failpoint " + what + ": injected failure");
}

}  // namespace

Reconciler::Reconciler(std::vector<std::unique_ptr<Provider>> providers, Logger log, FailPoints failpoints)
    : providers_(std::move(providers)), log_(std::move(log)), failpoints_(std::move(failpoints)) {}

Result<std::vector<Action>> Reconciler::plan(const Desired& desired, Host& host) const {
  KeptReads kept(host);  // a plan only reads, and several providers read the same files
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
  auto stop = [&](Status s) {
    outcome.status = std::move(s);
    log_->error("{}", outcome.status.message());
    return outcome;
  };
  for (const auto& provider : providers_) {
    const std::string name = provider->name();
    if (failpoints_.crashBeforeProvider == name) failpoints_.crash("crash-before-provider:" + name);
    if (failpoints_.failBeforeProvider == name) return stop(injected("before-provider:" + name));
    Result<std::vector<Action>> actions = Status::ok();
    try {
      actions = provider->plan(desired, host);
    } catch (const std::exception& e) {
      // Providers do not throw by contract; a throw is a bug, but it must not leave the cycle
      // half-applied without the restore that follows a failure.
      actions = Status::error(ErrorCode::kInternal, name + ": plan threw: " + e.what());
    }
    if (!actions)
      return stop(
          Status::error(actions.status().code(), name + ": " + actions.status().message(), actions.status().path()));
    auto* sshd = dynamic_cast<SshdDropinProvider*>(provider.get());
    for (const auto& action : *actions) {
      Status s = Status::ok();
      if (failpoints_.failProvider == name) {
        s = injected("fail-provider:" + name);
      } else {
        try {
          s = provider->apply(action, desired, host);
        } catch (const std::exception& e) {
          s = Status::error(ErrorCode::kInternal, "threw: " + std::string(e.what()));
        }
      }
      if (!s) return stop(Status::error(s.code(), action.describe() + ": " + s.message(), s.path()));
      log_->debug("applied {}", action.describe());
      outcome.applied.push_back(action);
      if (sshd != nullptr) {
        // A drop-in in place that sshd did not load is not a failure of the cycle (rolling back
        // would not make sshd load anything either), but operators must see it.
        outcome.dropinWritten = true;
        if (sshd->lastReloadFailure().empty()) {
          outcome.sshdReloaded = true;
        } else {
          outcome.warnings.push_back(sshd->lastReloadFailure());
        }
      }
      const int n = int(outcome.applied.size());
      if (failpoints_.crashAfterAction && *failpoints_.crashAfterAction == n) {
        failpoints_.crash("crash-after-action:" + std::to_string(n));
      }
      if (failpoints_.failAfterAction && *failpoints_.failAfterAction == n) {
        return stop(injected("after-action:" + std::to_string(n) + " (after " + action.describe() + ")"));
      }
    }
  }
  return outcome;
}

std::vector<SkippedEntry> Reconciler::refused() const {
  std::vector<SkippedEntry> all;
  for (const auto& provider : providers_) {
    for (auto& entry : provider->skipped()) {
      // sftp_accounts and sftp_chroots both refuse a foreign user: report it once.
      const bool seen = std::any_of(all.begin(), all.end(), [&](const SkippedEntry& e) { return e.id == entry.id; });
      if (!seen) all.push_back(std::move(entry));
    }
  }
  return all;
}

}  // namespace pim
