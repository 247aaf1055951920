#pragma once
// The resident daemon (`run`): a libuv loop that polls the store (back-to-back long polls or a
// poll timer), backs off on failures, removes keys at their expiry, re-reads a file:// source
// when it changes, notices operator commands (rollback) within a second, keeps the transfer
// tree's permissions right through inotify, re-reads the config on SIGHUP and stops cleanly on
// SIGTERM/SIGINT. Cycles run on libuv's thread pool so that signals are handled at once.

#include <uv.h>

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "agent/agent.h"
#include "agent/backoff.h"
#include "agent/config.h"
#include "agent/file_lock.h"
#include "agent/perm_watcher.h"
#include "agent/store_client.h"
#include "providers/clock.h"
#include "providers/log.h"
#include "providers/real_host.h"
#include "providers/transfer_perms.h"
#include "state/state_store.h"

namespace pim {

class Daemon {
 public:
  /// `loadConfig` is called at start and on each SIGHUP.
  Daemon(std::function<Result<Config>()> loadConfig, Logger log);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  /// Runs until SIGTERM or SIGINT; returns the exit code (0 after a clean stop, 1 when another
  /// daemon holds the lock or start-up failed, 2 for a bad config).
  int run();

 private:
  enum class Work { kNone, kCycle, kReapply };
  struct Runtime;

  Status buildRuntime(const Config& config);
  void requestWork(Work work);
  void startWorkIfIdle();
  void workDone();
  void scheduleNextPoll(std::chrono::milliseconds delay);
  void scheduleExpiry();
  void startWatcherIfReady();
  void tick();
  void reload();
  void stop();
  void closeHandles();

  static void onWork(uv_work_t* req);
  static void onWorkDone(uv_work_t* req, int status);
  static void onSignal(uv_signal_t* handle, int signum);
  static void onPollTimer(uv_timer_t* handle);
  static void onExpiryTimer(uv_timer_t* handle);
  static void onTickTimer(uv_timer_t* handle);

  std::function<Result<Config>()> loadConfig_;
  Logger log_;
  std::unique_ptr<Runtime> rt_;
  FileLock daemonLock_;
  SystemClock clock_;
  Backoff backoff_;

  uv_loop_t loop_{};
  uv_signal_t sigterm_{}, sigint_{}, sighup_{};
  uv_timer_t pollTimer_{}, expiryTimer_{}, tickTimer_{};
  uv_work_t workReq_{};
  bool handlesOpen_ = false;

  bool busy_ = false;
  bool stopping_ = false;
  bool reloadPending_ = false;
  bool cycleRequested_ = false;
  bool reapplyRequested_ = false;
  bool readyNotified_ = false;
  bool recovered_ = false;                  // the pending-cycle journal was checked
  Work running_ = Work::kNone;
  CycleReport report_;                      // written by the worker, read after it finished
  std::optional<int64_t> nextExpiry_;       // written by the worker, read after it finished
  std::optional<int64_t> seenGeneration_;   // newest generation the daemon knows of
  std::chrono::steady_clock::time_point workStarted_;
  std::string sourceSignature_;             // file:// source: inode/size/mtime seen last
  std::optional<std::chrono::microseconds> watchdog_;
  std::chrono::steady_clock::time_point lastWatchdog_;
};

}  // namespace pim
