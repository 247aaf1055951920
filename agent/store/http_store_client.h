#pragma once
// The http:// and https:// source: one GET per fetch (HTTP messages written and parsed by Poco),
// with a bearer token read at each request,
// ETag/If-None-Match, long polling, a size limit enforced while reading, one overall deadline
// for the exchange (every wait is a poll(2) bounded by it), and optional Ed25519 signatures.
// TLS: OpenSSL directly on the socket, one SSL_CTX per client: strict verification against the
// system CAs plus ca_file, TLS >= 1.2, SNI, host name or IP checked by OpenSSL against the
// certificate's subjectAltName.
// Connections are kept between fetches (HTTP/1.1 keep-alive) when the store allows it, so that an
// idle poll over https:// costs one request, not a TCP and TLS handshake: a connection is kept only
// after a complete 200 or 304 with nothing unread, reused only if it has been idle for less than
// options.maxIdle (90 s) and the store has not closed it (nothing readable on it), and a GET that finds a reused
// connection closed before any byte of the answer is sent again once on a fresh connection.
// (Poco's NetSSL would pull Poco::Util, XML and Crypto into the
// resident daemon for nothing it needs, and its handshake cannot be bounded by a deadline.)

#include <Poco/URI.h>
#include <openssl/ssl.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>

#include "agent/store/signature.h"
#include "agent/store/store_client.h"

namespace pim {

class FdRegistration;

class HttpStoreClient : public StoreClient {
 public:
  struct Params {
    std::string url;                                    // http(s)://host[:port]/path[?query]
    std::string tokenPath;                              // full path (root applied); "" = no Authorization header
    std::string caPath;                                 // full path (root applied); "" = system CAs only
    std::shared_ptr<const SignatureVerifier> verifier;  // null = signatures ignored
    int64_t maxBytes = 4194304;
    StoreClientOptions options;
  };

  /// Checks the URL and prepares TLS. Errors: kInvalid for a malformed URL, a scheme other than
  /// http/https, a missing host, credentials in the URL, a fragment, or an unreadable CA file or
  /// one holding no PEM certificate (message names the path).
  static Result<std::unique_ptr<HttpStoreClient>> create(Params params, Logger log);

  ~HttpStoreClient() override;

  /// See StoreClient::fetch. Sends one GET on the kept connection or on a new one.
  Result<FetchOutcome> fetch(const std::string& etag, int64_t waitSeconds) override;
  /// See StoreClient::cancel: shuts the socket of the fetch in progress down; permanent.
  void cancel() override;
  /// scheme://host[:port]/path, without user info or query.
  std::string describe() const override;

 private:
  HttpStoreClient(Params params, Poco::URI uri, std::shared_ptr<SSL_CTX> tls, Logger log);
  struct Connection;
  Result<FetchOutcome> fetchOnce(const std::string& etag, int64_t waitSeconds, const std::string& token);
  // A new connection to the store (TCP, then TLS for https://), or the reason it failed.
  Result<std::unique_ptr<Connection>> connect(std::chrono::milliseconds readBudget, const std::string& where);
  // The kept connection if it can serve another request, else null (and it is closed).
  std::unique_ptr<Connection> takeKept();
  Result<std::string> readToken() const;
  // The fd of the connection in flight (-1 when none) so that cancel() can shut it down.
  void setActiveFd(int fd);

  friend class FdRegistration;

  Params params_;
  Poco::URI uri_;
  std::shared_ptr<SSL_CTX> tls_;  // null for http://
  Logger log_;
  std::mutex fdMutex_;
  int activeFd_ = -1;
  std::atomic<bool> cancelled_{false};
  std::unique_ptr<Connection> kept_;  // idle between fetches; only fetch() touches it
};

}  // namespace pim
