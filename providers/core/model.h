#pragma once
// The validated access document: what the store wants on this host. Produced by the document
// parser (agent/document/document.h) and consumed by the providers; every value here already passed its
// parser, and the entries that did not are listed in `skipped`.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace pim {

/// One OpenSSH public key, checked: known type, base64 that decodes to a blob of that type.
struct PublicKey {
  std::string type;     // "ssh-ed25519", ...
  std::string base64;   // the blob as given
  std::string comment;  // may be empty; printable, no control characters
  /// "TYPE BASE64" (without the comment): the identity of the key.
  std::string identity() const { return type + " " + base64; }
  bool operator==(const PublicKey& o) const { return type == o.type && base64 == o.base64; }
};

struct SshKey {
  std::string id;
  std::string owner;
  PublicKey key;
  bool active = true;
  std::optional<int64_t> expiresAt;  // Unix seconds (UTC); nullopt: never
  /// The key's own allowed_sources (canonical CIDRs, sorted, unique): it logs in only from an
  /// address in both this list and the document's. Empty: the document's list alone.
  std::vector<std::string> allowedSources = {};
  /// True when the key must be installed at time `now` (Unix seconds).
  bool installableAt(int64_t now) const { return active && (!expiresAt || *expiresAt > now); }
};

/// What an SFTP account may do in its folder (sftp.accounts[].access), enforced by the
/// ForceCommand of its sshd Match block (providers/sshd_dropin.h).
enum class SftpAccess {
  kReadWrite,   // "read-write" (the default): everything internal-sftp allows
  kReadOnly,    // "read-only": internal-sftp -R (get, ls; no write, rename, remove, mkdir)
  kUploadOnly,  // "upload-only": create and write files, make directories; no read, list, rename, remove
};

/// "read-write", "read-only" or "upload-only": the document's spelling.
inline const char* sftpAccessName(SftpAccess access) {
  switch (access) {
    case SftpAccess::kReadWrite:
      return "read-write";
    case SftpAccess::kReadOnly:
      return "read-only";
    case SftpAccess::kUploadOnly:
      return "upload-only";
  }
  return "?";
}

struct SftpAccount {
  std::string id;
  std::string username;
  std::optional<std::string> passwordHash;  // crypt(3) hash; nullopt: key-only
  std::string folder;                       // "." or "a/b", relative to the transfer root
  bool active = true;
  std::vector<PublicKey> publicKeys;
  SftpAccess access = SftpAccess::kReadWrite;
  /// The account's own allowed_sources (canonical CIDRs, sorted, unique), like SshKey's.
  std::vector<std::string> allowedSources = {};
};

/// One sudo task (sudo.tasks[]): the login user may run exactly this command line, as `runAs`,
/// without a password (providers/sudoers.h). The parser checked the shape of every value; the
/// host checks (the program, the run_as user) are the sudoers provider's.
struct SudoTask {
  std::string id;
  std::vector<std::string> command;  // an absolute program path, then its fixed arguments (maybe none)
  std::string runAs = "root";
  bool active = true;
};

/// An IPv4 or IPv6 network in canonical text ("203.0.113.0/24", "2001:db8:42::/48").
struct Cidr {
  std::string text;
  bool operator==(const Cidr& o) const { return text == o.text; }
};

/// An entry that was not applied, with why. Keys and accounts by id; sources by value.
struct SkippedEntry {
  std::string id;
  std::string reason;
};

struct AccessDocument {
  int64_t version = 1;
  int64_t revision = 0;
  std::string instance;
  std::vector<SshKey> keys;
  std::vector<SftpAccount> accounts;
  std::vector<Cidr> allowedSources;
  std::vector<SudoTask> sudoTasks;  // sudo.tasks, in document order (absent section: none)
  /// Accounts whose entry was invalid: kept locked on the host, never removed for it.
  std::vector<std::string> lockedUsernames;
  std::vector<SkippedEntry> skipped;
  std::vector<std::string> unknownFields;  // JSON paths of ignored fields
};

}  // namespace pim
