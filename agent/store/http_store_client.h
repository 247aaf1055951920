#pragma once
// The http:// and https:// source on libcurl (Debian 12: 7.88 with OpenSSL and the threaded
// resolver): one GET per fetch with a bearer token read at each request, ETag/If-None-Match, long
// polling, a size limit enforced while reading, time limits, optional Ed25519 signatures, the
// proxy of agent/store/store_proxy.h, and HTTP/1.1 only (the rules below are HTTP/1.1's).
//
// One easy handle per client; its transfers are run by a TransferDriver
// (agent/store/transfer_driver.h): by default a multi handle of the client's own, polled in the
// calling thread (curl_multi_perform / curl_multi_poll); in the daemon, the multi handle the
// daemon's libuv loop drives (agent/daemon/curl_uv.h), shared by its clients, while the fetching
// thread waits. Either way fetch() blocks its caller until the transfer ends; cancel() sets a flag
// and wakes the driver from any thread, and the transfer is removed. Name look-ups run on
// libcurl's resolver thread and a cancelled one is abandoned to it (CURLOPT_QUICK_EXIT), so a
// look-up that hangs delays neither cancel() nor the client's destruction.
//
// Connections are kept between fetches in the driver's connection cache (one connection at
// most): libcurl keeps a connection after an answer it read to its end when the store did not say
// "Connection: close", and closes it after an error, an aborted transfer (an error status, whose
// body is not read, a refused or oversized answer) or an answer with bytes beyond its
// Content-Length. Before each fetch the client itself refuses the kept connection when it has
// been idle longer than options.maxIdle (libcurl's CURLOPT_MAXAGE_CONN counts whole seconds) or
// when anything is readable on it (the store closed it, or sent bytes nobody asked for): its own
// driver drops it; with a shared driver the fetch asks for a new connection
// (CURLOPT_FRESH_CONNECT) and libcurl closes the refused one when it keeps the new; a GET
// that meets a reused connection closed before any byte of the answer is sent again once on a
// new connection (libcurl's retry of a request on a dead reused connection).
//
// TLS: libcurl's OpenSSL with the system CAs (its default bundle) plus the certificates of
// ca_file, added to the verification store by CURLOPT_SSL_CTX_FUNCTION (CURLOPT_CAINFO would
// replace the system bundle); TLS >= 1.2, peer and host name (or IP address) verified, SNI.
// Sockets are opened close-on-exec (libcurl 7.88 does not do it), the drivers' multi handles'
// included.

#include <curl/curl.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/store/signature.h"
#include "agent/store/store_client.h"
#include "agent/store/store_proxy.h"
#include "agent/store/transfer_driver.h"

namespace pim {

/// The delay a Retry-After value asks for: delta-seconds ("120") or an HTTP date (IMF-fixdate,
/// RFC 850 or asctime; compared with `now`, Unix seconds; a date in the past is 0 s). nullopt
/// when malformed. Values beyond 30 days are clamped to 30 days (callers cap further).
std::optional<std::chrono::seconds> parseRetryAfter(const std::string& value, int64_t now);

class HttpStoreClient : public StoreClient {
 public:
  struct Params {
    std::string url;                                    // http(s)://host[:port]/path[?query]
    std::string tokenPath;                              // full path (root applied); "" = no Authorization header
    std::string caPath;                                 // full path (root applied); "" = system CAs only
    std::shared_ptr<const SignatureVerifier> verifier;  // null = signatures ignored
    int64_t maxBytes = 4194304;
    StoreProxy proxy;  // direct when empty
    StoreClientOptions options;
    std::string urlKey = "store.source";  // the config key that messages about the URL name
    std::string clientCertPath;           // full path; TLS client certificate (PEM), with clientKeyPath
    std::string clientKeyPath;            // full path; its private key (PEM, unencrypted)
  };

  /// One request other than the document GET, for transports built on this one (etcd's JSON
  /// gateway): a POST of `body` to `path` on the same origin, through the same connection cache,
  /// proxy, TLS, limits and cancellation. The answer must be 200 (anything else fails as fetch()
  /// fails); its body is held up to maxBytes (over it: kRejected).
  struct Exchange {
    std::string path;                  // "/v3/kv/range": replaces the path of the source URL
    std::string body;                  // sent as application/json
    std::vector<std::string> headers;  // extra header lines (secrets allowed: never logged)
    /// Called after each piece of the body with everything received so far; returning true ends
    /// the transfer there with success (a stream read far enough). Empty: read to the end.
    std::function<bool(const std::string& soFar)> enough;
    /// > 0: the whole exchange may last connectTimeout + this (instead of + readTimeout), and
    /// running out of it after a 200 header is not an error: `timedOut` is set.
    std::chrono::milliseconds hold{0};
  };
  struct Reply {
    std::string body;
    bool timedOut = false;  // the hold ran out (the body holds what came before)
  };
  /// Sends one exchange. Errors: as fetch(), "cancelled" included; the status of the answer is
  /// lastStatus() (0 when none came).
  Result<Reply> exchange(const Exchange& x);
  /// The HTTP status of the last fetch or exchange (0: no answer).
  int lastStatus() const { return lastStatus_; }

