#pragma once
// The host-side settings every provider needs, from the [host], [sshd] and [network] config
// sections.
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
  /// Root-owned directory (root:root 0755) holding one authorized_keys file per managed user
  /// (the login user and every SFTP account), root:root 0644: sshd's AuthorizedKeysFile for
  /// every managed user is <authorizedKeysDir>/%u, so no user can change its own keys.
  std::string authorizedKeysDir = "/etc/pim-access-agent/authorized_keys";
};

/// Where the SFTP accounts' key files lived before authorizedKeysDir (agent 0.1.0): files the
/// agent owns there are removed on upgrade, then the directory when it is empty.
inline constexpr const char* kLegacySftpKeysDir = "/etc/pim-access-agent/sftp-keys";

/// [sshd] permit_root_login: what the drop-in says about root.
enum class RootLogin {
  kNo,                // PermitRootLogin no: root never logs in over SSH
  kProhibitPassword,  // PermitRootLogin prohibit-password, and only from host.always_allow
};

struct SshdSettings {
  std::string mainConfig = "/etc/ssh/sshd_config";
  /// Sorts before Debian cloud images' 50-cloud-init.conf: sshd keeps the first value it reads.
  std::string dropin = "/etc/ssh/sshd_config.d/10-pim-access-agent.conf";
  std::string binary = "/usr/sbin/sshd";               // runs on the real system
  std::string reloadCommand = "systemctl reload ssh";  // runs on the real system
  RootLogin permitRootLogin = RootLogin::kNo;
};

/// The drop-in's default name before 0.2: removed on upgrade when the configured drop-in is
/// another file and this one carries the agent's header.
inline constexpr const char* kLegacyDropin = "/etc/ssh/sshd_config.d/50-pim-access-agent.conf";

/// [network] firewall: whether the agent keeps its nftables table (providers/firewall.h).
enum class FirewallMode {
  kNftables,  // the table inet pim_access_agent gates sshd's ports (default)
  kOff,       // no firewall: the agent removes its table when it is there
};

struct NetworkSettings {
  FirewallMode firewall = FirewallMode::kNftables;
  /// false under --root: a sandbox cannot prefix the network namespace, so it neither makes nor
  /// removes the table (the firewall provider plans nothing and observes nothing).
  bool managed = true;
  std::string nftBinary = "/usr/sbin/nft";  // runs on the real system (not prefixed)
};

}  // namespace pim
