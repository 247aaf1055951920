#include "agent/daemon/daemon.h"

#include <strings.h>

#include <malloc.h>

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstring>
#include <memory>
#include <set>

#include "agent/cycle/adopt.h"
#include "agent/cycle/open_state.h"
#include "agent/cycle/sandbox.h"
#include "agent/daemon/curl_uv.h"
#include "agent/daemon/metrics.h"
#include "agent/daemon/perm_watcher.h"
#include "agent/daemon/sd_notify.h"
#include "agent/store/file_store_client.h"
#include "agent/store/store_client.h"
#include "providers/core/paths.h"
#include "providers/firewall.h"
#include "providers/host/real_host.h"
#include "providers/host/transfer_perms.h"
#include "providers/provider_set.h"
#include "state/state_ledger.h"
#include "state/state_store.h"

namespace pim {

// One inotify watch on a directory the last check of the host read from, and the names in it
// that matter ("" in `names`: any entry). The handle's data is the watch (closed with it).
struct Daemon::HostWatch {
  UvHandle<uv_fs_event_t> handle;
  Daemon* daemon = nullptr;
  std::set<std::string> names;
};

struct Daemon::Runtime {
  // First, so that it goes last: the loop's transfer driver (agent/daemon/curl_uv.h) of the store
  // clients made for this config (none for file://); closed with the runtime, on the loop thread.
  StoreClientOptions storeOptions;
  Config config;
  std::unique_ptr<RealHost> host;
  std::unique_ptr<StateStore> state;
  std::unique_ptr<StoreClient> store;
  std::unique_ptr<Agent> agent;
  std::unique_ptr<PermEnforcer> enforcer;
  std::unique_ptr<PermWatcher> watcher;
  std::unique_ptr<Reporter> reporter;  // null without store.report_url
};

namespace {

// How often the loop looks at the file:// source and at the state database (operator commands).
// Two or three stat() calls: the idle cost is negligible (see scripts/bench-poll).
constexpr auto kTick = std::chrono::milliseconds(500);
// With inotify on the watched files, the tick is only a safety net (and the watchdog's clock).
constexpr auto kSlowTick = std::chrono::milliseconds(10000);
// Drift: the host is checked again at least this often even when no watched directory changed,
// and re-applies for drift are at least this far apart (a busy /etc must not make a storm).
constexpr auto kHostRecheck = std::chrono::minutes(10);
constexpr auto kDriftSpacing = std::chrono::milliseconds(2000);
constexpr auto kDriftSettle = std::chrono::milliseconds(200);
constexpr auto kMinRetry = std::chrono::milliseconds(200);
constexpr auto kMaxBackoffBase = std::chrono::milliseconds(2000);
// etcd:// without long_poll_s: how long one fetch follows the watch before reading the key again.
constexpr int64_t kEtcdWatchHold = 300;
// SIGTERM while a cycle runs: how long it may go on before what it runs is killed (the daemon
// must stop within 2 s).
constexpr auto kStopGrace = std::chrono::milliseconds(1200);
// A CLI command holding the cycle lock longer than this is stuck; the cycle fails and retries.
constexpr int kCycleLockWaitMs = 10 * 60 * 1000;

std::string statSignature(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return "missing";
  return std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino) + ":" + std::to_string(st.st_size) + ":" +
         std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec);
}

CycleReport internalFailure(const std::string& error) {
  CycleReport r;
  r.exitCode = ExitCode::kInternal;
  r.outcome = CycleOutcome::kFailed;
  r.error = error;
  return r;
}

void noopSignalHandler(int) {}

}  // namespace

void guardAgainstSigpipe() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = noopSignalHandler;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGPIPE, &sa, nullptr);
}

std::chrono::milliseconds backoffBase(int64_t pollIntervalS) {
  const int64_t pollMs = pollIntervalS > 0 ? pollIntervalS * 1000 : 1;
  return std::chrono::milliseconds(std::min<int64_t>(pollMs, kMaxBackoffBase.count()));
}

int64_t holdSeconds(const StoreSettings& store) {
  if (store.longPollS > 0) return store.longPollS;
  const bool etcd =
      strncasecmp(store.source.c_str(), "etcd://", 7) == 0 || strncasecmp(store.source.c_str(), "etcds://", 8) == 0;
  return etcd ? kEtcdWatchHold : 0;
}

std::string statusLine(const CycleReport& r) {
  auto cut = [](std::string text) {
    if (text.size() > 160) text = text.substr(0, 157) + "...";
    return text;
  };
  const std::string revision = r.revision ? "revision " + std::to_string(*r.revision) : std::string("no document");
  const std::string generation = r.generation ? " (generation " + std::to_string(*r.generation) + ")" : "";
  switch (r.exitCode) {
    case ExitCode::kOk:
      if (!r.revision) return "no document in force yet";
      return (r.outcome == CycleOutcome::kApplied || r.outcome == CycleOutcome::kRolledBack ? "applied "
                                                                                            : "in force: ") +
             revision + generation;
    case ExitCode::kRejected:
      return "document rejected: " + cut(r.error);
    case ExitCode::kUnreachable:
      if (r.notRegistered != 0)
        return "waiting for the store (" + std::to_string(r.notRegistered) + ": not registered yet)";
      return "waiting for the store: " + cut(r.error);
    case ExitCode::kApplyFailed:
      return revision + generation + " " + cycleOutcomeName(r.outcome) + ", retried: " + cut(r.error);
    default:
      return "error: " + cut(r.error);
  }
}

std::chrono::milliseconds retryDelay(std::chrono::milliseconds backoffDraw,
                                     std::optional<std::chrono::seconds> retryAfter, std::chrono::milliseconds cap) {
  std::chrono::milliseconds delay = std::max(backoffDraw, kMinRetry);
  if (retryAfter) delay = std::max(delay, std::min<std::chrono::milliseconds>(*retryAfter, cap));
  return delay;
}

Daemon::Daemon(std::function<Result<Config>()> loadConfig, const Clock& clock, Logger log, FailPoints failpoints)
    : loadConfig_(std::move(loadConfig)), log_(std::move(log)), failpoints_(std::move(failpoints)), clock_(clock) {}

