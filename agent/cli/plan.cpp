// plan: fetches the document and prints the actions a reconcile would take; changes nothing.
#include "agent/cli/commands.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>

#include <iostream>
#include <memory>

#include "agent/cli/cli.h"
#include "agent/cli/cli_support.h"
#include "agent/cli/runtime.h"
#include "agent/cycle/reconciler.h"
#include "agent/document/document.h"
#include "providers/core/clock.h"
#include "providers/core/log.h"
#include "providers/host/real_host.h"
#include "providers/provider_set.h"
#include "state/state_ledger.h"
#include "state/state_store.h"

namespace pim {

int cmdPlan(const Config& config, const CliOptions& o) {
  auto store = storeFor(config);
  if (!store) return fail(store.status());
  auto fetched = (*store)->fetch("", 0);
  if (!fetched) return fail(fetched.status());
  DocumentOptions options;
  options.expectedInstance = config.store.instance;
  options.loginUser = config.host.loginUser;
  options.maxBytes = config.store.maxDocumentBytes;
  auto doc = parseDocument(fetched->body, options);
  if (!doc) {
    std::cerr << "pim-access-agent: document rejected: " << doc.status().message() << "\n";
    std::cout << "document rejected: " << doc.status().message() << "\nnothing would change\n";
    return kExitRejected;
  }
  RealHost host(config.root, makeLogger("host"));
  // plan never writes: ownership comes from the database when it exists, else nothing is owned.
  std::unique_ptr<StateStore> state;
  MemoryLedger memory;
  std::unique_ptr<StateLedger> stateLedger;
  Ledger* ledger = &memory;
  auto dbInfo = host.lstat(config.state.db);
  if (dbInfo && dbInfo->type == FileType::kRegular) {
    auto opened = StateStore::open(host.realPath(config.state.db), makeLogger("state"), config.state.keepGenerations);
    if (opened) {
      state = std::move(*opened);
      stateLedger = std::make_unique<StateLedger>(*state);
      ledger = stateLedger.get();
      auto highest = state->highestAppliedStoreRevision();
      if (highest && doc->revision < *highest) {
        std::cout << "document rejected: revision " << doc->revision << " is lower than revision " << *highest
                  << " already applied (replay)\nnothing would change\n";
        return kExitRejected;
      }
    }
  }
  Reconciler reconciler(makeProviders(*ledger), makeLogger("reconciler"));
  SystemClock clock;
  Desired desired{*doc, config.host, config.sshd, clock.nowSeconds()};
  auto planned = reconciler.plan(desired, host);
  if (!planned.failures.empty()) {
    std::string why;
    for (const auto& f : planned.failures) why += (why.empty() ? "" : "; ") + f.describe();
    return fail(Status::error(ErrorCode::kIo, why));
  }
  const std::vector<Action>* actions = &planned.actions;
  for (auto& e : planned.refused) doc->skipped.push_back(std::move(e));
  if (o.json) {
    Poco::JSON::Object::Ptr root = new Poco::JSON::Object(Poco::JSON_PRESERVE_KEY_ORDER);
    root->set("revision", doc->revision);
    root->set("instance", doc->instance);
    Poco::JSON::Array::Ptr arr = new Poco::JSON::Array;
    for (const auto& a : *actions) {
      Poco::JSON::Object::Ptr j = new Poco::JSON::Object(Poco::JSON_PRESERVE_KEY_ORDER);
      j->set("stage", stageName(a.stage));
      j->set("provider", a.provider);
      j->set("action", a.verb);
      j->set("object", a.object);
      j->set("detail", a.detail);
      j->set("description", a.describe());
      arr->add(j);
    }
    root->set("actions", arr);
    root->set("skipped", skippedJson(doc->skipped));
    std::cout << toJson(root) << "\n";
    return kExitOk;
  }
  std::cout << "plan for revision " << doc->revision << " (instance " << doc->instance << ") from "
            << (*store)->describe() << "\n";
  std::cout << "actions: " << actions->size() << "\n";
  for (const auto& a : *actions) std::cout << "  [" << stageName(a.stage) << "] " << a.describe() << "\n";
  printSkipped(std::cout, doc->skipped);
  return kExitOk;
}

}  // namespace pim
