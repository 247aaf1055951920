// resume: lifts the pin; the next cycle applies the store's current document.
#include "agent/cli/commands.h"

#include <iostream>

#include "agent/cli/cli.h"
#include "agent/cli/cli_support.h"
#include "agent/cli/runtime.h"

namespace pim {

ExitCode cmdResume(const Config& config) {
  auto rt = openRuntime(config, false);
  if (!rt) return fail(rt.status());
  Status s = (*rt)->agent->resume();
  if (!s) return fail(s);
  std::cout << "pin lifted: the next cycle applies the store's current document\n";
  return ExitCode::kOk;
}

}  // namespace pim
