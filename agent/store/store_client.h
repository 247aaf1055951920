#pragma once
// The store client: fetches the access document from the central store (http:// or https://) or
// from a local file (file://), following the "Transport" section of access-document.md. It only
// transports bytes: parsing and validation of the document happen elsewhere.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/config/config.h"
#include "providers/core/log.h"
#include "providers/core/result.h"

namespace pim {

class TransferDriver;

/// What one successful fetch brought.
struct FetchOutcome {
  enum class Kind { kDocument, kUnchanged };
  Kind kind = Kind::kUnchanged;
  std::string body;    // the exact bytes of the document, when kDocument
  std::string etag;    // the ETag to send next time (file://: "sha256:<hex>" of the content)
  int httpStatus = 0;  // 200 or 304 (0 for file://)
};

/// Time limits of the HTTP transport (tests shorten them), and what tests replace.
struct StoreClientOptions {
  /// The connection: name look-up, TCP connect (every address of the name, IPv6 and IPv4 raced
  /// as "happy eyeballs"), the proxy's tunnel and the TLS handshake.
  std::chrono::milliseconds connectTimeout{10000};
  /// The whole exchange must be over within connectTimeout + readTimeout + the long-poll wait.
  std::chrono::milliseconds readTimeout{30000};
  /// http(s): a connection kept between fetches is not reused after this long idle (a middlebox
  /// may have dropped it without a word).
  std::chrono::milliseconds maxIdle{90000};
  /// Where the proxy variables (HTTPS_PROXY, NO_PROXY...) are read; empty: the process's
  /// environment. Tests give their own.
  std::function<std::optional<std::string>(const std::string& name)> environment;
  /// Tests only: name resolutions that bypass the resolver, as libcurl's CURLOPT_RESOLVE
  /// ("HOST:PORT:ADDRESS[,ADDRESS...]", addresses tried in that order).
  std::vector<std::string> resolve;
  /// http(s) and etcd: what runs the transfers (agent/store/transfer_driver.h); shared by the
  /// clients made with these options and kept alive by them. Null: each client polls a multi
  /// handle of its own in the fetching thread (PollingTransferDriver). The daemon gives its
  /// libuv-driven one (agent/daemon/curl_uv.h).
  std::shared_ptr<TransferDriver> driver;
};

class StoreClient {
 public:
  virtual ~StoreClient() = default;

  /// One GET of the document. `etag`: the last ETag seen ("" for none), sent as If-None-Match;
  /// when it matches, the outcome is kUnchanged. `waitSeconds` > 0: long poll (adds wait=N to the
  /// query, read time-out extended by as much); file:// ignores it. Blocking; not reentrant (one
  /// fetch at a time per client); no effect on the host.
  /// Errors: kUnreachable — name look-up, connect, proxy, TLS (the message mentions the
  /// certificate), time-out, reset, truncated body, a malformed answer (two different
  /// Content-Length fields included), HTTP 3xx (redirects are not followed), 401/403/404/5xx or
  /// any status other than 200/304, token file missing or unreadable, file:// source missing or
  /// not a regular file, cancelled; the message names the status or cause and the source (and the
  /// proxy) without credentials.
  /// kRejected — body over max_document_bytes (detected while reading: at most the limit + 1 byte
  /// is ever buffered), or, when a signing key is configured, a missing, malformed or wrong
  /// signature.
  virtual Result<FetchOutcome> fetch(const std::string& etag, int64_t waitSeconds) = 0;

  /// What the store asked with the Retry-After field of the last fetch's answer, when that answer
  /// was 429 or 503 (seconds from now; an HTTP date is converted, a past one is 0); nullopt for
  /// any other outcome or a malformed value. Not capped here. Call from the fetching thread.
  virtual std::optional<std::chrono::seconds> retryAfter() const { return std::nullopt; }

  /// 404 or 410 when the last fetch's answer was that status: the store does not know this
  /// instance (yet), which is not an outage (docs/agent.md, "Answers"); 0 for any other outcome.
  /// Call from the fetching thread.
  virtual int notRegistered() const { return 0; }

  /// Aborts the fetch in progress, if any, promptly (within ~100 ms, whatever its phase, a name
  /// look-up that hangs included), and makes every later fetch fail at once with kUnreachable
  /// "cancelled".
  /// Permanent (for shutdown); thread-safe: may be called from any thread, also a signal watcher.
  virtual void cancel() = 0;

  /// The source for logs and messages: the URL without user info or query, or file://PATH.
  virtual std::string describe() const = 0;
};

/// Picks the client from settings.source: file://PATH or http(s)://. `root` is the --root prefix
/// applied to token_file, ca_file and signing_key (NOT to the source, nor to a file:// path).
/// Reads the signing key and the CA file now, and decides the proxy (settings.proxy or the
/// environment: agent/store/store_proxy.h); the token file is read at each request.
/// Errors: kInvalid for an empty source, an unsupported scheme, a malformed URL (credentials in the
/// URL included: use token_file), an unreadable or invalid signing key or CA file, a proxy
/// environment variable holding no valid proxy URL.
Result<std::unique_ptr<StoreClient>> makeStoreClient(const StoreSettings& settings, const std::string& root, Logger log,
                                                     const StoreClientOptions& options = {});

}  // namespace pim