Daemon::~Daemon() = default;

Status Daemon::buildRuntime(const Config& config) {
  auto rt = std::make_unique<Runtime>();
  rt->config = config;
  if (Status s = openHostAndState(config, rt->host, rt->state); !s) return s;
  if (config.store.source.rfind("file:", 0) != 0) {
    auto driver = CurlUvDriver::create(&loop_, makeLogger("store"));
    if (!driver) return driver.status();
    rt->storeOptions.driver = std::move(*driver);
  }
  auto store = makeStoreClient(config.store, config.root, makeLogger("store"), rt->storeOptions);
  if (!store) return store.status();
  rt->store = std::move(*store);
  if (!config.store.reportUrl.empty()) {
    auto reporter = Reporter::create(config, makeLogger("report"), {});
    if (!reporter) return reporter.status();
    rt->reporter = std::move(*reporter);
  }
  rt->agent = std::make_unique<Agent>(
      config, *rt->host, *rt->state, clock_, [](Ledger& ledger) { return makeProviders(ledger); }, makeLogger("agent"),
      failpoints_);
  std::string sourcePath;
  if (config.store.source.rfind("file:", 0) == 0) {
    auto path = FileStoreClient::parseFileUrl(config.store.source);
    if (!path) return path.status();
    sourcePath = *path;
  }
  // Keep the watcher of the old runtime if the transfer tree did not move.
  if (rt_ && rt_->watcher && rt_->config.host.transferRoot == config.host.transferRoot &&
      rt_->config.host.transferGroup == config.host.transferGroup && rt_->config.root == config.root) {
    rt->enforcer = std::move(rt_->enforcer);
    rt->watcher = std::move(rt_->watcher);
  } else if (rt_ && rt_->watcher) {
    rt_->watcher->stop();
  }
  rt_ = std::move(rt);
  sourcePath_ = sourcePath;
  sourceSignature_ = sourcePath_.empty() ? "" : statSignature(sourcePath_);
  schedule_ =
      std::make_unique<PollSchedule>(config.store.pollIntervalS, sourcePath.empty() ? holdSeconds(config.store) : 0);
  return Status::ok();
}

ExitCode Daemon::run() {
  guardAgainstSigpipe();
  // One piece of work runs at a time (a cycle or a re-apply), so one pool thread is enough: the
  // same thread, warm, at every poll, instead of libuv's four each with a malloc arena of its
  // own. Arenas are capped too (the loop, the worker, the permission watcher share two).
  // UV_THREADPOOL_SIZE is read when the pool starts, at the first uv_queue_work below.
  setenv("UV_THREADPOOL_SIZE", "1", 0);
  mallopt(M_ARENA_MAX, 2);
  auto config = loadConfig_();
  if (!config) {
    log_->error("{}", config.status().message());
    return ExitCode::kUsage;
  }
  if (config->store.source.empty()) {
    log_->error("store.source is not set (config [store] source, or --source URL)");
    return ExitCode::kUsage;
  }
  {
    // The daemon lock first: a second daemon must not even seed the sandbox or open the state.
    RealHost host(config->root, makeLogger("host"));
    const std::string db = config->state.db;
    if (Status s = makeStateDirectory(*config, host); !s) {
      log_->error("start: {}", s.message());
      return ExitCode::kInternal;
    }
    auto lock = FileLock::acquire(host.realPath(db) + ".daemon.lock", 0);
    if (!lock) {
      log_->error("another pim-access-agent daemon is running ({})", lock.status().message());
      return lock.status().code() == ErrorCode::kBusy ? ExitCode::kBusy : ExitCode::kInternal;
    }
    daemonLock_ = std::move(*lock);
  }
  // The loop first: the store's transfer driver lives on it.
  uv_loop_init(&loop_);
  loop_.data = this;
  Status s = buildRuntime(*config);
  if (!s) {
    uv_run(&loop_, UV_RUN_DEFAULT);  // the close callbacks of a driver made before the failure
    uv_loop_close(&loop_);
    log_->error("start: {}", s.message());
    return s.code() == ErrorCode::kInvalid ? ExitCode::kUsage : ExitCode::kInternal;
  }
  // uv_signal_init can fail (the loop's signal pipe); uv_timer_init and uv_fs_event_init cannot.
  int rc = 0;
  for (UvHandle<uv_signal_t>* h : {&sigterm_, &sigint_, &sighup_}) {
    if (rc == 0) rc = h->init(&loop_, this, uv_signal_init);
  }
  if (rc != 0) {
    log_->error("start: signal handlers: {}", uv_strerror(rc));
    for (UvHandle<uv_signal_t>* h : {&sigterm_, &sigint_, &sighup_}) h->reset();
    rt_.reset();  // the store's transfer driver closes its handles on the loop too
    uv_run(&loop_, UV_RUN_DEFAULT);
    uv_loop_close(&loop_);
    return ExitCode::kInternal;
  }
  uv_signal_start(sigterm_.get(), onSignal, SIGTERM);
  uv_signal_start(sigint_.get(), onSignal, SIGINT);
  uv_signal_start(sighup_.get(), onSignal, SIGHUP);
  for (UvHandle<uv_timer_t>* t : {&pollTimer_, &expiryTimer_, &tickTimer_, &settleTimer_, &hostSettle_, &stopDeadline_})
    t->init(&loop_, this, uv_timer_init);
  for (UvHandle<uv_fs_event_t>* e : {&stateEvents_, &sourceEvents_}) e->init(&loop_, this, uv_fs_event_init);
  handlesOpen_ = true;
  watchdog_ = sdWatchdogInterval();
  watchFiles();
  startFirewallWatch();
  startSshdLog();
  lastWatchdog_ = std::chrono::steady_clock::now();
  workReq_.data = this;
  stateSignature_ = stateSignature();
  if (auto mark = readMark()) seenMark_ = *mark;

  log_->info("daemon started: source {}, poll every {} s{}", rt_->store->describe(), config->store.pollIntervalS,
             holdSeconds(config->store) > 0
                 ? ", long poll or watch " + std::to_string(holdSeconds(config->store)) + " s"
                 : "");
  // A host with a document in force (a reboot, a restart) re-applies it at once, READY follows,
  // and asks the store after U[0, poll interval]: a fleet that boots together does not ask all
  // at once. A host with nothing in force asks at once.
  const bool inForce = sourcePath_.empty() && seenMark_ && seenMark_->generation.has_value();
  const auto firstPoll = schedule_->firstPoll(inForce);
  if (inForce) {
    inForceReapplied_ = true;
    log_->info("re-applying the generation in force; first store request in {} ms", firstPoll.count());
    requestWork(Work::kReapply, GenerationCause::kBoot);
    scheduleNextPoll(firstPoll);
  } else {
    requestWork(Work::kCycle);
  }
  uv_run(&loop_, UV_RUN_DEFAULT);
  if (rt_ && rt_->watcher) {
    rt_->watcher->stop();
    uv_run(&loop_, UV_RUN_DEFAULT);
  }
  rt_.reset();
  uv_run(&loop_, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop_) != 0) log_->warn("event loop closed with handles still open");
  log_->info("daemon stopped");
  return ExitCode::kOk;
}

