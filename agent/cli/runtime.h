#pragma once
// What the commands that fetch or change the host open: the store client of the config, and the
// runtime of a changing command (host, state database, cycle lock, the Agent that runs cycles).

#include <memory>

#include "agent/config/config.h"
#include "agent/cycle/cycle.h"
#include "agent/cycle/failpoint.h"
#include "agent/cycle/file_lock.h"
#include "agent/store/store_client.h"
#include "providers/core/clock.h"
#include "providers/core/result.h"
#include "providers/host/real_host.h"
#include "state/state_store.h"

namespace pim {

/// The store client of the config. Errors: kInvalid when store.source is not set.
Result<std::unique_ptr<StoreClient>> storeFor(const Config& config);

struct Runtime {
  Config config;
  std::unique_ptr<RealHost> host;
  std::unique_ptr<StateStore> state;
  SystemClock clock;
  FileLock cycleLock;
  std::unique_ptr<Agent> agent;
};

/// Everything a changing command needs: sandbox files, the database, the cycle lock, recovery.
Result<std::unique_ptr<Runtime>> openRuntime(const Config& config, bool takeLock, const FailPoints& failpoints = {});

}  // namespace pim
