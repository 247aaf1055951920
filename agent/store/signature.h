#pragma once
// Crypto helpers for the store transport: the Ed25519 check of a document's signature (the
// store's public key in PEM, the signature in base64: providers/core/base64.h) and SHA-256
// content hashes.
// OpenSSL EVP underneath; no global state.

#include <memory>
#include <optional>
#include <string>

#include "providers/core/base64.h"  // decodeBase64, encodeBase64
#include "providers/core/result.h"

namespace pim {

/// Lower-case hex SHA-256 of the bytes (64 characters).
std::string sha256Hex(const std::string& bytes);

/// An Ed25519 public key that checks document signatures. Immutable after construction, so one
/// instance may be shared between threads.
class SignatureVerifier {
 public:
  ~SignatureVerifier();
  SignatureVerifier(const SignatureVerifier&) = delete;
  SignatureVerifier& operator=(const SignatureVerifier&) = delete;

  /// Loads the key from PEM text ("-----BEGIN PUBLIC KEY-----", SubjectPublicKeyInfo).
  /// Errors: kInvalid when the text is not a PEM public key or the key is not Ed25519; `origin`
  /// (a path) names the source in the message.
  static Result<std::shared_ptr<const SignatureVerifier>> fromPem(const std::string& pem, const std::string& origin);
  /// Reads the file (at most 64 KiB) and loads the key from it. Errors: kInvalid naming the path
  /// when the file is missing, unreadable, too big, or does not hold an Ed25519 public key.
  static Result<std::shared_ptr<const SignatureVerifier>> fromPemFile(const std::string& path);

  /// Checks `base64Signature` (surrounding whitespace ignored) against the exact bytes of `body`.
  /// No side effects. Errors: kRejected when the signature is empty, not base64, not 64 bytes, or
  /// does not match; `what` names the document in the message ("signature of https://x/y").
  Status verify(const std::string& body, const std::string& base64Signature, const std::string& what) const;

 private:
  struct Key;
  explicit SignatureVerifier(std::unique_ptr<Key> key);
  std::unique_ptr<Key> key_;
};

}  // namespace pim
