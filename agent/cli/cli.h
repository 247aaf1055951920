#pragma once
// The command line of docs/agent.md: parses arguments, loads the config and dispatches to the
// command, one file per command in agent/cli/ (declared in agent/cli/commands.h); returns the exit
// code.

#include <string>
#include <vector>

#include "agent/cycle/exit_code.h"

namespace pim {

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

/// Prints the message and the usage on stderr; returns ExitCode::kUsage.
ExitCode usageError(const std::string& message);

/// Runs the agent; never throws.
ExitCode runCli(int argc, char** argv);

}  // namespace pim
