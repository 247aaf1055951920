// rollback N: re-applies generation N's document and pins it.
#include "agent/cli/commands.h"

#include <cstdlib>
#include <iostream>

#include "agent/cli/cli.h"
#include "agent/cli/cli_support.h"
#include "agent/cli/runtime.h"

namespace pim {

ExitCode cmdRollback(const Config& config, const CliOptions& o, const FailPoints& failpoints) {
  if (o.args.size() != 1) return usageError("rollback needs one generation number");
  char* end = nullptr;
  long long n = std::strtoll(o.args[0].c_str(), &end, 10);
  if (end == o.args[0].c_str() || *end != '\0' || n < 1)
    return usageError("rollback: not a generation number: " + o.args[0]);
  auto rt = openRuntime(config, true, failpoints);
  if (!rt) return fail(rt.status());
  CycleReport r = (*rt)->agent->rollback(n);
  // Nothing applied (no such generation, no valid document in it): an error, not an outcome.
  if (!r.generation)
    return fail(Status::error(r.exitCode == ExitCode::kUsage ? ErrorCode::kInvalid : ErrorCode::kInternal, r.error));
  printCycle(std::cout, r);
  if (r.exitCode == ExitCode::kOk || r.exitCode == ExitCode::kApplyFailed) {
    std::cout << "pinned to generation " << *r.generation << " (rollback of generation " << n
              << "; resume lifts the pin)\n";
  }
  if (!r.error.empty()) std::cerr << "pim-access-agent: " << r.error << "\n";
  return r.exitCode;
}

}  // namespace pim
