#include "agent/daemon/perm_watcher.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

namespace pim {
namespace {

constexpr size_t kReadBufferSize = 64 * 1024;
// Reads per readable callback: bounded so a burst cannot starve the other handles of the loop.
constexpr int kMaxReadsPerCallback = 16;

std::string join(const std::string& dir, const std::string& name) { return dir.empty() ? name : dir + "/" + name; }

uint64_t millis(std::chrono::seconds s) {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(s).count());
}

std::string readSysctl(const char* path) {
  std::string value = "?";
  if (FILE* f = std::fopen(path, "re")) {
    char buf[64] = {0};
    if (std::fgets(buf, sizeof buf, f) != nullptr) {
      value = buf;
      while (!value.empty() && (value.back() == '\n' || value.back() == ' ')) value.pop_back();
    }
    std::fclose(f);
  }
  return value;
}

}  // namespace

PermWatcher::PermWatcher(uv_loop_t* loop, PermEnforcer& enforcer, std::string realRoot, Logger log,
                         std::chrono::seconds safetyInterval, PermWatcherLimits limits)
    : loop_(loop),
      enforcer_(enforcer),
      realRoot_(std::move(realRoot)),
      log_(log ? std::move(log) : nullLogger()),
      safetyInterval_(safetyInterval),
      limits_(limits) {
  while (realRoot_.size() > 1 && realRoot_.back() == '/') realRoot_.pop_back();
  if (limits_.fallbackInterval.count() <= 0) limits_.fallbackInterval = std::chrono::seconds(60);
}

PermWatcher::~PermWatcher() { stop(); }

Status PermWatcher::start() {
  if (started_ || stopping_) {
    return Status::error(ErrorCode::kInternal, "start permission watcher: already started", realRoot_);
  }
  inotifyFd_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (inotifyFd_ < 0) {
    return Status::error(ErrorCode::kIo, std::string("inotify_init1: ") + std::strerror(errno), realRoot_);
  }
  // Watches are added on the directory fds the enforcer opened without following symlinks,
  // through /proc/self/fd; without /proc, by path (see onDirectory).
  procFd_ = access("/proc/self/fd", X_OK) == 0;

  auto failUv = [&](const char* what, int rc) {
    closeHandles();
    close(inotifyFd_);
    inotifyFd_ = -1;
    return Status::error(ErrorCode::kIo, std::string(what) + ": " + uv_strerror(rc), realRoot_);
  };
  int rc = poll_.init(loop_, this, uv_poll_init, inotifyFd_);
  if (rc != 0) return failUv("uv_poll_init", rc);
  rc = async_.init(loop_, this, uv_async_init, &PermWatcher::onAsync);
  if (rc != 0) return failUv("uv_async_init", rc);
  safetyTimer_.init(loop_, this, uv_timer_init);  // cannot fail
  fallbackTimer_.init(loop_, this, uv_timer_init);

  rc = uv_poll_start(poll_.get(), UV_READABLE, &PermWatcher::onReadable);
  if (rc != 0) return failUv("uv_poll_start", rc);
  if (safetyInterval_.count() > 0) {
    uv_timer_start(safetyTimer_.get(), &PermWatcher::onSafetyTimer, millis(safetyInterval_), millis(safetyInterval_));
  }

  {
    std::lock_guard<std::mutex> lock(mutex_);
    rescanRequested_ = true;  // the first full pass adds every watch
  }
  worker_ = std::thread(&PermWatcher::workerMain, this);
  started_ = true;
  log_->info("watching permissions under {}", realRoot_);
  return Status::ok();
}

void PermWatcher::stop() {
  if (!started_) return;
  started_ = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (worker_.joinable()) worker_.join();
  closeHandles();
  if (inotifyFd_ >= 0) {
    close(inotifyFd_);  // drops every watch
    inotifyFd_ = -1;
  }
  byWd_.clear();
  byPath_.clear();
  watchCount_ = 0;
  log_->info("stopped watching permissions under {}", realRoot_);
}

