#pragma once
// Strict parsers for every value that comes from the store or the config. Each returns a
// Status/Result whose message says what is wrong (never echoing secrets such as hashes).

#include <cstdint>
#include <string>
#include <string_view>

#include "providers/model.h"
#include "providers/result.h"

namespace pim {

/// An entry id: [A-Za-z0-9._-]{1,64}.
Status checkEntryId(std::string_view id);
/// A user or group name: ^[a-z_][a-z0-9_-]{0,31}$.
Status checkUsername(std::string_view name);
/// One OpenSSH public key "TYPE BASE64 [COMMENT]": a known type, no options, base64 that decodes
/// to a blob whose embedded type equals TYPE, RSA modulus >= 2048 bits, no control characters.
Result<PublicKey> parsePublicKey(std::string_view text);
/// A crypt(3) hash with prefix $y$, $6$, $5$ or $2b$ in the shape libxcrypt accepts.
Status checkCryptHash(std::string_view hash);
/// A folder relative to the transfer root: "." or "a/b"; no "..", no leading "/", no control
/// characters, no empty components. Returns the normalised form ("." or "a/b").
Result<std::string> parseFolder(std::string_view folder);
/// An IPv4 or IPv6 CIDR with no host bits set and a prefix in range; canonical text.
Result<Cidr> parseCidr(std::string_view text);
/// An RFC 3339 UTC time ("2027-01-31T00:00:00Z", fractional seconds allowed) to Unix seconds.
Result<int64_t> parseRfc3339(std::string_view text);

}  // namespace pim
