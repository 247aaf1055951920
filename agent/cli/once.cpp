// once: one fetch and one reconcile under the cycle lock, then exit.
#include "agent/cli/commands.h"

#include <iostream>

#include "agent/cli/cli_support.h"
#include "agent/cli/runtime.h"
#include "agent/cycle/file_lock.h"
#include "agent/daemon/metrics.h"

namespace pim {

int cmdOnce(const Config& config, const FailPoints& failpoints) {
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
  return r.exitCode;
}

}  // namespace pim