void Daemon::requestWork(Work work, GenerationCause cause) {
  if (stopping_) return;
  if (work == Work::kCycle) cycleRequested_ = true;
  if (work == Work::kReapply) {
    // A drift noticed while an expiry or the boot re-apply waits does not change why it runs.
    if (!reapplyRequested_) reapplyCause_ = cause;
    reapplyRequested_ = true;
  }
  if (busy_) {
    interruptFetch(work == Work::kCycle ? "a new cycle is due" : "a re-apply is due (key expiry or drift)");
    return;
  }
  startWorkIfIdle();
}

void Daemon::interruptFetch(const char* why) {
  // Only a fetch can be held for long; everything else the worker does is short.
  if (!busy_ || running_ != Work::kCycle || !fetching_.load() || interrupted_.load()) return;
  log_->debug("cancelling the store request in flight: {}", why);
  interrupted_.store(true);
  rt_->store->cancel();
}

void Daemon::startWorkIfIdle() {
  if (busy_ || stopping_) return;
  if (reloadPending_) reload();
  // A re-apply first: a cycle may be a long poll, and an expiring key must not wait for it.
  if (reapplyRequested_) {
    running_ = Work::kReapply;
    reapplyRequested_ = false;
  } else if (cycleRequested_) {
    running_ = Work::kCycle;
    cycleRequested_ = false;
    uv_timer_stop(pollTimer_.get());
  } else {
    return;
  }
  busy_ = true;
  workStarted_ = std::chrono::steady_clock::now();
  // The first cycle never long-polls: the host is checked and READY=1 sent without waiting
  // for the store to have something new.
  const int64_t wait = readyNotified_ && sourcePath_.empty() ? schedule_->nextHold() : 0;
  const auto now = std::chrono::steady_clock::now();
  const bool checkHost =
      running_ == Work::kReapply || hostDirty_ || !hostWatched_ || now - lastHostCheck_ >= kHostRecheck;
  if (checkHost) {
    hostDirty_ = false;
    lastHostCheck_ = now;
  }
  std::optional<std::chrono::steady_clock::duration> sinceReport;
  if (lastReport_) sinceReport = now - *lastReport_;
  input_ = WorkInput{seenMark_, nextExpiry_, wait, checkHost, reapplyCause_, sinceReport};
  uv_queue_work(&loop_, &workReq_, onWork, onWorkDone);
}

void Daemon::onWork(uv_work_t* req) { static_cast<Daemon*>(req->data)->work(); }

Result<FileLock> Daemon::lockCycle() {
  const std::string path = lockPath(rt_->config, *rt_->host);
  auto lock = FileLock::acquire(path, 0);
  if (lock || lock.status().code() != ErrorCode::kBusy) return lock;
  log_->info("waiting for the cycle lock: another pim-access-agent command is changing the host");
  return FileLock::acquire(path, kCycleLockWaitMs, &abandon_);
}

Result<Daemon::StateMark> Daemon::readMark() const {
  auto newest = rt_->state->history(1);
  if (!newest) return newest.status();
  auto pin = rt_->state->pin();
  if (!pin) return pin.status();
  StateMark mark;
  if (!newest->empty()) {
    mark.generation = newest->front().generation;
    mark.outcome = newest->front().outcome;
  }
  mark.pin = *pin;
  return mark;
}

void Daemon::snapshotState(WorkResult& out) const {
  // The signature first: a change after it is seen again by the next tick.
  const std::string signature = stateSignature();
  auto mark = readMark();
  if (!mark) return;
  // The next expiry only changes with the document in force, hence with the state; an expiry
  // already past must be looked at again (the timer would fire at once, forever).
  const bool reuse =
      input_.mark && *input_.mark == *mark && (!input_.nextExpiry || *input_.nextExpiry > clock_.nowSeconds());
  if (reuse) {
    out.nextExpiry = input_.nextExpiry;
  } else {
    auto expiry = rt_->agent->nextKeyExpiry();
    if (!expiry) return;
    out.nextExpiry = *expiry;
  }
  out.mark = *mark;
  out.stateSignature = signature;
}

void Daemon::work() {
  WorkResult out;
  out.recovered = recovered_;
  Runtime& rt = *rt_;
  if (!out.recovered) {
    auto lock = lockCycle();
    if (!lock) {
      out.report = internalFailure(lock.status().message());
      finishWork(out);
      return;
    }
    Status s = rt.agent->recoverInterruptedCycle();
    if (!s) {
      log_->error("recovery of an interrupted cycle: {}", s.message());
      out.report = internalFailure(s.message());
      finishWork(out);
      return;
    }
    out.recovered = true;
  }
  std::optional<Agent::Fetched> fetched;
  if (running_ == Work::kCycle) {
    fetching_.store(true);
    fetched = rt.agent->fetch(*rt.store, input_.waitSeconds);
    fetching_.store(false);
    out.retryAfter = rt.store->retryAfter();
    if (!fetched->outcome && (interrupted_.load() || abandon_.load())) {
      // Cancelled on purpose: not a store failure, nothing to record.
      out.report.outcome = CycleOutcome::kInterrupted;
      snapshotState(out);
      finishWork(out);
      return;
    }
  }
  auto lock = lockCycle();
  if (!lock) {
    out.report = abandon_.load() ? CycleReport{} : internalFailure(lock.status().message());
    if (abandon_.load()) out.report.outcome = CycleOutcome::kInterrupted;
    finishWork(out);
    return;
  }
  out.report =
      fetched ? rt.agent->reconcile(*fetched, input_.checkHost) : rt.agent->reapplyInForce(input_.reapplyCause);
  snapshotState(out);
  finishWork(out);
}

