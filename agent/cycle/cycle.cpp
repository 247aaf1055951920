#include "agent/cycle/cycle.h"

#include <memory>

#include "agent/cycle/decision.h"
#include "agent/cycle/reconciler.h"
#include "agent/document/document.h"
#include "agent/store/signature.h"
#include "providers/ssh_keys.h"
#include "providers/sshd_dropin.h"

namespace pim {

const char* cycleOutcomeName(CycleOutcome outcome) {
  switch (outcome) {
    case CycleOutcome::kApplied:
      return "applied";
    case CycleOutcome::kUnchanged:
      return "unchanged";
    case CycleOutcome::kRejected:
      return "rejected";
    case CycleOutcome::kPartial:
      return "partial";
    case CycleOutcome::kFailed:
      return "failed";
    case CycleOutcome::kRecorded:
      return "recorded";
    case CycleOutcome::kRolledBack:
      return "rolled_back";
    case CycleOutcome::kUnreachable:
      return "unreachable";
    case CycleOutcome::kInterrupted:
      return "interrupted";
  }
  return "?";
}

std::vector<ChangeInput> toChangeInputs(const std::vector<Action>& actions) {
  std::vector<ChangeInput> out;
  out.reserve(actions.size());
  for (const auto& a : actions) {
    out.push_back(ChangeInput{a.provider, a.object, verbName(a.verb), a.before, a.after.empty() ? a.detail : a.after});
  }
  return out;
}

namespace {

DocumentOptions documentOptions(const Config& config) {
  DocumentOptions o;
  o.expectedInstance = config.store.instance;
  o.loginUser = config.host.loginUser;
  o.maxBytes = config.store.maxDocumentBytes;
  return o;
}

// The outcome of a cycle that finished its generation with `outcome`.
CycleOutcome cycleOutcomeOf(GenerationOutcome outcome) {
  switch (outcome) {
    case GenerationOutcome::kApplied:
      return CycleOutcome::kApplied;
    case GenerationOutcome::kUnchanged:
      return CycleOutcome::kUnchanged;
    case GenerationOutcome::kRejected:
      return CycleOutcome::kRejected;
    case GenerationOutcome::kPartial:
      return CycleOutcome::kPartial;
    case GenerationOutcome::kRolledBack:
      return CycleOutcome::kRolledBack;
    case GenerationOutcome::kRecorded:
      return CycleOutcome::kRecorded;
    case GenerationOutcome::kFailed:
    case GenerationOutcome::kPending:  // never: a cycle reports once its generation is finished
      break;
  }
  return CycleOutcome::kFailed;
}

CycleReport failure(ExitCode exitCode, CycleOutcome outcome, const std::string& error) {
  CycleReport r;
  r.exitCode = exitCode;
  r.outcome = outcome;
  r.error = error;
  return r;
}

}  // namespace

Agent::Agent(Config config, Host& host, StateStore& state, const Clock& clock, ProviderFactory factory, Logger log,
             FailPoints failpoints)
    : config_(std::move(config)),
      host_(host),
      state_(state),
      clock_(clock),
      factory_(std::move(factory)),
      log_(std::move(log)),
      failpoints_(std::move(failpoints)) {
  if (!failpoints_.empty()) log_->warn("failpoints armed: {}", failpoints_.describe());
}

std::vector<SkippedEntry> Agent::skippedWithRefused(const AccessDocument& doc, const Applied& applied) const {
  // Logged here, once per cycle: the providers' plans (which may run two or three times in a
  // cycle) log them at debug level only.
  std::vector<SkippedEntry> skipped = doc.skipped;
  for (const auto& e : applied.refused) {
    log_->warn("skipped {}: {}", e.id, e.reason);
    skipped.push_back(e);
  }
  return skipped;
}

void Agent::noteStateWrite(const Status& written, const char* what) const {
  // The host may already have changed: a write that failed leaves history, status or show
  // without it, which an operator must hear of.
  if (!written) log_->error("state database: {}: {}", what, written.message());
}

namespace {
constexpr const char* kReloadUnconfirmed =
    "the drop-in was replaced and sshd's reload not confirmed (the agent stopped in between)";
}  // namespace

// The providers of one convergence (their ledger first: they keep a reference to it), the desired
// state, and the drift check's plan when one was made.
struct Agent::Prepared {
  Prepared(StateStore& state, const ProviderFactory& factory, Logger log, FailPoints failpoints, const Desired& d)
      : ledger(state), reconciler(factory(ledger), std::move(log), std::move(failpoints)), desired(d) {}
  StateLedger ledger;
  Reconciler reconciler;
  Desired desired;
  std::optional<Reconciler::Plan> plan;
};

Agent::Applied Agent::applyDocument(const AccessDocument& doc, int64_t generation, bool forward, bool revokeOnly,
                                    Prepared* prepared) {
  std::unique_ptr<Prepared> own;
  if (prepared == nullptr) {
    own = std::make_unique<Prepared>(state_, factory_, log_, forward ? failpoints_ : FailPoints{},
                                     Desired{doc, config_.host, config_.sshd, clock_.nowSeconds(), config_.network});
    prepared = own.get();
  }
  prepared->ledger.setGeneration(generation);  // what this cycle creates is recorded as created by it
  Reconciler& reconciler = prepared->reconciler;
  const Desired& desired = prepared->desired;
  auto pending = state_.reloadPending();
  if (!pending) return Applied{pending.status(), {}, {}, {}, false};
  // Owed from the moment the drop-in changes until sshd is known to have loaded it, so that a
  // kill between the two leaves the next cycle a reload to make before it grants anything.
  bool owedNoted = false;
  reconciler.onDropinWrite([this, &owedNoted] {
    owedNoted = true;
    return state_.setReloadPending(kReloadUnconfirmed);
  });
  auto outcome = prepared->plan && !revokeOnly
                     ? reconciler.converge(std::move(*prepared->plan), desired, host_, !pending->empty())
                     : reconciler.converge(desired, host_, !pending->empty(), revokeOnly);
  Applied applied{outcome.status(), std::move(outcome.applied), std::move(outcome.warnings), std::move(outcome.refused),
                  outcome.confined};
  // A drop-in in place that sshd did not load is owed a reload, by every later cycle, a SIGHUP
  // or a restart, until one succeeds.
  Status noted = Status::ok();
  if (!outcome.reloadFailure.empty()) {
    noted = state_.setReloadPending(outcome.reloadFailure);
    log_->warn("{}; sshd keeps its previous configuration and nothing is granted until it reloads",
               outcome.reloadFailure);
  } else if (outcome.sshdReloaded && (!pending->empty() || outcome.dropinWritten)) {
    noted = state_.setReloadPending("");
  } else if (owedNoted && pending->empty() && !outcome.dropinWritten) {
    noted = state_.setReloadPending("");  // the write did not happen: sshd's drop-in is the one it loaded
  }
  if (!noted) {
    log_->error("record the sshd reload: {}", noted.message());
    if (applied.status) applied.status = noted;
  }
  return applied;
}

std::string Agent::pollError(const std::string& error) const {
  if (!error.empty()) return error;
  auto pending = state_.reloadPending();
  if (!pending || pending->empty()) return error;
  return "warning: " + *pending + " (the drop-in is installed; sshd still runs its previous configuration)";
}

Result<AccessDocument> Agent::parseStored(const GenerationRecord& record) const {
  DocumentOptions options = documentOptions(config_);
  // A stored document was accepted when it arrived; the instance name may have been renamed in
  // the config since, which must not block a recovery or a rollback.
  options.expectedInstance.clear();
  options.maxBytes = std::max<int64_t>(options.maxBytes, int64_t(record.body.size()));
  return parseDocument(record.body, options);
}

Result<std::optional<AccessDocument>> Agent::inForceDocument(std::optional<GenerationRecord>* out) const {
  auto last = state_.lastApplied();
  if (!last) return last.status();
  if (out != nullptr) *out = *last;
  if (!last->has_value()) return std::optional<AccessDocument>();
  const auto key = std::make_pair((*last)->generation, (*last)->docHash);
  if (inForceCache_ && inForceCache_->first == key) return std::optional<AccessDocument>(inForceCache_->second);
  auto doc = parseStored(**last);
  if (!doc) return doc.status();
  inForceCache_.emplace(key, *doc);
  return std::optional<AccessDocument>(std::move(*doc));
}

GenerationOutcome Agent::outcomeOf(const Applied& applied, GenerationOutcome success) {
  if (applied.status) return success;
  return applied.confined ? GenerationOutcome::kPartial : GenerationOutcome::kFailed;
}

CycleReport Agent::reportOf(const Applied& applied, GenerationOutcome successOutcome, int64_t generation,
                            const AccessDocument& doc, std::vector<SkippedEntry> skipped) const {
  CycleReport report;
  report.generation = generation;
  report.revision = doc.revision;
  report.skipped = std::move(skipped);
  report.changes = applied.changes;
  report.warnings = applied.warnings;
  const GenerationOutcome outcome = outcomeOf(applied, successOutcome);
  report.outcome = cycleOutcomeOf(outcome);
  report.exitCode = applied.status ? ExitCode::kOk : ExitCode::kApplyFailed;
  if (!applied.status) report.error = applied.status.message();
  return report;
}

Status Agent::recoverInterruptedCycle() {
  auto pending = state_.pendingCycle();
  if (!pending) return pending.status();
  if (!pending->has_value()) return Status::ok();
  const PendingCycle cycle = **pending;
  auto record = state_.generation(cycle.generation);
  if (!record) return record.status();
  if (!record->has_value()) {
    log_->error("generation {} was interrupted and is gone; nothing to finish", cycle.generation);
    return state_.endCycle();
  }
  auto doc = parseStored(**record);
  if (!doc) return doc.status();
  auto attempts = state_.noteRecoveryAttempt();
  if (!attempts) return attempts.status();
  // A document whose cycle keeps crashing the agent must not crash every start: after two
  // interrupted recoveries, only its revocations are applied.
  const bool revokeOnly = *attempts > 2;
  log_->warn("generation {} was interrupted (the agent stopped during its cycle); {} its document", cycle.generation,
             revokeOnly ? "applying only the revocations of" : "finishing the cycle of");
  Applied applied = applyDocument(*doc, cycle.generation, false, revokeOnly);
  if (revokeOnly) {
    applied.status = Status::error(ErrorCode::kInternal,
                                   "its recovery was interrupted twice: revocations only, the grants wait for the "
                                   "next cycle");
    applied.confined = false;
  }
  const GenerationOutcome success =
      (*record)->rollbackOf ? GenerationOutcome::kRolledBack : GenerationOutcome::kApplied;
  std::string error = "interrupted (the agent stopped during the cycle); finished at the next start";
  if (!applied.status) error = "interrupted; at the next start: " + applied.status.message();
  std::vector<SkippedEntry> skipped = skippedWithRefused(*doc, applied);
  return state_.finishCycle(outcomeOf(applied, success), error, toChangeInputs(applied.changes),
                            toSkippedRecords(skipped));
}

CycleReport Agent::applyNew(const std::string& source, const std::string& etag, const std::string& body,
                            const AccessDocument& doc, GenerationOutcome successOutcome,
                            std::optional<int64_t> rollbackOf, GenerationCause cause, Prepared* prepared) {
  GenerationInput input;
  input.time = clock_.nowSeconds();
  input.source = source;
  input.revision = doc.revision;
  input.etag = etag;
  input.docHash = sha256Hex(body);
  input.body = body;
  input.outcome = GenerationOutcome::kPending;
  input.rollbackOf = rollbackOf;
  input.cause = cause;
  input.skipped = toSkippedRecords(doc.skipped);
  input.beginCycle = true;
  // From here on the journal is open and this document is in force: a crash is finished at the
  // next start.
  auto generation = state_.recordGeneration(input);
  if (!generation) return failure(ExitCode::kInternal, CycleOutcome::kFailed, generation.status().message());

  Applied applied = applyDocument(doc, *generation, true, false, prepared);
  // Entries the providers refused (a host account the agent did not create, an unsafe folder)
  // are reported with the document's own skipped entries.
  std::vector<SkippedEntry> skipped = skippedWithRefused(doc, applied);
  CycleReport report = reportOf(applied, successOutcome, *generation, doc, skipped);
  if (!applied.status) log_->error("generation {}: {}", *generation, applied.status.message());
  if (failpoints_.crashBeforeFinish) failpoints_.crash("crash-before-finish");
  Status s = state_.finishCycle(outcomeOf(applied, successOutcome), report.error, toChangeInputs(applied.changes),
                                toSkippedRecords(skipped));
  if (!s) {
    log_->error("record outcome of generation {}: {}", *generation, s.message());
    report.outcome = CycleOutcome::kFailed;
    report.exitCode = ExitCode::kInternal;
    report.error = s.message();
  }
  return report;
}

CycleReport Agent::retry(const GenerationRecord& record, const AccessDocument& doc) {
  if (Status s = state_.beginCycle(record.generation, std::nullopt); !s)
    return failure(ExitCode::kInternal, CycleOutcome::kFailed, s.message());
  if (Status s = state_.noteRetry(record.generation, clock_.nowSeconds()); !s) {
    noteStateWrite(state_.endCycle(), "end the cycle");
    return failure(ExitCode::kInternal, CycleOutcome::kFailed, s.message());
  }
  Applied applied = applyDocument(doc, record.generation, true);
  const GenerationOutcome success = record.outcome == GenerationOutcome::kRolledBack || record.rollbackOf
                                        ? GenerationOutcome::kRolledBack
                                        : GenerationOutcome::kApplied;
  std::vector<SkippedEntry> skipped = skippedWithRefused(doc, applied);
  CycleReport report = reportOf(applied, success, record.generation, doc, skipped);
  if (!applied.status) log_->error("generation {} (retried): {}", record.generation, applied.status.message());
  Status s = state_.finishCycle(outcomeOf(applied, success), report.error, toChangeInputs(applied.changes),
                                toSkippedRecords(skipped));
  if (!s) {
    log_->error("record outcome of generation {}: {}", record.generation, s.message());
    report.outcome = CycleOutcome::kFailed;
    report.exitCode = ExitCode::kInternal;
    report.error = s.message();
  }
  return report;
}

Agent::Fetched Agent::fetch(StoreClient& store, int64_t waitSeconds) const {
  Fetched f;
  f.time = clock_.nowSeconds();
  f.source = store.describe();
  auto pin = state_.pin();
  if (!pin) {
    f.outcome = pin.status();
    return f;
  }
  // The newest generation without its body: a daemon asks at every poll.
  auto latest = state_.history(1);
  if (!latest) {
    f.outcome = latest.status();
    return f;
  }
  // Send the ETag only when the document it names needs no further work: after a failure, or
  // once unpinned with a recorded document waiting, the store must send the body again.
  std::string etag;
  if (!latest->empty()) {
    const auto outcome = latest->front().outcome;
    const bool needBody =
        outcome == GenerationOutcome::kFailed || outcome == GenerationOutcome::kPending ||
        (!pin->has_value() && (outcome == GenerationOutcome::kRecorded || outcome == GenerationOutcome::kRolledBack));
    if (!needBody) etag = latest->front().etag;
  }
  f.reachedStore = true;
  f.outcome = store.fetch(etag, waitSeconds);
  f.notRegistered = store.notRegistered();
  return f;
}

CycleReport Agent::cycle(StoreClient& store, int64_t waitSeconds) { return reconcile(fetch(store, waitSeconds)); }

CycleReport Agent::reconcile(const Fetched& fetched, bool checkHost) {
  const int64_t now = fetched.time;
  if (!fetched.outcome) {
    const Status& st = fetched.outcome.status();
    if (!fetched.reachedStore) return failure(ExitCode::kInternal, CycleOutcome::kFailed, st.message());
    const bool rejected = st.code() == ErrorCode::kRejected;
    noteStateWrite(state_.recordPoll(now, rejected ? "rejected" : "error", st.message()), "record the poll");
    if (rejected) {
      GenerationInput input;
      input.time = now;
      input.source = fetched.source;
      input.outcome = GenerationOutcome::kRejected;
      input.error = st.message();
      noteStateWrite(state_.recordGeneration(input).status(), "record the document");
      return failure(ExitCode::kRejected, CycleOutcome::kRejected, st.message());
    }
    CycleReport r = failure(ExitCode::kUnreachable, CycleOutcome::kUnreachable, st.message());
    r.notRegistered = fetched.notRegistered;
    return r;
  }

  if (fetched.outcome->kind == FetchOutcome::Kind::kUnchanged) {
    CycleReport r = checkHost ? reapplyInForce() : inForceReport();
    if (r.outcome != CycleOutcome::kApplied && r.outcome != CycleOutcome::kRolledBack && r.exitCode == ExitCode::kOk)
      r.outcome = CycleOutcome::kUnchanged;
    noteStateWrite(state_.recordPoll(now, r.exitCode == ExitCode::kOk ? "not_modified" : cycleOutcomeName(r.outcome),
                                     pollError(r.error)),
                   "record the poll");
    return r;
  }

  // A document: the newest generation (and, in decideDocument(), the pin) as they are now, under
  // the cycle lock (a rollback may have pinned while the fetch was held).
  auto newest = state_.history(1);
  if (!newest) return failure(ExitCode::kInternal, CycleOutcome::kFailed, newest.status().message());
  const std::optional<GenerationRecord> latest =
      newest->empty() ? std::nullopt : std::optional<GenerationRecord>(newest->front());

  const std::string& body = fetched.outcome->body;
  const std::string& etag = fetched.outcome->etag;
  const std::string hash = sha256Hex(body);
  auto rejectWhole = [&](const std::string& error, std::optional<int64_t> revision,
                         const std::vector<SkippedEntry>& skipped) {
    log_->error("document rejected: {}", error);
    noteStateWrite(state_.recordPoll(now, "rejected", error), "record the poll");
    // The same bad document polled again is not a new generation.
    if (!(latest && latest->docHash == hash && latest->outcome == GenerationOutcome::kRejected)) {
      GenerationInput input;
      input.time = now;
      input.source = fetched.source;
      input.revision = revision;
      input.etag = etag;
      input.docHash = hash;
      input.body = body;
      input.outcome = GenerationOutcome::kRejected;
      input.error = error;
      input.skipped = toSkippedRecords(skipped);
      noteStateWrite(state_.recordGeneration(input).status(), "record the document");
    }
    auto r = failure(ExitCode::kRejected, CycleOutcome::kRejected, error);
    r.revision = revision;
    return r;
  };

  auto doc = parseDocument(body, documentOptions(config_));
  if (!doc) return rejectWhole(doc.status().message(), std::nullopt, {});
  for (const auto& field : doc->unknownFields) log_->info("document: unknown field {} ignored", field);
  for (const auto& s : doc->skipped) log_->warn("skipped {}: {}", s.id, s.reason);

  // One decision for once, the daemon, plan and status (agent/cycle/decision.h).
  auto decision = decideDocument(state_, doc->revision, hash);
  if (!decision) return failure(ExitCode::kInternal, CycleOutcome::kFailed, decision.status().message());
  if (decision->verdict == Verdict::kReplay) return rejectWhole(decision->reason, doc->revision, doc->skipped);

  if (decision->verdict == Verdict::kRecord) {
    if (!(latest && latest->docHash == hash)) {
      GenerationInput input;
      input.time = now;
      input.source = fetched.source;
      input.revision = doc->revision;
      input.etag = etag;
      input.docHash = hash;
      input.body = body;
      input.outcome = GenerationOutcome::kRecorded;
      input.skipped = toSkippedRecords(doc->skipped);
      noteStateWrite(state_.recordGeneration(input).status(), "record the document");
      log_->info("{}: revision {} recorded, not applied", decision->reason, doc->revision);
    }
    CycleReport r = reapplyInForce();
    if (r.exitCode == ExitCode::kOk && r.outcome != CycleOutcome::kApplied && r.outcome != CycleOutcome::kRolledBack)
      r.outcome = CycleOutcome::kRecorded;
    r.skipped = doc->skipped;
    noteStateWrite(state_.recordPoll(now, r.exitCode == ExitCode::kOk ? "recorded" : cycleOutcomeName(r.outcome),
                                     pollError(r.error)),
                   "record the poll");
    return r;
  }

  if (decision->verdict == Verdict::kUnchanged) {
    // A no-op for the store; the document in force still gets its drift check.
    CycleReport r = reapplyInForce();
    if (r.exitCode == ExitCode::kOk && r.outcome != CycleOutcome::kApplied && r.outcome != CycleOutcome::kRolledBack)
      r.outcome = CycleOutcome::kUnchanged;
    r.skipped = doc->skipped;
    r.revision = doc->revision;
    noteStateWrite(state_.recordPoll(now, r.exitCode == ExitCode::kOk ? "unchanged" : cycleOutcomeName(r.outcome),
                                     pollError(r.error)),
                   "record the poll");
    return r;
  }

  const std::optional<GenerationRecord>& inForce = decision->inForce;
  // Leaving a rollback (the pin was lifted): the store's document comes back through `resume`.
  const GenerationCause cause = inForce && inForce->outcome == GenerationOutcome::kRolledBack ? GenerationCause::kResume
                                                                                              : GenerationCause::kStore;
  CycleReport report = applyNew(fetched.source, etag, body, *doc, GenerationOutcome::kApplied, std::nullopt, cause);
  noteStateWrite(state_.recordPoll(now, cycleOutcomeName(report.outcome), pollError(report.error)), "record the poll");
  return report;
}

CycleReport Agent::reapplyInForce(GenerationCause cause) {
  std::optional<GenerationRecord> record;
  auto current = inForceDocument(&record);
  if (!current) return failure(ExitCode::kInternal, CycleOutcome::kFailed, current.status().message());
  if (!current->has_value()) {
    CycleReport r;
    r.outcome = CycleOutcome::kUnchanged;
    return r;
  }
  // A generation whose cycle did not apply everything is retried as itself.
  if (record->outcome == GenerationOutcome::kPartial || record->outcome == GenerationOutcome::kFailed) {
    return retry(*record, **current);
  }
  auto pending = state_.reloadPending();
  if (!pending) return failure(ExitCode::kInternal, CycleOutcome::kFailed, pending.status().message());
  // The drift check's plan is the one the convergence starts from (the host is observed once).
  Prepared prepared(state_, factory_, log_, failpoints_,
                    Desired{**current, config_.host, config_.sshd, clock_.nowSeconds(), config_.network});
  auto planned = prepared.reconciler.plan(prepared.desired, host_);
  CycleReport r;
  r.revision = record->revision;
  r.generation = record->generation;
  r.skipped = fromSkippedRecords<SkippedEntry>(record->skipped);
  if (planned.actions.empty() && planned.failures.empty() && pending->empty()) {
    r.outcome = CycleOutcome::kUnchanged;
    return r;
  }
  // Drift, expiry or a reload still owed: apply the document in force again as a generation of
  // its own, so the change log says what was corrected.
  prepared.plan = std::move(planned);
  return applyNew(
      record->source, record->etag, record->body, **current,
      record->outcome == GenerationOutcome::kRolledBack ? GenerationOutcome::kRolledBack : GenerationOutcome::kApplied,
      record->rollbackOf, cause, &prepared);
}

CycleReport Agent::inForceReport() {
  auto pending = state_.reloadPending();
  if (!pending) return failure(ExitCode::kInternal, CycleOutcome::kFailed, pending.status().message());
  auto last = state_.lastApplied();
  if (!last) return failure(ExitCode::kInternal, CycleOutcome::kFailed, last.status().message());
  // What the host needs without looking at it: a reload still owed, or a generation to retry.
  if (!pending->empty() || (last->has_value() && ((*last)->outcome == GenerationOutcome::kPartial ||
                                                  (*last)->outcome == GenerationOutcome::kFailed))) {
    return reapplyInForce();
  }
  CycleReport r;
  r.outcome = CycleOutcome::kUnchanged;
  if (last->has_value()) {
    r.revision = (*last)->revision;
    r.generation = (*last)->generation;
    r.skipped = fromSkippedRecords<SkippedEntry>((*last)->skipped);
  }
  return r;
}

CycleReport Agent::rollback(int64_t generation) {
  auto record = state_.generation(generation);
  if (!record) return failure(ExitCode::kInternal, CycleOutcome::kFailed, record.status().message());
  if (!record->has_value())
    return failure(ExitCode::kUsage, CycleOutcome::kFailed,
                   "rollback: generation " + std::to_string(generation) + " does not exist");
  const GenerationRecord& target = **record;
  if (target.body.empty() || target.outcome == GenerationOutcome::kRejected) {
    return failure(ExitCode::kUsage, CycleOutcome::kFailed,
                   "rollback: generation " + std::to_string(generation) + " holds no valid document");
  }
  auto doc = parseStored(target);
  if (!doc)
    return failure(ExitCode::kUsage, CycleOutcome::kFailed,
                   "rollback: generation " + std::to_string(generation) + ": " + doc.status().message());
  CycleReport report = applyNew("rollback of generation " + std::to_string(generation), target.etag, target.body, *doc,
                                GenerationOutcome::kRolledBack, generation, GenerationCause::kRollback);
  // The rolled-back document is in force even when a part of it failed (that part is contained
  // and retried): the pin keeps the store's newer documents from replacing it.
  if ((report.exitCode == ExitCode::kOk || report.exitCode == ExitCode::kApplyFailed) && report.generation) {
    Status s = state_.setPin(*report.generation);
    if (!s) return failure(ExitCode::kInternal, CycleOutcome::kFailed, s.message());
  }
  return report;
}

Result<std::optional<int64_t>> Agent::nextKeyExpiry() const {
  auto doc = inForceDocument(nullptr);
  if (!doc) return doc.status();
  if (!doc->has_value()) return std::optional<int64_t>();
  return nextExpiry(**doc, clock_.nowSeconds());
}

Status Agent::resume() { return state_.setPin(std::nullopt); }

}  // namespace pim
