#include "agent/agent.h"

#include "agent/document.h"
#include "agent/reconciler.h"
#include "agent/signature.h"
#include "providers/ssh_keys.h"
#include "providers/sshd_dropin.h"

namespace pim {

std::vector<ChangeInput> toChangeInputs(const std::vector<Action>& actions) {
  std::vector<ChangeInput> out;
  out.reserve(actions.size());
  for (const auto& a : actions) {
    out.push_back(ChangeInput{a.provider, a.object, a.verb, a.before, a.after.empty() ? a.detail : a.after});
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

CycleReport failure(int exitCode, const std::string& outcome, const std::string& error) {
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

std::vector<SkippedEntry> Agent::refusedEntries(const AccessDocument& doc) {
  StateLedger ledger(state_);
  Reconciler reconciler(factory_(ledger), log_);
  Desired desired{doc, config_.host, config_.sshd, clock_.nowSeconds()};
  if (!reconciler.plan(desired, host_)) return {};  // the apply that follows reports the error
  return reconciler.refused();
}

Agent::Applied Agent::applyDocument(const AccessDocument& doc, bool forward) {
  StateLedger ledger(state_);
  Reconciler reconciler(factory_(ledger), log_, forward ? failpoints_ : FailPoints{});
  Desired desired{doc, config_.host, config_.sshd, clock_.nowSeconds()};
  auto outcome = reconciler.apply(desired, host_);
  Applied applied{outcome.status, std::move(outcome.applied), std::move(outcome.warnings), outcome.dropinWritten,
                  outcome.sshdReloaded};
  noteReload(applied);
  return applied;
}

void Agent::noteReload(const Applied& applied) {
  if (applied.sshdReloaded) reloadWarning_.clear();
  if (!applied.warnings.empty()) reloadWarning_ = applied.warnings.back();
}

void Agent::retryPendingReload() {
  if (reloadWarning_.empty()) return;
  SshdDropinProvider sshd(log_);
  Status s = sshd.reload(config_.sshd, host_);
  if (s) {
    log_->info("reloaded sshd after an earlier failure ({})", config_.sshd.reloadCommand);
    reloadWarning_.clear();
  } else {
    reloadWarning_ = s.message();
    log_->warn("{}; sshd keeps its previous configuration until reloaded", s.message());
  }
}

std::string Agent::pollError(const std::string& error) const {
  if (!error.empty() || reloadWarning_.empty()) return error;
  return "warning: " + reloadWarning_ + " (the drop-in is installed; sshd still runs its previous configuration)";
}

Result<AccessDocument> Agent::parseStored(const GenerationRecord& record) const {
  DocumentOptions options = documentOptions(config_);
  // A stored document was accepted when it arrived; the instance name may have been renamed in
  // the config since, which must not block a restore or a rollback.
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

std::vector<BackupInput> Agent::backupFiles() {
  // The login user's keys file is the agent's own (never the one in the user's home, which the
  // agent does not write and must not put back over the user's edits); a missing one is backed
  // up as "did not exist" so that a restore removes it again.
  std::vector<std::string> paths = {config_.sshd.dropin,
                                    loginKeysPath(config_.host.authorizedKeysDir, config_.host.loginUser)};
  std::vector<BackupInput> backups;
  for (const auto& path : paths) {
    auto info = host_.lstat(path);
    if (!info || info->type == FileType::kSymlink || info->type == FileType::kOther) continue;
    BackupInput b;
    b.path = path;
    b.existed = info->exists();
    if (b.existed) {
      auto content = host_.readFile(path, 64u << 20);
      if (!content) continue;
      b.content = *content;
      b.mode = info->mode;
      b.uid = info->uid;
      b.gid = info->gid;
    }
    backups.push_back(std::move(b));
  }
  return backups;
}

bool Agent::restoreBackups(const std::vector<BackupInput>& backups) {
  bool dropinChanged = false;
  for (const auto& b : backups) {
    auto info = host_.lstat(b.path);
    const bool existsNow = info && info->exists();
    if (!b.existed && !existsNow) continue;
    if (b.existed && existsNow && info->type == FileType::kRegular && info->mode == b.mode && info->uid == b.uid &&
        info->gid == b.gid) {
      auto now = host_.readFile(b.path, 64u << 20);
      if (now && *now == b.content) continue;  // already as it was: no write, no reload
    }
    Status s = b.existed
                   ? host_.writeFileAtomic(b.path, b.content, Ownership{mode_t(b.mode), uid_t(b.uid), gid_t(b.gid)})
                   : host_.removeFile(b.path);
    if (!s) {
      log_->error("restore {}: {}", b.path, s.message());
      continue;
    }
    log_->info("restored {} as it was before the cycle", b.path);
    if (b.path == config_.sshd.dropin) dropinChanged = true;
  }
  return dropinChanged;
}

Agent::Applied Agent::restore(const std::optional<AccessDocument>& previous, const std::vector<BackupInput>& backups) {
  // Nothing was in force: an empty document removes what the cycle created (users, mounts,
  // keys), then the files are put back byte for byte.
  Applied restored = applyDocument(previous ? *previous : AccessDocument{}, false);
  if (!previous && restoreBackups(backups)) {
    // sshd may have loaded the drop-in that was just put back or removed.
    SshdDropinProvider sshd(log_);
    Status s = sshd.reload(config_.sshd, host_);
    if (s) {
      restored.sshdReloaded = true;
      reloadWarning_.clear();
    } else {
      restored.warnings.push_back(s.message());
      reloadWarning_ = s.message();
      log_->warn("{}; sshd keeps its previous configuration until reloaded", s.message());
    }
  }
  if (!restored.status) log_->error("restore: {}", restored.status.message());
  return restored;
}

Status Agent::recoverInterruptedCycle() {
  auto pending = state_.pendingCycle();
  if (!pending) return pending.status();
  if (!pending->has_value()) return Status::ok();
  const PendingCycle cycle = **pending;
  log_->warn("generation {} was interrupted (the agent stopped during its cycle); restoring {}", cycle.generation,
             cycle.previousGeneration ? "generation " + std::to_string(*cycle.previousGeneration)
                                      : std::string("the host as it was before the first generation"));
  std::optional<AccessDocument> previous;
  if (cycle.previousGeneration) {
    auto record = state_.generation(*cycle.previousGeneration);
    if (!record) return record.status();
    if (!record->has_value()) {
      return Status::error(ErrorCode::kNotFound, "recover generation " + std::to_string(cycle.generation) +
                                                     ": previous generation " +
                                                     std::to_string(*cycle.previousGeneration) + " is gone");
    }
    auto doc = parseStored(**record);
    if (!doc) return doc.status();
    previous = std::move(*doc);
  }
  std::vector<BackupInput> inputs;
  if (!previous) {
    auto backups = state_.backups(cycle.generation);
    if (!backups) return backups.status();
    for (const auto& b : *backups) inputs.push_back(BackupInput{b.path, b.existed, b.content, b.mode, b.uid, b.gid});
  }
  Applied restored = restore(previous, inputs);
  (void)state_.appendChanges(cycle.generation, toChangeInputs(restored.changes));
  std::string error = "interrupted (the agent stopped during the cycle); previous generation restored";
  if (!restored.status) error += "; restore incomplete: " + restored.status.message();
  return state_.finishCycle(GenerationOutcome::kFailed, error);
}

CycleReport Agent::applyNew(const std::string& source, const std::string& etag, const std::string& body,
                            const AccessDocument& doc, GenerationOutcome successOutcome,
                            std::optional<int64_t> rollbackOf) {
  std::optional<GenerationRecord> previousRecord;
  auto previous = inForceDocument(&previousRecord);
  if (!previous) return failure(1, "failed", previous.status().message());

  GenerationInput input;
  input.time = clock_.nowSeconds();
  input.source = source;
  input.revision = doc.revision;
  input.etag = etag;
  input.docHash = sha256Hex(body);
  input.body = body;
  input.outcome = GenerationOutcome::kPending;
  input.rollbackOf = rollbackOf;
  // Entries the providers will refuse (a host account the agent did not create, an unsafe
  // folder) are reported with the document's own skipped entries.
  std::vector<SkippedEntry> skipped = doc.skipped;
  for (auto& e : refusedEntries(doc)) skipped.push_back(std::move(e));
  input.skipped = toSkippedRecords(skipped);
  input.backups = backupFiles();
  input.beginCycle = true;
  // From here on the journal is open: a crash is undone at the next start.
  auto generation = state_.recordGeneration(input);
  if (!generation) return failure(1, "failed", generation.status().message());

  Applied applied = applyDocument(doc, true);
  CycleReport report;
  report.generation = *generation;
  report.revision = doc.revision;
  report.skipped = skipped;
  report.changes = applied.changes;
  report.warnings = applied.warnings;
  (void)state_.appendChanges(*generation, toChangeInputs(applied.changes));
  if (applied.status) {
    if (failpoints_.crashBeforeFinish) failpoints_.crash("crash-before-finish");
    Status s = state_.finishCycle(successOutcome);
    if (!s) {
      log_->error("record outcome of generation {}: {}", *generation, s.message());
      report.outcome = "failed";
      report.exitCode = 1;
      report.error = s.message();
      return report;
    }
    report.outcome = outcomeName(successOutcome);
    report.exitCode = 0;
    return report;
  }
  // All or nothing: bring the host back to the generation in force before this one.
  log_->error("generation {} failed: {}; restoring the previous generation", *generation, applied.status.message());
  Applied restored = restore(*previous, input.backups);
  (void)state_.appendChanges(*generation, toChangeInputs(restored.changes));
  std::string error = applied.status.message();
  if (!restored.status) error += "; restore incomplete: " + restored.status.message();
  Status s = state_.finishCycle(GenerationOutcome::kFailed, error);
  if (!s) log_->error("record failure of generation {}: {}", *generation, s.message());
  report.outcome = "failed";
  report.exitCode = 5;
  report.error = error;
  report.warnings.insert(report.warnings.end(), restored.warnings.begin(), restored.warnings.end());
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
  return f;
}

CycleReport Agent::cycle(StoreClient& store, int64_t waitSeconds) { return reconcile(fetch(store, waitSeconds)); }

CycleReport Agent::reconcile(const Fetched& fetched, bool checkHost) {
  const int64_t now = fetched.time;
  if (!fetched.outcome) {
    const Status& st = fetched.outcome.status();
    if (!fetched.reachedStore) return failure(1, "failed", st.message());
    const bool rejected = st.code() == ErrorCode::kRejected;
    (void)state_.recordPoll(now, rejected ? "rejected" : "error", st.message());
    if (rejected) {
      GenerationInput input;
      input.time = now;
      input.source = fetched.source;
      input.outcome = GenerationOutcome::kRejected;
      input.error = st.message();
      (void)state_.recordGeneration(input);
      return failure(3, "rejected", st.message());
    }
    return failure(4, "unreachable", st.message());
  }

  if (fetched.outcome->kind == FetchOutcome::Kind::kUnchanged) {
    CycleReport r = checkHost ? reapplyInForce() : inForceReport();
    if (r.outcome != "applied" && r.outcome != "rolled_back" && r.exitCode == 0) r.outcome = "unchanged";
    (void)state_.recordPoll(now, r.exitCode == 0 ? "not_modified" : r.outcome, pollError(r.error));
    return r;
  }

  // A document: the pin and the newest generation as they are now, under the cycle lock (a
  // rollback may have pinned while the fetch was held).
  auto pin = state_.pin();
  if (!pin) return failure(1, "failed", pin.status().message());
  auto newest = state_.history(1);
  if (!newest) return failure(1, "failed", newest.status().message());
  const std::optional<GenerationRecord> latest =
      newest->empty() ? std::nullopt : std::optional<GenerationRecord>(newest->front());

  const std::string& body = fetched.outcome->body;
  const std::string& etag = fetched.outcome->etag;
  const std::string hash = sha256Hex(body);
  auto rejectWhole = [&](const std::string& error, std::optional<int64_t> revision,
                         const std::vector<SkippedEntry>& skipped) {
    log_->error("document rejected: {}", error);
    (void)state_.recordPoll(now, "rejected", error);
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
      (void)state_.recordGeneration(input);
    }
    auto r = failure(3, "rejected", error);
    r.revision = revision;
    return r;
  };

  auto doc = parseDocument(body, documentOptions(config_));
  if (!doc) return rejectWhole(doc.status().message(), std::nullopt, {});
  for (const auto& field : doc->unknownFields) log_->info("document: unknown field {} ignored", field);
  for (const auto& s : doc->skipped) log_->warn("skipped {}: {}", s.id, s.reason);

  auto highest = state_.highestAppliedStoreRevision();
  if (!highest) return failure(1, "failed", highest.status().message());
  if (doc->revision < *highest) {
    return rejectWhole("revision " + std::to_string(doc->revision) + " is lower than revision " +
                           std::to_string(*highest) + " already applied (replay refused; use rollback to go back)",
                       doc->revision, doc->skipped);
  }

  if (pin->has_value()) {
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
      (void)state_.recordGeneration(input);
      log_->info("pinned to generation {}: revision {} recorded, not applied", **pin, doc->revision);
    }
    CycleReport r = reapplyInForce();
    if (r.exitCode == 0 && r.outcome != "applied" && r.outcome != "rolled_back") r.outcome = "recorded";
    r.skipped = doc->skipped;
    (void)state_.recordPoll(now, r.exitCode == 0 ? "recorded" : r.outcome, pollError(r.error));
    return r;
  }

  std::optional<GenerationRecord> inForce;
  auto current = inForceDocument(&inForce);
  if (!current) return failure(1, "failed", current.status().message());
  if (inForce && inForce->revision && *inForce->revision == doc->revision &&
      inForce->outcome != GenerationOutcome::kRolledBack) {
    // The same revision again is a no-op; the document in force still gets its drift check.
    CycleReport r = reapplyInForce();
    if (r.exitCode == 0 && r.outcome != "applied") r.outcome = "unchanged";
    r.skipped = doc->skipped;
    r.revision = doc->revision;
    (void)state_.recordPoll(now, r.exitCode == 0 ? "unchanged" : r.outcome, pollError(r.error));
    return r;
  }

  retryPendingReload();
  CycleReport report = applyNew(fetched.source, etag, body, *doc, GenerationOutcome::kApplied, std::nullopt);
  (void)state_.recordPoll(now, report.outcome, pollError(report.error));
  return report;
}

CycleReport Agent::reapplyInForce() {
  retryPendingReload();
  std::optional<GenerationRecord> record;
  auto current = inForceDocument(&record);
  if (!current) return failure(1, "failed", current.status().message());
  if (!current->has_value()) {
    CycleReport r;
    r.outcome = "unchanged";
    return r;
  }
  StateLedger ledger(state_);
  Reconciler reconciler(factory_(ledger), log_);
  Desired desired{**current, config_.host, config_.sshd, clock_.nowSeconds()};
  auto planned = reconciler.plan(desired, host_);
  CycleReport r;
  r.revision = record->revision;
  r.generation = record->generation;
  r.skipped = fromSkippedRecords<SkippedEntry>(record->skipped);
  if (planned && planned->empty()) {
    r.outcome = "unchanged";
    return r;
  }
  // Drift or expiry: apply the document in force again as a generation of its own, so the
  // change log says what was corrected.
  return applyNew(
      record->source, record->etag, record->body, **current,
      record->outcome == GenerationOutcome::kRolledBack ? GenerationOutcome::kRolledBack : GenerationOutcome::kApplied,
      record->rollbackOf);
}

CycleReport Agent::inForceReport() {
  retryPendingReload();
  auto last = state_.lastApplied();
  if (!last) return failure(1, "failed", last.status().message());
  CycleReport r;
  r.outcome = "unchanged";
  if (last->has_value()) {
    r.revision = (*last)->revision;
    r.generation = (*last)->generation;
    r.skipped = fromSkippedRecords<SkippedEntry>((*last)->skipped);
  }
  return r;
}

CycleReport Agent::rollback(int64_t generation) {
  auto record = state_.generation(generation);
  if (!record) return failure(1, "failed", record.status().message());
  if (!record->has_value())
    return failure(2, "failed", "rollback: generation " + std::to_string(generation) + " does not exist");
  const GenerationRecord& target = **record;
  if (target.body.empty() || target.outcome == GenerationOutcome::kRejected) {
    return failure(2, "failed", "rollback: generation " + std::to_string(generation) + " holds no valid document");
  }
  auto doc = parseStored(target);
  if (!doc)
    return failure(2, "failed", "rollback: generation " + std::to_string(generation) + ": " + doc.status().message());
  retryPendingReload();
  CycleReport report = applyNew("rollback of generation " + std::to_string(generation), target.etag, target.body, *doc,
                                GenerationOutcome::kRolledBack, generation);
  if (report.exitCode == 0 && report.generation) {
    Status s = state_.setPin(*report.generation);
    if (!s) return failure(1, "failed", s.message());
    report.outcome = "rolled_back";
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
