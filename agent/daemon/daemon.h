#pragma once
// The resident daemon (`run`): a libuv loop that polls the store (back-to-back long polls or a
// poll timer), backs off on failures, removes keys at their expiry, re-reads a file:// source
// when it changes, notices operator commands (rollback, resume, once) within a second, keeps the
// transfer tree's permissions right through inotify, re-reads the config on SIGHUP and stops
// cleanly on SIGTERM/SIGINT.
//
// Threads: the loop thread owns every handle and flag; one piece of work at a time (a cycle or
// a re-apply) runs on libuv's thread pool so that signals and timers are handled at once. A
// cycle fetches WITHOUT the cycle lock (a long poll may be held for minutes while a CLI `once`
// or `rollback` runs) and reconciles WITH it. Anything that needs the worker while it is held
// in a fetch (a signal, an expiring key, an operator command, a new config) cancels that fetch;
// the cycle then starts again at once with a fresh store client. The http(s) and etcd fetch is
// libcurl's multi interface driven by this loop (agent/daemon/curl_uv.h: a uv_poll_t per socket,
// a uv_timer_t, curl_multi_socket_action), one multi handle per config, shared by the store
// clients made for it: the fetch is still a step inside the cycle the worker runs (Agent::fetch,
// then reconcile), so the worker hands the transfer to the loop and waits for its end; `once` and
// `plan` have no loop and poll a multi handle of their own (agent/store/transfer_driver.h), and
// libuv stays out of agent/store. cancel() makes the loop remove the transfer and wake the
// worker, a hanging name look-up included, so SIGTERM still stops the daemon within 2 s. Reports
// are sent on the Reporter's thread with a multi handle of their own.
//
// Handles: every libuv handle is a UvHandle (agent/daemon/uv_handle.h), closed once by
// closeHandles() (on SIGTERM/SIGINT, or when the cycle under way ends after one); run() then runs
// the loop until every close is done and closes it.
//
// Time: wall time comes from the injected Clock (a SystemClock in production): key expiry and
// its timer's delay, the defender's window and bans, where the journal is read from, the time of
// sshd's lines read from a log file (the login audit), the metrics' and reports' timestamps, and
// the cycles' Agent. Durations use monotonic clocks: libuv's timers (uv_now), and
// std::chrono::steady_clock for the watchdog, the host's re-checks and drift spacing, the report
// interval and how long a cycle took.
//
// Reports (store.report_url, agent/daemon/report.h): after a cycle that changed something or
// failed, and every report_interval_s otherwise, the worker copies the state rows a report needs
// and the loop hands them to the Reporter's thread, which makes and sends the report: a store that
// does not answer reports never holds the worker.
//
// Not registered yet: a 404 or 410 from the store is polled again at the normal pace (a long
// poll when configured, the poll interval otherwise), without back-off: see "Answers" in
// docs/agent.md.
//
// Retries: after a failed cycle (store unreachable, apply failed, internal error) the next
// attempt waits U[0, min(cap, base * 2^n)] ("full jitter": a fleet's retries spread over the
// whole window), at least 200 ms, base = min(poll interval, 2 s), cap 10 minutes, and at least
// the store's Retry-After (429/503, capped at 10 minutes too); a success resets it. A short base
// lets a host recover from a blip in seconds; the doubling reaches the poll interval after a few
// failures and the 10-minute cap after ~9, so a fleet never hammers a store that is down.

#include <uv.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "agent/config/config.h"
#include "agent/cycle/cycle.h"
#include "agent/cycle/exit_code.h"
#include "agent/cycle/failpoint.h"
#include "agent/cycle/file_lock.h"
#include "agent/daemon/backoff.h"
#include "agent/daemon/defender.h"
#include "agent/daemon/log_source.h"
#include "agent/daemon/login_audit.h"
#include "agent/daemon/metrics.h"
#include "agent/daemon/nft_watch.h"
#include "agent/daemon/poll_schedule.h"
#include "agent/daemon/report.h"
#include "agent/daemon/uv_handle.h"
#include "providers/core/clock.h"
#include "providers/core/log.h"
#include "providers/host/real_host.h"

