#pragma once
// The providers in their order: login_user, ssh_keys, transfer_tree, sftp_accounts,
// sftp_chroots, sshd. main wiring lives here so the order is written down once.

#include <memory>
#include <vector>

#include "providers/ledger.h"
#include "providers/provider.h"

namespace pim {

/// Builds every provider bound to `ledger`, each with its own named logger.
std::vector<std::unique_ptr<Provider>> makeProviders(Ledger& ledger);

}  // namespace pim
