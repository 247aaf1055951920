#include "agent/daemon.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <csignal>

#include "agent/cli_support.h"
#include "agent/provider_set.h"
#include "agent/sandbox.h"
#include "agent/sd_notify.h"

namespace pim {

struct Daemon::Runtime {
  Config config;
  std::unique_ptr<RealHost> host;
  std::unique_ptr<StateStore> state;
  std::unique_ptr<StoreClient> store;
  std::unique_ptr<Agent> agent;
  std::unique_ptr<PermEnforcer> enforcer;
  std::unique_ptr<PermWatcher> watcher;
};

namespace {

constexpr auto kTick = std::chrono::milliseconds(500);
constexpr auto kMinRetry = std::chrono::milliseconds(200);
// Failures retry sooner than the poll interval, then back off to the 10-minute cap.
constexpr auto kBackoffBase = std::chrono::milliseconds(2000);

std::string fileSource(const std::string& source) {
  const std::string prefix = "file://";
  return source.rfind(prefix, 0) == 0 ? source.substr(prefix.size()) : std::string();
}

std::string statSignature(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return "missing";
  return std::to_string(st.st_ino) + ":" + std::to_string(st.st_size) + ":" + std::to_string(st.st_mtim.tv_sec) +
         "." + std::to_string(st.st_mtim.tv_nsec);
}

}  // namespace

Daemon::Daemon(std::function<Result<Config>()> loadConfig, Logger log)
    : loadConfig_(std::move(loadConfig)), log_(std::move(log)), backoff_(kBackoffBase) {}

Daemon::~Daemon() = default;

Status Daemon::buildRuntime(const Config& config) {
  auto rt = std::make_unique<Runtime>();
  rt->config = config;
  rt->host = std::make_unique<RealHost>(config.root, makeLogger("host"));
  Status s = prepareSandbox(*rt->host);
  if (!s) return s;
  auto state = openState(config, *rt->host);
  if (!state) return state.status();
  rt->state = std::move(*state);
  auto store = makeStoreClient(config.store, config.root, makeLogger("store"));
  if (!store) return store.status();
  rt->store = std::move(*store);
  rt->agent = std::make_unique<Agent>(config, *rt->host, *rt->state, clock_,
                                      [](Ledger& ledger) { return makeProviders(ledger); }, makeLogger("agent"));
  // Keep the watcher of the old runtime if the transfer tree did not move.
  if (rt_ && rt_->watcher && rt_->config.host.transferRoot == config.host.transferRoot &&
      rt_->config.host.transferGroup == config.host.transferGroup && rt_->config.root == config.root) {
    rt->enforcer = std::move(rt_->enforcer);
    rt->watcher = std::move(rt_->watcher);
  } else if (rt_ && rt_->watcher) {
    rt_->watcher->stop();
  }
  rt_ = std::move(rt);
  sourceSignature_ = fileSource(config.store.source).empty() ? "" : statSignature(fileSource(config.store.source));
  return Status::ok();
}

int Daemon::run() {
  auto config = loadConfig_();
  if (!config) {
    log_->error("{}", config.status().message());
    return 2;
  }
  if (config->store.source.empty()) {
    log_->error("store.source is not set (config [store] source, or --source URL)");
    return 2;
  }
  Status s = buildRuntime(*config);
  if (!s) {
    log_->error("start: {}", s.message());
    return s.code() == ErrorCode::kInvalid ? 2 : 1;
  }
  auto lock = FileLock::acquire(rt_->host->realPath(config->state.db) + ".daemon.lock", 0);
  if (!lock) {
    log_->error("another pim-access-agent daemon is running ({})", lock.status().message());
    return 1;
  }
  daemonLock_ = std::move(*lock);

  uv_loop_init(&loop_);
  loop_.data = this;
  for (uv_signal_t* h : {&sigterm_, &sigint_, &sighup_}) {
    uv_signal_init(&loop_, h);
    h->data = this;
  }
  uv_signal_start(&sigterm_, onSignal, SIGTERM);
  uv_signal_start(&sigint_, onSignal, SIGINT);
  uv_signal_start(&sighup_, onSignal, SIGHUP);
  for (uv_timer_t* t : {&pollTimer_, &expiryTimer_, &tickTimer_}) {
    uv_timer_init(&loop_, t);
    t->data = this;
  }
  uv_timer_start(&tickTimer_, onTickTimer, kTick.count(), kTick.count());
  handlesOpen_ = true;
  watchdog_ = sdWatchdogInterval();
  lastWatchdog_ = std::chrono::steady_clock::now();
  workReq_.data = this;

  log_->info("daemon started: source {}, poll every {} s{}", rt_->store->describe(), config->store.pollIntervalS,
             config->store.longPollS > 0 ? ", long poll " + std::to_string(config->store.longPollS) + " s" : "");
  requestWork(Work::kCycle);
  uv_run(&loop_, UV_RUN_DEFAULT);
  if (rt_ && rt_->watcher) {
    rt_->watcher->stop();
    uv_run(&loop_, UV_RUN_DEFAULT);
  }
  rt_.reset();
  uv_run(&loop_, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop_) != 0) log_->warn("event loop closed with handles still open");
  log_->info("daemon stopped");
  return 0;
}

