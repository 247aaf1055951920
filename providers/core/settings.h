#pragma once
// The host-side settings every provider needs, from the [host] and [sshd] config sections.
// Paths are host paths (the Host adds the --root prefix).

#include <string>
#include <vector>

#include "providers/core/model.h"

namespace pim {

struct HostSettings {
  std::string loginUser = "akeneo";
  std::string transferRoot = "/data/transfer/pim";
  std::string transferGroup = "pimtransfer";
  std::string chrootBase = "/srv/pim-sftp";
  std::vector<Cidr> alwaysAllow = {Cidr{"127.0.0.1/32"}, Cidr{"::1/128"}};
  /// Root-owned directory holding one authorized_keys file per SFTP account.
  std::string sftpKeysDir = "/etc/pim-access-agent/sftp-keys";
};

struct SshdSettings {
  std::string mainConfig = "/etc/ssh/sshd_config";
  std::string dropin = "/etc/ssh/sshd_config.d/50-pim-access-agent.conf";
  std::string binary = "/usr/sbin/sshd";               // runs on the real system
  std::string reloadCommand = "systemctl reload ssh";  // runs on the real system
};

}  // namespace pim
