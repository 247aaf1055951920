#pragma once
// When the state database is new (a lost or emptied state directory) or had to be rebuilt (corrupt
// or unreadable), the record of what the agent created is gone. Without it the agent would refuse its own SFTP accounts
// as foreign and never clean up their mounts. This re-adopts, from the host as observed, the objects that only the
// agent makes; nothing on the host is changed or removed because of the rebuild.

#include "providers/core/ledger.h"
#include "providers/core/log.h"
#include "providers/core/settings.h"
#include "providers/host/host.h"

namespace pim {

struct AdoptionCounts {
  size_t users = 0;
  size_t mounts = 0;
  size_t files = 0;
  size_t groups = 0;
};

/// Records as the agent's own: SFTP accounts (home "/transfer", shell /usr/sbin/nologin, primary
/// group transfer_group: the agent's signature, which no other tool uses), their chroot
/// directories, bind mounts and key files, and the transfer group. Never adopts the login user (an
/// operator may have made it). Reads only. Errors: the account files or mountinfo are unreadable.
Result<AdoptionCounts> adoptFromHost(Host& host, const HostSettings& settings, Ledger& ledger, Logger log);

}  // namespace pim
