#pragma once
// The exit codes of the contract (docs/agent.md, "Exit codes"): what every command returns, and
// what a cycle's report carries for `once`, `rollback` and the daemon's status and metrics.

namespace pim {

/// An exit code of the contract; main() turns it into the process's with static_cast<int>.
enum class ExitCode : int {
  kOk = 0,           // done (including "nothing to change")
  kInternal = 1,     // internal error
  kUsage = 2,        // usage or configuration error
  kRejected = 3,     // document rejected; nothing on the host changed
  kUnreachable = 4,  // store unreachable or refused the request
  kApplyFailed = 5,  // not everything applied; the document is in force all the same
  kBusy = 6,         // another command or daemon holds the cycle lock or the daemon lock
  kTimedOut = 7,     // `wait`: the time-out passed first
};

}  // namespace pim
