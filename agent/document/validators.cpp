#include "agent/document/validators.h"
#include "providers/core/base64.h"

#include <arpa/inet.h>
#include <crypt.h>
#include <netinet/in.h>
#include <openssl/ec.h>
#include <openssl/obj_mac.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <memory>
#include <vector>

namespace pim {
namespace {

Status invalid(std::string message) { return Status::error(ErrorCode::kInvalid, std::move(message)); }

bool isDigit(char c) { return c >= '0' && c <= '9'; }
bool isLowerAlpha(char c) { return c >= 'a' && c <= 'z'; }
bool isAlpha(char c) { return isLowerAlpha(c) || (c >= 'A' && c <= 'Z'); }
bool isPrintableAscii(unsigned char c) { return c >= 0x20 && c < 0x7f; }

// ---------------------------------------------------------------------------------------------
// Public keys
// ---------------------------------------------------------------------------------------------

enum class KeyKind { kEd25519, kEcdsa, kSkEd25519, kSkEcdsa, kRsa };

struct KeyType {
  std::string_view name;
  KeyKind kind;
  std::string_view curve;  // ECDSA: the curve name embedded in the blob
  size_t pointBytes;       // ECDSA: uncompressed point length (0x04 || X || Y)
  int nid;                 // ECDSA: OpenSSL curve id
};

constexpr std::array<KeyType, 7> kKeyTypes = {{
    {"ssh-ed25519", KeyKind::kEd25519, "", 0, 0},
    {"ecdsa-sha2-nistp256", KeyKind::kEcdsa, "nistp256", 65, NID_X9_62_prime256v1},
    {"ecdsa-sha2-nistp384", KeyKind::kEcdsa, "nistp384", 97, NID_secp384r1},
    {"ecdsa-sha2-nistp521", KeyKind::kEcdsa, "nistp521", 133, NID_secp521r1},
    {"sk-ssh-ed25519@openssh.com", KeyKind::kSkEd25519, "", 0, 0},
    {"sk-ecdsa-sha2-nistp256@openssh.com", KeyKind::kSkEcdsa, "nistp256", 65, NID_X9_62_prime256v1},
    {"ssh-rsa", KeyKind::kRsa, "", 0, 0},
}};

constexpr size_t kEd25519Bytes = 32;
constexpr int kMinRsaBits = 2048;
constexpr int kMaxRsaBits = 16384;  // OpenSSH's own upper bound
constexpr size_t kMaxRsaExponentBytes = 8;
constexpr size_t kMaxSkApplicationBytes = 256;

const KeyType* findKeyType(std::string_view name) {
  for (const auto& t : kKeyTypes) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

// Reads the SSH wire encoding (RFC 4251): uint32 length-prefixed strings.
class WireReader {
 public:
  explicit WireReader(std::string_view data) : data_(data) {}
  bool readString(std::string_view& out) {
    if (data_.size() - pos_ < 4) return false;
    const auto* p = reinterpret_cast<const unsigned char*>(data_.data() + pos_);
    uint32_t len = (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
    pos_ += 4;
    if (data_.size() - pos_ < len) return false;
    out = data_.substr(pos_, len);
    pos_ += len;
    return true;
  }
  bool atEnd() const { return pos_ == data_.size(); }

 private:
  std::string_view data_;
  size_t pos_ = 0;
};

// A positive mpint in minimal form; returns its magnitude bytes (leading zero stripped).
Status readPositiveMpint(WireReader& r, std::string_view what, std::string_view& magnitude) {
  std::string_view m;
  if (!r.readString(m)) return invalid("key data truncated (RSA " + std::string(what) + ")");
  if (m.empty()) return invalid("RSA " + std::string(what) + " is zero");
  const auto b0 = static_cast<unsigned char>(m[0]);
  if (b0 & 0x80) return invalid("RSA " + std::string(what) + " is negative");
  if (b0 == 0) {
    if (m.size() < 2 || !(static_cast<unsigned char>(m[1]) & 0x80)) {
      return invalid("RSA " + std::string(what) + " is not a minimal mpint");
    }
    m.remove_prefix(1);
  }
  magnitude = m;
  return Status::ok();
}

int bitLength(std::string_view magnitude) {
  auto top = static_cast<unsigned char>(magnitude[0]);
  int bits = static_cast<int>(magnitude.size() - 1) * 8;
  while (top) {
    ++bits;
    top >>= 1;
  }
  return bits;
}

Status checkRsa(WireReader& r) {
  std::string_view e;
  std::string_view n;
  if (Status s = readPositiveMpint(r, "exponent", e); !s) return s;
  if (Status s = readPositiveMpint(r, "modulus", n); !s) return s;
  if (e.size() > kMaxRsaExponentBytes) return invalid("RSA exponent is too large");
  if ((static_cast<unsigned char>(e.back()) & 1) == 0) return invalid("RSA exponent is even");
  if (e.size() == 1 && static_cast<unsigned char>(e[0]) < 3) return invalid("RSA exponent is too small");
  if ((static_cast<unsigned char>(n.back()) & 1) == 0) return invalid("RSA modulus is even");
  const int bits = bitLength(n);
  if (bits < kMinRsaBits) {
    return invalid("RSA modulus is " + std::to_string(bits) + " bits, at least " + std::to_string(kMinRsaBits) +
                   " required");
  }
  if (bits > kMaxRsaBits) {
    return invalid("RSA modulus is " + std::to_string(bits) + " bits, at most " + std::to_string(kMaxRsaBits) +
                   " allowed");
  }
  return Status::ok();
}

struct EcGroupFree {
  void operator()(EC_GROUP* g) const { EC_GROUP_free(g); }
};
struct EcPointFree {
  void operator()(EC_POINT* p) const { EC_POINT_free(p); }
};

Status checkEcdsaPoint(const KeyType& type, std::string_view point) {
  if (point.size() != type.pointBytes || static_cast<unsigned char>(point[0]) != 0x04) {
    return invalid("ECDSA public point has the wrong length or is not uncompressed for " + std::string(type.curve));
  }
  std::unique_ptr<EC_GROUP, EcGroupFree> group(EC_GROUP_new_by_curve_name(type.nid));
  if (!group) return Status::error(ErrorCode::kInternal, "OpenSSL has no curve " + std::string(type.curve));
  std::unique_ptr<EC_POINT, EcPointFree> p(EC_POINT_new(group.get()));
  if (!p) return Status::error(ErrorCode::kInternal, "EC_POINT_new failed");
  // oct2point checks that the point lies on the curve.
  if (EC_POINT_oct2point(group.get(), p.get(), reinterpret_cast<const unsigned char*>(point.data()), point.size(),
                         nullptr) != 1) {
    return invalid("ECDSA public point is not on curve " + std::string(type.curve));
  }
  return Status::ok();
}

Status checkSkApplication(std::string_view app) {
  if (app.size() < 4 || app.size() > kMaxSkApplicationBytes || app.substr(0, 4) != "ssh:") {
    return invalid("security key application must start with \"ssh:\" (at most 256 bytes)");
  }
  for (unsigned char c : app) {
    if (!isPrintableAscii(c)) return invalid("security key application is not printable");
  }
  return Status::ok();
}

Status checkKeyBlob(const KeyType& type, std::string_view blob) {
  WireReader r(blob);
  std::string_view embedded;
  if (!r.readString(embedded)) return invalid("key data truncated (no key type)");
  if (embedded != type.name) {
    const KeyType* other = findKeyType(embedded);
    if (other) {
      return invalid("embedded key type " + std::string(other->name) + " does not match " + std::string(type.name));
    }
    return invalid("embedded key type does not match " + std::string(type.name));
  }
  switch (type.kind) {
    case KeyKind::kEd25519:
    case KeyKind::kSkEd25519: {
      std::string_view pk;
      if (!r.readString(pk)) return invalid("key data truncated (Ed25519 key)");
      if (pk.size() != kEd25519Bytes) return invalid("Ed25519 key is not 32 bytes");
      if (type.kind == KeyKind::kSkEd25519) {
        std::string_view app;
        if (!r.readString(app)) return invalid("key data truncated (security key application)");
        if (Status s = checkSkApplication(app); !s) return s;
      }
      break;
    }
    case KeyKind::kEcdsa:
    case KeyKind::kSkEcdsa: {
      std::string_view curve;
      std::string_view point;
      if (!r.readString(curve)) return invalid("key data truncated (ECDSA curve)");
      if (curve != type.curve) return invalid("ECDSA curve does not match " + std::string(type.name));
      if (!r.readString(point)) return invalid("key data truncated (ECDSA point)");
      if (Status s = checkEcdsaPoint(type, point); !s) return s;
      if (type.kind == KeyKind::kSkEcdsa) {
        std::string_view app;
        if (!r.readString(app)) return invalid("key data truncated (security key application)");
        if (Status s = checkSkApplication(app); !s) return s;
      }
      break;
    }
    case KeyKind::kRsa:
      if (Status s = checkRsa(r); !s) return s;
      break;
  }
  if (!r.atEnd()) return invalid("unexpected data after the key");
  return Status::ok();
}

bool looksLikeOptions(std::string_view text) {
  // "restrict ssh-ed25519 ...", "command=\"x\" ssh-rsa ...", "no-pty,from=\"...\" ..."
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find(' ', pos);
    if (end == std::string_view::npos) end = text.size();
    if (pos > 0 && findKeyType(text.substr(pos, end - pos))) return true;
    pos = end + 1;
  }
  std::string_view first = text.substr(0, text.find(' '));
  return first.find_first_of("=\",") != std::string_view::npos;
}

// ---------------------------------------------------------------------------------------------
// crypt(3) hashes
// ---------------------------------------------------------------------------------------------

constexpr std::string_view kCryptAlphabet = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
constexpr std::string_view kBcryptAlphabet = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

// Index in the crypt alphabet ("./0-9A-Za-z"), or 64 when not in it.
uint32_t cryptIndex(char c) {
  size_t i = kCryptAlphabet.find(c);
  return i == std::string_view::npos ? 64 : static_cast<uint32_t>(i);
}

bool allCryptChars(std::string_view s) {
  for (char c : s) {
    if (cryptIndex(c) > 63) return false;
  }
  return true;
}

const char* kUnsupportedHash = "not a supported crypt(3) hash ($y$, $6$, $5$, $2b$)";

// The number of '$'-separated fields, so that messages can say what is wrong without echoing.
std::vector<std::string_view> splitDollar(std::string_view s) {
  std::vector<std::string_view> parts;
  size_t pos = 0;
  while (true) {
    size_t end = s.find('$', pos);
    if (end == std::string_view::npos) {
      parts.push_back(s.substr(pos));
      return parts;
    }
    parts.push_back(s.substr(pos, end - pos));
    pos = end + 1;
  }
}

// $5$ / $6$: [rounds=N$]salt$digest, salt 1-16 characters, rounds 1000-999999999 as libxcrypt
// writes them (no leading zero); the last digest character carries only the leftover bits.
Status checkShaCrypt(std::string_view hash, bool sha512) {
  const std::string what = sha512 ? "malformed $6$ (sha512crypt) hash: " : "malformed $5$ (sha256crypt) hash: ";
  auto parts = splitDollar(hash.substr(3));
  size_t i = 0;
  if (parts.size() == 3) {
    std::string_view r = parts[0];
    if (r.substr(0, 7) != "rounds=") return invalid(what + "unexpected field before the salt");
    std::string_view digits = r.substr(7);
    if (digits.empty() || digits.size() > 9 || digits[0] == '0') return invalid(what + "bad rounds value");
    uint64_t n = 0;
    for (char c : digits) {
      if (!isDigit(c)) return invalid(what + "bad rounds value");
      n = n * 10 + static_cast<uint64_t>(c - '0');
    }
    if (n < 1000 || n > 999999999) return invalid(what + "rounds out of range 1000-999999999");
    i = 1;
  } else if (parts.size() != 2) {
    return invalid(what + "wrong number of '$' fields");
  }
  std::string_view salt = parts[i];
  std::string_view digest = parts[i + 1];
  if (salt.empty() || salt.size() > 16 || !allCryptChars(salt)) {
    return invalid(what + "salt must be 1-16 characters of ./0-9A-Za-z");
  }
  const size_t want = sha512 ? 86 : 43;
  if (digest.size() != want || !allCryptChars(digest)) {
    return invalid(what + "digest must be " + std::to_string(want) + " characters of ./0-9A-Za-z");
  }
  const uint32_t lastMax = sha512 ? 3 : 15;  // 2 resp. 4 significant bits in the last character
  if (cryptIndex(digest.back()) > lastMax) return invalid(what + "digest is not canonical");
  return Status::ok();
}

// libxcrypt's variable-length integer encoding of yescrypt parameters.
bool decodeYescryptUint(std::string_view& s, uint32_t min, uint64_t& out) {
  if (s.empty()) return false;
  uint32_t start = 0;
  uint32_t end = 47;
  uint32_t chars = 1;
  uint32_t bits = 0;
  uint32_t c = cryptIndex(s[0]);
  s.remove_prefix(1);
  if (c > 63) return false;
  uint64_t v = min;
  while (c > end) {
    v += static_cast<uint64_t>(end + 1 - start) << bits;
    start = end + 1;
    end = start + (62 - end) / 2;
    ++chars;
    bits += 6;
  }
  v += static_cast<uint64_t>(c - start) << bits;
  while (--chars) {
    if (s.empty()) return false;
    c = cryptIndex(s[0]);
    s.remove_prefix(1);
    if (c > 63) return false;
    bits -= 6;
    v += static_cast<uint64_t>(c) << bits;
  }
  out = v;
  return true;
}

// yescrypt's little-endian base64 (libxcrypt decode64): full groups of 4 characters give 3
// bytes, a final group of 2 or 3 characters gives 1 or 2 bytes with its leftover bits zero.
bool decodeYescryptBytes(std::string_view s, size_t& bytes) {
  bytes = 0;
  while (!s.empty()) {
    size_t n = std::min<size_t>(4, s.size());
    uint32_t value = 0;
    for (size_t j = 0; j < n; ++j) {
      uint32_t c = cryptIndex(s[j]);
      if (c > 63) return false;
      value |= c << (6 * j);
    }
    uint32_t bits = static_cast<uint32_t>(6 * n);
    if (bits < 12) return false;  // at least one full byte
    while (bits >= 8) {
      value >>= 8;
      bits -= 8;
      ++bytes;
    }
    if (value != 0) return false;
    s.remove_prefix(n);
  }
  return true;
}

constexpr uint32_t kYescryptRw = 2;
constexpr uint32_t kYescryptRwFlavorMask = 0x3fc;
constexpr uint64_t kMaxYescryptMemory = uint64_t{1} << 30;  // 1 GiB per hash computation
constexpr uint64_t kMaxYescryptParallel = 64;
constexpr uint64_t kMaxYescryptTime = 64;

// $y$params$salt$digest as libxcrypt's yescrypt_r parses it, with a bound on the memory and time
// a verification costs (a hostile hash must not let every login attempt exhaust the host).
Status checkYescrypt(std::string_view hash) {
  const std::string what = "malformed $y$ (yescrypt) hash: ";
  auto parts = splitDollar(hash.substr(3));
  if (parts.size() != 3) return invalid(what + "wrong number of '$' fields");
  std::string_view params = parts[0];
  uint64_t flavor = 0;
  uint64_t nLog2 = 0;
  uint64_t r = 0;
  uint64_t p = 1;
  uint64_t t = 0;
  if (!decodeYescryptUint(params, 0, flavor) || !decodeYescryptUint(params, 1, nLog2) ||
      !decodeYescryptUint(params, 1, r)) {
    return invalid(what + "bad parameters");
  }
  if (flavor > kYescryptRw + (kYescryptRwFlavorMask >> 2)) {
    return invalid(what + "unknown flavor");
  }
  if (!params.empty()) {
    uint64_t have = 0;
    if (!decodeYescryptUint(params, 1, have)) return invalid(what + "bad parameters");
    if (have & ~uint64_t{3}) return invalid(what + "unsupported parameters (g or ROM)");
    if ((have & 1) && !decodeYescryptUint(params, 2, p)) return invalid(what + "bad parameters");
    if ((have & 2) && !decodeYescryptUint(params, 1, t)) return invalid(what + "bad parameters");
    if (!params.empty()) return invalid(what + "bad parameters");
  }
  if (p > kMaxYescryptParallel || t > kMaxYescryptTime || r >= (uint64_t{1} << 30)) {
    return invalid(what + "parameters out of range");
  }
  // 128 * r * 2^nLog2 bytes, compared without overflow: r <= 2^30 / 128 / 2^nLog2.
  if (nLog2 > 23 || r > ((kMaxYescryptMemory >> 7) >> nLog2)) {
    return invalid(what + "parameters need more than 1 GiB of memory");
  }
  size_t saltBytes = 0;
  if (parts[1].empty() || !decodeYescryptBytes(parts[1], saltBytes) || saltBytes > 64) {
    return invalid(what + "salt is not 1-64 bytes in yescrypt base64");
  }
  size_t digestBytes = 0;
  if (parts[2].size() != 43 || !decodeYescryptBytes(parts[2], digestBytes) || digestBytes != 32) {
    return invalid(what + "digest must be 43 characters encoding 32 bytes");
  }
  return Status::ok();
}

// $2b$NN$ + 22 salt + 31 digest characters of bcrypt's alphabet; the last character of the salt
// and of the digest carry only 2 resp. 4 bits.
Status checkBcrypt(std::string_view hash) {
  const std::string what = "malformed $2b$ (bcrypt) hash: ";
  if (hash.size() != 60) return invalid(what + "must be 60 characters");
  if (!isDigit(hash[4]) || !isDigit(hash[5]) || hash[6] != '$') return invalid(what + "bad cost field");
  int cost = (hash[4] - '0') * 10 + (hash[5] - '0');
  if (cost < 4 || cost > 31) return invalid(what + "cost must be 04-31");
  std::string_view rest = hash.substr(7);
  for (char c : rest) {
    if (kBcryptAlphabet.find(c) == std::string_view::npos) return invalid(what + "bad character in salt or digest");
  }
  if (kBcryptAlphabet.find(rest[21]) % 16 != 0) return invalid(what + "salt is not canonical");
  if (kBcryptAlphabet.find(rest[52]) % 4 != 0) return invalid(what + "digest is not canonical");
  return Status::ok();
}

// The host's libxcrypt has the last word on the method: one it was built without or disabled is
// refused even when its shape is right. A method it deems legacy ($5$, sha256crypt, in 4.4.33) is
// still one the contract accepts (docs/access-document.md): it verifies logins, the document
// says which hash an account has, and refusing it would lock accounts that work today.
// crypt_checksalt() looks at the method (and, in 4.4.33, the characters), not at the structure
// or the cost, so the checks above stay: their messages are precise, and their bounds keep a
// hash from making every login attempt expensive.
Status checkMethod(std::string_view hash, const std::string& method) {
  const std::string setting(hash);
  switch (crypt_checksalt(setting.c_str())) {
    case CRYPT_SALT_OK:
    case CRYPT_SALT_METHOD_LEGACY:
      return Status::ok();
    case CRYPT_SALT_METHOD_DISABLED:
      return invalid(method + " is disabled in this host's libxcrypt");
    case CRYPT_SALT_INVALID:
      return invalid(method + " is not supported by this host's libxcrypt");
    default:
      return invalid(method + " is refused by this host's libxcrypt (crypt_checksalt)");
  }
}

// ---------------------------------------------------------------------------------------------
// RFC 3339
// ---------------------------------------------------------------------------------------------

bool isLeapYear(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

int daysInMonth(int64_t y, int m) {
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return (m == 2 && isLeapYear(y)) ? 29 : kDays[m - 1];
}

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
int64_t daysFromCivil(int64_t y, int64_t m, int64_t d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;
  const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

bool readDigits(std::string_view s, size_t pos, size_t n, int64_t& out) {
  if (pos + n > s.size()) return false;
  int64_t v = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!isDigit(s[pos + i])) return false;
    v = v * 10 + (s[pos + i] - '0');
  }
  out = v;
  return true;
}

}  // namespace

std::string printableForMessage(std::string_view text, size_t maxBytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  const size_t n = std::min(text.size(), maxBytes);
  for (size_t i = 0; i < n; ++i) {
    auto c = static_cast<unsigned char>(text[i]);
    if (isPrintableAscii(c) && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      out += "\\x";
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xf]);
    }
  }
  if (text.size() > maxBytes) out += "...";
  return out;
}

