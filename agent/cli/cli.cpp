#include "agent/cli/cli.h"

#include <Poco/Exception.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include "agent/cli/cli_support.h"
#include "agent/cli/commands.h"
#include "agent/config/config.h"
#include "agent/cycle/failpoint.h"
#include "providers/core/log.h"

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
    "  wait [--timeout S] [--revision R]\n"
    "                 wait until a store document (of revision R or above) is applied on the host\n"
    "  version        print the version\n"
    "options: --json (plan, status, history, show)\n";

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
    } else if (a == "--timeout") {
      Status s = take(o.timeout);
      if (!s) return s;
    } else if (a == "--revision") {
      Status s = take(o.revision);
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
  // The network namespace has no --root prefix: a sandbox never touches the host's firewall.
  config->network.managed = config->root.empty();
  if (!o.source.empty()) config->store.source = o.source;
  return config;
}

/// With the firewall on (and managed: not under --root), nft must be there: a host without
/// nftables is told at start which key to change, before anything on it changes.
Status checkFirewallTools(const Config& config) {
  if (!config.network.managed || config.network.firewall != FirewallMode::kNftables) return Status::ok();
  if (::access(config.network.nftBinary.c_str(), X_OK) == 0) return Status::ok();
  return Status::error(ErrorCode::kInvalid, "config network.firewall = nftables, but " + config.network.nftBinary +
                                                " cannot be run (" + std::strerror(errno) +
                                                "): install nftables, or set [network] firewall = off");
}

/// loadConfig() for the commands that look at or change the host's firewall.
Result<Config> loadCheckedConfig(const CliOptions& o) {
  auto config = loadConfig(o);
  if (!config) return config;
  if (Status s = checkFirewallTools(*config); !s) return s;
  return config;
}

}  // namespace

ExitCode usageError(const std::string& message) {
  std::cerr << "pim-access-agent: " << message << "\n" << kUsage;
  return ExitCode::kUsage;
}

namespace {

/// A usage error: as JSON too when the command line asked for --json.
ExitCode jsonOr(const CliOptions& o, const std::string& message) {
  if (o.json) return fail(Status::error(ErrorCode::kInvalid, message), true);
  return usageError(message);
}

}  // namespace

ExitCode runCli(int argc, char** argv) {
  try {
    auto parsed = parseArgs(argc, argv);
    if (!parsed) return usageError(parsed.status().message());
    CliOptions o = *parsed;
    if (o.command.empty()) return usageError("missing command");
    if (o.command == "help") {
      std::cout << kUsage;
      return ExitCode::kOk;
    }
    auto level = parseLevel(o.logLevel);
    if (!level) return usageError(level.status().message());
    setLogLevel(*level);
    if (o.command == "version") return cmdVersion();
    auto config = loadConfig(o);
    if (!config) return fail(config.status(), o.json);
    // Test-only failure injection, read once here and passed down (agent/cycle/failpoint.h).
    auto failpoints = FailPoints::fromEnvironment();
    if (!failpoints) return fail(failpoints.status());
    const std::string& c = o.command;
    if (c == "plan" || c == "once" || c == "rollback" || c == "run") {
      if (Status s = checkFirewallTools(*config); !s) return fail(s, o.json);
    }
    auto noArgs = [&]() { return o.args.empty(); };
    if (c == "plan" && noArgs()) return cmdPlan(*config, o);
    if (c == "once" && noArgs()) return cmdOnce(*config, *failpoints);
    if (c == "rollback") return cmdRollback(*config, o, *failpoints);
    if (c == "resume" && noArgs()) return cmdResume(*config);
    if (c == "wait" && noArgs()) return cmdWait(*config, o);
    if ((!o.timeout.empty() || !o.revision.empty()) && c != "wait") {
      return jsonOr(o, "--timeout and --revision are options of wait only");
    }
    if (c == "status" && noArgs()) return cmdStatus(*config, o.json);
    if (c == "history" && noArgs()) return cmdHistory(*config, o.json);
    if (c == "show") {
      if (o.args.size() != 1) return jsonOr(o, "show needs one generation number");
      return cmdShow(*config, o.args[0], o.json);
    }
    if (c == "enforce-perms" && noArgs()) return cmdEnforcePerms(*config);
    if (c == "run" && noArgs()) return cmdRun([o]() { return loadCheckedConfig(o); }, *failpoints);
    if (c == "plan" || c == "once" || c == "resume" || c == "status" || c == "history" || c == "enforce-perms" ||
        c == "run" || c == "wait") {
      return jsonOr(o, c + " takes no arguments");
    }
    return jsonOr(o, "unknown command " + c);
  } catch (const Poco::Exception& e) {
    std::cerr << "pim-access-agent: internal error: " << e.displayText() << "\n";
    return ExitCode::kInternal;
  } catch (const std::exception& e) {
    std::cerr << "pim-access-agent: internal error: " << e.what() << "\n";
    return ExitCode::kInternal;
  }
}

}  // namespace pim
