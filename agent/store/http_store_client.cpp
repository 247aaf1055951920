#include "agent/store/http_store_client.h"

#include <Poco/Exception.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>
#include <Poco/Net/IPAddress.h>
#include <Poco/Net/NetException.h>
#include <Poco/Net/SocketAddress.h>
#include <Poco/NumberParser.h>
#include <Poco/String.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "agent/store/file_store_client.h"

#ifndef PIM_VERSION
#define PIM_VERSION "0"
#endif

namespace pim {
namespace {

using SteadyClock = std::chrono::steady_clock;

constexpr int64_t kMaxTokenFileBytes = 64 * 1024;
constexpr int64_t kMaxCaFileBytes = 16 * 1024 * 1024;
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

// The reason OpenSSL refused the server's certificate during this thread's last handshake (the
// handshake runs in the fetching thread), so that the error names it ("hostname mismatch",
// "unable to get local issuer certificate") instead of the bare "certificate verify failed".
thread_local int tlsVerifyError = X509_V_OK;

int recordVerifyError(int preverifyOk, X509_STORE_CTX* store) {
  if (!preverifyOk && tlsVerifyError == X509_V_OK) tlsVerifyError = X509_STORE_CTX_get_error(store);
  return preverifyOk;  // OpenSSL's verdict unchanged
}

// Blocks SIGPIPE in the calling thread for the duration of a fetch, and swallows one raised by a
// write to a connection the store closed (OpenSSL writes without MSG_NOSIGNAL): the agent must not
// die of a store hanging up, whatever the process's signal set-up (the libpq technique).
class SigpipeGuard {
 public:
  SigpipeGuard() {
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    sigset_t pending;
    sigemptyset(&pending);
    sigpending(&pending);
    wasPending_ = sigismember(&pending, SIGPIPE) == 1;
    blocked_ = pthread_sigmask(SIG_BLOCK, &pipe, &old_) == 0;
  }
  ~SigpipeGuard() {
    if (!blocked_) return;
    sigset_t pending;
    sigemptyset(&pending);
    sigpending(&pending);
    if (!wasPending_ && sigismember(&pending, SIGPIPE) == 1) {
      sigset_t pipe;
      sigemptyset(&pipe);
      sigaddset(&pipe, SIGPIPE);
      const timespec zero{0, 0};
      while (sigtimedwait(&pipe, nullptr, &zero) < 0 && errno == EINTR) {
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  SigpipeGuard(const SigpipeGuard&) = delete;
  SigpipeGuard& operator=(const SigpipeGuard&) = delete;

 private:
  sigset_t old_{};
  bool wasPending_ = false;
  bool blocked_ = false;
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

bool allOf(const std::string& s, int (*pred)(int)) {
  return std::all_of(s.begin(), s.end(), [pred](char c) { return pred(static_cast<unsigned char>(c)) != 0; });
}

// A TLS failure, with OpenSSL's reason.
class TlsError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// OpenSSL's reason for the last failure, then its error queue cleared.
std::string takeSslError(const char* fallback) {
  unsigned long e = ERR_peek_last_error();
  std::string text = fallback;
  if (e != 0) {
    const char* reason = ERR_reason_error_string(e);
    text = reason ? reason : "error " + std::to_string(e);
  }
  ERR_clear_error();
  return text;
}

// The byte stream of one connection: the non-blocking socket itself (http://) or TLS on it
// (https://, OpenSSL directly). Every wait is a poll(2) bounded by the fetch's deadline, the TLS
// handshake's included, so a peer trickling bytes cannot stretch a fetch past it (expired() is then
// true and Poco::TimeoutException thrown). cancel() shuts the socket down, which ends any wait.
class Channel {
 public:
  explicit Channel(int fd) : fd_(fd) {}
  ~Channel() {
    if (ssl_ != nullptr) SSL_free(ssl_);
  }
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  bool expired() const { return expired_; }
  bool secured() const { return ssl_ != nullptr; }
  // Every wait of the next exchange ends by `deadline`.
  void setDeadline(SteadyClock::time_point deadline) {
    deadline_ = deadline;
    expired_ = false;
  }
  // Bytes already received and not read: TLS records OpenSSL holds (read-ahead) or, on the socket,
  // anything at all (data or the peer's close). An idle kept connection has none.
  bool hasUnread() const {
    if (ssl_ != nullptr && SSL_has_pending(ssl_) == 1) return true;
    pollfd p{fd_, POLLIN, 0};
    return ::poll(&p, 1, 0) != 0;
  }

  // Client handshake; `host` is sent as SNI unless it is an IP address. Throws TlsError.
  void startTls(SSL_CTX* ctx, const std::string& host, bool hostIsIp) {
    ssl_ = SSL_new(ctx);
    if (ssl_ == nullptr || SSL_set_fd(ssl_, fd_) != 1) throw TlsError(takeSslError("cannot start TLS"));
    if (!hostIsIp) SSL_set_tlsext_host_name(ssl_, host.c_str());
    for (;;) {
      ERR_clear_error();
      const int rc = SSL_connect(ssl_);
      if (rc == 1) return;
      const int err = SSL_get_error(ssl_, rc);
      if (waitedFor(err)) continue;
      if (err == SSL_ERROR_SYSCALL && ERR_peek_last_error() == 0) {
        throw TlsError(errno != 0 ? std::string(std::strerror(errno)) : "connection closed during the handshake");
      }
      throw TlsError(takeSslError("handshake failed"));
    }
  }

  // Up to `len` bytes; 0 at the end of the stream.
  size_t receive(char* buf, size_t len) {
    for (;;) {
      if (ssl_ != nullptr) {
        ERR_clear_error();
        const int n = SSL_read(ssl_, buf, static_cast<int>(std::min<size_t>(len, INT32_MAX)));
        if (n > 0) return static_cast<size_t>(n);
        const int err = SSL_get_error(ssl_, n);
        if (waitedFor(err)) continue;
        if (err == SSL_ERROR_ZERO_RETURN) return 0;
        if (err == SSL_ERROR_SYSCALL && ERR_peek_last_error() == 0) {
          if (errno == ECONNRESET) throw Poco::Net::ConnectionResetException();
          return 0;  // closed without close_notify: the HTTP framing says whether that was early
        }
        throw TlsError(takeSslError("read failed"));
      }
      const ssize_t n = ::recv(fd_, buf, len, 0);
      if (n >= 0) return static_cast<size_t>(n);
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        wait(POLLIN);
        continue;
      }
      if (errno == ECONNRESET) throw Poco::Net::ConnectionResetException();
      throw Poco::IOException(std::string("receive: ") + std::strerror(errno));
    }
  }

  void sendAll(const std::string& bytes) {
    size_t sent = 0;
    while (sent < bytes.size()) {
      if (ssl_ != nullptr) {
        ERR_clear_error();
        const int n = SSL_write(ssl_, bytes.data() + sent, static_cast<int>(bytes.size() - sent));
        if (n > 0) {
          sent += static_cast<size_t>(n);
          continue;
        }
        const int err = SSL_get_error(ssl_, n);
        if (waitedFor(err)) continue;
        if (err == SSL_ERROR_SYSCALL && ERR_peek_last_error() == 0) {
          throw Poco::Net::ConnectionResetException("sending the request");
        }
        throw TlsError(takeSslError("write failed"));
      }
      const ssize_t n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n > 0) {
        sent += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        wait(POLLOUT);
        continue;
      }
      throw Poco::Net::ConnectionResetException("sending the request");
    }
  }

 private:
  // OpenSSL's "try again once the socket is readable (writable)": waits for it, true.
  bool waitedFor(int sslError) {
    if (sslError != SSL_ERROR_WANT_READ && sslError != SSL_ERROR_WANT_WRITE) return false;
    wait(sslError == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT);
    return true;
  }

  void wait(short events) {
    for (;;) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - SteadyClock::now()).count() + 1;
      if (left <= 1 && SteadyClock::now() >= deadline_) {
        expired_ = true;
        throw Poco::TimeoutException("deadline passed");
      }
      pollfd p{fd_, events, 0};
      const int rc = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left, INT32_MAX)));
      if (rc > 0) return;
      if (rc < 0 && errno != EINTR) throw Poco::IOException(std::string("poll: ") + std::strerror(errno));
    }
  }

  int fd_;
  SteadyClock::time_point deadline_ = SteadyClock::now();
  SSL* ssl_ = nullptr;
  bool expired_ = false;
};