Status checkEntryId(std::string_view id) {
  if (id.empty() || id.size() > 64) return invalid("must be 1-64 characters of [A-Za-z0-9._-]");
  for (char c : id) {
    if (!(isAlpha(c) || isDigit(c) || c == '.' || c == '_' || c == '-')) {
      return invalid("must be 1-64 characters of [A-Za-z0-9._-]");
    }
  }
  return Status::ok();
}

Status checkUsername(std::string_view name) {
  const char* rule = "must match ^[a-z_][a-z0-9_-]{0,31}$";
  if (name.empty() || name.size() > 32) return invalid(rule);
  if (!(isLowerAlpha(name[0]) || name[0] == '_')) return invalid(rule);
  for (char c : name.substr(1)) {
    if (!(isLowerAlpha(c) || isDigit(c) || c == '_' || c == '-')) return invalid(rule);
  }
  return Status::ok();
}

Result<PublicKey> parsePublicKey(std::string_view text) {
  if (text.empty()) return invalid("empty");
  if (text.size() > kMaxPublicKeyBytes) {
    return invalid("longer than " + std::to_string(kMaxPublicKeyBytes) + " bytes");
  }
  for (unsigned char c : text) {
    if (c == 0) return invalid("contains a NUL byte");
    if (c == '\n' || c == '\r') return invalid("contains a newline");
    if (c < 0x20 || c == 0x7f) return invalid("contains a control character");
    if (c >= 0x80) return invalid("contains a non-ASCII character");
  }
  if (text[0] == ' ') return invalid("starts with white space");
  const size_t typeEnd = text.find(' ');
  const std::string_view typeName = text.substr(0, typeEnd);
  const KeyType* type = findKeyType(typeName);
  if (!type) {
    if (looksLikeOptions(text)) return invalid("authorized_keys options are not allowed");
    return invalid(
        "unknown key type (supported: ssh-ed25519, ecdsa-sha2-nistp256/384/521, "
        "sk-ssh-ed25519@openssh.com, sk-ecdsa-sha2-nistp256@openssh.com, ssh-rsa)");
  }
  if (typeEnd == std::string_view::npos) return invalid("missing key data after the type");
  const std::string_view afterType = text.substr(typeEnd + 1);
  const size_t b64End = afterType.find(' ');
  const std::string_view b64 = afterType.substr(0, b64End);
  if (b64.empty()) return invalid("expected exactly one space between the type and the key data");
  std::string_view comment;
  if (b64End != std::string_view::npos) comment = afterType.substr(b64End + 1);
  if (comment.size() > kMaxKeyCommentBytes) {
    return invalid("comment longer than " + std::to_string(kMaxKeyCommentBytes) + " bytes");
  }
  std::string blob;
  if (Status s = decodeBase64(b64, blob); !s) return s;
  if (Status s = checkKeyBlob(*type, blob); !s) return s;
  return PublicKey{std::string(type->name), std::string(b64), std::string(comment)};
}

