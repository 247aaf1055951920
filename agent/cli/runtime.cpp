#include "agent/cli/runtime.h"

#include "agent/cycle/open_state.h"
#include "providers/core/log.h"
#include "providers/provider_set.h"

namespace pim {

Result<std::unique_ptr<StoreClient>> storeFor(const Config& config) {
  if (config.store.source.empty()) {
    return Status::error(ErrorCode::kInvalid, "store.source is not set (config [store] source, or --source URL)");
  }
  return makeStoreClient(config.store, config.root, makeLogger("store"));
}

Result<std::unique_ptr<Runtime>> openRuntime(const Config& config, bool takeLock, const FailPoints& failpoints) {
  auto rt = std::make_unique<Runtime>();
  rt->config = config;
  if (Status s = openHostAndState(config, rt->host, rt->state); !s) return s;
  if (takeLock) {
    auto lock = FileLock::acquire(lockPath(config, *rt->host), 30000);
    if (!lock) return lock.status();
    rt->cycleLock = std::move(*lock);
  }
  rt->agent = std::make_unique<Agent>(
      config, *rt->host, *rt->state, rt->clock, [](Ledger& ledger) { return makeProviders(ledger); },
      makeLogger("agent"), failpoints);
  if (takeLock) {
    Status r = rt->agent->recoverInterruptedCycle();
    if (!r) return r;
  }
  return rt;
}

}  // namespace pim
