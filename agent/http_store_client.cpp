#include "agent/http_store_client.h"

#include <Poco/Exception.h>
#include <Poco/Net/HTTPClientSession.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>
#include <Poco/Net/HTTPSClientSession.h>
#include <Poco/Net/IPAddress.h>
#include <Poco/Net/NetException.h>
#include <Poco/Net/SSLException.h>
#include <Poco/Net/SecureStreamSocket.h>
#include <Poco/Net/SocketAddress.h>
#include <Poco/Net/StreamSocket.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <optional>
#include <thread>
#include <vector>

#include "agent/file_store_client.h"

#ifndef PIM_VERSION
#define PIM_VERSION "0"
#endif

namespace pim {
namespace {

using SteadyClock = std::chrono::steady_clock;

constexpr int64_t kMaxTokenFileBytes = 64 * 1024;
constexpr int64_t kMaxCaFileBytes = 16 * 1024 * 1024;
constexpr size_t kReadChunk = 64 * 1024;
constexpr std::chrono::milliseconds kCancelPollSlice{100};

std::string trimWhitespace(const std::string& s) {
  const char* ws = " \t\r\n";
  auto b = s.find_first_not_of(ws);
  if (b == std::string::npos) return {};
  auto e = s.find_last_not_of(ws);
  return s.substr(b, e - b + 1);
}

bool hasControlOrSpace(const std::string& s) {
  return std::any_of(s.begin(), s.end(), [](char ch) {
    auto c = static_cast<unsigned char>(ch);
    return c <= 0x20 || c == 0x7f;
  });
}

bool hasControl(const std::string& s) {
  return std::any_of(s.begin(), s.end(), [](char ch) {
    auto c = static_cast<unsigned char>(ch);
    return c < 0x20 || c == 0x7f;
  });
}

std::string seconds(std::chrono::milliseconds ms) {
  if (ms.count() % 1000 == 0) return std::to_string(ms.count() / 1000) + " s";
  return std::to_string(ms.count()) + " ms";
}

// Shuts the connection's socket down when the overall deadline passes, so that a peer trickling
// bytes (or stalling the TLS handshake) cannot keep a fetch alive: per-read time-outs alone do not
// bound the total. shutdown(2) only wakes the blocked reader; the socket is closed by its owner,
// after this watchdog has been joined, so the fd number cannot be reused under it.
class Watchdog {
 public:
  Watchdog(int fd, SteadyClock::time_point deadline) : fd_(fd), deadline_(deadline), thread_([this] { run(); }) {}
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;
  bool fired() const { return fired_.load(); }

 private:
  void run() {
    std::unique_lock<std::mutex> lock(mutex_);
    if (!cv_.wait_until(lock, deadline_, [this] { return done_; })) {
      fired_.store(true);
      ::shutdown(fd_, SHUT_RDWR);
    }
  }

  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  std::atomic<bool> fired_{false};
  int fd_;
  SteadyClock::time_point deadline_;
  std::thread thread_;  // last: started once every other member is ready
};

struct BioDeleter {
  void operator()(BIO* b) const { BIO_free(b); }
};

// Poco would accept a CA file with no certificate in silence (or fail with an OpenSSL code):
// check it here to give the operator a message naming the file.
Status checkCaFile(const std::string& path) {
  auto text = readRegularFile(path, kMaxCaFileBytes);
  if (!text) return Status::error(ErrorCode::kInvalid, "store.ca_file: " + text.status().message(), path);
  std::unique_ptr<BIO, BioDeleter> bio(BIO_new_mem_buf(text->data(), static_cast<int>(text->size())));
  if (!bio) return Status::error(ErrorCode::kInternal, "store.ca_file " + path + ": out of memory", path);
  X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr);
  ERR_clear_error();
  if (cert == nullptr) {
    return Status::error(ErrorCode::kInvalid, "store.ca_file " + path + ": holds no PEM certificate", path);
  }
  X509_free(cert);
  return Status::ok();
}

std::string hostForUrl(const std::string& host) {
  return host.find(':') != std::string::npos ? "[" + host + "]" : host;
}

}  // namespace

// Registers the fd of the connection in flight for cancel(); unregisters it before the sockets
// (declared earlier in fetchOnce) are destroyed and the fd closed.
class FdRegistration {
 public:
  explicit FdRegistration(HttpStoreClient& client) : client_(client) {}
  ~FdRegistration() { client_.setActiveFd(-1); }
  FdRegistration(const FdRegistration&) = delete;
  FdRegistration& operator=(const FdRegistration&) = delete;
  void arm(int fd) { client_.setActiveFd(fd); }

 private:
  HttpStoreClient& client_;
};