void Daemon::requestWork(Work work) {
  if (stopping_) return;
  if (work == Work::kCycle) cycleRequested_ = true;
  if (work == Work::kReapply) reapplyRequested_ = true;
  startWorkIfIdle();
}

void Daemon::startWorkIfIdle() {
  if (busy_ || stopping_) return;
  if (reloadPending_) {
    reload();
  }
  if (cycleRequested_) {
    running_ = Work::kCycle;
  } else if (reapplyRequested_) {
    running_ = Work::kReapply;
  } else {
    return;
  }
  cycleRequested_ = false;
  reapplyRequested_ = false;
  busy_ = true;
  uv_timer_stop(&pollTimer_);
  workStarted_ = std::chrono::steady_clock::now();
  uv_queue_work(&loop_, &workReq_, onWork, onWorkDone);
}

void Daemon::onWork(uv_work_t* req) {
  auto* self = static_cast<Daemon*>(req->data);
  Runtime& rt = *self->rt_;
  auto lock = FileLock::acquire(rt.host->realPath(rt.config.state.db) + ".lock", 30000);
  if (!lock) {
    self->report_ = CycleReport{};
    self->report_.exitCode = 1;
    self->report_.outcome = "failed";
    self->report_.error = lock.status().message();
    return;
  }
  if (!self->recovered_) {
    Status s = rt.agent->recoverInterruptedCycle();
    if (!s) self->log_->error("recovery: {}", s.message());
    self->recovered_ = true;
  }
  if (self->running_ == Work::kCycle) {
    self->report_ = rt.agent->cycle(*rt.store, rt.config.store.longPollS);
  } else {
    self->report_ = rt.agent->reapplyInForce();
  }
  auto expiry = rt.agent->nextKeyExpiry();
  self->nextExpiry_ = expiry ? *expiry : std::nullopt;
  auto latest = rt.state->latest();
  if (latest && latest->has_value()) self->seenGeneration_ = (*latest)->generation;
}

void Daemon::onWorkDone(uv_work_t* req, int) {
  static_cast<Daemon*>(req->data)->workDone();
}

void Daemon::workDone() {
  busy_ = false;
  const Work finished = running_;
  running_ = Work::kNone;
  const CycleReport& r = report_;
  if (!r.changes.empty() || r.exitCode != 0) {
    log_->info("cycle: {}{}{} ({} changes){}", r.outcome, r.generation ? ", generation " + std::to_string(*r.generation) : "",
               r.revision ? ", revision " + std::to_string(*r.revision) : "", r.changes.size(),
               r.error.empty() ? "" : ": " + r.error);
  }
  if (!readyNotified_) {
    sdNotify("READY=1\nSTATUS=first cycle done: " + r.outcome);
    readyNotified_ = true;
  }
  if (stopping_) {
    closeHandles();
    return;
  }
  startWatcherIfReady();
  scheduleExpiry();
  if (finished == Work::kCycle) {
    const auto& store = rt_->config.store;
    std::chrono::milliseconds delay;
    if (r.exitCode == 1 || r.exitCode == 4 || r.exitCode == 5) {
      delay = std::max(backoff_.nextDelay(), std::chrono::milliseconds(kMinRetry));
      log_->warn("retrying in {} ms ({} consecutive failures)", delay.count(), backoff_.failures());
    } else {
      backoff_.reset();
      const auto took = std::chrono::steady_clock::now() - workStarted_;
      // Back-to-back long polls, unless the store answered at once without holding the request
      // (a store that does not long-poll must not be hammered).
      const bool longPoll = store.longPollS > 0 && fileSource(store.source).empty() &&
                            (took >= std::chrono::seconds(1) || !r.changes.empty());
      delay = longPoll ? std::chrono::milliseconds(0) : std::chrono::milliseconds(store.pollIntervalS * 1000);
    }
    scheduleNextPoll(delay);
  }
  startWorkIfIdle();
}