namespace pim {

/// Makes a write to a closed socket or pipe fail with EPIPE instead of killing the process, with
/// a handler that does nothing (not SIG_IGN, which the programs the agent runs would inherit
/// through exec). Idempotent; call once at start.
void guardAgainstSigpipe();

/// The first retry ceiling after a failure: min(poll interval, 2 s) (at least 1 ms).
std::chrono::milliseconds backoffBase(int64_t pollIntervalS);

/// How long a cycle's fetch may be held by the store: store.long_poll_s when set; otherwise 300 s
/// for an etcd:// or etcds:// source (the watch), 0 for the others.
int64_t holdSeconds(const StoreSettings& store);

/// The systemd STATUS= text for a cycle's report: "applied revision 42 (generation 7)",
/// "waiting for the store: <why>", "waiting for the store (404: not registered yet)", "document
/// rejected: <why>", "revision 42 (generation 7)
/// partial, retried: <why>".
std::string statusLine(const CycleReport& r);

/// The wait before the next attempt after a failed cycle: the back-off's draw, at least 200 ms,
/// and at least what the store asked with Retry-After (429/503), that request capped by `cap`
/// (the back-off ceiling, 10 minutes: a store cannot park a fleet for longer).
std::chrono::milliseconds retryDelay(std::chrono::milliseconds backoffDraw,
                                     std::optional<std::chrono::seconds> retryAfter, std::chrono::milliseconds cap);

class Daemon {
 public:
  /// `loadConfig` is called at start and on each SIGHUP; `clock` (a SystemClock in production)
  /// must outlive the daemon and is read on the loop thread and the worker; `failpoints` (tests) go
  /// to every Agent the daemon builds.
  Daemon(std::function<Result<Config>()> loadConfig, const Clock& clock, Logger log, FailPoints failpoints = {});
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  /// Runs until SIGTERM or SIGINT; returns the exit code: kOk after a clean stop, kBusy when
  /// another daemon holds the daemon lock ("another pim-access-agent daemon is running"),
  /// kInternal when start-up failed, kUsage for a bad config. Call once.
  ExitCode run();

 private:
  enum class Work { kNone, kCycle, kReapply };
  struct Runtime;
  /// What the daemon knows of the state database: the newest generation, its outcome, the pin.
  /// Another process changed the state when this changes.
  struct StateMark {
    std::optional<int64_t> generation;
    std::optional<GenerationOutcome> outcome;  // of that generation
    std::optional<int64_t> pin;
    bool operator==(const StateMark& o) const {
      return generation == o.generation && outcome == o.outcome && pin == o.pin;
    }
    bool operator!=(const StateMark& o) const { return !(*this == o); }
  };
  /// What the loop thread hands to the worker (written before queueing).
  struct WorkInput {
    std::optional<StateMark> mark;                           // as the last work left it
    std::optional<int64_t> nextExpiry;                       // valid when mark is set
    int64_t waitSeconds = 0;                                 // long poll of a cycle (0: answer at once)
    bool checkHost = true;                                   // plan against the host even if the store is unchanged
    GenerationCause reapplyCause = GenerationCause::kDrift;  // why a re-apply runs
    std::optional<std::chrono::steady_clock::duration> sinceReport;  // since the last report (none yet: nullopt)
  };
  /// What the worker leaves for the loop thread (written on the pool, read in workDone()).
  struct WorkResult {
    CycleReport report;
    std::optional<StateMark> mark;  // set with nextExpiry and stateSignature
    std::optional<int64_t> nextExpiry;
    std::string stateSignature;
    bool recovered = false;
    std::optional<std::chrono::seconds> retryAfter;  // the store's Retry-After with a 429/503
    std::optional<ReportSnapshot> reportSnapshot;    // a report is due (store.report_url set)
  };

