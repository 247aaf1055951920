// plan: fetches the document and prints the actions a reconcile would take; changes nothing.
#include "agent/cli/commands.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>

#include <algorithm>
#include <iostream>
#include <memory>

#include "agent/cli/cli.h"
#include "agent/cli/cli_support.h"
#include "agent/cli/runtime.h"
#include "agent/cycle/decision.h"
#include "agent/cycle/open_state.h"
#include "agent/cycle/reconciler.h"
#include "agent/document/document.h"
#include "agent/store/signature.h"
#include "providers/core/clock.h"
#include "providers/core/log.h"
#include "providers/host/real_host.h"
#include "providers/provider_set.h"
#include "state/state_ledger.h"
#include "state/state_store.h"

namespace pim {

ExitCode cmdPlan(const Config& config, const CliOptions& o) {
  auto store = storeFor(config);
  if (!store) return fail(store.status(), o.json);
  auto fetched = (*store)->fetch("", 0);
  if (!fetched) return fail(fetched.status(), o.json);
  DocumentOptions options;
  options.expectedInstance = config.store.instance;
  options.loginUser = config.host.loginUser;
  options.maxBytes = config.store.maxDocumentBytes;
  auto doc = parseDocument(fetched->body, options);
  if (!doc) {
    return fail(
        Status::error(ErrorCode::kRejected, "document rejected: " + doc.status().message() + "; nothing would change"),
        o.json);
  }
  RealHost host(config.root, makeLogger("host"));
  // plan never writes, not even to the state database (read-only, or empty in memory).
  auto state = openStateForReading(config, host);
  if (!state) return fail(state.status(), o.json);
  // What a cycle would do with this document: the decision `once` and the daemon take.
  auto decision = decideDocument(**state, doc->revision, sha256Hex(fetched->body));
  if (!decision) return fail(decision.status(), o.json);
  if (decision->verdict == Verdict::kReplay) {
    return fail(
        Status::error(ErrorCode::kRejected, "document rejected: " + decision->reason + "; nothing would change"),
        o.json);
  }
  // A recorded or unchanged document leaves the document in force on the host: the plan is
  // that one's (drift, expired keys).
  AccessDocument target = *doc;
  if (decision->verdict != Verdict::kApply && decision->inForce) {
    DocumentOptions stored = options;
    stored.expectedInstance.clear();
    stored.maxBytes = std::max<int64_t>(stored.maxBytes, int64_t(decision->inForce->body.size()));
    auto inForce = parseDocument(decision->inForce->body, stored);
    if (!inForce) return fail(inForce.status(), o.json);
    target = *inForce;
  }
  StateLedger ledger(**state);
  Reconciler reconciler(makeProviders(ledger), makeLogger("reconciler"));
  SystemClock clock;
  Desired desired{target, config.host, config.sshd, clock.nowSeconds(), config.network};
  auto planned = reconciler.plan(desired, host);
  if (!planned.failures.empty()) {
    std::string why;
    for (const auto& f : planned.failures) why += (why.empty() ? "" : "; ") + f.describe();
    return fail(Status::error(ErrorCode::kIo, why), o.json);
  }
  const std::vector<Action>& actions = planned.actions;
  for (auto& e : planned.refused) doc->skipped.push_back(std::move(e));
  if (o.json) {
    Poco::JSON::Object::Ptr root = new Poco::JSON::Object(Poco::JSON_PRESERVE_KEY_ORDER);
    root->set("revision", doc->revision);
    root->set("instance", doc->instance);
    root->set("verdict", std::string(verdictName(decision->verdict)));
    root->set("reason", decision->reason.empty() ? Poco::Dynamic::Var() : Poco::Dynamic::Var(decision->reason));
    Poco::JSON::Array::Ptr arr = new Poco::JSON::Array;
    for (const auto& a : actions) {
      Poco::JSON::Object::Ptr j = new Poco::JSON::Object(Poco::JSON_PRESERVE_KEY_ORDER);
      j->set("stage", stageName(a.stage));
      j->set("provider", a.provider);
      j->set("action", std::string(verbName(a.verb)));
      j->set("object", a.object);
      j->set("detail", a.detail);
      j->set("description", a.describe());
      arr->add(j);
    }
    root->set("actions", arr);
    root->set("skipped", skippedJson(doc->skipped));
    std::cout << toJson(root) << "\n";
    return ExitCode::kOk;
  }
  std::cout << "plan for revision " << doc->revision << " (instance " << doc->instance << ") from "
            << (*store)->describe() << "\n";
  if (decision->verdict != Verdict::kApply) {
    std::cout << verdictName(decision->verdict) << ": " << decision->reason << "; the document in force is checked\n";
  }
  std::cout << "actions: " << actions.size() << "\n";
  for (const auto& a : actions) std::cout << "  [" << stageName(a.stage) << "] " << a.describe() << "\n";
  printSkipped(std::cout, doc->skipped);
  return ExitCode::kOk;
}

}  // namespace pim