void Daemon::scheduleNextPoll(std::chrono::milliseconds delay) {
  uv_timer_start(&pollTimer_, onPollTimer, uint64_t(delay.count()), 0);
}

void Daemon::scheduleExpiry() {
  uv_timer_stop(&expiryTimer_);
  if (!nextExpiry_) return;
  const auto nowMs = std::chrono::duration_cast<std::chrono::milliseconds>(
                         std::chrono::system_clock::now().time_since_epoch()).count();
  // Fire just after the expiry second begins: installableAt() compares whole seconds.
  int64_t delay = *nextExpiry_ * 1000 - nowMs + 5;
  if (delay < 0) delay = 0;
  uv_timer_start(&expiryTimer_, onExpiryTimer, uint64_t(delay), 0);
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

void Daemon::tick() {
  if (watchdog_ && std::chrono::steady_clock::now() - lastWatchdog_ >= *watchdog_ / 2) {
    sdNotify("WATCHDOG=1");
    lastWatchdog_ = std::chrono::steady_clock::now();
  }
  if (busy_ || stopping_ || !rt_) return;
  // A file:// source is re-read as soon as it changes.
  const std::string path = fileSource(rt_->config.store.source);
  if (!path.empty()) {
    const std::string sig = statSignature(path);
    if (sig != sourceSignature_) {
      sourceSignature_ = sig;
      requestWork(Work::kCycle);
      return;
    }
  }
  // An operator command (rollback, resume) from the command line: apply its effects now.
  auto latest = rt_->state->latest();
  if (latest && latest->has_value() && (*latest)->generation != seenGeneration_) {
    seenGeneration_ = (*latest)->generation;
    requestWork(Work::kReapply);
  }
}

void Daemon::reload() {
  reloadPending_ = false;
  auto config = loadConfig_();
  if (!config) {
    log_->error("SIGHUP: config not reloaded: {}", config.status().message());
    return;
  }
  Status s = buildRuntime(*config);
  if (!s) {
    log_->error("SIGHUP: config not reloaded: {}", s.message());
    return;
  }
  log_->info("SIGHUP: configuration reloaded");
  cycleRequested_ = true;
}

void Daemon::stop() {
  if (stopping_) return;
  stopping_ = true;
  sdNotify("STOPPING=1");
  log_->info("stopping");
  if (rt_ && rt_->store) rt_->store->cancel();
  if (!busy_) closeHandles();
}

void Daemon::closeHandles() {
  if (!handlesOpen_) return;
  handlesOpen_ = false;
  if (rt_ && rt_->watcher) rt_->watcher->stop();
  for (uv_signal_t* h : {&sigterm_, &sigint_, &sighup_}) uv_close(reinterpret_cast<uv_handle_t*>(h), nullptr);
  for (uv_timer_t* t : {&pollTimer_, &expiryTimer_, &tickTimer_}) uv_close(reinterpret_cast<uv_handle_t*>(t), nullptr);
}

void Daemon::onSignal(uv_signal_t* handle, int signum) {
  auto* self = static_cast<Daemon*>(handle->data);
  if (signum == SIGHUP) {
    // Reloaded between cycles, never under a running one.
    self->reloadPending_ = true;
    self->startWorkIfIdle();
    return;
  }
  self->stop();
}

void Daemon::onPollTimer(uv_timer_t* handle) { static_cast<Daemon*>(handle->data)->requestWork(Work::kCycle); }

void Daemon::onExpiryTimer(uv_timer_t* handle) { static_cast<Daemon*>(handle->data)->requestWork(Work::kReapply); }

void Daemon::onTickTimer(uv_timer_t* handle) { static_cast<Daemon*>(handle->data)->tick(); }

}  // namespace pim
