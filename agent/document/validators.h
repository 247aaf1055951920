#pragma once
// Strict parsers for every value that comes from the store or the config. Each returns a
// Status/Result whose message says what is wrong (never echoing secrets such as hashes). The
// messages name no field: callers prefix them ("public_key: not valid base64").

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "providers/core/model.h"
#include "providers/core/result.h"

namespace pim {

/// Longest public key line accepted (type, base64 and comment), in bytes.
inline constexpr size_t kMaxPublicKeyBytes = 8192;
/// Longest public key comment accepted, in bytes.
inline constexpr size_t kMaxKeyCommentBytes = 1024;
/// Longest folder accepted, in bytes.
inline constexpr size_t kMaxFolderBytes = 4096;
/// Longest sudo task program path accepted, in bytes.
inline constexpr size_t kMaxSudoProgramBytes = 4096;
/// Most fixed arguments of one sudo task.
inline constexpr size_t kMaxSudoArguments = 64;
/// Longest fixed argument of a sudo task, in bytes.
inline constexpr size_t kMaxSudoArgumentBytes = 1024;

/// An entry id: [A-Za-z0-9._-]{1,64}. Errors: kInvalid.
Status checkEntryId(std::string_view id);
/// A user or group name: ^[a-z_][a-z0-9_-]{0,31}$. Errors: kInvalid.
Status checkUsername(std::string_view name);
/// One OpenSSH public key "TYPE BASE64 [COMMENT]": a known type, no options, strict base64 that
/// decodes to a wire blob checked field by field (embedded type equals TYPE, key sizes, ECDSA
/// point on its curve, RSA modulus >= 2048 bits, nothing left over); printable ASCII only, single
/// spaces between type and base64 and before the comment. Errors: kInvalid, never echoing the key.
Result<PublicKey> parsePublicKey(std::string_view text);
/// A crypt(3) hash with prefix $y$, $6$, $5$ or $2b$ in the shape libxcrypt accepts (and whose
/// encoded digest is canonical, so that it can ever match), within bounds on its cost (yescrypt
/// memory and time, sha-crypt rounds, bcrypt cost), and of a method that this host's libxcrypt
/// supports and has not disabled (crypt_checksalt(): OK, or legacy for $5$).
/// Errors: kInvalid; the message never contains the hash or any part of it.
Status checkCryptHash(std::string_view hash);
/// A folder relative to the transfer root: "." or "a/b"; no "..", no "." component, no leading or
/// trailing "/", no empty components, printable ASCII only (no control characters, no
/// backslash), at most 4096 bytes and 255 per component. Returns the normalised form ("." or
/// "a/b"). Errors: kInvalid.
Result<std::string> parseFolder(std::string_view folder);
/// The program of a sudo task: an absolute path whose components are made of [A-Za-z0-9._+-]
/// only (nothing sudoers would read as a wildcard, an escape or a separator), no empty, "." or
/// ".." component, no trailing "/", at most kMaxSudoProgramBytes. Errors: kInvalid.
Status checkSudoProgram(std::string_view path);
/// One fixed argument of a sudo task: 1 to kMaxSudoArgumentBytes bytes of printable ASCII
/// (0x21-0x7e) without '"'. White space is refused because sudoers matches the arguments joined
/// by spaces (an argument "a b" would also allow the two arguments "a" and "b"), an empty
/// argument cannot be written in sudoers at all, and '"' cannot be escaped there (a lone '""'
/// means "no arguments"). Everything else is escaped by the sudoers provider. Errors: kInvalid.
Status checkSudoArgument(std::string_view arg);
/// "read-write", "read-only" or "upload-only" (sftp.accounts[].access). Errors: kInvalid.
Result<SftpAccess> parseSftpAccess(std::string_view text);

/// An IPv4 or IPv6 CIDR "ADDRESS/PREFIX": prefix required and in range, no host bits set, no
/// leading zeros in IPv4, no zone id, no white space, no IPv4-mapped IPv6 network; returns the
/// canonical text (inet_ntop). Errors: kInvalid (host bits: names the network meant).
Result<Cidr> parseCidr(std::string_view text);
/// An RFC 3339 UTC time ("2027-01-31T00:00:00Z" or "+00:00", fraction of 1-9 digits allowed and
/// truncated) to Unix seconds; calendar checked (leap years), no leap second, uppercase T/Z.
/// Errors: kInvalid.
Result<int64_t> parseRfc3339(std::string_view text);

/// Text safe to put in a message or a log line: printable ASCII kept, other bytes as \xNN, cut
/// to maxBytes input bytes with "..." appended. Never use it on secrets.
std::string printableForMessage(std::string_view text, size_t maxBytes = 64);

}  // namespace pim