void Daemon::finishWork(WorkResult& out) {
  const Runtime& rt = *rt_;
  if (rt.reporter && reportDue(out.report, input_.sinceReport, std::chrono::seconds(rt.config.store.reportIntervalS))) {
    // A copy of three rows: the report is made and sent on the reporter's thread.
    auto snapshot = snapshotForReport(*rt.state, out.report, clock_.nowSeconds());
    if (snapshot) {
      out.reportSnapshot = std::move(*snapshot);
    } else {
      log_->warn("report: cannot read the state: {}", snapshot.status().message());
    }
  }
  result_ = std::move(out);
}

void Daemon::onWorkDone(uv_work_t* req, int) { static_cast<Daemon*>(req->data)->workDone(); }

void Daemon::workDone() {
  busy_ = false;
  const Work finished = running_;
  running_ = Work::kNone;
  WorkResult out = std::move(result_);
  result_ = WorkResult{};
  recovered_ = out.recovered;
  const CycleReport& r = out.report;
  const bool interrupted = r.outcome == CycleOutcome::kInterrupted;
  if (!r.changes.empty() || r.exitCode != ExitCode::kOk) {
    log_->info("cycle: {}{}{} ({} changes){}", cycleOutcomeName(r.outcome),
               r.generation ? ", generation " + std::to_string(*r.generation) : "",
               r.revision ? ", revision " + std::to_string(*r.revision) : "", r.changes.size(),
               r.error.empty() ? "" : ": " + r.error);
  }
  for (const auto& w : r.warnings) log_->warn("cycle: {}", w);
  if (!interrupted) {
    const int64_t now = clock_.nowSeconds();
    metrics_.countCycle(r, now);
    if (rt_ && rt_->watcher) {
      const PermStats totals = rt_->watcher->totals();
      metrics_.setPermissionTotals(totals.changed, totals.errors);
    }
    // The metrics file is read between cycles; the state is not being written now.
    if (Status m = publishMetrics(*rt_->host, *rt_->state, rt_->config, metrics_, now); !m) {
      log_->warn("metrics: {}", m.message());
    }
  }
  if (out.reportSnapshot && rt_ && rt_->reporter) {
    rt_->reporter->submit(std::move(*out.reportSnapshot));
    lastReport_ = std::chrono::steady_clock::now();
  }
  if (out.mark) {
    stateSignature_ = out.stateSignature;
    seenMark_ = out.mark;
    nextExpiry_ = out.nextExpiry;
  }
  if (!interrupted) {
    // READY=1 after the first cycle, whatever it did (a store down at boot must not hold the
    // unit in "activating"); STATUS= says where the agent stands after every cycle.
    const std::string status = "STATUS=" + statusLine(r);
    if (status != lastStatus_ || !readyNotified_) sdNotify(readyNotified_ ? status : "READY=1\n" + status);
    lastStatus_ = status;
    readyNotified_ = true;
  }
  if (stopping_) {
    closeHandles();
    return;
  }
  if (interrupted_.exchange(false)) {
    // cancel() is for good: the next fetch needs a client of its own.
    auto store = makeStoreClient(rt_->config.store, rt_->config.root, makeLogger("store"), rt_->storeOptions);
    if (store) {
      rt_->store = std::move(*store);
    } else {
      log_->error("store client: {}", store.status().message());
    }
  }
  startWatcherIfReady();
  scheduleExpiry();
  if (finished == Work::kCycle && r.exitCode == ExitCode::kUnreachable && !inForceReapplied_) {
    // The store is down at start (after a reboot, say): keep the last good generation in force
    // on the host anyway, so the SFTP bind mounts, which do not survive a reboot, come back.
    inForceReapplied_ = true;
    if (!reapplyRequested_) reapplyCause_ = GenerationCause::kBoot;
    reapplyRequested_ = true;
  }
  if (finished == Work::kCycle) {
    if (interrupted) {
      cycleRequested_ = true;
    } else {
      std::chrono::milliseconds delay;
      // 404/410: the store does not know this instance yet (registration comes after boot). Not an
      // outage: asked again at the normal pace, so that access is live within one poll interval
      // (or at once, through a long poll the store holds) after the instance is registered.
      const bool notRegistered = r.exitCode == ExitCode::kUnreachable && r.notRegistered != 0;
      if ((r.exitCode == ExitCode::kInternal || r.exitCode == ExitCode::kUnreachable ||
           r.exitCode == ExitCode::kApplyFailed) &&
          !notRegistered) {
        const auto retryAfter = r.exitCode == ExitCode::kUnreachable ? out.retryAfter : std::nullopt;
        delay = schedule_->afterFailure(retryAfter);
        log_->warn("retrying in {} ms ({} consecutive failures){}", delay.count(), schedule_->failures(),
                   retryAfter ? ", as the store asked (Retry-After: " + std::to_string(retryAfter->count()) + " s)"
                              : std::string());
      } else {
        const auto took =
            std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - workStarted_);
        // A new document (applied, or recorded under a pin) is a reason to ask again at once.
        const bool newDocument = !r.changes.empty() || r.outcome == CycleOutcome::kRecorded;
        delay = schedule_->afterSuccess(input_.waitSeconds, took, newDocument);
        if (notRegistered) {
          log_->info("the store does not know this instance yet (HTTP {}): asking again {}", r.notRegistered,
                     delay.count() == 0 ? std::string("with a long poll")
                                        : "in " + std::to_string(delay.count() / 1000) + " s");
        }
      }
      scheduleNextPoll(delay);
    }
  }
  // What changed while the worker was busy (file events are not acted on then).
  checkSource();
  checkOperatorCommands();
  // The worker's own nftables changes are not drift.
  if (nftWatch_) nftWatch_->drain();
  const bool tableMade = std::any_of(r.changes.begin(), r.changes.end(), [](const Action& a) {
    return a.provider == "firewall" && (a.verb == Verb::kCreate || a.verb == Verb::kRebuild);
  });
  if (tableMade) reinstateBans();
  if (cursorDirty_) saveSshdLog();
  const bool changedMeanwhile = changedWhileBusy_;
  changedWhileBusy_ = false;
  if (!r.changes.empty() || changedMeanwhile) {
    // The last plan looked at the host before these changes (a new home, a new chroot), or the
    // host changed while the worker ran: one more check soon records what the host looks like
    // now, and the watches follow it.
    hostDirty_ = true;
    rewatchHost_ = true;
    uv_timer_start(hostSettle_.get(), onHostSettle, uint64_t(kDriftSettle.count()), 0);
  }
  watchHost();
  startWorkIfIdle();
}

