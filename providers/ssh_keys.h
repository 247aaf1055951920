#pragma once
// The ssh_keys provider: the login user's ~/.ssh/authorized_keys holds every installable key of
// the document (active, unexpired at `now`) inside one managed block:
//
//   # BEGIN pim-access-agent
//   ssh-ed25519 AAAA... pim:k-alice-laptop
//   # END pim-access-agent
//
// one line per key, "TYPE BASE64 pim:<id>", sorted by id. The key's own comment and the owner's
// free text are not written: the id is the only label, so nothing from the store other than the
// validated type and base64 reaches the file. Lines outside the block are kept byte for byte; a
// file without a block gets it appended; an empty key set keeps an empty block (the file then
// says that the agent manages it and that no key is installed).
//
// The home is writable by the user, so nothing is written through anything the user could have
// planted: a symlinked, hard-linked, non-regular or foreign-owned .ssh or authorized_keys is
// refused (kUnsafe) and left untouched. The file is never chmod/chown-ed in place (it could be
// swapped for a hard link to a root file between the check and the call): a wrong mode or owner
// is fixed by writing a fresh file atomically.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "providers/core/log.h"
#include "providers/core/model.h"
#include "providers/core/result.h"
#include "providers/host/host.h"
#include "providers/provider.h"

namespace pim {

inline constexpr const char* kKeysBeginMarker = "# BEGIN pim-access-agent";
inline constexpr const char* kKeysEndMarker = "# END pim-access-agent";

/// An authorized_keys file split around the managed block. before + BEGIN line + block lines +
/// END line + after == the original bytes.
struct ParsedAuthorizedKeys {
  bool hasBlock = false;
  std::string before;     // bytes before the BEGIN line (the whole file when there is no block)
  std::string inner;      // bytes between the BEGIN and END lines
  std::string after;      // bytes after the END line's newline
  std::string beginLine;  // the BEGIN line as found, with its line ending
  std::string endLine;    // the END line as found, with its line ending ("" at EOF without one)
};

/// Splits `text` around the managed block. Errors (kInvalid, naming the 1-based line): a BEGIN
/// without END, an END without BEGIN, a second BEGIN (nested or a second block).
Result<ParsedAuthorizedKeys> parseAuthorizedKeys(const std::string& text);

/// The managed block (BEGIN and END lines included, each ending in '\n') for the keys that are
/// installable at `now`, sorted by id. Keys whose type or base64 is not a plain token are left
/// out (the document parser rejects them first; this is the last line of defence).
std::string renderKeyBlock(const std::vector<SshKey>& keys, int64_t now);

/// `existing` with its managed block replaced by `block` (or `block` appended, after a newline
/// if the file does not end with one). Errors: those of parseAuthorizedKeys().
Result<std::string> mergeAuthorizedKeys(const std::string& existing, const std::string& block);

/// Key ids ("pim:<id>" comments) inside the managed block, in file order; empty when there is
/// no block or the file is malformed. For `status`.
std::vector<std::string> installedKeyIds(const std::string& existing);

/// The earliest expires_at strictly after `now` among active keys, for the daemon's expiry
/// timer; nullopt when no key will expire.
std::optional<int64_t> nextExpiry(const AccessDocument& document, int64_t now);

/// What the provider wants.
struct SshKeysDesired {
  std::string user;          // the login user
  std::vector<SshKey> keys;  // every key of the document; filtered by installableAt(now)
  int64_t now = 0;
};

/// What observeSshKeys() found.
struct SshKeysCurrent {
  bool userExists = false;
  uid_t uid = 0;
  gid_t gid = 0;
  std::string home;                    // from passwd; "/home/<user>" when the user does not exist
  FileInfo sshDir;                     // lstat of home/.ssh
  FileInfo keysFile;                   // lstat of home/.ssh/authorized_keys
  std::optional<std::string> content;  // the file's bytes; nullopt when missing
};

/// home + "/.ssh" and home + "/.ssh/authorized_keys".
std::string sshDirPath(const std::string& home);
std::string authorizedKeysPath(const std::string& home);

/// Looks at the user, .ssh and authorized_keys and checks that they are safe to write through.
/// Errors: kUnsafe (symlink, hard link, non-regular file, owner other than the user or root,
/// .ssh not a directory), kInvalid (malformed managed block), kIo.
Result<SshKeysCurrent> observeSshKeys(Host& host, const std::string& user);

/// Pure: the actions that bring `current` to `desired` (create/fix .ssh, write the file).
/// `current.content` must parse (observeSshKeys() guarantees it); an unparsable file plans
/// nothing.
std::vector<Action> planSshKeys(const SshKeysDesired& desired, const SshKeysCurrent& current);

class SshKeysProvider : public Provider {
 public:
  explicit SshKeysProvider(Logger log);

  /// "ssh_keys".
  std::string name() const override;
  /// Observes the login user's keys file; changes nothing. Errors: see observeSshKeys().
  Result<std::vector<Action>> plan(const Desired& desired, Host& host) override;
  /// Applies one action of plan(). Observes again first (the home is user-writable) and writes
  /// the merged file from what is on disk now, so edits made since plan() are kept.
  /// Errors: kUnsafe, kNotFound (no such user / home), kIo.
  Status apply(const Action& action, const Desired& desired, Host& host) override;

 private:
  Logger log_;
};

}  // namespace pim
