#include "agent/store/signature.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <stdexcept>

namespace pim {
namespace {

constexpr size_t kEd25519SignatureBytes = 64;
constexpr std::streamsize kMaxPemBytes = 64 * 1024;
constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int base64Value(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

std::string trimWhitespace(const std::string& s) {
  const char* ws = " \t\r\n";
  auto b = s.find_first_not_of(ws);
  if (b == std::string::npos) return {};
  auto e = s.find_last_not_of(ws);
  return s.substr(b, e - b + 1);
}

struct BioDeleter {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct MdCtxDeleter {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};

}  // namespace

std::optional<std::string> decodeBase64(const std::string& text) {
  size_t len = text.size();
  size_t pad = 0;
  while (pad < 2 && len > pad && text[len - 1 - pad] == '=') ++pad;
  if (pad > 0 && len % 4 != 0) return std::nullopt;
  size_t dataLen = len - pad;
  if (dataLen % 4 == 1) return std::nullopt;
  std::string out;
  out.reserve(dataLen * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < dataLen; ++i) {
    int v = base64Value(static_cast<unsigned char>(text[i]));
    if (v < 0) return std::nullopt;  // also catches a third '=' or '=' in the middle
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  // Leftover bits must be zero, otherwise two different texts would decode to the same bytes.
  if (bits > 0 && (acc & ((1u << bits) - 1)) != 0) return std::nullopt;
  return out;
}

std::string encodeBase64(const std::string& bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    uint32_t n = (static_cast<unsigned char>(bytes[i]) << 16) | (static_cast<unsigned char>(bytes[i + 1]) << 8) |
                 static_cast<unsigned char>(bytes[i + 2]);
    out.push_back(kAlphabet[(n >> 18) & 63]);
    out.push_back(kAlphabet[(n >> 12) & 63]);
    out.push_back(kAlphabet[(n >> 6) & 63]);
    out.push_back(kAlphabet[n & 63]);
  }
  size_t rest = bytes.size() - i;
  if (rest > 0) {
    uint32_t n = static_cast<uint32_t>(static_cast<unsigned char>(bytes[i])) << 16;
    if (rest == 2) n |= static_cast<uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8;
    out.push_back(kAlphabet[(n >> 18) & 63]);
    out.push_back(kAlphabet[(n >> 12) & 63]);
    out.push_back(rest == 2 ? kAlphabet[(n >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

std::string sha256Hex(const std::string& bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digestLen = 0;
  if (EVP_Digest(bytes.data(), bytes.size(), digest, &digestLen, EVP_sha256(), nullptr) != 1) {
    // Only fails on allocation failure inside OpenSSL: a programming/start-up level error.
    throw std::runtime_error("sha256: EVP_Digest failed");
  }
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(digestLen * 2);
  for (unsigned int i = 0; i < digestLen; ++i) {
    out.push_back(kHex[digest[i] >> 4]);
    out.push_back(kHex[digest[i] & 15]);
  }
  return out;
}

struct SignatureVerifier::Key {
  EVP_PKEY* pkey = nullptr;
  ~Key() { EVP_PKEY_free(pkey); }
};

SignatureVerifier::SignatureVerifier(std::unique_ptr<Key> key) : key_(std::move(key)) {}
SignatureVerifier::~SignatureVerifier() = default;

Result<std::shared_ptr<const SignatureVerifier>> SignatureVerifier::fromPem(const std::string& pem,
                                                                            const std::string& origin) {
  std::unique_ptr<BIO, BioDeleter> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return Status::error(ErrorCode::kInternal, "load signing key " + origin + ": out of memory", origin);
  auto key = std::make_unique<Key>();
  key->pkey = PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr);
  if (key->pkey == nullptr) {
    // Leave no stale entries in this thread's OpenSSL error queue: libcurl reads it for TLS errors.
    ERR_clear_error();
    return Status::error(ErrorCode::kInvalid,
                         "load signing key " + origin + ": not a PEM public key (-----BEGIN PUBLIC KEY-----)", origin);
  }
  if (EVP_PKEY_id(key->pkey) != EVP_PKEY_ED25519) {
    return Status::error(ErrorCode::kInvalid, "load signing key " + origin + ": not an Ed25519 key", origin);
  }
  return std::shared_ptr<const SignatureVerifier>(new SignatureVerifier(std::move(key)));
}

Result<std::shared_ptr<const SignatureVerifier>> SignatureVerifier::fromPemFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return Status::error(ErrorCode::kInvalid, "load signing key " + path + ": " + std::strerror(errno), path);
  }
  std::string text(static_cast<size_t>(kMaxPemBytes) + 1, '\0');
  in.read(&text[0], kMaxPemBytes + 1);
  if (in.bad()) return Status::error(ErrorCode::kInvalid, "load signing key " + path + ": read error", path);
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > static_cast<size_t>(kMaxPemBytes)) {
    return Status::error(ErrorCode::kInvalid, "load signing key " + path + ": file larger than 64 KiB", path);
  }
  return fromPem(text, path);
}

Status SignatureVerifier::verify(const std::string& body, const std::string& base64Signature,
                                 const std::string& what) const {
  std::string text = trimWhitespace(base64Signature);
  if (text.empty()) return Status::error(ErrorCode::kRejected, what + ": missing signature");
  auto sig = decodeBase64(text);
  if (!sig) return Status::error(ErrorCode::kRejected, what + ": signature is not valid base64");
  if (sig->size() != kEd25519SignatureBytes) {
    return Status::error(ErrorCode::kRejected,
                         what + ": signature is " + std::to_string(sig->size()) + " bytes, an Ed25519 signature is 64");
  }
  std::unique_ptr<EVP_MD_CTX, MdCtxDeleter> ctx(EVP_MD_CTX_new());
  if (!ctx) return Status::error(ErrorCode::kInternal, what + ": out of memory");
  // Ed25519 hashes internally: no digest (NULL md) and one-shot EVP_DigestVerify.
  if (EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, key_->pkey) != 1) {
    return Status::error(ErrorCode::kInternal, what + ": EVP_DigestVerifyInit failed");
  }
  int rc = EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(sig->data()), sig->size(),
                            reinterpret_cast<const unsigned char*>(body.data()), body.size());
  if (rc != 1) ERR_clear_error();
  if (rc != 1) return Status::error(ErrorCode::kRejected, what + ": signature does not match the document");
  return Status::ok();
}

}  // namespace pim