struct BodyResult {
  bool overLimit = false;
  int64_t declared = -1;  // Content-Length, when announced
  std::string error;      // truncated or malformed framing; "" when the body is complete
};

// Reads one HTTP/1.1 response from the socket, strictly: Poco's HTTPClientSession (1.11) ends a
// chunked body silently at a premature EOF, which would hand a truncated document on. Here any
// EOF before the framing says the body is complete is an error, and at most limit + 1 body bytes
// are ever held.
class HttpResponseReader {
 public:
  explicit HttpResponseReader(Channel& channel) : channel_(channel), buffer_(16 * 1024) {}

  // Whether any byte of the answer arrived.
  bool receivedAny() const { return receivedAny_; }
  // Whether the answer was read to its end and nothing after it: the connection can carry another.
  bool drained() const { return !eof_ && pos_ == end_; }

  // Status line and headers (1xx interim answers skipped). Throws NoMessageException when the
  // connection closes before any byte, MessageException on malformed or oversized headers.
  void readHeader(Poco::Net::HTTPResponse& response) {
    for (;;) {
      std::string text;
      for (;;) {
        std::string line;
        if (!readLine(line, kMaxHeaderLine)) {
          if (text.empty() && line.empty()) throw Poco::Net::NoMessageException();
          throw Poco::Net::MessageException("connection closed inside the response headers");
        }
        if (!line.empty() && line.back() == '\r') line.pop_back();
        text += line + "\r\n";
        if (text.size() > kMaxHeaderBytes) throw Poco::Net::MessageException("response headers too large");
        if (line.empty()) break;
      }
      std::istringstream in(text);
      response.clear();
      response.read(in);
      if (response.getStatus() >= 200) return;
    }
  }

