#pragma once
// Failure injection for the tests of the cycle's failure isolation and of crash recovery. The value of
// the environment variable PIM_FAILPOINT is read once, at start-up (agent/cli/cli.cpp), parsed into a
// FailPoints and handed to the Agent, which hands it to the Reconciler of each forward apply.
// Nothing else reads the environment, and nothing is global.
//
// Grammar: a comma-separated list of
//   after-action:N              the cycle fails right after its N-th applied action (N >= 1): the
//                               revocations still apply, nothing more is confined or granted
//   crash-after-action:N        the process is killed (SIGKILL) right after its N-th applied action
//   before-provider:NAME        provider NAME cannot plan (as if it could not observe the host)
//   crash-before-provider:NAME  the process is killed just before provider NAME plans (the
//                               cycle plans every provider before it applies anything)
//   fail-provider:NAME          provider NAME's first action fails instead of being applied
//   crash-before-finish         the process is killed after the last action, before the outcome
//                               is recorded (the pending-cycle journal is still open)
// Actions are counted per cycle, from 1, in the order they are applied (by stage: revocations,
// the sshd drop-in, preparation, grants). Only forward cycles trigger failpoints: crash recovery
// never does, so a failure is injected once and its repair is real. NAME is a provider name
// (Provider::name(), the providers of providers/provider_set.h); it is not checked against the list.

#include <functional>
#include <optional>
#include <string>

#include "providers/core/result.h"

namespace pim {

struct FailPoints {
  std::optional<int> failAfterAction;
  std::optional<int> crashAfterAction;
  std::string failBeforeProvider;
  std::string crashBeforeProvider;
  std::string failProvider;
  bool crashBeforeFinish = false;
  /// What a crash failpoint does; empty = raise(SIGKILL). In-process tests set a hook that
  /// throws something no code catches on the way (not a std::exception) to simulate the crash.
  std::function<void(const std::string& where)> crashHook;

  /// True when no failpoint is set.
  bool empty() const;
  /// The spec back in the grammar above ("" when empty), for logs.
  std::string describe() const;
  /// Runs the crash hook, or kills the process with SIGKILL (no destructor, no flush: a real
  /// crash). `where` names the failpoint for the hook and the last line on stderr.
  void crash(const std::string& where) const;

  /// Parses a spec in the grammar above; "" gives no failpoint.
  /// Errors: kInvalid naming the item that is not understood.
  static Result<FailPoints> parse(const std::string& spec);
  /// parse() of $PIM_FAILPOINT (unset: no failpoint). Errors: those of parse(), prefixed with
  /// the variable's name.
  static Result<FailPoints> fromEnvironment();
};

}  // namespace pim