Status checkCryptHash(std::string_view hash) {
  if (hash.size() > 512) return invalid(kUnsupportedHash);
  for (unsigned char c : hash) {
    if (!isPrintableAscii(c)) return invalid(kUnsupportedHash);
  }
  Status shape = invalid(kUnsupportedHash);
  std::string method;
  if (hash.substr(0, 3) == "$y$") {
    shape = checkYescrypt(hash);
    method = "$y$ (yescrypt)";
  } else if (hash.substr(0, 3) == "$6$") {
    shape = checkShaCrypt(hash, true);
    method = "$6$ (sha512crypt)";
  } else if (hash.substr(0, 3) == "$5$") {
    shape = checkShaCrypt(hash, false);  // well-formed, then refused as legacy
    method = "$5$ (sha256crypt)";
  } else if (hash.substr(0, 4) == "$2b$") {
    shape = checkBcrypt(hash);
    method = "$2b$ (bcrypt)";
  }
  if (!shape) return shape;
  return checkMethod(hash, method);
}

Status checkSudoProgram(std::string_view path) {
  const char* rule = "must be an absolute path of [A-Za-z0-9._+-] components";
  if (path.empty() || path[0] != '/') return invalid(std::string("not absolute: ") + rule);
  if (path.size() > kMaxSudoProgramBytes) {
    return invalid("longer than " + std::to_string(kMaxSudoProgramBytes) + " bytes");
  }
  if (path.back() == '/') return invalid("ends with '/' (a directory)");
  size_t start = 1;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    const std::string_view part = path.substr(start, end - start);
    if (part.empty()) return invalid("empty path component ('//')");
    if (part == "." || part == "..") return invalid("'.' or '..' component");
    for (char c : part) {
      if (!(isAlpha(c) || isDigit(c) || c == '.' || c == '_' || c == '-' || c == '+')) return invalid(rule);
    }
    start = end + 1;
  }
  return Status::ok();
}