  // The body of a 200 answer into `body`, according to its framing.
  BodyResult readBody(const Poco::Net::HTTPResponse& response, int64_t limit, std::string& body) {
    BodyResult result;
    if (response.has("Content-Encoding") && Poco::icompare(response.get("Content-Encoding"), "identity") != 0) {
      result.error = "unsupported Content-Encoding " + response.get("Content-Encoding");
      return result;
    }
    if (response.has("Transfer-Encoding")) {
      if (Poco::icompare(trimWhitespace(response.get("Transfer-Encoding")), "chunked") != 0) {
        result.error = "unsupported Transfer-Encoding " + response.get("Transfer-Encoding");
        return result;
      }
      return readChunked(limit, body);
    }
    if (response.has("Content-Length")) {
      const std::string text = trimWhitespace(response.get("Content-Length"));
      Poco::UInt64 length = 0;
      if (text.empty() || text.size() > 18 || !allOf(text, ::isdigit) ||
          !Poco::NumberParser::tryParseUnsigned64(text, length)) {
        result.error = "malformed Content-Length";
        return result;
      }
      result.declared = static_cast<int64_t>(length);
      if (result.declared > limit) {
        result.overLimit = true;
        return result;
      }
      readUpTo(static_cast<size_t>(length), body);
      if (body.size() != length) {
        result.error = "truncated body: received " + std::to_string(body.size()) + " of " + text + " bytes";
      }
      return result;
    }
    // No framing: the body ends with the connection (HTTP/1.0 style); truncation is undetectable.
    readUpTo(static_cast<size_t>(limit) + 1, body);
    if (static_cast<int64_t>(body.size()) > limit) result.overLimit = true;
    return result;
  }

 private:
  static constexpr size_t kMaxHeaderLine = 8 * 1024;
  static constexpr size_t kMaxHeaderBytes = 64 * 1024;

  BodyResult readChunked(int64_t limit, std::string& body) {
    BodyResult result;
    for (;;) {
      std::string line;
      if (!readLine(line, 1024)) {
        result.error = "truncated body: connection closed inside the chunked encoding";
        return result;
      }
      std::string sizeText = trimWhitespace(line.substr(0, line.find(';')));
      Poco::UInt64 size = 0;
      if (sizeText.empty() || sizeText.size() > 15 || !allOf(sizeText, ::isxdigit) ||
          !Poco::NumberParser::tryParseHex64(sizeText, size)) {
        result.error = "malformed chunked encoding";
        return result;
      }
      if (size == 0) break;
      if (static_cast<int64_t>(body.size() + size) > limit) {
        result.overLimit = true;
        return result;
      }
      const size_t before = body.size();
      readUpTo(static_cast<size_t>(size), body);
      std::string crlf;
      if (body.size() - before != size || !readLine(crlf, 2) || !(crlf.empty() || crlf == "\r")) {
        result.error = body.size() - before != size ? "truncated body: connection closed inside a chunk"
                                                    : "malformed chunked encoding";
        return result;
      }
    }
    // Trailer fields up to the empty line: the terminating line is what proves completeness.
    for (size_t total = 0;;) {
      std::string line;
      if (!readLine(line, kMaxHeaderLine)) {
        result.error = "truncated body: connection closed before the end of the chunked encoding";
        return result;
      }
      total += line.size();
      if (line.empty() || line == "\r") break;
      if (total > kMaxHeaderBytes) {
        result.error = "malformed chunked encoding: trailer too large";
        return result;
      }
    }
    return result;
  }

