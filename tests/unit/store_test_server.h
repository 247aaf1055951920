#pragma once
// Test helpers for the store transport, reusable by the daemon and end-to-end tests:
// - StoreTestServer: a real Poco HTTP or HTTPS server on 127.0.0.1 (ephemeral port) that records
//   every request; either a built-in document store (ETag/304, long poll, signature header) or a
//   custom handler per test (error statuses, trickling, truncation, huge bodies...).
// - makeStoreTestPki: a throw-away CA and server certificate (openssl CLI) for TLS tests.
// - StoreTestSigner: an Ed25519 key pair that signs documents like the store does.
// - StoreTestDir: a temporary directory removed with its content.
// - StoreTestProxy: a real HTTP proxy on 127.0.0.1 (Debian's tinyproxy) for the proxy tests.
// - BlackholeDns and runInNetworkNamespace: a test case run again in network and mount namespaces
//   where the name server never answers, for the tests of a DNS look-up that hangs.
// Everything lives in pim::storetest so that other test files can define their own helpers.

#include <Poco/Net/HTTPServerRequest.h>
#include <Poco/Net/HTTPServerResponse.h>

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "providers/host/subprocess.h"

namespace Poco {
class ThreadPool;
namespace Net {
class HTTPServer;
}
}  // namespace Poco

namespace pim {
namespace storetest {

/// A request as the server saw it.
struct RecordedRequest {
  std::string method;
  std::string target;                          // path and query as sent
  std::string path;                            // decoded path
  std::map<std::string, std::string> query;    // decoded query parameters (last one wins)
  std::map<std::string, std::string> headers;  // header names in lower case
  std::string peer;                            // the client's address:port, one per connection
  std::string body;                            // the request body of a POST or PUT (up to 1 MiB)
  /// The header's value, "" when absent (name is case-insensitive).
  std::string header(const std::string& name) const;
  /// Whether the header was sent (name is case-insensitive).
  bool hasHeader(const std::string& name) const;
};

class StoreTestServer;

/// What a custom handler gets for one request.
struct Exchange {
  const RecordedRequest& request;
  Poco::Net::HTTPServerRequest& raw;
  Poco::Net::HTTPServerResponse& response;
  StoreTestServer& server;
  /// Shuts the connection down at once (both directions), e.g. in the middle of a body; what the
  /// server then tries to write fails quietly.
  void abortConnection();
};

class StoreTestServer {
 public:
  using Handler = std::function<void(Exchange&)>;
  struct Tls {
    std::string certFile;  // server certificate chain (PEM)
    std::string keyFile;   // its private key (PEM, unencrypted)
  };

  /// Starts a plain HTTP server on 127.0.0.1:ephemeral. An empty handler serves the built-in
  /// document store (see setDocument). Ignores SIGPIPE for the process (writes to a client that
  /// went away must not kill the test binary). Throws Poco::Exception when it cannot start.
  explicit StoreTestServer(Handler handler = {});
  /// Connections carry several requests (HTTP/1.1 keep-alive), closed by the server after
  /// idleTimeout without one. Without it every answer says "Connection: close".
  struct KeepAlive {
    std::chrono::milliseconds idleTimeout{5000};
  };

  /// The same over TLS with the given certificate and key.
  StoreTestServer(Tls tls, Handler handler = {});
  /// Plain HTTP, HTTPS, with keep-alive.
  StoreTestServer(KeepAlive keepAlive, Handler handler);
  StoreTestServer(Tls tls, KeepAlive keepAlive, Handler handler);
  /// Stops accepting, wakes held long polls, aborts open connections and joins every thread.
  ~StoreTestServer();
  StoreTestServer(const StoreTestServer&) = delete;
  StoreTestServer& operator=(const StoreTestServer&) = delete;

  uint16_t port() const;
  /// "http(s)://127.0.0.1:PORT" + path.
  std::string url(const std::string& path = "/v1/instances/test/access") const;

  /// Copies of the requests received so far, in arrival order.
  std::vector<RecordedRequest> requests() const;
  /// How many connections the requests so far came on (distinct peers).
  size_t connectionCount() const;
  size_t requestCount() const;
  /// Blocks until at least n requests arrived or the timeout passed; returns whether they did.
  bool waitForRequests(size_t n, std::chrono::milliseconds timeout) const;

