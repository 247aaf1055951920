#pragma once
// The command line of docs/agent.md: parses arguments, loads the config, wires the
// Host, store client, state store and providers, runs the command and returns the exit code.

namespace pim {

/// Exit codes of the contract.
enum ExitCode : int {
  kExitOk = 0,
  kExitInternal = 1,
  kExitUsage = 2,
  kExitRejected = 3,
  kExitUnreachable = 4,
  kExitApplyFailed = 5,
};

/// Runs the agent; never throws.
int runCli(int argc, char** argv);

}  // namespace pim