void Daemon::watchHost() {
  if (!handlesOpen_ || stopping_ || !rt_) return;
  RealHost::ReadSet reads = rt_->host->readSet();
  if (reads.directories.empty()) {  // no check of the host yet
    hostWatched_ = false;
    return;
  }
  // After a poll that did not look at the host, nor saw it change: the watches stand as they are.
  if (hostWatched_ && !rewatchHost_ && watchedReads_ == reads) return;
  rewatchHost_ = false;
  // A directory that does not exist (yet) is watched through the nearest one that does, for the
  // name of the missing component.
  std::map<std::string, std::set<std::string>> wanted;
  const std::string realRoot = rt_->host->realPath("/");
  for (const auto& [dir, names] : reads.directories) {
    std::string at = rt_->host->realPath(dir);
    std::set<std::string> relevant = names;
    struct stat st {};
    while (at.size() > realRoot.size() && ::lstat(at.c_str(), &st) != 0) {
      relevant = {baseName(at)};
      at = parentOf(at);
    }
    wanted[at].insert(relevant.begin(), relevant.end());
  }
  for (auto it = hostWatches_.begin(); it != hostWatches_.end();) {
    if (wanted.count(it->first) != 0) {
      it->second->names = wanted[it->first];
      ++it;
      continue;
    }
    it = hostWatches_.erase(it);  // closes its handle
  }
  bool ok = true;
  for (const auto& [dir, names] : wanted) {
    if (hostWatches_.count(dir) != 0) continue;
    auto w = std::make_unique<HostWatch>();
    w->daemon = this;
    w->names = names;
    if (w->handle.init(&loop_, w.get(), uv_fs_event_init) != 0 ||
        uv_fs_event_start(w->handle.get(), onHostEvent, dir.c_str(), 0) != 0) {
      ok = false;  // e.g. a directory that does not exist yet: check the host at every poll
      continue;
    }
    hostWatches_.emplace(dir, std::move(w));
  }
  if (reads.mounts && mountsFd_ < 0) {
    // The mount table: poll(2) reports POLLPRI on /proc/self/mountinfo after any change.
    mountsFd_ = ::open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
    if (mountsFd_ < 0 || mountsPoll_.init(&loop_, this, uv_poll_init, mountsFd_) != 0) {
      if (mountsFd_ >= 0) ::close(mountsFd_);
      mountsFd_ = -1;
    } else {
      uv_poll_start(mountsPoll_.get(), UV_PRIORITIZED, onMountsChanged);
    }
  }
  // The firewall's table counts as watched only with its netlink watch.
  const NetworkSettings& net = rt_->config.network;
  const bool firewallWatched = !net.managed || net.firewall != FirewallMode::kNftables || nftWatch_ != nullptr;
  hostWatched_ = ok && (!reads.mounts || mountsFd_ >= 0) && firewallWatched;
  watchedReads_ = std::move(reads);
}

void Daemon::closeHostWatches() {
  hostWatches_.clear();  // closes their handles
  if (mountsFd_ >= 0) {
    mountsPoll_.reset();  // the fd is no longer polled once uv_close() returns
    ::close(mountsFd_);
    mountsFd_ = -1;
  }
  hostWatched_ = false;
}

void Daemon::onHostEvent(uv_fs_event_t* handle, const char* filename, int /*events*/, int status) {
  auto* w = static_cast<HostWatch*>(handle->data);
  const bool relevant = status < 0 || filename == nullptr || w->names.count("") != 0 || w->names.count(filename) != 0;
  if (relevant) w->daemon->hostChanged();
}

void Daemon::onMountsChanged(uv_poll_t* handle, int /*status*/, int /*events*/) {
  static_cast<Daemon*>(handle->data)->hostChanged();
}

void Daemon::hostChanged() {
  if (stopping_ || !rt_) return;
  if (busy_ && !fetching_.load()) {
    // The worker's own changes, or someone's: its check may already have read what changed, so
    // one more check follows the work (workDone()).
    changedWhileBusy_ = true;
    return;
  }
  hostDirty_ = true;
  hostEvent_ = true;
  rewatchHost_ = true;
  // Repaired soon, not at the next poll: a re-apply once the changes settle, spaced out.
  const auto sinceCheck = std::chrono::steady_clock::now() - lastHostCheck_;
  auto delay =
      std::max(std::chrono::duration_cast<std::chrono::milliseconds>(kDriftSpacing - sinceCheck), kDriftSettle);
  uv_timer_start(hostSettle_.get(), onHostSettle, uint64_t(delay.count()), 0);
}

