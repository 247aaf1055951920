#pragma once
// The report to the store (docs/agent.md, "Reports"): after a cycle that changed something or
// failed (a rejected document included), and at most every store.report_interval_s otherwise,
// the agent POSTs what is in force on the host to store.report_url, so that a portal can show
// "live since 12:03", "entry k-bob skipped: ..." or "apply failed".
//
// Off the cycle path: the worker that ran the cycle only copies the state rows it needs into a
// ReportSnapshot (three small reads of the state database); the Reporter's own thread reads the
// host keys, makes the JSON and sends it, with bounded retries. It keeps one report waiting at
// most, the newest: a report supersedes the one before it. A store that does not answer holds
// that thread only; cycles go on.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "agent/config/config.h"
#include "agent/cycle/cycle.h"
#include "agent/store/store_client.h"
#include "providers/core/log.h"
#include "providers/host/host.h"
#include "state/state_store.h"

namespace pim {

class HttpStoreClient;

/// What a report says, copied from the state after a cycle (no host access, no parsing).
struct ReportSnapshot {
  CycleReport cycle;                        // the cycle that made the report
  std::optional<GenerationRecord> inForce;  // lastApplied(), body included
  std::optional<int64_t> pin;
  PollStatus poll;
  int64_t time = 0;                        // Unix seconds, when the cycle ended
  std::vector<LoginRecord> logins;         // the login audit's records
  StateStore::LoginFailures failedLogins;  // the sources with the most failed logins
};

/// Whether a cycle's report is due: it changed something or did not succeed (exit code != 0;
/// but a 404/410 "not registered yet" is not a failure here), or `sinceLast` (time since the last report was queued;
/// nullopt: none yet) reached `interval`.
bool reportDue(const CycleReport& cycle, std::optional<std::chrono::steady_clock::duration> sinceLast,
               std::chrono::seconds interval);

/// Reads what a report needs from the state database (call where the state may be read: the
/// worker after its cycle, or `once`); the report lists the 10 sources with the most failed logins.
Result<ReportSnapshot> snapshotForReport(const StateStore& state, const CycleReport& cycle, int64_t now);

/// The SHA256 fingerprint of a public key blob as `ssh-keygen -l` prints it: "SHA256:" and the
/// unpadded base64 of the blob's SHA-256.
std::string sshFingerprint(const std::string& blob);

/// One SSH host key of the host.
struct HostKey {
  std::string file;         // host path, /etc/ssh/ssh_host_ed25519_key.pub
  std::string type;         // ssh-ed25519, ... ("" when unreadable)
  std::string fingerprint;  // SHA256:... ("" when unreadable)
  std::string error;        // why the file could not be read or parsed ("" when fine)
};
/// The host keys /etc/ssh/ssh_host_*_key.pub (through `host`, hence under --root), sorted by
/// name; a file that cannot be read or is not one OpenSSH public key gets `error` (never its
/// content). A missing /etc/ssh is no key.
std::vector<HostKey> readHostKeys(Host& host);

/// The report's JSON (schema: docs/agent.md, "Reports").
std::string reportJson(const Config& config, const ReportSnapshot& s, const std::vector<HostKey>& hostKeys,
                       const std::string& reportId, int64_t sequence);

/// Where reports go: store.report_url, an http(s) endpoint (POST, with an Idempotency-Key) or an
/// etcd key (written under a lease of 3 x report_interval_s, so that the report of an instance
/// that stopped goes away).
class ReportSink {
 public:
  virtual ~ReportSink() = default;
  /// Sends one report. Errors: as the transport's.
  virtual Status send(const std::string& body, const std::string& reportId) = 0;
  /// A 429/503's Retry-After after a failed send, if any.
  virtual std::optional<std::chrono::seconds> retryAfter() const { return std::nullopt; }
  /// Wakes a send in progress, which then fails; permanent.
  virtual void cancel() = 0;
};

/// The sink of config.store.report_url: etcd:// and etcds:// URLs write an etcd key (the source
/// must be etcd), others are POSTed. Errors: as makeReportClient's and makeEtcdReportClient's.
Result<std::unique_ptr<ReportSink>> makeReportSink(const Config& config, Logger log, const StoreClientOptions& options);

/// Sends reports on a thread of its own (see the top of this file).
class Reporter {
 public:
  struct Options {
    int attempts = 4;                                // per report: 1 + 3 retries
    std::chrono::milliseconds firstRetry{1000};      // doubled at each retry
    std::chrono::milliseconds maxRetryAfter{60000};  // a 429/503's Retry-After is honoured up to this
    StoreClientOptions client;                       // time limits (tests shorten them)
  };
  /// Makes the report client of config.store (report_url, token_file, ca_file, proxy) and starts
  /// the thread. Errors: kInvalid as makeStoreClient's for the URL or the CA file.
  static Result<std::unique_ptr<Reporter>> create(const Config& config, Logger log, Options options);
  /// Cancels the report in flight (promptly) and joins the thread; a waiting report is dropped.
  ~Reporter();
  Reporter(const Reporter&) = delete;
  Reporter& operator=(const Reporter&) = delete;

  /// Queues `snapshot`, replacing a report still waiting (never blocks on the network).
  void submit(ReportSnapshot snapshot);
  /// Waits until no report waits or is in flight, or `timeout`; returns whether it got there
  /// (`once` gives its report a bounded time).
  bool flush(std::chrono::milliseconds timeout);
  /// Reports the store accepted (2xx) so far.
  int64_t delivered() const;

 private:
  Reporter(Config config, Logger log, Options options, std::unique_ptr<ReportSink> sink);
  void run();
  // Sends one report with its retries; false when a newer report or the stop cut it short.
  bool deliver(const std::string& body, const std::string& reportId, int64_t sequence);

  Config config_;
  Logger log_;
  Options options_;
  std::unique_ptr<ReportSink> client_;
  std::unique_ptr<Host> host_;
  std::string runId_;  // random, per process: report ids are unique across restarts

  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::optional<ReportSnapshot> pending_;
  bool busy_ = false;
  bool stopping_ = false;
  int64_t sequence_ = 0;
  int64_t delivered_ = 0;
  std::thread thread_;
};

}  // namespace pim