void PermWatcher::requestFullPass() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    rescanRequested_ = true;
  }
  wake_.notify_one();
}

PermStats PermWatcher::totals() const {
  std::lock_guard<std::mutex> lock(totalsMutex_);
  return totals_;
}

void PermWatcher::closeHandles() {
  poll_.reset();
  safetyTimer_.reset();
  fallbackTimer_.reset();
  async_.reset();
  fallbackRunning_ = false;
}

// ---- loop thread ----

void PermWatcher::onReadable(uv_poll_t* handle, int status, int /*events*/) {
  auto* self = static_cast<PermWatcher*>(handle->data);
  if (self == nullptr) return;
  if (status < 0) {
    self->log_->error("poll inotify fd for {}: {}", self->realRoot_, uv_strerror(status));
    return;
  }
  self->readEvents();
}

void PermWatcher::readEvents() {
  alignas(struct inotify_event) char buf[kReadBufferSize];
  std::vector<RawEvent> events;
  bool overflow = false;
  for (int round = 0; round < kMaxReadsPerCallback; ++round) {
    ssize_t n = read(inotifyFd_, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) log_->error("read inotify fd for {}: {}", realRoot_, std::strerror(errno));
      break;
    }
    if (n == 0) break;
    for (char* p = buf; p < buf + n;) {
      auto* ev = reinterpret_cast<struct inotify_event*>(p);
      if (ev->mask & IN_Q_OVERFLOW) {
        overflow = true;
      } else {
        events.push_back(RawEvent{ev->wd, ev->mask, ev->len > 0 ? std::string(ev->name) : ""});
      }
      p += sizeof(struct inotify_event) + ev->len;
    }
  }
  if (events.empty() && !overflow) return;
  bool dropped = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!overflow && queue_.size() + events.size() > limits_.maxQueuedEvents) dropped = true;
    if (overflow || dropped) {
      // A full rescan covers every lost and every queued event.
      queue_.clear();
      rescanRequested_ = true;
    } else if (queue_.empty()) {
      queue_.swap(events);
    } else {
      queue_.insert(queue_.end(), std::make_move_iterator(events.begin()), std::make_move_iterator(events.end()));
    }
  }
  if (overflow || dropped) {
    ++overflows_;
    log_->warn("{} under {}: events lost, rescanning the whole tree",
               overflow ? "inotify queue overflow" : "too many events waiting", realRoot_);
  }
  wake_.notify_one();
}

void PermWatcher::onSafetyTimer(uv_timer_t* handle) {
  auto* self = static_cast<PermWatcher*>(handle->data);
  if (self != nullptr) self->requestFullPass();
}

void PermWatcher::onFallbackTimer(uv_timer_t* handle) {
  auto* self = static_cast<PermWatcher*>(handle->data);
  if (self != nullptr) self->requestFullPass();
}

void PermWatcher::onAsync(uv_async_t* handle) {
  auto* self = static_cast<PermWatcher*>(handle->data);
  if (self == nullptr || !self->fallbackTimer_) return;
  uv_timer_t* timer = self->fallbackTimer_.get();
  bool want = self->degraded_.load();
  if (want && !self->fallbackRunning_) {
    uint64_t ms = millis(self->limits_.fallbackInterval);
    uv_timer_start(timer, &PermWatcher::onFallbackTimer, ms, ms);
    self->fallbackRunning_ = true;
  } else if (!want && self->fallbackRunning_) {
    uv_timer_stop(timer);
    self->fallbackRunning_ = false;
  }
}

// ---- worker thread ----

void PermWatcher::workerMain() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stopping_) {
    wake_.wait(lock, [this] { return stopping_ || rescanRequested_ || !queue_.empty(); });
    if (stopping_) break;
    bool rescan = rescanRequested_;
    rescanRequested_ = false;
    std::vector<RawEvent> batch;
    batch.swap(queue_);
    lock.unlock();
    if (rescan) {
      fullRescan();  // covers the batch too: it looks at everything after the events happened
    } else {
      processBatch(batch);
    }
    lock.lock();
  }
}