void Daemon::startFirewallWatch() {
  if (nftWatch_) {
    nftWatch_->stop();
    nftWatch_.reset();
  }
  const NetworkSettings& net = rt_->config.network;
  if (!net.managed || net.firewall != FirewallMode::kNftables) return;
  // The ban sets' elements are the defender's own: not drift.
  nftWatch_ = std::make_unique<NftWatch>(
      &loop_, kFirewallTable, std::set<std::string>{"ban4", "ban6"},
      [this]() {
        if (!busy_ || fetching_.load()) log_->info("the firewall table {} changed", kFirewallTable);
        hostChanged();
      },
      makeLogger("firewall.watch"));
  if (Status s = nftWatch_->start(); !s) {
    // Without the watch, the firewall is still checked at every cycle that checks the host.
    log_->warn("firewall drift watch: {}; the table is checked with the host at each poll", s.message());
    nftWatch_.reset();
  }
}

void Daemon::stopSshdLog() {
  logPoll_.reset();  // before the source and its fd go
  if (cursorDirty_) saveSshdLog();
  logSource_.reset();
  failures_.reset();
}

void Daemon::startSshdLog() {
  stopSshdLog();
  const Config& config = rt_->config;
  const bool defender =
      config.defender.enabled && config.network.managed && config.network.firewall == FirewallMode::kNftables;
  // Under --root the journal is the real host's, not the sandbox's: the audit then reads a log
  // file only.
  audit_ = config.audit.enabled && (config.root.empty() || !config.defender.logFile.empty());
  if (!defender && !audit_) return;
  if (defender) {
    AddressRanges neverBan;
    for (const auto& c : config.host.alwaysAllow) neverBan.add(c.text);
    failures_ = std::make_unique<FailureCounter>(config.defender.maxFailures, config.defender.windowS, neverBan);
    defenderHost_ = std::make_unique<RealHost>(config.root, makeLogger("defender.host"));
  }
  auto cursor = rt_->state->defenderCursor();
  const std::string kept = cursor ? *cursor : std::string();
  Result<std::unique_ptr<LogSource>> source =
      config.defender.logFile.empty() ? openJournalSource(kept, clock_.nowSeconds() - config.defender.windowS)
                                      : openFileSource(rt_->host->realPath(config.defender.logFile), kept, clock_);
  const std::string readers = std::string(defender ? "the defender" : "") + (defender && audit_ ? " and " : "") +
                              (audit_ ? "the login audit" : "");
  if (!source) {
    log_->error("sshd's messages: {}: {} cannot see logins", source.status().message(), readers);
    failures_.reset();
    audit_ = false;
    return;
  }
  logSource_ = std::move(*source);
  if (logPoll_.init(&loop_, this, uv_poll_init, logSource_->fd()) != 0) {
    log_->error("sshd's messages: cannot poll {}: {} cannot see logins", logSource_->describe(), readers);
    logSource_.reset();
    failures_.reset();
    audit_ = false;
    return;
  }
  uv_poll_start(logPoll_.get(), UV_READABLE, onLogReadable);
  if (defender) {
    log_->info("defender: {} failed password logins within {} s from one address ban it for {} s",
               config.defender.maxFailures, config.defender.windowS, config.defender.banS);
  }
  log_->info("{} read sshd's messages from {}", readers, logSource_->describe());
  readSshdLog();
}

void Daemon::onLogReadable(uv_poll_t* handle, int status, int /*events*/) {
  auto* self = static_cast<Daemon*>(handle->data);
  if (status < 0 || self->stopping_) return;
  self->readSshdLog();
}

void Daemon::readSshdLog() {
  if (!logSource_) return;
  const int64_t now = clock_.nowSeconds();
  const int64_t window = rt_->config.defender.windowS;
  constexpr size_t kBatch = 1000;
  for (;;) {
    auto messages = logSource_->read(kBatch);
    if (!messages) {
      log_->warn("sshd's messages: {}", messages.status().message());
      return;
    }
    for (const auto& m : *messages) {
      if (failures_) {
        auto source = failedAuthSource(m.text);
        // Failures older than the window (read again after a restart) ban nobody now.
        if (source && m.time > now - window && failures_->failure(*source, m.time)) ban(*source);
      }
      if (audit_) audit(m);
    }
    if (!messages->empty()) cursorDirty_ = true;
    if (messages->size() < kBatch) break;
  }
  if (cursorDirty_ && !busy_) saveSshdLog();
}

void Daemon::audit(const LogMessage& m) {
  auto e = parseSshdLogin(m.text);
  if (!e) return;
  if (e->kind == SshdLoginEvent::Kind::kAccepted) {
    auto& r = pendingLogins_[{e->user, e->fingerprint}];
    if (m.time < r.time) return;
    r = LoginRecord{e->user, e->fingerprint, e->method, m.time, e->address};
    log_->info("login audit: {} logged in from {} ({}{}{})", e->user, e->address, e->method,
               e->fingerprint.empty() ? "" : " ", e->fingerprint);
    if (pendingLogins_.size() > size_t(StateStore::kMaxLogins)) pendingLogins_.erase(pendingLogins_.begin());
    return;
  }
  auto it = pendingFailures_.find(e->address);
  if (it == pendingFailures_.end()) {
    // A flood of new addresses while the worker is busy: the state keeps the newest anyway.
    if (pendingFailures_.size() >= size_t(StateStore::kMaxLoginFailures)) return;
    it = pendingFailures_.emplace(e->address, LoginFailureRecord{e->address, 0, 0}).first;
  }
  it->second.count += 1;
  it->second.lastTime = std::max(it->second.lastTime, m.time);
}

void Daemon::ban(const std::string& address) {
  const int64_t banS = rt_->config.defender.banS;
  auto script = banScript(address, banS);
  if (!script) return;
  Status s = runNftScript(*defenderHost_, rt_->config.network, *script);
  if (!s) {
    log_->error("defender: ban {}: {}", address, s.message());
    return;
  }
  bans_[address] = clock_.nowSeconds() + banS;
  metrics_.countBan();
  if (!busy_) {
    if (Status m = publishMetrics(*rt_->host, *rt_->state, rt_->config, metrics_, clock_.nowSeconds()); !m) {
      log_->warn("metrics: {}", m.message());
    }
  }
  log_->warn("defender: {} banned for {} s: {} failed password logins within {} s", address, banS,
             rt_->config.defender.maxFailures, rt_->config.defender.windowS);
}