HttpStoreClient::HttpStoreClient(Params params, Poco::URI uri, Poco::Net::Context::Ptr tls, Logger log)
    : params_(std::move(params)), uri_(std::move(uri)), tls_(std::move(tls)), log_(std::move(log)) {}

Result<std::unique_ptr<HttpStoreClient>> HttpStoreClient::create(Params params, Logger log) {
  Poco::URI uri;
  try {
    uri = Poco::URI(params.url);
  } catch (const Poco::Exception& e) {
    // The raw URL is not echoed: it may carry credentials.
    return Status::error(ErrorCode::kInvalid, "store.source: malformed URL: " + e.displayText());
  }
  const std::string scheme = uri.getScheme();
  if (scheme != "http" && scheme != "https") {
    return Status::error(ErrorCode::kInvalid, "store.source: unsupported scheme '" + scheme +
                                                  "' (expected https://, http:// or file://)");
  }
  const std::string shown = scheme + "://" + hostForUrl(uri.getHost()) + uri.getPath();
  if (uri.getHost().empty()) return Status::error(ErrorCode::kInvalid, "store.source " + shown + ": no host");
  if (!uri.getUserInfo().empty()) {
    return Status::error(ErrorCode::kInvalid,
                         "store.source " + shown + ": credentials in the URL are not supported (use token_file)");
  }
  if (!uri.getFragment().empty()) {
    return Status::error(ErrorCode::kInvalid, "store.source " + shown + ": a fragment (#...) is not allowed");
  }
  if (hasControl(params.url)) {
    return Status::error(ErrorCode::kInvalid, "store.source " + shown + ": control character in URL");
  }

  Poco::Net::Context::Ptr tls;
  if (scheme == "https") {
    if (!params.caPath.empty()) {
      Status s = checkCaFile(params.caPath);
      if (!s) return s;
    }
    try {
      Poco::Net::Context::Params p;
      p.verificationMode = Poco::Net::Context::VERIFY_STRICT;
      p.loadDefaultCAs = true;
      p.caLocation = params.caPath;
      p.cipherList = "DEFAULT";
      tls = new Poco::Net::Context(Poco::Net::Context::TLS_CLIENT_USE, p);
      tls->requireMinimumProtocol(Poco::Net::Context::PROTO_TLSV1_2);
      // Poco's own name check resolves certificate names through DNS and compares addresses,
      // which is weaker than RFC 6125; OpenSSL checks the name below instead.
      tls->enableExtendedCertificateVerification(false);
    } catch (const Poco::Exception& e) {
      ERR_clear_error();
      return Status::error(ErrorCode::kInvalid, "store TLS setup for " + shown + ": " + e.displayText(),
                           params.caPath);
    }
    SSL_CTX* ctx = tls->sslContext();
    // No verify callback: Poco's would consult the process-wide SSLManager, whose certificate
    // handlers another component might configure to accept anything. OpenSSL's verdict stands.
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    X509_VERIFY_PARAM* vp = SSL_CTX_get0_param(ctx);
    const std::string& host = uri.getHost();
    Poco::Net::IPAddress ip;
    int ok = Poco::Net::IPAddress::tryParse(host, ip) ? X509_VERIFY_PARAM_set1_ip_asc(vp, host.c_str())
                                                      : X509_VERIFY_PARAM_set1_host(vp, host.c_str(), host.size());
    X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (ok != 1) {
      ERR_clear_error();
      return Status::error(ErrorCode::kInvalid, "store TLS setup for " + shown + ": cannot check host name " + host);
    }
  } else {
    if (!params.caPath.empty()) log->warn("store.ca_file is ignored for {}", shown);
    if (!params.tokenPath.empty()) log->warn("the bearer token is sent unencrypted to {}: use https://", shown);
  }
  return std::unique_ptr<HttpStoreClient>(new HttpStoreClient(std::move(params), std::move(uri), tls, std::move(log)));
}

std::string HttpStoreClient::describe() const {
  std::string out = uri_.getScheme() + "://" + hostForUrl(uri_.getHost());
  const unsigned short defaultPort = uri_.getScheme() == "https" ? 443 : 80;
  if (uri_.getPort() != defaultPort) out += ":" + std::to_string(uri_.getPort());
  out += uri_.getPath().empty() ? "/" : uri_.getPath();
  return out;
}

void HttpStoreClient::setActiveFd(int fd) {
  std::lock_guard<std::mutex> lock(fdMutex_);
  activeFd_ = fd;
  if (fd >= 0 && cancelled_.load()) ::shutdown(fd, SHUT_RDWR);
}

void HttpStoreClient::cancel() {
  std::lock_guard<std::mutex> lock(fdMutex_);
  cancelled_.store(true);
  // Under the mutex: the fd is still open (unregistered before it is closed).
  if (activeFd_ >= 0) ::shutdown(activeFd_, SHUT_RDWR);
}

