#pragma once
// Continuous enforcement of the transfer-tree permissions (spec agent.md, "Transfer tree"):
// inotify tells which entries to look at, PermEnforcer (providers/host/transfer_perms.h) looks and
// fixes. An event is a hint; the file system is the truth.
//
// Threads: the inotify fd is read on the libuv loop (uv_poll_t on a raw inotify fd: uv_fs_event
// is not recursive and drops IN_Q_OVERFLOW), and timers run there. The file-system work (fixing
// entries, walking new directories, full passes over a large tree) runs on one worker thread
// owned by the watcher, so the loop (signals, store polling) never waits for a pass. Watch
// bookkeeping (wd -> path) lives on the worker only.

#include <sys/inotify.h>
#include <sys/types.h>
#include <uv.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "agent/daemon/uv_handle.h"
#include "providers/core/log.h"
#include "providers/core/result.h"
#include "providers/host/transfer_perms.h"

namespace pim {

/// Tuning for PermWatcher; the defaults suit production.
struct PermWatcherLimits {
  /// Period of the full passes run while some directories cannot be watched (the kernel's
  /// fs.inotify.max_user_watches reached, or the root missing).
  std::chrono::seconds fallbackInterval{60};
  /// Most watches this watcher adds (0: as many as the kernel allows). Reaching it behaves like
  /// the kernel refusing a watch (ENOSPC): error log once, periodic full passes.
  size_t maxWatches = 0;
  /// Most events waiting for the worker; beyond it they are dropped for one full rescan, like an
  /// inotify queue overflow (bounded memory under any burst).
  size_t maxQueuedEvents = 262144;
};

/// Keeps the tree under one root at the transfer permissions while the loop runs.
class PermWatcher {
 public:
  /// Directory events watched (IN_DONT_FOLLOW is added when a watch is set by path).
  static constexpr uint32_t kWatchMask = IN_CREATE | IN_MOVED_TO | IN_ATTRIB | IN_CLOSE_WRITE | IN_DELETE_SELF |
                                         IN_MOVE_SELF | IN_MOVED_FROM | IN_ONLYDIR | IN_EXCL_UNLINK;

  /// `loop` must outlive the watcher's handles (run it after stop() so they close); `enforcer`
  /// must outlive the watcher and is used from the worker thread only while the watcher runs.
  /// `realRoot` is the root on the real file system (the enforcer's). `safetyInterval` is the
  /// period of the safety full pass (0 disables it).
  PermWatcher(uv_loop_t* loop, PermEnforcer& enforcer, std::string realRoot, Logger log,
              std::chrono::seconds safetyInterval = std::chrono::seconds(3600), PermWatcherLimits limits = {});
  /// Calls stop().
  ~PermWatcher();
  PermWatcher(const PermWatcher&) = delete;
  PermWatcher& operator=(const PermWatcher&) = delete;

  /// Creates the inotify instance, starts reading it on the loop, starts the timers and the
  /// worker, which first runs a full pass that adds a watch on every directory. Returns at once
  /// (see fullPasses()). Errors: kIo if inotify_init1 or a libuv call fails; kInternal if
  /// already started. Call on the loop's thread.
  Status start();
  /// Stops the worker (an ongoing pass stops at its next entry), closes the uv handles and the
  /// inotify fd. Idempotent. The loop can then finish once it has run the close callbacks.
  /// Call on the loop's thread.
  void stop();
  /// Asks the worker for one full pass (watches re-added, stale ones removed). Thread-safe.
  void requestFullPass();

  /// Sum of everything the watcher's passes and fixes did so far. Thread-safe (a copy).
  PermStats totals() const;
  /// Times events were lost (the kernel's IN_Q_OVERFLOW, or maxQueuedEvents reached), each
  /// answered by a full rescan.
  uint64_t overflows() const { return overflows_.load(); }
  /// Directories watched now.
  size_t watchCount() const { return watchCount_.load(); }
  /// Full passes completed (the initial one included).
  uint64_t fullPasses() const { return fullPasses_.load(); }
  /// True while some directories cannot be watched and periodic full passes stand in.
  bool degraded() const { return degraded_.load(); }

 private:
  struct RawEvent {
    int wd;
    uint32_t mask;
    std::string name;
  };
  struct Watch {
    std::string path;  // relative to the root, "" for the root
    uint64_t generation = 0;
  };
  // Loop thread.
  static void onReadable(uv_poll_t* handle, int status, int events);
  static void onSafetyTimer(uv_timer_t* handle);
  static void onFallbackTimer(uv_timer_t* handle);
  static void onAsync(uv_async_t* handle);
  void readEvents();
  void closeHandles();

  // Worker thread.
  void workerMain();
  void fullRescan();
  void processBatch(const std::vector<RawEvent>& batch);
  bool onDirectory(const std::string& rel, int dirFd);
  void watchShortage(int err, const std::string& rel);
  void forgetWd(int wd);
  void dropSubtree(const std::string& rel);
  void setDegraded(bool degraded);
  void addTotals(const PermStats& stats);

  uv_loop_t* loop_;
  PermEnforcer& enforcer_;
  std::string realRoot_;
  Logger log_;
  std::chrono::seconds safetyInterval_;
  PermWatcherLimits limits_;

  int inotifyFd_ = -1;
  bool started_ = false;
  bool procFd_ = true;  // /proc/self/fd usable to add watches on open directory fds
  UvHandle<uv_poll_t> poll_;
  UvHandle<uv_timer_t> safetyTimer_;
  UvHandle<uv_timer_t> fallbackTimer_;
  UvHandle<uv_async_t> async_;
  bool fallbackRunning_ = false;

  std::thread worker_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<RawEvent> queue_;   // guarded by mutex_
  bool rescanRequested_ = false;  // guarded by mutex_
  std::atomic<bool> stopping_{false};

  // Worker thread only.
  std::unordered_map<int, Watch> byWd_;
  std::map<std::string, int> byPath_;
  uint64_t generation_ = 0;
  bool fullMode_ = false;
  bool shortThisPass_ = false;

  std::atomic<size_t> watchCount_{0};
  std::atomic<uint64_t> overflows_{0};
  std::atomic<uint64_t> fullPasses_{0};
  std::atomic<bool> degraded_{false};
  mutable std::mutex totalsMutex_;
  PermStats totals_;
};

}  // namespace pim