void PermWatcher::fullRescan() {
  ++generation_;
  fullMode_ = true;
  shortThisPass_ = false;
  WalkHooks hooks;
  hooks.onDirectory = [this](const std::string& rel, int fd) { return onDirectory(rel, fd); };
  hooks.cancel = &stopping_;
  PermStats stats = enforcer_.fullPass(hooks);
  fullMode_ = false;
  addTotals(stats);
  if (stats.cancelled) return;
  // Mark and sweep: a watch the pass did not reach is on a directory that left the tree.
  for (auto it = byWd_.begin(); it != byWd_.end();) {
    if (it->second.generation != generation_) {
      inotify_rm_watch(inotifyFd_, it->first);
      auto byPath = byPath_.find(it->second.path);
      if (byPath != byPath_.end() && byPath->second == it->first) byPath_.erase(byPath);
      it = byWd_.erase(it);
    } else {
      ++it;
    }
  }
  watchCount_ = byWd_.size();
  ++fullPasses_;
  setDegraded(shortThisPass_ || byPath_.count(std::string()) == 0);
}

void PermWatcher::processBatch(const std::vector<RawEvent>& batch) {
  // Structural events are applied in order; fixes are collected per directory (each directory
  // is then resolved once) and run after: a fix only looks at what is there now.
  std::map<std::string, std::vector<std::string>> fixes;
  for (const auto& ev : batch) {
    if (ev.mask & IN_IGNORED) {
      forgetWd(ev.wd);
      continue;
    }
    auto it = byWd_.find(ev.wd);
    if (it == byWd_.end()) continue;
    std::string dir = it->second.path;
    if (ev.mask & (IN_DELETE_SELF | IN_MOVE_SELF)) {
      if (dir.empty()) {
        log_->error("transfer root {} was moved or deleted", realRoot_);
        std::lock_guard<std::mutex> lock(mutex_);
        rescanRequested_ = true;
      } else if (ev.mask & IN_MOVE_SELF) {
        dropSubtree(dir);  // its new place, if in the tree, comes as IN_MOVED_TO
      }
      continue;
    }
    if (ev.mask & IN_UNMOUNT) continue;
    if (ev.name.empty()) {  // the watched directory itself (IN_ATTRIB)
      if (dir.empty()) {
        fixes[std::string()].push_back(".");
      } else {
        size_t slash = dir.rfind('/');
        std::string parent = slash == std::string::npos ? std::string() : dir.substr(0, slash);
        fixes[parent].push_back(slash == std::string::npos ? dir : dir.substr(slash + 1));
      }
      continue;
    }
    if (ev.mask & IN_MOVED_FROM) {
      // Paths under a moved directory are stale: drop its watches; IN_MOVED_TO re-adds them
      // from the new place (and scans it).
      if (ev.mask & IN_ISDIR) dropSubtree(join(dir, ev.name));
      continue;
    }
    fixes[dir].push_back(ev.name);
  }

  WalkHooks hooks;
  hooks.onDirectory = [this](const std::string& rel, int fd) { return onDirectory(rel, fd); };
  hooks.cancel = &stopping_;
  PermStats stats;
  for (auto& [dir, names] : fixes) {
    if (stopping_) break;
    std::sort(names.begin(), names.end());
    names.erase(std::unique(names.begin(), names.end()), names.end());
    stats.add(enforcer_.fixEntries(dir, names, hooks));
  }
  addTotals(stats);
}

