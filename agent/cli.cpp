#include "agent/cli.h"

#include <Poco/Exception.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Stringifier.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include "agent/adopt.h"
#include "agent/agent.h"
#include "agent/cli_support.h"
#include "agent/commands.h"
#include "agent/config.h"
#include "agent/document.h"
#include "agent/failpoint.h"
#include "agent/file_lock.h"
#include "agent/metrics.h"
#include "agent/reconciler.h"
#include "agent/sandbox.h"
#include "agent/store_client.h"
#include "providers/core/clock.h"
#include "providers/core/log.h"
#include "providers/host/real_host.h"
#include "providers/provider_set.h"
#include "state/state_store.h"

namespace pim {
namespace {

constexpr const char* kUsage =
    "usage: pim-access-agent [--config FILE] [--root DIR] [--source URL] [--log-level LEVEL] COMMAND [ARGS]\n"
    "commands:\n"
    "  run            resident daemon: poll, reconcile, expire keys, enforce transfer permissions\n"
    "  once           one fetch and one reconcile, then exit\n"
    "  plan           fetch and print the actions a reconcile would take (changes nothing)\n"
    "  enforce-perms  one full permission pass over the transfer root\n"
    "  status         applied generation, pin, last poll, skipped entries, last error\n"
    "  history        generations, newest first\n"
    "  show N         one generation: its document (secrets masked) and its changes\n"
    "  rollback N     re-apply generation N's document and pin it\n"
    "  resume         lift the pin\n"
    "  version        print the version\n"
    "options: --json (plan, status, history, show)\n";

struct CliOptions {
  std::string configPath;
  bool configExplicit = false;
  std::string root;
  std::string source;
  std::string logLevel = "info";
  std::string command;
  std::vector<std::string> args;
  bool json = false;
};

int usageError(const std::string& message) {
  std::cerr << "pim-access-agent: " << message << "\n" << kUsage;
  return kExitUsage;
}

/// Parses the command line; options may stand before or after the command.
Result<CliOptions> parseArgs(int argc, char** argv) {
  CliOptions o;
  auto need = [&](int& i, const std::string& name) -> Result<std::string> {
    if (i + 1 >= argc) return Status::error(ErrorCode::kInvalid, name + " needs a value");
    return std::string(argv[++i]);
  };
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    std::string value;
    bool inlineValue = false;
    if (a.rfind("--", 0) == 0 && a.find('=') != std::string::npos) {
      value = a.substr(a.find('=') + 1);
      a = a.substr(0, a.find('='));
      inlineValue = true;
    }
    auto take = [&](std::string& out) -> Status {
      if (inlineValue) {
        out = value;
        return Status::ok();
      }
      auto v = need(i, a);
      if (!v) return v.status();
      out = *v;
      return Status::ok();
    };
    if (a == "--config") {
      Status s = take(o.configPath);
      if (!s) return s;
      o.configExplicit = true;
    } else if (a == "--root") {
      Status s = take(o.root);
      if (!s) return s;
    } else if (a == "--source") {
      Status s = take(o.source);
      if (!s) return s;
    } else if (a == "--log-level") {
      Status s = take(o.logLevel);
      if (!s) return s;
    } else if (a == "--json" && !inlineValue) {
      o.json = true;
    } else if (a == "-h" || a == "--help") {
      o.command = "help";
    } else if (!a.empty() && a[0] == '-') {
      return Status::error(ErrorCode::kInvalid, "unknown option " + a);
    } else if (o.command.empty()) {
      o.command = a;
    } else {
      o.args.push_back(a);
    }
  }
  return o;
}

Result<spdlog::level::level_enum> parseLevel(const std::string& name) {
  static const std::map<std::string, spdlog::level::level_enum> levels = {{"trace", spdlog::level::trace},
                                                                          {"debug", spdlog::level::debug},
                                                                          {"info", spdlog::level::info},
                                                                          {"warn", spdlog::level::warn},
                                                                          {"error", spdlog::level::err}};
  auto it = levels.find(name);
  if (it == levels.end())
    return Status::error(ErrorCode::kInvalid,
                         "--log-level: unknown level '" + name + "' (trace|debug|info|warn|error)");
  return it->second;
}

/// Loads the config file: an explicit --config must exist; the default path (below --root) may
/// be absent, and then every key has its default.
Result<Config> loadConfig(const CliOptions& o) {
  std::string path = o.configExplicit ? o.configPath : o.root + "/etc/pim-access-agent/agent.ini";
  std::string text;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (o.configExplicit) return Status::error(ErrorCode::kInvalid, "config " + path + ": cannot read");
  } else {
    std::stringstream ss;
    ss << in.rdbuf();
    text = ss.str();
  }
  auto config = parseConfig(text);
  if (!config) return Status::error(ErrorCode::kInvalid, config.status().message() + " (" + path + ")");
  config->root = o.root;
  while (config->root.size() > 1 && config->root.back() == '/') config->root.pop_back();
  if (config->root == "/") config->root.clear();
  if (!o.source.empty()) config->store.source = o.source;
  return config;
}

