#include "agent/store/signature.h"
#include "providers/core/text_fields.h"

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

struct BioDeleter {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct MdCtxDeleter {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};

}  // namespace

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
  std::string text = trimmed(base64Signature);
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
