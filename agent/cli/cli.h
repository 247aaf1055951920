#pragma once
// The command line of docs/agent.md: parses arguments, loads the config and dispatches to the
// command, one file per command in agent/cli/ (declared in agent/cli/commands.h); returns the exit
// code.

#include <string>
#include <vector>

namespace pim {

/// Exit codes of the contract.
enum ExitCode : int {
  kExitOk = 0,
  kExitInternal = 1,
  kExitUsage = 2,
  kExitRejected = 3,
  kExitUnreachable = 4,
  kExitApplyFailed = 5,
  kExitBusy = 6,
  kExitTimedOut = 7,
};

/// The parsed command line; options may stand before or after the command.
struct CliOptions {
  std::string configPath;
  bool configExplicit = false;
  std::string root;
  std::string source;
  std::string logLevel = "info";
  std::string command;
  std::vector<std::string> args;
  bool json = false;
  std::string timeout;   // wait --timeout S
  std::string revision;  // wait --revision R
};

/// Prints the message and the usage on stderr; returns kExitUsage.
int usageError(const std::string& message);

/// Runs the agent; never throws.
int runCli(int argc, char** argv);

}  // namespace pim
