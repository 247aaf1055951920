// once: one fetch and one reconcile under the cycle lock, then exit.
#include "agent/cli/commands.h"

#include <iostream>

#include "agent/cli/cli_support.h"
#include "agent/cli/runtime.h"
#include "agent/cycle/file_lock.h"
#include "agent/daemon/metrics.h"
#include "agent/daemon/report.h"

namespace pim {
namespace {

// How long `once` waits for its report after the cycle (retries included); then it is dropped.
constexpr auto kReportWait = std::chrono::seconds(5);

// The report of store.report_url, if set: the cycle is over, so this delays only the exit.
void report(const Config& config, const StateStore& state, const CycleReport& r, int64_t now) {
  if (config.store.reportUrl.empty() || r.outcome == CycleOutcome::kInterrupted) return;
  auto reporter = Reporter::create(config, makeLogger("report"), {});
  if (!reporter) {
    std::cerr << "pim-access-agent: report: " << reporter.status().message() << "\n";
    return;
  }
  auto snapshot = snapshotForReport(state, r, now);
  if (!snapshot) {
    std::cerr << "pim-access-agent: report: " << snapshot.status().message() << "\n";
    return;
  }
  (*reporter)->submit(std::move(*snapshot));
  if (!(*reporter)->flush(kReportWait) || (*reporter)->delivered() == 0) {
    std::cerr << "pim-access-agent: report: not delivered to the store within " << kReportWait.count()
              << " s (see the log); the next cycle reports again\n";
  }
}

}  // namespace

ExitCode cmdOnce(const Config& config, const FailPoints& failpoints) {
  auto store = storeFor(config);
  if (!store) return fail(store.status());
  auto rt = openRuntime(config, true, failpoints);
  if (!rt) return fail(rt.status());
  CycleReport r = (*rt)->agent->cycle(**store, 0);
  // The metrics file is the daemon's while one runs: its counters count its own cycles, and
  // rewriting the file with this one cycle's would reset them. It refreshes the gauges at its
  // next cycle. Without a daemon, `once` writes it.
  auto noDaemon = FileLock::acquire((*rt)->host->realPath(config.state.db) + ".daemon.lock", 0);
  if (noDaemon) {
    MetricsCounters counters;
    counters.countCycle(r, (*rt)->clock.nowSeconds());
    if (Status m = publishMetrics(*(*rt)->host, *(*rt)->state, config, counters, (*rt)->clock.nowSeconds()); !m) {
      std::cerr << "pim-access-agent: metrics: " << m.message() << "\n";
    }
  }
  printCycle(std::cout, r);
  if (!r.error.empty()) std::cerr << "pim-access-agent: " << r.error << "\n";
  std::cout.flush();
  report(config, *(*rt)->state, r, (*rt)->clock.nowSeconds());
  return r.exitCode;
}

}  // namespace pim