Status checkSudoArgument(std::string_view arg) {
  if (arg.empty()) return invalid("empty (sudoers cannot express an empty argument)");
  if (arg.size() > kMaxSudoArgumentBytes) {
    return invalid("longer than " + std::to_string(kMaxSudoArgumentBytes) + " bytes");
  }
  for (char c : arg) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (u == ' ' || u == '\t') {
      return invalid("contains white space (sudoers would also match it split into several arguments)");
    }
    if (u < 0x21 || u > 0x7e) return invalid("contains a byte that is not printable ASCII");
    if (c == '"') return invalid("contains '\"' (cannot be escaped in sudoers)");
  }
  return Status::ok();
}

Result<SftpAccess> parseSftpAccess(std::string_view text) {
  if (text == "read-write") return SftpAccess::kReadWrite;
  if (text == "read-only") return SftpAccess::kReadOnly;
  if (text == "upload-only") return SftpAccess::kUploadOnly;
  return invalid("must be read-write, read-only or upload-only, got '" + printableForMessage(text, 32) + "'");
}

Result<std::string> parseFolder(std::string_view folder) {
  if (folder.empty()) return invalid("empty (use \".\" for the transfer root)");
  if (folder.size() > kMaxFolderBytes) {
    return invalid("longer than " + std::to_string(kMaxFolderBytes) + " bytes");
  }
  if (folder == ".") return std::string(".");
  for (unsigned char c : folder) {
    if (c < 0x20 || c == 0x7f) return invalid("contains a control character");
    if (c >= 0x80) return invalid("contains a non-ASCII character");
    if (c == '\\') return invalid("contains a backslash");
  }
  if (folder[0] == '/') return invalid("must be relative (no leading '/')");
  if (folder.back() == '/') return invalid("trailing '/' is not allowed");
  size_t pos = 0;
  while (pos <= folder.size()) {
    size_t end = folder.find('/', pos);
    if (end == std::string_view::npos) end = folder.size();
    std::string_view comp = folder.substr(pos, end - pos);
    if (comp.empty()) return invalid("empty path component ('//') is not allowed");
    if (comp == "..") return invalid("'..' is not allowed");
    if (comp == ".") return invalid("'.' is only allowed as the whole folder");
    if (comp.size() > 255) return invalid("a path component is longer than 255 bytes");
    pos = end + 1;
  }
  return std::string(folder);
}