  // Built-in document store: answers 200 with the document, its ETag and (when set) its
  // X-Access-Signature; 304 when If-None-Match equals the ETag, after holding the request up to
  // `wait` seconds (query parameter) for a new document; 404 before any document;
  // forcedStatus() answers that status instead when non-zero. Before any document, a long poll
  // (wait=N) is held until a document comes (200) or N seconds passed (404), like a store that
  // registers instances. The receiving end of reports: a POST to a path ending in "/report" is
  // kept (reports()) and answered 204, or reportStatus(), or never while reportHang() is on.
  /// Replaces the document (wakes held long polls). etag "" = "\"<sha256 of body>\"".
  void setDocument(std::string body, std::string etag = "", std::string signature = "");
  /// Makes the built-in store answer `status` (with an empty body) until set back to 0.
  void setForcedStatus(int status);
  /// Long polls that the built-in store held (answered 304 after waiting, or woken by a change).
  int heldLongPolls() const;
  /// The bodies of the reports received so far (built-in store), in arrival order.
  std::vector<std::string> reports() const;
  /// Blocks until at least n reports arrived or the timeout passed; returns whether they did.
  bool waitForReports(size_t n, std::chrono::milliseconds timeout) const;
  /// The status the built-in store answers reports with (204 by default).
  void setReportStatus(int status);
  /// While on, the built-in store never answers a report (it holds it until the server stops or
  /// this is turned off).
  void setReportHang(bool hang);

  // For custom handlers.
  /// Whether the server is being destroyed (long-running handlers must return).
  bool stopping() const;
  /// Sleeps up to d, returning false early when the server is stopping.
  bool sleepFor(std::chrono::milliseconds d);
  /// Adds to the count of body bytes written (custom handlers count what they stream).
  void addBytesWritten(int64_t n);
  int64_t bytesWritten() const;

 private:
  friend class StoreTestRequestHandler;
  void handle(Poco::Net::HTTPServerRequest& raw, Poco::Net::HTTPServerResponse& response);
  void serveDocument(Exchange& ex);
  void receiveReport(Exchange& ex);
  void start(const Tls* tls, const KeepAlive* keepAlive);

  Handler handler_;
  bool secure_ = false;
  uint16_t port_ = 0;
  std::unique_ptr<Poco::ThreadPool> pool_;
  std::unique_ptr<Poco::Net::HTTPServer> server_;

  mutable std::mutex mutex_;
  mutable std::condition_variable cv_;
  std::vector<RecordedRequest> requests_;
  std::optional<std::string> body_;
  std::string etag_;
  std::string signature_;
  int forcedStatus_ = 0;
  int heldLongPolls_ = 0;
  std::vector<std::string> reports_;
  int reportStatus_ = 204;
  bool reportHang_ = false;
  bool stopping_ = false;
  std::atomic<int64_t> bytesWritten_{0};
};

/// A temporary directory (mkdtemp under $TMPDIR or /tmp), removed recursively on destruction.
class StoreTestDir {
 public:
  StoreTestDir();
  ~StoreTestDir();
  StoreTestDir(const StoreTestDir&) = delete;
  StoreTestDir& operator=(const StoreTestDir&) = delete;
  const std::string& path() const { return path_; }
  /// path() + "/" + name.
  std::string file(const std::string& name) const;
  /// Writes content to path()/name (mode 0600) and returns the full path. Throws on failure.
  std::string write(const std::string& name, const std::string& content) const;

 private:
  std::string path_;
};

/// Debian's tinyproxy on 127.0.0.1 (a free port), started with a config in a temporary directory,
/// logging every request; stopped (SIGTERM) on destruction. It forwards http:// requests (adding
/// "Via: 1.1 tinyproxy ...") and tunnels https:// with CONNECT, to any port.
class StoreTestProxy {
 public:
  /// Whether tinyproxy is installed (scripts/install-deps installs it).
  static bool available();
  /// Starts it and waits until it accepts connections. Throws std::runtime_error when it cannot.
  StoreTestProxy();
  ~StoreTestProxy();
  StoreTestProxy(const StoreTestProxy&) = delete;
  StoreTestProxy& operator=(const StoreTestProxy&) = delete;