  bool fill() {
    if (eof_) return false;
    const size_t n = channel_.receive(buffer_.data(), buffer_.size());
    if (n == 0) {
      eof_ = true;
      return false;
    }
    pos_ = 0;
    end_ = static_cast<size_t>(n);
    receivedAny_ = true;
    return true;
  }

  // One line without its "\n" (a trailing "\r" is kept for the caller); false at EOF before "\n".
  // Throws MessageException past maxLen.
  bool readLine(std::string& line, size_t maxLen) {
    line.clear();
    for (;;) {
      if (pos_ == end_ && !fill()) return false;
      char c = buffer_[pos_++];
      if (c == '\n') return true;
      if (line.size() >= maxLen) throw Poco::Net::MessageException("line too long in the response");
      line.push_back(c);
    }
  }

  // Appends up to n bytes (fewer only at EOF).
  void readUpTo(size_t n, std::string& out) {
    while (n > 0) {
      if (pos_ == end_ && !fill()) return;
      size_t take = std::min(n, end_ - pos_);
      out.append(buffer_.data() + pos_, take);
      pos_ += take;
      n -= take;
    }
  }

  Channel& channel_;
  std::vector<char> buffer_;
  size_t pos_ = 0;
  size_t end_ = 0;
  bool eof_ = false;
  bool receivedAny_ = false;
};

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

// One connection to the store: the socket (close-on-exec: the agent runs commands while a
// connection is kept) and the channel on it, destroyed first (TLS freed before the fd closes).
struct HttpStoreClient::Connection {
  explicit Connection(int socketFd) : fd(socketFd), channel(socketFd) {}
  ~Connection() { ::close(fd); }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  int fd;
  Channel channel;
  SteadyClock::time_point idleSince{};
};

HttpStoreClient::HttpStoreClient(Params params, Poco::URI uri, std::shared_ptr<SSL_CTX> tls, Logger log)
    : params_(std::move(params)), uri_(std::move(uri)), tls_(std::move(tls)), log_(std::move(log)) {}

HttpStoreClient::~HttpStoreClient() = default;

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
    return Status::error(ErrorCode::kInvalid,
                         "store.source: unsupported scheme '" + scheme + "' (expected https://, http:// or file://)");
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

  std::shared_ptr<SSL_CTX> tls;
  if (scheme == "https") {
    if (!params.caPath.empty()) {
      Status s = checkCaFile(params.caPath);
      if (!s) return s;
    }
    auto setupError = [&](const std::string& what) {
      return Status::error(ErrorCode::kInvalid, "store TLS setup for " + shown + ": " + what, params.caPath);
    };
    SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == nullptr) return setupError(takeSslError("cannot create a TLS context"));
    tls.reset(ctx, SSL_CTX_free);
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    // A peer closing without close_notify ends the stream like a close: the HTTP framing
    // (Content-Length, chunks) is what tells a complete body from a truncated one.
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION);
    if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
      log->warn("store TLS: the system CA certificates could not be loaded: {}", takeSslError("unknown"));
    }
    if (!params.caPath.empty() && SSL_CTX_load_verify_locations(ctx, params.caPath.c_str(), nullptr) != 1) {
      return setupError("cannot load ca_file " + params.caPath + ": " + takeSslError("unknown error"));
    }
    // OpenSSL's verdict stands; the callback only records the reason for the error message.
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, recordVerifyError);
    X509_VERIFY_PARAM* vp = SSL_CTX_get0_param(ctx);
    const std::string& host = uri.getHost();
    Poco::Net::IPAddress ip;
    int ok = Poco::Net::IPAddress::tryParse(host, ip) ? X509_VERIFY_PARAM_set1_ip_asc(vp, host.c_str())
                                                      : X509_VERIFY_PARAM_set1_host(vp, host.c_str(), host.size());
    X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (ok != 1) {
      ERR_clear_error();
      return setupError("cannot check host name " + host);
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
                         "store token file " + path + ": the token contains white space or control characters", path);
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
  // Plain sockets are written with MSG_NOSIGNAL; only OpenSSL's writes can raise SIGPIPE.
  std::optional<SigpipeGuard> sigpipe;
  if (tls_) sigpipe.emplace();
  return fetchOnce(etag, std::max<int64_t>(0, waitSeconds), token);
}