Result<std::string> HttpStoreClient::readToken() const {
  const std::string& path = params_.tokenPath;
  auto text = readRegularFile(path, kMaxTokenFileBytes);
  // Only the path and the cause go into messages, never the content.
  if (!text) return Status::error(ErrorCode::kUnreachable, "store token file: " + text.status().message(), path);
  std::string token = trimWhitespace(*text);
  if (token.empty()) return Status::error(ErrorCode::kUnreachable, "store token file " + path + ": empty", path);
  if (hasControlOrSpace(token)) {
    return Status::error(ErrorCode::kUnreachable,
                         "store token file " + path + ": the token contains white space or control characters",
                         path);
  }
  return token;
}

Result<FetchOutcome> HttpStoreClient::fetch(const std::string& etag, int64_t waitSeconds) {
  if (cancelled_.load()) return Status::error(ErrorCode::kUnreachable, "GET " + describe() + ": cancelled");
  std::string token;
  if (!params_.tokenPath.empty()) {
    auto t = readToken();
    if (!t) return t.status();
    token = std::move(*t);
  }
  return fetchOnce(etag, std::max<int64_t>(0, waitSeconds), token);
}

Result<FetchOutcome> HttpStoreClient::fetchOnce(const std::string& etag, int64_t waitSeconds,
                                                const std::string& token) {
  const std::string where = "GET " + describe();
  const std::string peer = hostForUrl(uri_.getHost()) + ":" + std::to_string(uri_.getPort());
  const auto readBudget = params_.options.readTimeout + std::chrono::milliseconds(waitSeconds * 1000);
  auto unreachable = [&](const std::string& cause) {
    return Status::error(ErrorCode::kUnreachable, where + ": " + cause);
  };

  // Declaration order matters: the registration and the watchdog go after the sockets so that they
  // are destroyed (fd unregistered, thread joined) before any socket closes the fd.
  Poco::Net::StreamSocket sock;
  std::optional<Poco::Net::SecureStreamSocket> secure;
  std::unique_ptr<Poco::Net::HTTPClientSession> session;
  FdRegistration registration(*this);
  std::optional<Watchdog> watchdog;

  auto explain = [&](const std::string& detail) {
    if (cancelled_.load()) return unreachable("cancelled");
    if (watchdog && watchdog->fired()) return unreachable("timed out: no complete answer within " + seconds(readBudget));
    return unreachable(detail);
  };

  try {
    Poco::URI target = uri_;
    if (waitSeconds > 0) target.addQueryParameter("wait", std::to_string(waitSeconds));
    std::string pathAndQuery = target.getPathAndQuery();
    if (pathAndQuery.empty() || pathAndQuery[0] != '/') pathAndQuery = "/" + pathAndQuery;

    Poco::Net::SocketAddress address(uri_.getHost(), uri_.getPort());
    sock = Poco::Net::StreamSocket(address.family());
    registration.arm(sock.impl()->sockfd());

    // Non-blocking connect polled in slices, so that cancel() is noticed during the connect too.
    const auto connectDeadline = SteadyClock::now() + params_.options.connectTimeout;
    sock.connectNB(address);
    for (;;) {
      if (cancelled_.load()) return unreachable("cancelled");
      auto remaining = std::chrono::duration_cast<std::chrono::milliseconds>(connectDeadline - SteadyClock::now());
      if (remaining.count() <= 0) {
        return unreachable("connect to " + peer + ": timed out after " + seconds(params_.options.connectTimeout));
      }
      auto slice = std::min(remaining, kCancelPollSlice);
      if (sock.poll(Poco::Timespan(slice.count() * 1000),
                    Poco::Net::Socket::SELECT_WRITE | Poco::Net::Socket::SELECT_ERROR)) {
        break;
      }
    }
    int soError = 0;
    sock.getOption(SOL_SOCKET, SO_ERROR, soError);
    if (soError != 0) return unreachable("connect to " + peer + ": " + std::strerror(soError));
    sock.setBlocking(true);

    watchdog.emplace(sock.impl()->sockfd(), SteadyClock::now() + readBudget);
    const Poco::Timespan perRead(std::chrono::duration_cast<std::chrono::microseconds>(readBudget).count());
    const Poco::Timespan perWrite(
        std::chrono::duration_cast<std::chrono::microseconds>(params_.options.readTimeout).count());
    sock.setReceiveTimeout(perRead);
    sock.setSendTimeout(perWrite);

    if (tls_) {
      secure = Poco::Net::SecureStreamSocket::attach(sock, uri_.getHost(), tls_);
      session = std::make_unique<Poco::Net::HTTPSClientSession>(*secure);
    } else {
      session = std::make_unique<Poco::Net::HTTPClientSession>(sock);
    }
    session->setTimeout(Poco::Timespan(std::chrono::duration_cast<std::chrono::microseconds>(
                                           params_.options.connectTimeout).count()),
                        perWrite, perRead);

    Poco::Net::HTTPRequest request(Poco::Net::HTTPRequest::HTTP_GET, pathAndQuery,
                                   Poco::Net::HTTPMessage::HTTP_1_1);
    request.setHost(uri_.getHost(), uri_.getPort());
    request.set("Accept", "application/json");
    request.set("User-Agent", "pim-access-agent/" PIM_VERSION);
    if (!token.empty()) request.set("Authorization", "Bearer " + token);
    if (!etag.empty()) {
      if (hasControl(etag)) {
        log_->warn("{}: stored ETag has control characters; fetching without If-None-Match", where);
      } else {
        request.set("If-None-Match", etag);
      }
    }
    request.setKeepAlive(false);
    log_->debug("{} (If-None-Match: {}, wait: {} s)", where, etag.empty() ? "-" : etag, waitSeconds);
    session->sendRequest(request);

    Poco::Net::HTTPResponse response;
    std::istream& in = session->receiveResponse(response);
    const int status = static_cast<int>(response.getStatus());
    const std::string statusText = "HTTP " + std::to_string(status) + " " + response.getReason();

    if (status == 304) {
      if (etag.empty()) return unreachable(statusText + " to a request without If-None-Match");
      FetchOutcome out;
      out.kind = FetchOutcome::Kind::kUnchanged;
      out.httpStatus = 304;
      std::string newEtag = trimWhitespace(response.get("ETag", ""));
      out.etag = newEtag.empty() || hasControl(newEtag) ? etag : newEtag;
      log_->debug("{}: 304, unchanged", where);
      return out;
    }
    if (status >= 300 && status < 400) return unreachable(statusText + " (redirects are not followed)");
    if (status != 200) return unreachable(statusText);

    const int64_t limit = params_.maxBytes;
    const int64_t declared = response.hasContentLength() ? response.getContentLength64() : -1;
    if (declared > limit) {
      return Status::error(ErrorCode::kRejected, where + ": document of " + std::to_string(declared) +
                                                     " bytes is over the limit of " + std::to_string(limit) +
                                                     " bytes (max_document_bytes)");
    }
    // Read at most limit + 1 bytes: enough to know the body is too big, never more in memory.
    in.exceptions(std::ios::badbit);
    std::string body;
    std::vector<char> chunk(kReadChunk);
    while (static_cast<int64_t>(body.size()) <= limit) {
      auto want = static_cast<std::streamsize>(
          std::min<int64_t>(static_cast<int64_t>(chunk.size()), limit + 1 - static_cast<int64_t>(body.size())));
      in.read(chunk.data(), want);
      std::streamsize got = in.gcount();
      body.append(chunk.data(), static_cast<size_t>(got));
      if (got < want) break;  // end of body
    }
    if (static_cast<int64_t>(body.size()) > limit) {
      return Status::error(ErrorCode::kRejected, where + ": document is over the limit of " + std::to_string(limit) +
                                                     " bytes (max_document_bytes)");
    }
    if (cancelled_.load() || (watchdog && watchdog->fired())) return explain("");
    if (declared >= 0 && static_cast<int64_t>(body.size()) != declared) {
      return unreachable("truncated body: received " + std::to_string(body.size()) + " of " +
                         std::to_string(declared) + " bytes");
    }

    FetchOutcome out;
    out.kind = FetchOutcome::Kind::kDocument;
    out.httpStatus = 200;
    out.etag = trimWhitespace(response.get("ETag", ""));
    if (out.etag.empty() || hasControl(out.etag)) out.etag = "\"sha256:" + sha256Hex(body) + "\"";
    if (params_.verifier) {
      Status v = params_.verifier->verify(body, response.get("X-Access-Signature", ""), where);
      if (!v) return v;
    }
    out.body = std::move(body);
    log_->debug("{}: 200, {} bytes, ETag {}", where, out.body.size(), out.etag);
    return out;
  } catch (const Poco::TimeoutException&) {
    return explain("timed out: no data for " + seconds(readBudget));
  } catch (const Poco::Net::SSLException& e) {
    ERR_clear_error();
    return explain("TLS with " + peer + ": " + e.displayText());
  } catch (const Poco::Net::ConnectionRefusedException&) {
    return explain("connect to " + peer + ": connection refused");
  } catch (const Poco::Net::NoMessageException&) {
    return explain("connection closed before an answer");
  } catch (const Poco::Net::MessageException& e) {
    return explain("malformed answer: " + e.displayText());
  } catch (const Poco::Exception& e) {
    return explain(e.displayText());
  } catch (const std::exception& e) {
    return explain(e.what());
  }
}

}  // namespace pim