  uint16_t port() const { return port_; }
  /// "http://127.0.0.1:PORT".
  std::string url() const;
  /// The request lines it received so far ("GET http://127.0.0.1:1234/a HTTP/1.1",
  /// "CONNECT 127.0.0.1:1234 HTTP/1.1"), from its log.
  std::vector<std::string> requests() const;

 private:
  StoreTestDir dir_;
  uint16_t port_ = 0;
  std::optional<Subprocess> process_;
};

/// A port on 127.0.0.1 where nothing listens (bound once, then closed).
uint16_t unusedLoopbackPort();

/// Inside runInNetworkNamespace(): the loopback interface up, a UDP socket on 127.0.0.1:53 that
/// reads nothing and answers nothing, and /etc/resolv.conf ("nameserver 127.0.0.1", 30 s per try,
/// one try) and /etc/nsswitch.conf ("hosts: dns") bind-mounted over the real ones, so that every
/// name look-up of this process and of the programs it starts waits 30 s. Throws
/// std::runtime_error when a step fails.
class BlackholeDns {
 public:
  BlackholeDns();
  ~BlackholeDns();
  BlackholeDns(const BlackholeDns&) = delete;
  BlackholeDns& operator=(const BlackholeDns&) = delete;
  /// Whether a query reached the name server (waits up to `timeout` for one).
  bool queried(std::chrono::milliseconds timeout) const;

 private:
  StoreTestDir dir_;
  int socket_ = -1;
};

/// Whether this process is the copy runInNetworkNamespace() started.
bool inNetworkNamespace();

/// Runs the test case `testName` of this test binary again, alone, under `unshare --net --mount`
/// (plus --user --map-root-user when not root), where inNetworkNamespace() is true. Returns its
/// exit code and output; nullopt when the namespaces cannot be made here (`why` says so).
struct NamespaceRun {
  int exit = -1;
  std::string output;
};
std::optional<NamespaceRun> runInNetworkNamespace(const std::string& testName, std::string& why);

/// The text quoted for /bin/sh ('...').
std::string shellQuote(const std::string& s);
/// The content of a file ("" when unreadable).
std::string readAll(const std::string& path);
/// Starts argv (looked up in PATH) with stdin from /dev/null, stdout and stderr to `output`, and
/// `env` ("NAME=value") added to the environment; throws when it cannot be started (a program
/// that cannot be executed exits with 127).
Subprocess spawn(const std::vector<std::string>& argv, const std::string& output,
                 const std::vector<std::string>& env = {});
/// Waits for the process up to `timeout`, then kills it; its exit code (128 + signal when killed).
int waitFor(Subprocess& process, std::chrono::milliseconds timeout);
/// Whether something accepts TCP connections on 127.0.0.1:port.
bool acceptsConnections(uint16_t port);

/// Files of a throw-away PKI.
struct StoreTestPki {
  std::string caCert;      // the CA certificate (PEM): give it as ca_file
  std::string serverCert;  // server certificate signed by the CA (serverAuth, and clientAuth: etcd's
                           // gateway presents it to etcd's own gRPC server under --client-cert-auth)
  std::string serverKey;   // its key
  std::string clientCert;  // a client certificate signed by the CA (CN=pim test client, clientAuth)
  std::string clientKey;   // its key
};

/// Creates, in dir, a CA and a server certificate whose subjectAltName is `subjectAltName`
/// (e.g. "IP:127.0.0.1" or "DNS:store.test"), valid for two days, using the openssl command.
/// Throws std::runtime_error when openssl fails.
StoreTestPki makeStoreTestPki(const std::string& dir, const std::string& subjectAltName = "IP:127.0.0.1");

/// An Ed25519 key pair generated in memory.
class StoreTestSigner {
 public:
  /// Generates the key pair. Throws std::runtime_error on OpenSSL failure.
  StoreTestSigner();
  ~StoreTestSigner();
  StoreTestSigner(const StoreTestSigner&) = delete;
  StoreTestSigner& operator=(const StoreTestSigner&) = delete;
  /// The public key as PEM (SubjectPublicKeyInfo), what signing_key points to.
  std::string publicKeyPem() const;
  /// The base64 Ed25519 signature of the exact bytes, as sent in X-Access-Signature / PATH.sig.
  std::string sign(const std::string& body) const;

 private:
  void* pkey_;  // EVP_PKEY*, kept opaque so that tests need not include OpenSSL
};

}  // namespace storetest
}  // namespace pim