std::unique_ptr<HttpStoreClient::Connection> HttpStoreClient::takeKept() {
  std::unique_ptr<Connection> conn = std::move(kept_);
  if (!conn) return nullptr;
  // Past maxIdle (90 s) a middlebox may have dropped the connection without a word (a GET sent into it would
  // wait for the whole read time-out); anything readable means the store closed it or misbehaved.
  if (SteadyClock::now() - conn->idleSince > params_.options.maxIdle || conn->channel.hasUnread()) return nullptr;
  return conn;
}

Result<std::unique_ptr<HttpStoreClient::Connection>> HttpStoreClient::connect(std::chrono::milliseconds readBudget,
                                                                              const std::string& where) {
  const std::string peer = hostForUrl(uri_.getHost()) + ":" + std::to_string(uri_.getPort());
  auto failed = [&](const std::string& cause) {
    return Status::error(ErrorCode::kUnreachable, where + ": connect to " + peer + ": " + cause);
  };
  Poco::Net::SocketAddress address(uri_.getHost(), uri_.getPort());
  const int fd = ::socket(address.af(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return failed(std::string("socket: ") + std::strerror(errno));
  auto conn = std::make_unique<Connection>(fd);
  // cancel() shuts the socket down from here on; unregistered before a failure closes it (the
  // caller registers a connection it gets back).
  setActiveFd(fd);
  struct Unregister {
    HttpStoreClient& client;
    bool armed = true;
    ~Unregister() {
      if (armed) client.setActiveFd(-1);
    }
  } unregister{*this};

  // Non-blocking connect polled in slices, so that cancel() is noticed during the connect too.
  int rc;
  do {
    rc = ::connect(fd, address.addr(), address.length());
  } while (rc != 0 && errno == EINTR);
  if (rc != 0 && errno != EINPROGRESS) {
    return failed(errno == ECONNREFUSED ? std::string("connection refused") : std::strerror(errno));
  }
  const auto connectDeadline = SteadyClock::now() + params_.options.connectTimeout;
  while (rc != 0) {
    if (cancelled_.load()) return Status::error(ErrorCode::kUnreachable, where + ": cancelled");
    auto remaining = std::chrono::duration_cast<std::chrono::milliseconds>(connectDeadline - SteadyClock::now());
    if (remaining.count() <= 0) return failed("timed out after " + seconds(params_.options.connectTimeout));
    pollfd p{fd, POLLOUT, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(std::min(remaining, kCancelPollSlice).count()));
    if (ready > 0) break;
    if (ready < 0 && errno != EINTR) return failed(std::string("poll: ") + std::strerror(errno));
  }
  int soError = 0;
  socklen_t len = sizeof soError;
  if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &soError, &len) != 0) soError = errno;
  if (soError != 0) return failed(soError == ECONNREFUSED ? std::string("connection refused") : std::strerror(soError));
  conn->channel.setDeadline(SteadyClock::now() + readBudget);
  unregister.armed = false;
  return conn;
}