Result<std::unique_ptr<StoreClient>> storeFor(const Config& config) {
  if (config.store.source.empty()) {
    return Status::error(ErrorCode::kInvalid, "store.source is not set (config [store] source, or --source URL)");
  }
  return makeStoreClient(config.store, config.root, makeLogger("store"));
}

void printCycle(std::ostream& out, const CycleReport& r) {
  out << "outcome: " << r.outcome;
  if (r.generation) out << ", generation " << *r.generation;
  if (r.revision) out << ", revision " << *r.revision;
  out << "\n";
  if (!r.error.empty()) out << "error: " << r.error << "\n";
  out << "changes: " << r.changes.size() << "\n";
  for (const auto& a : r.changes) out << "  " << a.describe() << "\n";
  printSkipped(out, r.skipped);
}

// ---- commands ----

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
  auto actions = reconciler.plan(desired, host);
  if (!actions) return fail(actions.status());
  for (auto& e : reconciler.refused()) doc->skipped.push_back(std::move(e));
  if (o.json) {
    Poco::JSON::Object::Ptr root = new Poco::JSON::Object(Poco::JSON_PRESERVE_KEY_ORDER);
    root->set("revision", doc->revision);
    root->set("instance", doc->instance);
    Poco::JSON::Array::Ptr arr = new Poco::JSON::Array;
    for (const auto& a : *actions) {
      Poco::JSON::Object::Ptr j = new Poco::JSON::Object(Poco::JSON_PRESERVE_KEY_ORDER);
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
  for (const auto& a : *actions) std::cout << "  " << a.describe() << "\n";
  printSkipped(std::cout, doc->skipped);
  return kExitOk;
}

struct Runtime {
  Config config;
  std::unique_ptr<RealHost> host;
  std::unique_ptr<StateStore> state;
  SystemClock clock;
  FileLock cycleLock;
  std::unique_ptr<Agent> agent;
};

/// Everything a changing command needs: sandbox files, the database, the cycle lock, recovery.
Result<std::unique_ptr<Runtime>> openRuntime(const Config& config, bool takeLock, const FailPoints& failpoints = {}) {
  auto rt = std::make_unique<Runtime>();
  rt->config = config;
  rt->host = std::make_unique<RealHost>(config.root, makeLogger("host"));
  auto state = openStateForCycles(config, *rt->host);
  if (!state) return state.status();
  rt->state = std::move(*state);
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

int cmdOnce(const Config& config, const FailPoints& failpoints) {
  auto store = storeFor(config);
  if (!store) return fail(store.status());
  auto rt = openRuntime(config, true, failpoints);
  if (!rt) return fail(rt.status());
  CycleReport r = (*rt)->agent->cycle(**store, 0);
  MetricsCounters counters;
  counters.countCycle(r, (*rt)->clock.nowSeconds());
  if (Status m = publishMetrics(*(*rt)->host, *(*rt)->state, config, counters, (*rt)->clock.nowSeconds()); !m) {
    std::cerr << "pim-access-agent: metrics: " << m.message() << "\n";
  }
  printCycle(std::cout, r);
  if (!r.error.empty()) std::cerr << "pim-access-agent: " << r.error << "\n";
  return r.exitCode;
}

int cmdRollback(const Config& config, const CliOptions& o, const FailPoints& failpoints) {
  if (o.args.size() != 1) return usageError("rollback needs one generation number");
  char* end = nullptr;
  long long n = std::strtoll(o.args[0].c_str(), &end, 10);
  if (end == o.args[0].c_str() || *end != '\0' || n < 1)
    return usageError("rollback: not a generation number: " + o.args[0]);
  auto rt = openRuntime(config, true, failpoints);
  if (!rt) return fail(rt.status());
  CycleReport r = (*rt)->agent->rollback(n);
  printCycle(std::cout, r);
  if (r.exitCode == 0)
    std::cout << "pinned to generation " << (r.generation ? *r.generation : 0) << " (resume lifts the pin)\n";
  if (!r.error.empty()) std::cerr << "pim-access-agent: " << r.error << "\n";
  return r.exitCode;
}

int cmdResume(const Config& config) {
  auto rt = openRuntime(config, false);
  if (!rt) return fail(rt.status());
  Status s = (*rt)->agent->resume();
  if (!s) return fail(s);
  std::cout << "pin lifted: the next cycle applies the store's current document\n";
  return kExitOk;
}

}  // namespace

int runCli(int argc, char** argv) {
  try {
    auto parsed = parseArgs(argc, argv);
    if (!parsed) return usageError(parsed.status().message());
    CliOptions o = *parsed;
    if (o.command.empty()) return usageError("missing command");
    if (o.command == "help") {
      std::cout << kUsage;
      return kExitOk;
    }
    auto level = parseLevel(o.logLevel);
    if (!level) return usageError(level.status().message());
    setLogLevel(*level);
    if (o.command == "version") {
      std::cout << "pim-access-agent " << PIM_VERSION << "\n";
      return kExitOk;
    }
    auto config = loadConfig(o);
    if (!config) return fail(config.status());
    // Test-only failure injection, read once here and passed down (agent/failpoint.h).
    auto failpoints = FailPoints::fromEnvironment();
    if (!failpoints) return fail(failpoints.status());
    const std::string& c = o.command;
    auto noArgs = [&]() { return o.args.empty(); };
    if (c == "plan" && noArgs()) return cmdPlan(*config, o);
    if (c == "once" && noArgs()) return cmdOnce(*config, *failpoints);
    if (c == "rollback") return cmdRollback(*config, o, *failpoints);
    if (c == "resume" && noArgs()) return cmdResume(*config);
    if (c == "status" && noArgs()) return cmdStatus(*config, o.json);
    if (c == "history" && noArgs()) return cmdHistory(*config, o.json);
    if (c == "show") {
      if (o.args.size() != 1) return usageError("show needs one generation number");
      return cmdShow(*config, o.args[0], o.json);
    }
    if (c == "enforce-perms" && noArgs()) return cmdEnforcePerms(*config);
    if (c == "run" && noArgs()) return cmdRun([o]() { return loadConfig(o); }, *failpoints);
    if (c == "plan" || c == "once" || c == "resume" || c == "status" || c == "history" || c == "enforce-perms" ||
        c == "run") {
      return usageError(c + " takes no arguments");
    }
    return usageError("unknown command " + c);
  } catch (const Poco::Exception& e) {
    std::cerr << "pim-access-agent: internal error: " << e.displayText() << "\n";
    return kExitInternal;
  } catch (const std::exception& e) {
    std::cerr << "pim-access-agent: internal error: " << e.what() << "\n";
    return kExitInternal;
  }
}

}  // namespace pim
