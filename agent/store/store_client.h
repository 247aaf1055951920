#pragma once
// The store client: fetches the access document from the central store (http:// or https://) or
// from a local file (file://), following the "Transport" section of access-document.md. It only
// transports bytes: parsing and validation of the document happen elsewhere.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "agent/config/config.h"
#include "providers/core/log.h"
#include "providers/core/result.h"

namespace pim {

/// What one successful fetch brought.
struct FetchOutcome {
  enum class Kind { kDocument, kUnchanged };
  Kind kind = Kind::kUnchanged;
  std::string body;    // the exact bytes of the document, when kDocument
  std::string etag;    // the ETag to send next time (file://: "sha256:<hex>" of the content)
  int httpStatus = 0;  // 200 or 304 (0 for file://)
};

/// Time limits of the HTTP transport (tests shorten them).
struct StoreClientOptions {
  /// TCP connect (per attempt, DNS resolution excluded).
  std::chrono::milliseconds connectTimeout{10000};
  /// Whole exchange after the connection is up: TLS handshake, request, headers and body must
  /// complete within readTimeout + the long-poll wait, and no single read may stall longer.
  std::chrono::milliseconds readTimeout{30000};
  /// http(s): a connection kept between fetches is not reused after this long idle (a middlebox
  /// may have dropped it without a word).
  std::chrono::milliseconds maxIdle{90000};
};

class StoreClient {
 public:
  virtual ~StoreClient() = default;

  /// One GET of the document. `etag`: the last ETag seen ("" for none), sent as If-None-Match;
  /// when it matches, the outcome is kUnchanged. `waitSeconds` > 0: long poll (adds wait=N to the
  /// query, read time-out extended by as much); file:// ignores it. Blocking; not reentrant (one
  /// fetch at a time per client); no effect on the host.
  /// Errors: kUnreachable — connect, TLS (the message mentions the certificate), time-out, reset,
  /// truncated body, HTTP 3xx (redirects are not followed), 401/403/404/5xx or any status other
  /// than 200/304, token file missing or unreadable, file:// source missing or not a regular file,
  /// cancelled; the message names the status or cause and the source without credentials.
  /// kRejected — body over max_document_bytes (detected while reading: at most the limit + 1 byte
  /// is ever buffered), or, when a signing key is configured, a missing, malformed or wrong
  /// signature.
  virtual Result<FetchOutcome> fetch(const std::string& etag, int64_t waitSeconds) = 0;

  /// Aborts the fetch in progress, if any, promptly (within ~100 ms, whatever its phase except a
  /// DNS look-up), and makes every later fetch fail at once with kUnreachable "cancelled".
  /// Permanent (for shutdown); thread-safe: may be called from any thread, also a signal watcher.
  virtual void cancel() = 0;

  /// The source for logs and messages: the URL without user info or query, or file://PATH.
  virtual std::string describe() const = 0;
};

/// Picks the client from settings.source: file://PATH or http(s)://. `root` is the --root prefix
/// applied to token_file, ca_file and signing_key (NOT to the source, nor to a file:// path).
/// Reads the signing key and the CA file now; the token file is read at each request.
/// Errors: kInvalid for an empty source, an unsupported scheme, a malformed URL (credentials in the
/// URL included: use token_file), an unreadable or invalid signing key or CA file.
Result<std::unique_ptr<StoreClient>> makeStoreClient(const StoreSettings& settings, const std::string& root, Logger log,
                                                     const StoreClientOptions& options = {});

}  // namespace pim