void Daemon::reinstateBans() {
  if (!defenderHost_) return;
  const int64_t now = clock_.nowSeconds();
  for (auto it = bans_.begin(); it != bans_.end();) {
    if (it->second <= now) {
      it = bans_.erase(it);
      continue;
    }
    auto script = banScript(it->first, it->second - now);
    if (script) {
      if (Status s = runNftScript(*defenderHost_, rt_->config.network, *script); !s) {
        log_->error("defender: ban {} again: {}", it->first, s.message());
      }
    }
    ++it;
  }
}

void Daemon::saveSshdLog() {
  if (!logSource_ || !rt_) return;
  std::vector<LoginRecord> logins;
  for (const auto& [key, r] : pendingLogins_) logins.push_back(r);
  std::vector<LoginFailureRecord> failures;
  for (const auto& [address, f] : pendingFailures_) failures.push_back(f);
  // One transaction: the events and the position after them (kept for the next try on failure).
  if (Status s = rt_->state->recordLogins(logins, failures, logSource_->cursor()); !s) {
    log_->warn("login audit: {}", s.message());
    return;
  }
  pendingLogins_.clear();
  pendingFailures_.clear();
  cursorDirty_ = false;
  if ((logins.empty() && failures.empty()) || busy_) return;  // the worker's cycle publishes them
  // The last logins are gauges of the metrics file: it follows them, not only the cycles.
  if (Status m = publishMetrics(*rt_->host, *rt_->state, rt_->config, metrics_, clock_.nowSeconds()); !m) {
    log_->warn("metrics: {}", m.message());
  }
}

void Daemon::onHostSettle(uv_timer_t* handle) {
  auto* self = static_cast<Daemon*>(handle->data);
  if (self->stopping_ || !self->hostDirty_) return;
  if (self->hostEvent_) self->log_->info("the host changed: checking it against the generation in force");
  self->hostEvent_ = false;
  self->requestWork(Work::kReapply);
}

void Daemon::scheduleNextPoll(std::chrono::milliseconds delay) {
  uv_timer_start(pollTimer_.get(), onPollTimer, uint64_t(delay.count()), 0);
}

void Daemon::scheduleExpiry() {
  uv_timer_stop(expiryTimer_.get());
  if (!nextExpiry_) return;
  // Fire just after the expiry second begins: installableAt() compares whole seconds.
  int64_t delay = *nextExpiry_ * 1000 - clock_.nowMilliseconds() + 5;
  if (delay < 0) delay = 0;
  uv_timer_start(expiryTimer_.get(), onExpiryTimer, uint64_t(delay), 0);
}

void Daemon::startWatcherIfReady() {
  if (!rt_ || rt_->watcher) return;
  const HostSettings& hs = rt_->config.host;
  auto info = rt_->host->lstat(hs.transferRoot);
  auto group = rt_->host->findGroup(hs.transferGroup);
  if (!info || info->type != FileType::kDirectory || !group || !group->has_value()) return;
  const std::string realRoot = rt_->host->realPath(hs.transferRoot);
  rt_->enforcer = std::make_unique<PermEnforcer>(realRoot, (*group)->gid, makeLogger("perms"));
  rt_->watcher = std::make_unique<PermWatcher>(&loop_, *rt_->enforcer, realRoot, makeLogger("perms.watch"));
  Status s = rt_->watcher->start();
  if (!s) {
    log_->error("transfer permissions: {}", s.message());
    rt_->watcher.reset();
    rt_->enforcer.reset();
    return;
  }
  log_->info("watching {} for permissions", realRoot);
}

// Starts (again) the inotify watches and sets the tick: 500 ms when a watch could not be set up
// (stat polling as before), otherwise 10 s as a safety net; never longer than half the systemd
// watchdog interval.
void Daemon::watchFiles() {
  if (!handlesOpen_ || !rt_) return;
  if (!stateWatched_) {
    const std::string dir = parentOf(rt_->host->realPath(rt_->config.state.db));
    int rc = uv_fs_event_start(stateEvents_.get(), onFileEvent, dir.c_str(), 0);
    stateWatched_ = rc == 0;
    if (rc != 0) log_->warn("cannot watch {} ({}): checking it every {} ms", dir, uv_strerror(rc), kTick.count());
  }
  const std::string sourceDir = sourcePath_.empty() ? std::string() : parentOf(sourcePath_);
  if (sourceWatched_ && sourceDir != sourceWatchedDir_) {
    uv_fs_event_stop(sourceEvents_.get());
    sourceWatched_ = false;
  }
  bool sourceOk = true;
  if (!sourceDir.empty() && !sourceWatched_) {
    int rc = uv_fs_event_start(sourceEvents_.get(), onFileEvent, sourceDir.c_str(), 0);
    sourceWatched_ = rc == 0;
    sourceWatchedDir_ = sourceWatched_ ? sourceDir : std::string();
    sourceOk = sourceWatched_;
    if (rc != 0) log_->warn("cannot watch {} ({}): checking it every {} ms", sourceDir, uv_strerror(rc), kTick.count());
  }
  auto tick = stateWatched_ && sourceOk ? kSlowTick : kTick;
  if (watchdog_) {
    tick = std::min(tick, std::chrono::duration_cast<std::chrono::milliseconds>(*watchdog_ / 2));
    tick = std::max(tick, std::chrono::milliseconds(100));
  }
  uv_timer_start(tickTimer_.get(), onTickTimer, tick.count(), tick.count());
}

void Daemon::onFileEvent(uv_fs_event_t* handle, const char* /*filename*/, int /*events*/, int /*status*/) {
  auto* self = static_cast<Daemon*>(handle->data);
  if (self->stopping_ || !self->rt_) return;
  // The worker's own writes: what changed meanwhile is looked at when it is done.
  if (self->busy_ && !self->fetching_.load()) return;
  self->settleChecks_ = 2;
  uv_timer_start(self->settleTimer_.get(), onSettleTimer, 50, 0);  // restarted by every event
}