  Status buildRuntime(const Config& config);
  /// Asks for a cycle or a re-apply of the document in force (`cause`: why, for its generation).
  void requestWork(Work work, GenerationCause cause = GenerationCause::kDrift);
  void startWorkIfIdle();
  void work();                       // on the thread pool
  void finishWork(WorkResult& out);  // on the thread pool: the report's snapshot, then result_
  Result<FileLock> lockCycle();
  Result<StateMark> readMark() const;
  void snapshotState(WorkResult& out) const;
  void workDone();
  void interruptFetch(const char* why);
  void scheduleNextPoll(std::chrono::milliseconds delay);
  void scheduleExpiry();
  void startWatcherIfReady();
  void tick();
  void checkOperatorCommands();
  void checkSource();
  void watchFiles();
  std::string stateSignature() const;
  void reload();
  void stop();
  void closeHandles();

  static void onWork(uv_work_t* req);
  static void onWorkDone(uv_work_t* req, int status);
  static void onSignal(uv_signal_t* handle, int signum);
  static void onPollTimer(uv_timer_t* handle);
  static void onExpiryTimer(uv_timer_t* handle);
  static void onTickTimer(uv_timer_t* handle);
  static void onFileEvent(uv_fs_event_t* handle, const char* filename, int events, int status);
  static void onSettleTimer(uv_timer_t* handle);
  static void onHostEvent(uv_fs_event_t* handle, const char* filename, int events, int status);
  static void onMountsChanged(uv_poll_t* handle, int status, int events);
  static void onHostSettle(uv_timer_t* handle);
  static void onStopDeadline(uv_timer_t* handle);
  void watchHost();
  void hostChanged();
  /// The firewall's drift watch (netlink), and sshd's messages for the defender and the login
  /// audit, (re)started with the config.
  void startFirewallWatch();
  void startSshdLog();
  void stopSshdLog();
  static void onLogReadable(uv_poll_t* handle, int status, int events);
  void readSshdLog();
  /// Keeps the login or failed login of one of sshd's messages for the next saveSshdLog().
  void audit(const LogMessage& m);
  void ban(const std::string& address);
  /// Puts the defender's unexpired bans back (after the firewall provider rebuilt the table).
  void reinstateBans();
  /// Records the login audit's pending events and the position in sshd's messages in the state.
  void saveSshdLog();
  void closeHostWatches();
  struct HostWatch;

  std::function<Result<Config>()> loadConfig_;
  Logger log_;
  FailPoints failpoints_;
  std::unique_ptr<Runtime> rt_;
  FileLock daemonLock_;
  const Clock& clock_;
  std::unique_ptr<PollSchedule> schedule_;
  MetricsCounters metrics_;  // cycles and permission fixes, for the Prometheus text file