Result<Cidr> parseCidr(std::string_view text) {
  const std::string shown = "'" + printableForMessage(text) + "'";
  if (text.empty()) return invalid("not a CIDR: empty");
  if (text.size() > 64) return invalid("not a CIDR: too long");
  const size_t slash = text.find('/');
  if (slash == std::string_view::npos) return invalid("not a CIDR: " + shown + " has no /prefix");
  const std::string_view addr = text.substr(0, slash);
  const std::string_view prefix = text.substr(slash + 1);
  if (prefix.empty() || prefix.size() > 3 || (prefix.size() > 1 && prefix[0] == '0')) {
    return invalid("not a CIDR: " + shown + " has a bad prefix length");
  }
  int bits = 0;
  for (char c : prefix) {
    if (!isDigit(c)) return invalid("not a CIDR: " + shown + " has a bad prefix length");
    bits = bits * 10 + (c - '0');
  }
  const bool v6 = addr.find(':') != std::string_view::npos;
  for (char c : addr) {
    const bool ok = isDigit(c) || c == '.' || (v6 && (c == ':' || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')));
    if (!ok) return invalid("not a CIDR: " + shown + " has an unexpected character in the address");
  }
  unsigned char buf[16] = {};
  const std::string addrText(addr);
  if (inet_pton(v6 ? AF_INET6 : AF_INET, addrText.c_str(), buf) != 1) {
    return invalid("not a CIDR: " + shown + " is not a valid " + (v6 ? "IPv6" : "IPv4") + " address");
  }
  if (!v6) {
    // inet_pton already refuses them on glibc; checked here so that no libc can read "010" as octal.
    for (size_t i = 0; i < addr.size(); ++i) {
      if (addr[i] == '0' && (i == 0 || addr[i - 1] == '.') && i + 1 < addr.size() && isDigit(addr[i + 1])) {
        return invalid("not a CIDR: " + shown + " has a leading zero in the address");
      }
    }
  }
  const int maxBits = v6 ? 128 : 32;
  if (bits > maxBits) {
    return invalid("not a CIDR: " + shown + " prefix length must be 0-" + std::to_string(maxBits));
  }
  const size_t bytes = v6 ? 16 : 4;
  unsigned char net[16] = {};
  for (size_t i = 0; i < bytes; ++i) {
    const int keep = std::max(0, std::min(8, bits - static_cast<int>(i) * 8));
    const auto mask = static_cast<unsigned char>(keep == 0 ? 0 : (0xff << (8 - keep)) & 0xff);
    net[i] = buf[i] & mask;
  }
  char out[INET6_ADDRSTRLEN] = {};
  if (!inet_ntop(v6 ? AF_INET6 : AF_INET, net, out, sizeof(out))) {
    return Status::error(ErrorCode::kInternal, "inet_ntop failed");
  }
  const std::string canonical = std::string(out) + "/" + std::to_string(bits);
  if (std::memcmp(buf, net, bytes) != 0) {
    return invalid("not a CIDR: " + shown + " has host bits set (did you mean " + canonical + "?)");
  }
  if (v6 && bits >= 96) {
    static constexpr unsigned char kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (std::memcmp(net, kMapped, sizeof(kMapped)) == 0) {
      return invalid("not a CIDR: " + shown + " is an IPv4-mapped IPv6 network; use the IPv4 form");
    }
  }
  return Cidr{canonical};
}

Result<int64_t> parseRfc3339(std::string_view text) {
  const std::string rule = "not an RFC 3339 UTC time (YYYY-MM-DDTHH:MM:SS[.frac]Z)";
  int64_t year = 0;
  int64_t month = 0;
  int64_t day = 0;
  int64_t hour = 0;
  int64_t minute = 0;
  int64_t second = 0;
  if (text.size() < 20 || text.size() > 35) return invalid(rule);
  if (!readDigits(text, 0, 4, year) || text[4] != '-' || !readDigits(text, 5, 2, month) || text[7] != '-' ||
      !readDigits(text, 8, 2, day) || text[10] != 'T' || !readDigits(text, 11, 2, hour) || text[13] != ':' ||
      !readDigits(text, 14, 2, minute) || text[16] != ':' || !readDigits(text, 17, 2, second)) {
    return invalid(rule);
  }
  size_t pos = 19;
  if (text[pos] == '.') {
    size_t digits = 0;
    ++pos;
    while (pos < text.size() && isDigit(text[pos])) {
      ++pos;
      ++digits;
    }
    if (digits < 1 || digits > 9) return invalid(rule + ": fraction must have 1-9 digits");
  }
  const std::string_view zone = text.substr(pos);
  if (zone != "Z" && zone != "+00:00") {
    return invalid("not a UTC time: the offset must be Z or +00:00");
  }
  if (month < 1 || month > 12) return invalid("month out of range");
  if (day < 1 || day > daysInMonth(year, static_cast<int>(month))) return invalid("day out of range for the month");
  if (hour > 23) return invalid("hour out of range");
  if (minute > 59) return invalid("minute out of range");
  if (second > 59) return invalid("second out of range (leap seconds are not accepted)");
  return daysFromCivil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second;
}

}  // namespace pim
