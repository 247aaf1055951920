#pragma once
// The file:// source: the document on local disk (not under --root), re-read at each fetch; its
// ETag is "sha256:<hex>" of the content; when signing is configured the base64 signature is in
// PATH.sig.

#include <atomic>
#include <memory>
#include <string>

#include "agent/store/signature.h"
#include "agent/store/store_client.h"

namespace pim {

/// Reads a whole regular file (symbolic links followed), never reading more than maxBytes + 1
/// bytes. Errors (messages name the path and the cause): kNotFound (does not exist), kUnsafe (not a
/// regular file: FIFO, device, directory...), kIo (open/read failed), kRejected (larger than
/// maxBytes).
Result<std::string> readRegularFile(const std::string& path, int64_t maxBytes);

class FileStoreClient : public StoreClient {
 public:
  /// path: absolute path of the document; verifier: null when signing is not configured;
  /// maxBytes: the document size limit (max_document_bytes).
  FileStoreClient(std::string path, std::shared_ptr<const SignatureVerifier> verifier, int64_t maxBytes, Logger log);

  /// Parses "file:///abs/path" (also "file://localhost/abs/path") into the absolute path.
  /// Errors: kInvalid for another host, a relative or empty path, a query or fragment,
  /// percent-escapes or control characters.
  static Result<std::string> parseFileUrl(const std::string& url);

  /// Reads the file (refusing a non-regular file, never reading more than maxBytes + 1 bytes) and,
  /// when a key is configured, checks PATH.sig. kUnchanged when the content hash equals `etag`
  /// (the signature is then not re-checked). `waitSeconds` is ignored.
  /// Errors: kUnreachable (missing, unreadable or non-regular file, cancelled), kRejected (over the
  /// size limit, missing/bad PATH.sig when a key is configured).
  Result<FetchOutcome> fetch(const std::string& etag, int64_t waitSeconds) override;
  /// Makes every later fetch fail with kUnreachable "cancelled" (a read in progress is short).
  void cancel() override;
  /// "file://PATH".
  std::string describe() const override;
  /// The document's path (e.g. for an inotify watch on its directory).
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::shared_ptr<const SignatureVerifier> verifier_;
  int64_t maxBytes_;
  Logger log_;
  std::atomic<bool> cancelled_{false};
};

}  // namespace pim