bool PermWatcher::onDirectory(const std::string& rel, int dirFd) {
  bool known = byPath_.count(rel) != 0;
  if (!known && limits_.maxWatches != 0 && byWd_.size() >= limits_.maxWatches) {
    watchShortage(ENOSPC, rel);
    return true;  // not watched: this pass must look at everything below
  }
  int wd;
  if (procFd_) {
    // The magic link names exactly the directory the enforcer opened with O_NOFOLLOW from the
    // root: no path is resolved again, so a concurrent symlink swap cannot redirect the watch.
    // (IN_DONT_FOLLOW would make inotify watch the magic link itself.)
    char path[64];
    std::snprintf(path, sizeof path, "/proc/self/fd/%d", dirFd);
    wd = inotify_add_watch(inotifyFd_, path, kWatchMask);
  } else {
    // Without /proc: by path, not following the last component. A raced intermediate component
    // could only put a watch outside the tree, whose events lead to fixes that are resolved
    // again from the root without following symlinks: harmless.
    std::string path = rel.empty() ? realRoot_ : realRoot_ + "/" + rel;
    wd = inotify_add_watch(inotifyFd_, path.c_str(), kWatchMask | IN_DONT_FOLLOW);
  }
  if (wd < 0) {
    int err = errno;
    if (err == ENOSPC || err == ENOMEM) {
      watchShortage(err, rel);
    } else {
      log_->error("inotify_add_watch {}{}{}: {}", realRoot_, rel.empty() ? "" : "/", rel, std::strerror(err));
    }
    return true;
  }
  auto displaced = byPath_.find(rel);
  if (displaced != byPath_.end() && displaced->second != wd) {
    // Another directory had this path (replaced, or moved away unseen): its watch is stale.
    inotify_rm_watch(inotifyFd_, displaced->second);
    byWd_.erase(displaced->second);
  }
  auto it = byWd_.find(wd);
  bool descend = fullMode_;
  if (it == byWd_.end()) {
    byWd_.emplace(wd, Watch{rel, generation_});
    descend = true;  // new watch: entries created before it exist only in the listing
  } else {
    if (it->second.path != rel) {
      auto old = byPath_.find(it->second.path);
      if (old != byPath_.end() && old->second == wd) byPath_.erase(old);
      it->second.path = rel;
      descend = true;  // moved unseen: the paths below it must be refreshed
    }
    it->second.generation = generation_;
  }
  byPath_[rel] = wd;
  watchCount_ = byWd_.size();
  return descend;
}

void PermWatcher::watchShortage(int err, const std::string& rel) {
  shortThisPass_ = true;
  if (degraded_) return;
  log_->error(
      "inotify_add_watch {}{}{}: {}: fs.inotify.max_user_watches is {} and this watcher "
      "holds {} watches{}; falling back to a full pass every {} s until watches are "
      "available",
      realRoot_, rel.empty() ? "" : "/", rel, std::strerror(err), readSysctl("/proc/sys/fs/inotify/max_user_watches"),
      byWd_.size(), limits_.maxWatches != 0 ? " (its own limit reached)" : "", limits_.fallbackInterval.count());
  setDegraded(true);
}

void PermWatcher::setDegraded(bool degraded) {
  if (degraded_.exchange(degraded) == degraded) return;
  if (!degraded) log_->info("every directory under {} is watched again", realRoot_);
  if (async_) uv_async_send(async_.get());
}

void PermWatcher::forgetWd(int wd) {
  auto it = byWd_.find(wd);
  if (it == byWd_.end()) return;
  auto byPath = byPath_.find(it->second.path);
  if (byPath != byPath_.end() && byPath->second == wd) byPath_.erase(byPath);
  byWd_.erase(it);
  watchCount_ = byWd_.size();
}

void PermWatcher::dropSubtree(const std::string& rel) {
  auto drop = [this](std::map<std::string, int>::iterator it) {
    inotify_rm_watch(inotifyFd_, it->second);  // its IN_IGNORED then finds nothing
    byWd_.erase(it->second);
    return byPath_.erase(it);
  };
  auto exact = byPath_.find(rel);
  if (exact != byPath_.end()) drop(exact);
  const std::string prefix = rel + "/";
  for (auto it = byPath_.lower_bound(prefix);
       it != byPath_.end() && it->first.compare(0, prefix.size(), prefix) == 0;) {
    it = drop(it);
  }
  watchCount_ = byWd_.size();
}

void PermWatcher::addTotals(const PermStats& stats) {
  std::lock_guard<std::mutex> lock(totalsMutex_);
  totals_.add(stats);
}

}  // namespace pim