void Daemon::onSettleTimer(uv_timer_t* handle) {
  auto* self = static_cast<Daemon*>(handle->data);
  if (self->stopping_ || !self->rt_) return;
  self->checkSource();
  self->checkOperatorCommands();
  if (--self->settleChecks_ > 0) uv_timer_start(self->settleTimer_.get(), onSettleTimer, 500, 0);
}

std::string Daemon::stateSignature() const {
  const std::string db = rt_->host->realPath(rt_->config.state.db);
  return statSignature(db) + "|" + statSignature(db + "-wal");
}

void Daemon::tick() {
  if (watchdog_ && std::chrono::steady_clock::now() - lastWatchdog_ >= *watchdog_ / 2) {
    sdNotify("WATCHDOG=1");
    lastWatchdog_ = std::chrono::steady_clock::now();
  }
  if (stopping_ || !rt_) return;
  checkSource();
  checkOperatorCommands();
}

void Daemon::checkSource() {
  // A file:// source is re-read as soon as it changes (a fetch of it is never held, so a busy
  // worker will be done soon and the change is still there to see: the tick looks again).
  if (sourcePath_.empty() || busy_) return;
  const std::string sig = statSignature(sourcePath_);
  if (sig == sourceSignature_) return;
  sourceSignature_ = sig;
  requestWork(Work::kCycle);
}

void Daemon::checkOperatorCommands() {
  // While the worker reconciles, the database changes under its own hand: look afterwards.
  if (busy_ && !fetching_.load()) return;
  const std::string sig = stateSignature();
  if (sig == stateSignature_) return;
  auto mark = readMark();
  if (!mark) return;
  // Another command is in the middle of its cycle (a rollback, say): look again when it is done,
  // rather than report a half-made state (its pin is not set yet).
  if (mark->outcome == GenerationOutcome::kPending) return;
  if (!busy_) stateSignature_ = sig;
  if (seenMark_ && *mark == *seenMark_) return;
  // Another process (rollback, resume, once) changed the state: a cycle now picks up the pin,
  // fetches what a lifted pin lets through, and re-arms the expiry timer.
  log_->info("state changed by another command (generation {} {}, {}): running a cycle",
             mark->generation ? std::to_string(*mark->generation) : "none",
             mark->outcome ? outcomeName(*mark->outcome) : "",
             mark->pin ? "pinned to " + std::to_string(*mark->pin) : std::string("not pinned"));
  seenMark_ = *mark;
  requestWork(Work::kCycle);
}

void Daemon::reload() {
  reloadPending_ = false;
  auto config = loadConfig_();
  if (!config) {
    log_->error("SIGHUP: config not reloaded: {}", config.status().message());
    return;
  }
  if (config->root != rt_->config.root || config->state.db != rt_->config.state.db) {
    log_->error("SIGHUP: config not reloaded: state.db (or --root) changed; restart the daemon to move the state");
    return;
  }
  Status s = buildRuntime(*config);
  if (!s) {
    log_->error("SIGHUP: config not reloaded: {}", s.message());
    return;
  }
  watchFiles();
  startFirewallWatch();
  startSshdLog();
  log_->info("SIGHUP: configuration reloaded: source {}, poll every {} s", rt_->store->describe(),
             config->store.pollIntervalS);
  cycleRequested_ = true;
}

void Daemon::stop() {
  if (stopping_) return;
  stopping_ = true;
  abandon_.store(true);
  sdNotify("STOPPING=1");
  log_->info("stopping");
  if (rt_ && rt_->store) rt_->store->cancel();
  if (!busy_) {
    closeHandles();
    return;
  }
  // A cycle under way is given a moment to end; then whatever it runs is killed and it is left
  // to the crash recovery of the next start (its journal is open), so that the daemon stops
  // within its 2 s whatever runs (a slow sshd -t, useradd).
  uv_timer_start(stopDeadline_.get(), onStopDeadline, uint64_t(kStopGrace.count()), 0);
}

void Daemon::onStopDeadline(uv_timer_t* handle) {
  auto* self = static_cast<Daemon*>(handle->data);
  if (!self->busy_) return;
  self->log_->warn(
      "stopping: the cycle under way did not end within {} ms; killing what it runs, the next start "
      "finishes it (crash recovery)",
      kStopGrace.count());
  if (self->rt_ && self->rt_->host) self->rt_->host->abortCommands();
  spdlog::apply_all([](const std::shared_ptr<spdlog::logger>& l) { l->flush(); });
  ::_exit(0);
}

void Daemon::closeHandles() {
  if (!handlesOpen_) return;
  handlesOpen_ = false;
  if (rt_ && rt_->watcher) rt_->watcher->stop();
  for (UvHandle<uv_signal_t>* h : {&sigterm_, &sigint_, &sighup_}) h->reset();
  closeHostWatches();
  if (nftWatch_) nftWatch_->stop();
  stopSshdLog();
  for (UvHandle<uv_timer_t>* t : {&pollTimer_, &expiryTimer_, &tickTimer_, &settleTimer_, &hostSettle_, &stopDeadline_})
    t->reset();
  for (UvHandle<uv_fs_event_t>* e : {&stateEvents_, &sourceEvents_}) e->reset();
}

void Daemon::onSignal(uv_signal_t* handle, int signum) {
  auto* self = static_cast<Daemon*>(handle->data);
  if (signum == SIGHUP) {
    // Reloaded between two pieces of work, never under a running one; a held fetch is cut short.
    self->reloadPending_ = true;
    self->interruptFetch("SIGHUP");
    self->startWorkIfIdle();
    return;
  }
  self->stop();
}

void Daemon::onPollTimer(uv_timer_t* handle) { static_cast<Daemon*>(handle->data)->requestWork(Work::kCycle); }

void Daemon::onExpiryTimer(uv_timer_t* handle) {
  static_cast<Daemon*>(handle->data)->requestWork(Work::kReapply, GenerationCause::kExpiry);
}

void Daemon::onTickTimer(uv_timer_t* handle) { static_cast<Daemon*>(handle->data)->tick(); }

}  // namespace pim