Result<FetchOutcome> HttpStoreClient::fetchOnce(const std::string& etag, int64_t waitSeconds,
                                                const std::string& token) {
  const std::string where = "GET " + describe();
  const std::string peer = hostForUrl(uri_.getHost()) + ":" + std::to_string(uri_.getPort());
  const auto readBudget = params_.options.readTimeout + std::chrono::milliseconds(waitSeconds * 1000);
  auto unreachable = [&](const std::string& cause) {
    return Status::error(ErrorCode::kUnreachable, where + ": " + cause);
  };

  // Declaration order matters: the registration goes after the connection so that it is
  // destroyed (fd unregistered) before the connection closes the fd.
  std::unique_ptr<Connection> conn = takeKept();
  FdRegistration registration(*this);

  auto explain = [&](const std::string& detail) {
    if (cancelled_.load()) return unreachable("cancelled");
    if (conn && conn->channel.expired())
      return unreachable("timed out: no complete answer within " + seconds(readBudget));
    return unreachable(detail);
  };

  try {
    Poco::URI target = uri_;
    if (waitSeconds > 0) target.addQueryParameter("wait", std::to_string(waitSeconds));
    std::string pathAndQuery = target.getPathAndQuery();
    if (pathAndQuery.empty() || pathAndQuery[0] != '/') pathAndQuery = "/" + pathAndQuery;

    Poco::Net::HTTPRequest request(Poco::Net::HTTPRequest::HTTP_GET, pathAndQuery, Poco::Net::HTTPMessage::HTTP_1_1);
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
    std::ostringstream requestText;
    request.write(requestText);

    std::optional<HttpResponseReader> reader;
    Poco::Net::HTTPResponse response;
    for (;;) {
      const bool reused = conn != nullptr;
      if (reused) {
        registration.arm(conn->fd);
        conn->channel.setDeadline(SteadyClock::now() + readBudget);
      } else {
        auto fresh = connect(readBudget, where);
        if (!fresh) {
          if (cancelled_.load()) return unreachable("cancelled");
          return fresh.status();
        }
        conn = std::move(*fresh);
        registration.arm(conn->fd);
        tlsVerifyError = X509_V_OK;
        if (tls_) {
          Poco::Net::IPAddress ip;
          conn->channel.startTls(tls_.get(), uri_.getHost(), Poco::Net::IPAddress::tryParse(uri_.getHost(), ip));
        }
      }
      log_->debug("{} (If-None-Match: {}, wait: {} s{})", where, etag.empty() ? "-" : etag, waitSeconds,
                  reused ? ", kept connection" : "");
      reader.emplace(conn->channel);
      try {
        conn->channel.sendAll(requestText.str());
        reader->readHeader(response);
        break;
      } catch (const Poco::Net::NoMessageException&) {
        if (!reused || cancelled_.load()) throw;
      } catch (const Poco::Net::ConnectionResetException&) {
        if (!reused || cancelled_.load() || reader->receivedAny()) throw;
      }
      // The store closed the kept connection as the request went out (its idle time-out): a GET
      // can be sent again, once, on a new connection.
      log_->debug("{}: the kept connection was closed by the store; sending again on a new one", where);
      registration.arm(-1);
      reader.reset();
      conn.reset();
    }
    // A connection that carried a complete answer and nothing more serves the next fetch.
    auto keepIfReusable = [&]() {
      if (response.getKeepAlive() && reader->drained() && !cancelled_.load()) {
        conn->idleSince = SteadyClock::now();
        registration.arm(-1);
        kept_ = std::move(conn);
      }
    };
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
      keepIfReusable();
      return out;
    }
    if (status >= 300 && status < 400) return unreachable(statusText + " (redirects are not followed)");
    if (status != 200) return unreachable(statusText);

    const int64_t limit = params_.maxBytes;
    std::string body;
    BodyResult read = reader->readBody(response, limit, body);
    if (read.overLimit) {
      std::string size = read.declared >= 0 ? "document of " + std::to_string(read.declared) + " bytes" : "document";
      return Status::error(ErrorCode::kRejected, where + ": " + size + " is over the limit of " +
                                                     std::to_string(limit) + " bytes (max_document_bytes)");
    }
    if (cancelled_.load() || conn->channel.expired()) return explain("");
    if (!read.error.empty()) return unreachable(read.error);

    FetchOutcome out;
    out.kind = FetchOutcome::Kind::kDocument;
    out.httpStatus = 200;
    out.etag = trimWhitespace(response.get("ETag", ""));
    if (out.etag.empty() || hasControl(out.etag)) out.etag = "\"sha256:" + sha256Hex(body) + "\"";
    if (params_.verifier) {
      Status v = params_.verifier->verify(body, response.get("X-Access-Signature", ""), where);
      if (!v) return v;
    }
    keepIfReusable();
    out.body = std::move(body);
    log_->debug("{}: 200, {} bytes, ETag {}", where, out.body.size(), out.etag);
    return out;
  } catch (const Poco::TimeoutException&) {
    return explain("timed out: no data for " + seconds(readBudget));
  } catch (const TlsError& e) {
    std::string reason;
    if (tlsVerifyError != X509_V_OK) {
      reason = " (server certificate: " + std::string(X509_verify_cert_error_string(tlsVerifyError)) + ")";
    }
    return explain("TLS with " + peer + ": " + e.what() + reason);
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
