#include "agent/agent.h"

#include "agent/document.h"
#include "agent/reconciler.h"
#include "agent/signature.h"
#include "providers/ssh_keys.h"

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

Agent::Agent(Config config, Host& host, StateStore& state, const Clock& clock, ProviderFactory factory, Logger log)
    : config_(std::move(config)), host_(host), state_(state), clock_(clock), factory_(std::move(factory)), log_(std::move(log)) {}

Agent::Applied Agent::applyDocument(const AccessDocument& doc) {
  StateLedger ledger(state_);
  Reconciler reconciler(factory_(ledger), log_);
  Desired desired{doc, config_.host, config_.sshd, clock_.nowSeconds()};
  auto outcome = reconciler.apply(desired, host_);
  return Applied{outcome.status, std::move(outcome.applied)};
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
  auto doc = parseStored(**last);
  if (!doc) return doc.status();
  return std::optional<AccessDocument>(std::move(*doc));
}

std::vector<BackupInput> Agent::backupFiles() {
  std::vector<std::string> paths = {config_.sshd.dropin};
  auto user = host_.findUser(config_.host.loginUser);
  if (user.isOk() && user->has_value()) paths.push_back((*user)->home + "/.ssh/authorized_keys");
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

void Agent::restoreBackups(const std::vector<BackupInput>& backups) {
  for (const auto& b : backups) {
    Status s = b.existed ? host_.writeFileAtomic(b.path, b.content, Ownership{mode_t(b.mode), uid_t(b.uid), gid_t(b.gid)})
                         : host_.removeFile(b.path);
    if (!s) log_->error("restore {}: {}", b.path, s.message());
  }
}

Status Agent::recoverInterruptedCycle() {
  auto pending = state_.pendingCycle();
  if (!pending) return pending.status();
  if (!pending->has_value()) return Status::ok();
  const PendingCycle cycle = **pending;
  log_->warn("generation {} was interrupted; restoring the generation in force before it", cycle.generation);
  AccessDocument previous;  // nothing in force before: an empty document removes what it created
  if (cycle.previousGeneration) {
    auto record = state_.generation(*cycle.previousGeneration);
    if (record && record->has_value()) {
      auto doc = parseStored(**record);
      if (doc) previous = std::move(*doc);
    }
  }
  Applied restored = applyDocument(previous);
  if (!cycle.previousGeneration) {
    auto backups = state_.backups(cycle.generation);
    if (backups) {
      std::vector<BackupInput> inputs;
      for (const auto& b : *backups) inputs.push_back(BackupInput{b.path, b.existed, b.content, b.mode, b.uid, b.gid});
      restoreBackups(inputs);
    }
  }
  if (!restored.status) log_->error("restore after interrupted cycle: {}", restored.status.message());
  return state_.finishCycle(GenerationOutcome::kFailed, "interrupted (the agent stopped during the cycle); previous generation restored");
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
  input.skipped = toSkippedRecords(doc.skipped);
  input.backups = backupFiles();
  input.beginCycle = true;
  auto generation = state_.recordGeneration(input);
  if (!generation) return failure(1, "failed", generation.status().message());

  Applied applied = applyDocument(doc);
  CycleReport report;
  report.generation = *generation;
  report.revision = doc.revision;
  report.skipped = doc.skipped;
  report.changes = applied.changes;
  (void)state_.appendChanges(*generation, toChangeInputs(applied.changes));
  if (applied.status) {
    const GenerationOutcome outcome = successOutcome;
    Status s = state_.finishCycle(outcome);
    if (!s) log_->error("record outcome of generation {}: {}", *generation, s.message());
    report.outcome = outcomeName(outcome);
    report.exitCode = 0;
    return report;
  }
  // All or nothing: bring the host back to the generation in force before this one.
  log_->error("generation {} failed: {}; restoring the previous generation", *generation, applied.status.message());
  Applied restored = applyDocument(previous->has_value() ? **previous : AccessDocument{});
  if (!previous->has_value()) restoreBackups(input.backups);
  if (!restored.status) log_->error("restore: {}", restored.status.message());
  (void)state_.appendChanges(*generation, toChangeInputs(restored.changes));
  Status s = state_.finishCycle(GenerationOutcome::kFailed, applied.status.message());
  if (!s) log_->error("record failure of generation {}: {}", *generation, s.message());
  report.outcome = "failed";
  report.exitCode = 5;
  report.error = applied.status.message();
  return report;
}

CycleReport Agent::cycle(StoreClient& store, int64_t waitSeconds) {
  const int64_t now = clock_.nowSeconds();
  auto pin = state_.pin();
  if (!pin) return failure(1, "failed", pin.status().message());
  auto latest = state_.latest();
  if (!latest) return failure(1, "failed", latest.status().message());

  // Send the ETag only when the document it names needs no further work: after a failure, or
  // once unpinned with a recorded document waiting, the store must send the body again.
  std::string etag;
  if (latest->has_value()) {
    const auto outcome = (*latest)->outcome;
    const bool needBody = outcome == GenerationOutcome::kFailed || outcome == GenerationOutcome::kPending ||
                          (!pin->has_value() && (outcome == GenerationOutcome::kRecorded ||
                                                 outcome == GenerationOutcome::kRolledBack));
    if (!needBody) etag = (*latest)->etag;
  }

  auto fetched = store.fetch(etag, waitSeconds);
  if (!fetched) {
    const Status& st = fetched.status();
    const bool rejected = st.code() == ErrorCode::kRejected;
    (void)state_.recordPoll(now, rejected ? "rejected" : "error", st.message());
    if (rejected) {
      GenerationInput input;
      input.time = now;
      input.source = store.describe();
      input.outcome = GenerationOutcome::kRejected;
      input.error = st.message();
      (void)state_.recordGeneration(input);
      return failure(3, "rejected", st.message());
    }
    return failure(4, "unreachable", st.message());
  }

  if (fetched->kind == FetchOutcome::Kind::kUnchanged) {
    (void)state_.recordPoll(now, "not_modified", "");
    CycleReport r = reapplyInForce();
    if (r.outcome == "applied") return r;
    r.outcome = "unchanged";
    return r;
  }

  const std::string& body = fetched->body;
  const std::string hash = sha256Hex(body);
  auto doc = parseDocument(body, documentOptions(config_));
  if (!doc) {
    const std::string error = doc.status().message();
    log_->error("document rejected: {}", error);
    (void)state_.recordPoll(now, "rejected", error);
    if (!(latest->has_value() && (*latest)->docHash == hash && (*latest)->outcome == GenerationOutcome::kRejected)) {
      GenerationInput input;
      input.time = now;
      input.source = store.describe();
      input.etag = fetched->etag;
      input.docHash = hash;
      input.body = body;
      input.outcome = GenerationOutcome::kRejected;
      input.error = error;
      (void)state_.recordGeneration(input);
    }
    return failure(3, "rejected", error);
  }
  for (const auto& field : doc->unknownFields) log_->info("document: unknown field {} ignored", field);
  for (const auto& s : doc->skipped) log_->warn("skipped {}: {}", s.id, s.reason);

  auto highest = state_.highestAppliedStoreRevision();
  if (!highest) return failure(1, "failed", highest.status().message());
  if (doc->revision < *highest) {
    const std::string error = "revision " + std::to_string(doc->revision) + " is lower than revision " +
                              std::to_string(*highest) + " already applied (replay refused; use rollback to go back)";
    log_->error("document rejected: {}", error);
    (void)state_.recordPoll(now, "rejected", error);
    GenerationInput input;
    input.time = now;
    input.source = store.describe();
    input.revision = doc->revision;
    input.etag = fetched->etag;
    input.docHash = hash;
    input.body = body;
    input.outcome = GenerationOutcome::kRejected;
    input.error = error;
    input.skipped = toSkippedRecords(doc->skipped);
    if (!(latest->has_value() && (*latest)->docHash == hash && (*latest)->outcome == GenerationOutcome::kRejected)) {
      (void)state_.recordGeneration(input);
    }
    auto r = failure(3, "rejected", error);
    r.revision = doc->revision;
    return r;
  }

  if (pin->has_value()) {
    (void)state_.recordPoll(now, "recorded", "");
    if (!(latest->has_value() && (*latest)->docHash == hash)) {
      GenerationInput input;
      input.time = now;
      input.source = store.describe();
      input.revision = doc->revision;
      input.etag = fetched->etag;
      input.docHash = hash;
      input.body = body;
      input.outcome = GenerationOutcome::kRecorded;
      input.skipped = toSkippedRecords(doc->skipped);
      (void)state_.recordGeneration(input);
    }
    CycleReport r = reapplyInForce();
    if (r.outcome != "applied") r.outcome = "recorded";
    r.skipped = doc->skipped;
    return r;
  }

  std::optional<GenerationRecord> inForce;
  auto current = inForceDocument(&inForce);
  if (!current) return failure(1, "failed", current.status().message());
  if (inForce && inForce->revision && *inForce->revision == doc->revision &&
      inForce->outcome != GenerationOutcome::kRolledBack) {
    // The same revision again is a no-op; the document in force still gets its drift check.
    (void)state_.recordPoll(now, "unchanged", "");
    CycleReport r = reapplyInForce();
    if (r.outcome != "applied") r.outcome = "unchanged";
    r.skipped = doc->skipped;
    r.revision = doc->revision;
    return r;
  }

  CycleReport report = applyNew(store.describe(), fetched->etag, body, *doc, GenerationOutcome::kApplied, std::nullopt);
  (void)state_.recordPoll(now, report.outcome, report.error);
  return report;
}

CycleReport Agent::reapplyInForce() {
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
  return applyNew(record->source, record->etag, record->body, **current,
                  record->outcome == GenerationOutcome::kRolledBack ? GenerationOutcome::kRolledBack
                                                                    : GenerationOutcome::kApplied,
                  record->rollbackOf);
}

CycleReport Agent::rollback(int64_t generation) {
  auto record = state_.generation(generation);
  if (!record) return failure(1, "failed", record.status().message());
  if (!record->has_value()) return failure(2, "failed", "rollback: generation " + std::to_string(generation) + " does not exist");
  const GenerationRecord& target = **record;
  if (target.body.empty() || target.outcome == GenerationOutcome::kRejected) {
    return failure(2, "failed", "rollback: generation " + std::to_string(generation) + " holds no valid document");
  }
  auto doc = parseStored(target);
  if (!doc) return failure(2, "failed", "rollback: generation " + std::to_string(generation) + ": " + doc.status().message());
  CycleReport report = applyNew("rollback of generation " + std::to_string(generation), target.etag, target.body,
                                *doc, GenerationOutcome::kRolledBack, generation);
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
