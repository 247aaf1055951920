#include "providers/provider_set.h"

#include "providers/core/log.h"
#include "providers/firewall.h"
#include "providers/login_user.h"
#include "providers/sftp_accounts.h"
#include "providers/sftp_chroots.h"
#include "providers/ssh_keys.h"
#include "providers/sshd_dropin.h"
#include "providers/sudoers.h"
#include "providers/transfer_tree.h"

namespace pim {

std::vector<std::unique_ptr<Provider>> makeProviders(Ledger& ledger) {
  std::vector<std::unique_ptr<Provider>> providers;
  providers.push_back(std::make_unique<LoginUserProvider>(makeLogger("provider.login_user"), ledger));
  providers.push_back(std::make_unique<SshKeysProvider>(makeLogger("provider.ssh_keys"), &ledger));
  providers.push_back(std::make_unique<TransferTreeProvider>(makeLogger("provider.transfer_tree")));
  providers.push_back(std::make_unique<SftpAccountsProvider>(makeLogger("provider.sftp_accounts"), ledger));
  providers.push_back(std::make_unique<SftpChrootsProvider>(makeLogger("provider.sftp_chroots"), ledger));
  providers.push_back(std::make_unique<SshdDropinProvider>(makeLogger("provider.sshd"), &ledger));
  providers.push_back(std::make_unique<SudoersProvider>(makeLogger("provider.sudoers"), &ledger));
  // Last: its revocations close ranges with the others', its grants open them after the keys.
  providers.push_back(std::make_unique<FirewallProvider>(makeLogger("provider.firewall")));
  return providers;
}

}  // namespace pim