  /// Checks the URL, loads ca_file and prepares libcurl. Errors: kInvalid for a malformed URL, a
  /// scheme other than http/https, a missing host, credentials in the URL, a fragment, or an
  /// unreadable CA file or one holding no PEM certificate (message names the path); kInternal
  /// when libcurl cannot be set up.
  static Result<std::unique_ptr<HttpStoreClient>> create(Params params, Logger log);

  ~HttpStoreClient() override;
  HttpStoreClient(const HttpStoreClient&) = delete;
  HttpStoreClient& operator=(const HttpStoreClient&) = delete;

  /// See StoreClient::fetch. Sends one GET on the kept connection or on a new one.
  Result<FetchOutcome> fetch(const std::string& etag, int64_t waitSeconds) override;
  /// See StoreClient::retryAfter.
  std::optional<std::chrono::seconds> retryAfter() const override { return retryAfter_; }
  /// See StoreClient::notRegistered.
  int notRegistered() const override { return notRegistered_; }
  /// One POST of `body` (Content-Type: application/json) to the client's URL, for the reports of
  /// docs/agent.md ("Reports"), with the fetch's token (read now), TLS, proxy and time limits
  /// (connect + read time-out); `headers` ("Name: value") are added. Any 2xx is a success (the
  /// answer's body is read and dropped). Errors: kUnreachable as for fetch(), every other status
  /// included (retryAfter() then holds a 429/503's Retry-After). Not reentrant with fetch().
  Status post(const std::string& body, const std::vector<std::string>& headers);
  /// See StoreClient::cancel: wakes the fetch in progress, which then drops its transfer; permanent.
  void cancel() override;
  /// scheme://host[:port]/path, without user info or query.
  std::string describe() const override;

  /// Whether this libcurl resolves names on a thread of its own (AsynchDNS). Without it a name
  /// look-up blocks fetch() and cancel() waits for it; the client warns at creation.
  static bool asynchronousDns();

 private:
  struct Answer;
  struct CurlHandles;
  HttpStoreClient(Params params, std::string url, std::string shown, std::string peer, Logger log);
  Result<std::string> readToken() const;
  // The token of a request: empty without a token file, else readToken().
  Result<std::string> bearerToken() const;
  // Runs the transfer prepared on the easy handle to its end, or until cancel(); returns libcurl's
  // result (CURLE_ABORTED_BY_CALLBACK when cancelled).
  CURLcode transfer();
  // Whether the connection kept by the last fetch must not carry the next one.
  bool keptConnectionStale() const;
  Status failure(CURLcode code, const Answer& answer, const std::string& where) const;
  // Drops the kept connection when keptConnectionStale() (or has the next transfer open a new one).
  void refreshConnection(const std::string& where);
  // Sets the request on the easy handle and runs it (transfer()).
  CURLcode perform(const std::string& url, Answer& answer, std::chrono::milliseconds budget, const std::string& token);

  Params params_;
  std::string url_;     // the URL as libcurl normalised it, query included
  std::string shown_;   // describe()
  std::string peer_;    // host:port, for messages
  std::string origin_;  // scheme://host:port, for exchange()
  bool hasQuery_ = false;
  Logger log_;
  std::shared_ptr<TransferDriver> driver_;  // outlives curl_ (the easy handle is cleaned up first)
  std::unique_ptr<CurlHandles> curl_;
  std::atomic<bool> cancelled_{false};
  // Only fetch() touches these.
  int keptFd_ = -1;  // the socket of the connection libcurl kept after the last fetch, -1: none
  std::chrono::steady_clock::time_point keptSince_{};
  std::optional<std::chrono::seconds> retryAfter_;
  int notRegistered_ = 0;
  int lastStatus_ = 0;
};

/// The client of the reports (docs/agent.md, "Reports"): settings.reportUrl with the source's
/// token file, CA file, proxy rules and time limits (`root` as for makeStoreClient). Errors:
/// kInvalid when report_url is empty or malformed (messages name store.report_url), or as
/// makeStoreClient's for the CA file and the proxy.
Result<std::unique_ptr<HttpStoreClient>> makeReportClient(const StoreSettings& settings, const std::string& root,
                                                          Logger log, const StoreClientOptions& options = {});

}  // namespace pim