  // Declared before every handle: run() closes them all, and runs the loop until they are closed,
  // before the loop itself is closed and goes away.
  uv_loop_t loop_{};
  UvHandle<uv_signal_t> sigterm_, sigint_, sighup_;
  UvHandle<uv_timer_t> pollTimer_, expiryTimer_, tickTimer_;
  // inotify (through libuv) on the state database's directory and on the file:// source's
  // directory: an idle daemon sleeps until something changes instead of stat'ing every tick.
  UvHandle<uv_fs_event_t> stateEvents_, sourceEvents_;
  // An event is looked at 50 ms later and once more 500 ms after that: SQLite's last write to the
  // WAL comes before the commit is visible (the wal-index is shared memory, which raises no
  // event), and a writer may still be writing.
  UvHandle<uv_timer_t> settleTimer_;
  int settleChecks_ = 0;
  // Drift: inotify on every directory the last check of the host read from (and the mount table,
  // polled for POLLPRI). While none of them changed, an unchanged store needs no new plan; a
  // change is repaired at once (a re-apply 200 ms after the last event) instead of at the next
  // poll. Without the watches (a directory missing, no inotify), every poll checks the host.
  std::map<std::string, std::unique_ptr<HostWatch>> hostWatches_;  // real path -> watch
  UvHandle<uv_poll_t> mountsPoll_;
  int mountsFd_ = -1;
  UvHandle<uv_timer_t> hostSettle_;
  UvHandle<uv_timer_t> stopDeadline_;              // SIGTERM during a cycle: what still runs then is killed
  bool hostWatched_ = false;                       // every directory of the last check is watched
  bool hostDirty_ = true;                          // something changed since the last check began
  bool hostEvent_ = false;                         // ... as reported by a watch (logged), not after our own changes
  bool rewatchHost_ = false;                       // directories may have come or gone: set the watches up again
  std::optional<RealHost::ReadSet> watchedReads_;  // what the watches were set up for
  std::chrono::steady_clock::time_point lastHostCheck_{};
  bool stateWatched_ = false;
  bool sourceWatched_ = false;
  std::string sourceWatchedDir_;
  uv_work_t workReq_{};
  bool handlesOpen_ = false;

  // The firewall (providers/firewall.h): its table's changes by netlink, and the defender
  // (agent/daemon/defender.h) on sshd's log. Loop thread only.
  std::unique_ptr<NftWatch> nftWatch_;
  std::unique_ptr<LogSource> logSource_;
  UvHandle<uv_poll_t> logPoll_;
  std::unique_ptr<FailureCounter> failures_;
  std::unique_ptr<RealHost> defenderHost_;  // its own: the worker's runs in parallel
  std::map<std::string, int64_t> bans_;     // address -> until (Unix seconds)
  bool cursorDirty_ = false;
  // The login audit (agent/daemon/login_audit.h): what was read and is not in the state yet (the
  // worker may be busy with it), bounded like the state's tables.
  bool audit_ = false;
  std::map<std::pair<std::string, std::string>, LoginRecord> pendingLogins_;  // (user, fingerprint)
  std::map<std::string, LoginFailureRecord> pendingFailures_;                 // address

  // Loop thread only.
  bool busy_ = false;
  bool changedWhileBusy_ = false;  // a host event arrived while the worker checked or changed the host
  bool stopping_ = false;
  bool reloadPending_ = false;
  bool cycleRequested_ = false;
  bool reapplyRequested_ = false;
  std::string lastStatus_;                                  // the last STATUS= sent to systemd
  GenerationCause reapplyCause_ = GenerationCause::kDrift;  // of the re-apply requested
  bool readyNotified_ = false;
  bool inForceReapplied_ = false;  // the generation in force was re-applied while the store was down
  bool recovered_ = false;         // the pending-cycle journal was dealt with
  Work running_ = Work::kNone;
  std::optional<int64_t> nextExpiry_;
  std::optional<std::chrono::steady_clock::time_point> lastReport_;  // when the last report was queued
  std::optional<StateMark> seenMark_;                                // the state as the daemon last knew it
  std::string stateSignature_;   // database files (stat) when the daemon last looked
  std::string sourcePath_;       // file:// source path, "" for http(s)
  std::string sourceSignature_;  // its inode/size/mtime seen last
  std::chrono::steady_clock::time_point workStarted_;
  std::optional<std::chrono::microseconds> watchdog_;
  std::chrono::steady_clock::time_point lastWatchdog_;

  // Shared with the worker.
  WorkInput input_;                       // written before queueing, read by the worker
  WorkResult result_;                     // written by the worker, read after it finished
  std::atomic<bool> fetching_{false};     // the worker is inside the store fetch
  std::atomic<bool> interrupted_{false};  // the loop cancelled the fetch in flight
  std::atomic<bool> abandon_{false};      // stopping: give up lock waits and fetches
};

}  // namespace pim
