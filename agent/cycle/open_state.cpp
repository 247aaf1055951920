#include "agent/cycle/open_state.h"

#include "agent/cycle/adopt.h"
#include "agent/cycle/sandbox.h"
#include "providers/core/log.h"
#include "state/state_ledger.h"

namespace pim {

/// Opens the state database of the config (below --root).
Status makeStateDirectory(const Config& config, Host& host) {
  const std::string dir = config.state.db.substr(0, config.state.db.rfind('/'));
  if (dir.empty()) return Status::ok();
  const std::string parent = dir.substr(0, dir.rfind('/'));
  if (!parent.empty()) {
    Status s = host.makeDirectories(parent, Ownership{0755, 0, 0});
    if (!s) return s;
  }
  // The database holds every document with its secrets: its directory is root's alone.
  return host.makeDirectory(dir, Ownership{0700, 0, 0});
}

Result<std::unique_ptr<StateStore>> openState(const Config& config, Host& host) {
  if (Status s = makeStateDirectory(config, host); !s) return s;
  return StateStore::open(host.realPath(config.state.db), makeLogger("state"), config.state.keepGenerations);
}

Result<std::unique_ptr<StateStore>> openStateForCycles(const Config& config, Host& host) {
  if (Status s = prepareSandbox(host); !s) return s;
  auto state = openState(config, host);
  if (!state) return state.status();
  if ((*state)->created()) {
    StateLedger ledger(**state);
    auto adopted = adoptFromHost(host, config.host, ledger, makeLogger("state"));
    if (!adopted) return adopted.status();
  }
  return state;
}

Status openHostAndState(const Config& config, std::unique_ptr<RealHost>& host, std::unique_ptr<StateStore>& state) {
  host = std::make_unique<RealHost>(config.root, makeLogger("host"));
  auto opened = openStateForCycles(config, *host);
  if (!opened) return opened.status();
  state = std::move(*opened);
  return Status::ok();
}

Result<std::unique_ptr<StateStore>> openStateForReading(const Config& config, Host& host) {
  auto state = StateStore::openReadOnly(host.realPath(config.state.db), makeLogger("state"));
  if (!state && state.status().code() == ErrorCode::kNotFound) return StateStore::openInMemory(makeLogger("state"));
  return state;
}

std::string lockPath(const Config& config, Host& host) { return host.realPath(config.state.db) + ".lock"; }

}  // namespace pim
