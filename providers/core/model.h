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

struct SftpAccount {
  std::string id;
  std::string username;
  std::optional<std::string> passwordHash;  // crypt(3) hash; nullopt: key-only
  std::string folder;                       // "." or "a/b", relative to the transfer root
  bool active = true;
  std::vector<PublicKey> publicKeys;
  /// The account's own allowed_sources (canonical CIDRs, sorted, unique), like SshKey's.
  std::vector<std::string> allowedSources = {};
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
  /// Accounts whose entry was invalid: kept locked on the host, never removed for it.
  std::vector<std::string> lockedUsernames;
  std::vector<SkippedEntry> skipped;
  std::vector<std::string> unknownFields;  // JSON paths of ignored fields
};

}  // namespace pim
