// enforce-perms: one full permission pass over the transfer root; prints the counts.
#include "agent/cli/commands.h"

#include <iostream>

#include "agent/cli/cli.h"
#include "agent/cli/cli_support.h"
#include "providers/core/log.h"
#include "providers/host/real_host.h"
#include "providers/host/transfer_perms.h"

namespace pim {

ExitCode cmdEnforcePerms(const Config& config) {
  RealHost host(config.root, makeLogger("host"));
  auto group = host.findGroup(config.host.transferGroup);
  if (!group) return fail(group.status());
  if (!group->has_value()) {
    std::cerr << "pim-access-agent: enforce-perms: group " << config.host.transferGroup
              << " does not exist (run once first)\n";
    return ExitCode::kInternal;
  }
  auto info = host.lstat(config.host.transferRoot);
  if (!info) return fail(info.status());
  if (info->type != FileType::kDirectory) {
    std::cerr << "pim-access-agent: enforce-perms: " << config.host.transferRoot << " is not a directory\n";
    return ExitCode::kInternal;
  }
  PermEnforcer enforcer(host.realPath(config.host.transferRoot), (*group)->gid, makeLogger("perms"));
  PermStats stats = enforcer.fullPass();
  std::cout << "scanned: " << stats.scanned << "\n"
            << "changed: " << stats.changed << "\n"
            << "skipped: " << (stats.skippedHardlinks + stats.skippedOther + stats.skippedSymlinks) << " (hard links "
            << stats.skippedHardlinks << ", symbolic links " << stats.skippedSymlinks << ", other types "
            << stats.skippedOther << ")\n"
            << "errors: " << stats.errors << "\n";
  for (const auto& line : stats.reports) std::cout << "  " << line << "\n";
  if (stats.reportsDropped > 0) std::cout << "  (" << stats.reportsDropped << " more not shown)\n";
  return stats.errors == 0 ? ExitCode::kOk : ExitCode::kInternal;
}

}  // namespace pim
