#include "agent/cycle/reconciler.h"

#include <algorithm>
#include <exception>
#include <set>

#include "providers/sshd_dropin.h"

namespace pim {

namespace {

Status injected(const std::string& what) {
  return Status::error(ErrorCode::kInternal, "failpoint " + what + ": injected failure");
}

// The providers whose refusal of an account means that it cannot be confined (its folder, its
// chroot or its mount point): such an account is converged locked. sftp_accounts' own refusals
// (a name the agent does not own, a reserved name) are not accounts the agent may lock.
bool refusalLocksAccount(const std::string& provider) {
  return provider == "transfer_tree" || provider == "sftp_chroots";
}

constexpr Stage kStages[] = {Stage::kRevoke, Stage::kConfine, Stage::kPrepare, Stage::kGrant};

using ProviderPlans = Reconciler::ProviderPlans;

void addRefused(ProviderPlans& plans, const std::string& provider, std::vector<SkippedEntry> entries) {
  for (auto& entry : entries) {
    if (refusalLocksAccount(provider)) plans.lockIds.insert(entry.id);
    // sftp_accounts and sftp_chroots may both refuse one entry: report it once.
    const bool seen = std::any_of(plans.refused.begin(), plans.refused.end(),
                                  [&](const SkippedEntry& e) { return e.id == entry.id; });
    if (!seen) plans.refused.push_back(std::move(entry));
  }
}

ProviderPlans planProviders(const std::vector<std::unique_ptr<Provider>>& providers, const Desired& desired, Host& host,
                            const FailPoints& failpoints) {
  ProviderPlans plans;
  for (const auto& provider : providers) {
    const std::string name = provider->name();
    if (failpoints.crashBeforeProvider == name) failpoints.crash("crash-before-provider:" + name);
    Result<std::vector<Action>> actions = Status::ok();
    if (failpoints.failBeforeProvider == name) {
      actions = injected("before-provider:" + name);
    } else {
      try {
        actions = provider->plan(desired, host);
      } catch (const std::exception& e) {
        // Providers do not throw by contract; a throw is a bug, reported as this provider's failure.
        actions = Status::error(ErrorCode::kInternal, "plan threw: " + std::string(e.what()));
      }
    }
    if (actions) {
      plans.actions.push_back(std::move(*actions));
      plans.planned.push_back(true);
    } else {
      plans.actions.emplace_back();
      plans.planned.push_back(false);
      plans.failures.push_back(FailedPart{name, name + ": plan", "", actions.status().message()});
    }
    addRefused(plans, name, provider->skipped());
  }
  return plans;
}

// The document with the accounts in `lockIds` moved to the locked names.
AccessDocument lockAccounts(const AccessDocument& doc, const std::set<std::string>& lockIds, const std::string& login) {
  AccessDocument out = doc;
  out.accounts.clear();
  for (const auto& a : doc.accounts) {
    if (lockIds.count(a.id) && a.username != "root" && a.username != login) {
      if (std::find(out.lockedUsernames.begin(), out.lockedUsernames.end(), a.username) == out.lockedUsernames.end())
        out.lockedUsernames.push_back(a.username);
    } else {
      out.accounts.push_back(a);
    }
  }
  return out;
}

// Plans every provider for `desired`, then again for the document with the refused accounts
// locked when there are any. The second plan reads what the first one read (KeptReads).
ProviderPlans planEffective(const std::vector<std::unique_ptr<Provider>>& providers, const Desired& desired, Host& host,
                            const FailPoints& failpoints, AccessDocument* effective) {
  KeptReads kept(host);
  ProviderPlans plans = planProviders(providers, desired, host, failpoints);
  *effective = lockAccounts(desired.document, plans.lockIds, desired.host.loginUser);
  if (effective->accounts.size() == desired.document.accounts.size()) return plans;
  const Desired locked{*effective, desired.host, desired.sshd, desired.now, desired.network};
  ProviderPlans again = planProviders(providers, locked, host, failpoints);
  // What was refused stays reported, though the locked entries are no longer planned for.
  std::vector<SkippedEntry> refused = std::move(plans.refused);
  for (auto& e : again.refused) {
    if (std::none_of(refused.begin(), refused.end(), [&](const SkippedEntry& r) { return r.id == e.id; }))
      refused.push_back(std::move(e));
  }
  again.refused = std::move(refused);
  again.lockIds = std::move(plans.lockIds);
  return again;
}

std::string joinFailures(const std::vector<FailedPart>& failures) {
  std::string out;
  for (const auto& f : failures) out += (out.empty() ? "" : "; ") + f.describe();
  return out;
}

}  // namespace

Status Reconciler::Outcome::status() const {
  if (failures.empty() && confined) return Status::ok();
  std::string message = joinFailures(failures);
  if (!confined && failures.empty()) {
    message = reloadFailure.empty() ? "the sshd configuration is not live: nothing granted"
                                    : reloadFailure + " (nothing granted until sshd reloads)";
  }
  return Status::error(ErrorCode::kIo, message);
}

Reconciler::Reconciler(std::vector<std::unique_ptr<Provider>> providers, Logger log, FailPoints failpoints)
    : providers_(std::move(providers)), log_(std::move(log)), failpoints_(std::move(failpoints)) {}

Reconciler::Plan Reconciler::plan(const Desired& desired, Host& host) const {
  Plan out;
  ProviderPlans plans = planEffective(providers_, desired, host, FailPoints{}, &out.effective);
  for (Stage stage : kStages) {
    for (const auto& actions : plans.actions) {
      for (const auto& a : actions) {
        if (a.stage != stage) continue;
        log_->debug("plan {} {}", stageName(stage), a.describe());
        out.actions.push_back(a);
      }
    }
  }
  out.refused = plans.refused;
  out.failures = plans.failures;
  out.byProvider = std::move(plans);
  return out;
}

Reconciler::Outcome Reconciler::converge(const Desired& desired, Host& host, bool reloadPending,
                                         bool revokeOnly) const {
  AccessDocument effective;
  ProviderPlans plans = planEffective(providers_, desired, host, failpoints_, &effective);
  return convergeFrom(std::move(plans), effective, desired, host, reloadPending, revokeOnly);
}

Reconciler::Outcome Reconciler::converge(Plan planned, const Desired& desired, Host& host, bool reloadPending) const {
  if (!failpoints_.crashBeforeProvider.empty() || !failpoints_.failBeforeProvider.empty() ||
      planned.byProvider.planned.size() != providers_.size()) {
    return converge(desired, host, reloadPending);
  }
  return convergeFrom(std::move(planned.byProvider), planned.effective, desired, host, reloadPending, false);
}

Reconciler::Outcome Reconciler::convergeFrom(ProviderPlans plans, const AccessDocument& effective,
                                             const Desired& desired, Host& host, bool reloadPending,
                                             bool revokeOnly) const {
  Outcome out;
  const Desired d{effective, desired.host, desired.sshd, desired.now, desired.network};
  out.refused = plans.refused;
  out.failures = plans.failures;
  for (const auto& f : out.failures) log_->error("{}", f.describe());

  std::set<std::string> failedSubjects;   // SFTP accounts with a failed step: no grant, contained
  std::set<std::string> failedProviders;  // a provider-wide step failed: no more preparing or granting
  std::set<std::string> firstActionDone;  // for the fail-provider failpoint
  bool stopped = false;                   // the after-action failpoint fired
  int appliedCount = 0;

  auto applyOne = [&](Provider& provider, const Action& action) {
    // A cycle stopped by the after-action failpoint still revokes, like after any failure.
    if (stopped && action.stage != Stage::kRevoke) return;
    const std::string name = provider.name();
    Status s = Status::ok();
    if (failpoints_.failProvider == name && firstActionDone.insert(name).second) {
      s = injected("fail-provider:" + name);
    } else {
      try {
        s = provider.apply(action, d, host);
      } catch (const std::exception& e) {
        s = Status::error(ErrorCode::kInternal, "threw: " + std::string(e.what()));
      }
    }
    if (!s) {
      FailedPart f{name, action.describe(), action.subject, s.message()};
      log_->error("{}", f.describe());
      out.failures.push_back(std::move(f));
      if (action.subject.empty()) {
        failedProviders.insert(name);
      } else {
        failedSubjects.insert(action.subject);
      }
      return;
    }
    log_->debug("applied {} {}", stageName(action.stage), action.describe());
    out.applied.push_back(action);
    ++appliedCount;
    if (failpoints_.crashAfterAction && *failpoints_.crashAfterAction == appliedCount) {
      failpoints_.crash("crash-after-action:" + std::to_string(appliedCount));
    }
    if (failpoints_.failAfterAction && *failpoints_.failAfterAction == appliedCount) {
      stopped = true;
      out.failures.push_back(FailedPart{
          name, action.describe(), "",
          injected("after-action:" + std::to_string(appliedCount) + " (after " + action.describe() + ")").message()});
    }
  };
  // Failpoints count and fail single actions: with one armed, actions go one by one; otherwise
  // each provider gets its actions of a stage at once (Provider::applyAll may batch them).
  const bool oneByOne =
      failpoints_.crashAfterAction || failpoints_.failAfterAction || !failpoints_.failProvider.empty();
  auto applyStage = [&](Stage stage) {
    for (size_t i = 0; i < providers_.size(); ++i) {
      if (!plans.planned[i]) continue;
      Provider& provider = *providers_[i];
      std::vector<Action> batch;
      for (const auto& action : plans.actions[i]) {
        if (action.stage != stage) continue;
        if (stage != Stage::kRevoke) {
          if (failedProviders.count(provider.name())) continue;
          if (!action.subject.empty() && failedSubjects.count(action.subject)) continue;
        }
        if (oneByOne) {
          applyOne(provider, action);
        } else {
          batch.push_back(action);
        }
      }
      if (batch.empty()) continue;
      std::vector<Status> results;
      try {
        results = provider.applyAll(batch, d, host);
      } catch (const std::exception& e) {
        results.assign(batch.size(), Status::error(ErrorCode::kInternal, "threw: " + std::string(e.what())));
      }
      results.resize(batch.size(), Status::error(ErrorCode::kInternal, "not applied"));
      for (size_t k = 0; k < batch.size(); ++k) {
        const Action& action = batch[k];
        if (results[k]) {
          log_->debug("applied {} {}", stageName(action.stage), action.describe());
          out.applied.push_back(action);
          continue;
        }
        if (results[k].message() == kNotAppliedAfterFailure) continue;  // the earlier failure is reported
        FailedPart f{provider.name(), action.describe(), action.subject, results[k].message()};
        log_->error("{}", f.describe());
        out.failures.push_back(std::move(f));
        if (action.subject.empty()) {
          failedProviders.insert(provider.name());
        } else {
          failedSubjects.insert(action.subject);
        }
      }
    }
  };
  auto contain = [&]() {
    for (const auto& subject : failedSubjects) {
      for (const auto& provider : providers_) {
        for (const auto& action : provider->containActions(subject, d, host)) {
          Status s = provider->apply(action, d, host);
          if (s) {
            log_->warn("contained {}: {}", subject, action.describe());
            out.applied.push_back(action);
          } else {
            out.failures.push_back(FailedPart{provider->name(), action.describe(), subject, s.message()});
            log_->error("contain {}: {}: {}", subject, action.describe(), s.message());
          }
        }
      }
    }
  };

  // 1. Revocations: whatever else happens.
  applyStage(Stage::kRevoke);
  if (revokeOnly) {
    out.confined = false;
    contain();
    return out;
  }

  // 2. Confinement: the drop-in for the document, planned now that the revocations are done (an
  //    account adopted above is the agent's own, not a foreign name to deny).
  SshdDropinProvider* sshd = nullptr;
  for (const auto& provider : providers_) {
    if (auto* p = dynamic_cast<SshdDropinProvider*>(provider.get())) sshd = p;
  }
  if (sshd != nullptr && !stopped) {
    Result<std::vector<Action>> actions = Status::ok();
    try {
      actions = sshd->plan(d, host);
    } catch (const std::exception& e) {
      actions = Status::error(ErrorCode::kInternal, "plan threw: " + std::string(e.what()));
    }
    if (!actions) {
      out.confined = false;
      out.failures.push_back(FailedPart{sshd->name(), "sshd: plan", "", actions.status().message()});
    } else if (actions->empty()) {
      if (reloadPending) {
        Status s = sshd->reloadAndVerify(d.sshd, host);
        if (s) {
          log_->info("reloaded sshd, which had not loaded the drop-in yet ({})", d.sshd.reloadCommand);
          out.sshdReloaded = true;
        } else {
          out.confined = false;
          out.reloadFailure = s.message();
          out.warnings.push_back(s.message());
        }
      }
    } else {
      const size_t failuresBefore = out.failures.size();
      Status owed = beforeDropinWrite_ ? beforeDropinWrite_() : Status::ok();
      if (!owed) {
        out.failures.push_back(FailedPart{sshd->name(), "sshd: record the reload owed", "", owed.message()});
      } else {
        for (const auto& action : *actions) applyOne(*sshd, action);
      }
      if (out.failures.size() > failuresBefore || stopped) {
        out.confined = false;
      } else {
        out.dropinWritten = true;
        if (sshd->lastReloadFailure().empty()) {
          out.sshdReloaded = true;
        } else {
          // The drop-in is in place but sshd runs its previous configuration: what it would
          // confine is not confined yet, so nothing is granted until a reload succeeds.
          out.confined = false;
          out.reloadFailure = sshd->lastReloadFailure();
          out.warnings.push_back(sshd->lastReloadFailure());
        }
      }
    }
  } else if (sshd == nullptr && reloadPending) {
    out.confined = false;
  }
  if (stopped) out.confined = false;
  if (!out.confined) {
    log_->warn("the sshd configuration for this document is not live: grants held back");
    contain();
    return out;
  }

  // 3. and 4. What grants need, then the grants.
  applyStage(Stage::kPrepare);
  applyStage(Stage::kGrant);
  contain();
  return out;
}

}  // namespace pim
