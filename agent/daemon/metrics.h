#pragma once
// Metrics for node_exporter's textfile collector: after each cycle the agent rewrites one file in
// the Prometheus text exposition format (`[state] metrics_file`, off when empty). Rendering is
// pure (golden-tested); the counters live in the long-running process that owns them (the
// daemon), the gauges are read from the state database.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "agent/config/config.h"
#include "agent/cycle/cycle.h"
#include "providers/core/result.h"
#include "providers/host/host.h"
#include "state/state_store.h"

namespace pim {

/// The error kinds of pim_access_agent_errors_total{kind=...}; every kind is always written
/// (0 until it happens) so that rate() works from the first scrape.
inline constexpr const char* kMetricErrorKinds[] = {
    "store",        // store unreachable or refused the request (exit 4)
    "rejected",     // document rejected: invalid, replay, bad signature (exit 3)
    "apply",        // applying failed, host restored (exit 5)
    "internal",     // internal error (exit 1): database, lock
    "permissions",  // failed system calls while fixing transfer permissions
};

/// Everything renderMetrics() writes: plain values, so rendering needs no I/O.
struct MetricsSnapshot {
  std::string version;                     // pim_access_agent_info{version=...}
  std::optional<int64_t> lastSuccessTime;  // Unix seconds of the last cycle that exited 0
  std::optional<int64_t> appliedRevision;  // store revision of the document in force
  std::optional<int64_t> generation;       // generation in force
  bool pinned = false;
  bool reloadPending = false;              // a drop-in is in place that sshd did not load
  int64_t keysInstalled = 0;               // active, unexpired keys of the document in force
  int64_t sftpAccountsActive = 0;          // accounts of the document in force, active
  int64_t sftpAccountsInactive = 0;        // ... and inactive (locked)
  int64_t skippedEntries = 0;              // entries skipped in the document in force
  uint64_t permissionFixes = 0;            // entries whose mode/group was fixed (counter)
  uint64_t bansTotal = 0;                  // addresses the defender banned (counter)
  std::map<std::string, uint64_t> errors;  // kind -> count (counter); kinds above
  // The login audit, for the keys and accounts of the document in force (0: no login seen).
  std::vector<std::pair<std::string, int64_t>> keyLastLogin;      // key id -> Unix seconds
  std::vector<std::pair<std::string, int64_t>> accountLastLogin;  // username -> Unix seconds
  int64_t failedLogins = 0;                                       // over the sources kept
  int64_t failedLoginSources = 0;
};

/// Renders the snapshot in the Prometheus text format (version 0.0.4): HELP and TYPE lines for
/// every metric, one sample per line, a final newline. An absent optional is written as 0 (a
/// never-successful agent shows a last success at the epoch, which any staleness alert catches).
/// Unknown error kinds in `errors` are written too, after the known ones, sorted. Pure.
std::string renderMetrics(const MetricsSnapshot& snapshot);

/// Counters a long-running process keeps across cycles (they restart at 0 with the process,
/// which Prometheus treats as a counter reset). Not thread-safe: use from one thread.
class MetricsCounters {
 public:
  /// Counts one finished cycle: exit 0 sets the last success time to `now`; exits 1, 3, 4 and 5
  /// count one error of kind internal, rejected, store and apply.
  void countCycle(const CycleReport& report, int64_t now);
  /// Sets the permission totals from the watcher's running sums (PermWatcher::totals():
  /// `changed` and `errors`), which are already cumulative.
  void setPermissionTotals(uint64_t fixes, uint64_t errors);
  /// Adds the result of a one-off pass (enforce-perms) to the permission totals.
  void addPermissionPass(uint64_t fixes, uint64_t errors);

  std::optional<int64_t> lastSuccessTime() const { return lastSuccess_; }
  uint64_t permissionFixes() const { return permissionFixes_; }
  /// Counts one ban of the defender.
  void countBan();
  uint64_t bans() const { return bans_; }
  /// kind -> count, every kind of kMetricErrorKinds present.
  std::map<std::string, uint64_t> errors() const;

 private:
  std::optional<int64_t> lastSuccess_;
  uint64_t permissionFixes_ = 0;
  uint64_t permissionErrors_ = 0;
  uint64_t bans_ = 0;
  std::map<std::string, uint64_t> errors_;
};

/// Builds a snapshot from the state database (generation and revision in force, pin, skipped
/// entries; keys and accounts counted from the document in force, keys as installable at `now`)
/// and the counters. The last success time is the counters' one, or else the last poll's time when
/// that poll had no error, or else the in-force generation's time. Errors: the database could not
/// be read (kIo), or the document in force no longer parses (kInvalid).
Result<MetricsSnapshot> snapshotFrom(const StateStore& state, const Config& config, const MetricsCounters& counters,
                                     int64_t now);

/// Writes `text` to `path` (a host path: the Host adds --root) atomically with mode 0644, owned
/// by the agent's user (root in production): a unique temporary file in the same directory (".NAME.pim-XXXX", which the
/// textfile collector's *.prom glob never matches), fsync, rename. The directory must exist. Errors: those of
/// Host::writeFileAtomic (kNotFound for a missing directory, kUnsafe for a symlink on the way, kIo for a failed write).
Status writeMetrics(Host& host, const std::string& path, const std::string& text);

/// After a cycle: snapshotFrom() + renderMetrics() + writeMetrics() to config.state.metricsFile;
/// does nothing (ok) when that is empty. Errors: those of snapshotFrom() and writeMetrics(), for
/// the caller to log as a warning (metrics never fail a cycle).
Status publishMetrics(Host& host, const StateStore& state, const Config& config, const MetricsCounters& counters,
                      int64_t now);

}  // namespace pim
