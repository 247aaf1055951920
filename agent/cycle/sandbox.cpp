#include "agent/cycle/sandbox.h"

namespace pim {

Status prepareSandbox(Host& host) {
  if (host.root().empty()) return Status::ok();
  Status s = host.makeDirectories("/etc", Ownership{0755, 0, 0});
  if (!s) return s;
  s = host.makeDirectories("/home", Ownership{0755, 0, 0});
  if (!s) return s;
  struct Seed {
    const char* path;
    const char* text;
    mode_t mode;
  };
  const Seed seeds[] = {
      {"/etc/passwd", "root:x:0:0:root:/root:/bin/bash\n", 0644},
      {"/etc/group", "root:x:0:\n", 0644},
      {"/etc/shadow", "root:*:20000:0:99999:7:::\n", 0640},
      {"/etc/gshadow", "root:*::\n", 0640},
  };
  for (const auto& seed : seeds) {
    auto info = host.lstat(seed.path);
    if (!info) return info.status();
    if (info->exists()) continue;
    s = host.writeFileAtomic(seed.path, seed.text, Ownership{seed.mode, 0, 0});
    if (!s) return s;
  }
  return Status::ok();
}

}  // namespace pim
