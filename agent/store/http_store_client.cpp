#include "agent/store/http_store_client.h"
#include "providers/core/text_fields.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <poll.h>
#include <strings.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "agent/store/file_store_client.h"

#ifndef PIM_VERSION
#define PIM_VERSION "0"
#endif

// CURLOPT_QUICK_EXIT (a cancelled name look-up is not waited for) came with 7.87.0.
#if LIBCURL_VERSION_NUM < 0x075700
#error "libcurl 7.87.0 or newer is needed (Debian 12 has 7.88.1)"
#endif

namespace pim {
namespace {

using SteadyClock = std::chrono::steady_clock;

constexpr int64_t kMaxTokenFileBytes = 64 * 1024;
constexpr int64_t kMaxCaFileBytes = 16 * 1024 * 1024;
constexpr std::chrono::seconds kMaxRetryAfter{30 * 24 * 3600};

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

bool allDigits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c) != 0; });
}

std::string seconds(std::chrono::milliseconds ms) {
  if (ms.count() % 1000 == 0) return std::to_string(ms.count() / 1000) + " s";
  return std::to_string(ms.count()) + " ms";
}

bool startsWithNoCase(const std::string& s, const char* prefix) {
  const size_t n = std::strlen(prefix);
  return s.size() >= n && strncasecmp(s.c_str(), prefix, n) == 0;
}

// ---- close-on-exec ----

// libcurl 7.88 opens its connection sockets without close-on-exec (fixed in 8.19.0); the agent
// runs useradd, sshd -t and the reload command while a connection is kept, and they must not
// inherit it. The multi handle's sockets: newCloexecMultiHandle() (transfer_driver.h).
curl_socket_t openSocketCloseOnExec(void* /*clientp*/, curlsocktype /*purpose*/, struct curl_sockaddr* address) {
  const int fd = ::socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
  return fd < 0 ? CURL_SOCKET_BAD : fd;
}

// ---- TLS: the system CAs plus ca_file ----

struct X509Deleter {
  void operator()(X509* x) const { X509_free(x); }
};
using CaCertificates = std::vector<std::unique_ptr<X509, X509Deleter>>;

struct BioDeleter {
  void operator()(BIO* b) const { BIO_free(b); }
};

// The certificates of ca_file; a file with none is an error naming it (OpenSSL would take it in
// silence and every handshake would fail later).
Result<CaCertificates> loadCaFile(const std::string& path) {
  auto text = readRegularFile(path, kMaxCaFileBytes);
  if (!text) return Status::error(ErrorCode::kInvalid, "store.ca_file: " + text.status().message(), path);
  std::unique_ptr<BIO, BioDeleter> bio(BIO_new_mem_buf(text->data(), static_cast<int>(text->size())));
  if (!bio) return Status::error(ErrorCode::kInternal, "store.ca_file " + path + ": out of memory", path);
  CaCertificates certs;
  while (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) certs.emplace_back(cert);
  ERR_clear_error();
  if (certs.empty()) {
    return Status::error(ErrorCode::kInvalid, "store.ca_file " + path + ": holds no PEM certificate", path);
  }
  return certs;
}

// CURLOPT_SSL_CTX_FUNCTION: runs for every new TLS connection (the store's, and an https://
// proxy's) before the handshake; libcurl adds its CA bundle to the same store afterwards, or
// replaces it by the store it cached from an earlier connection of this multi handle, which
// already holds these certificates.
CURLcode addCaCertificates(CURL* /*easy*/, void* sslCtx, void* userdata) {
  X509_STORE* store = SSL_CTX_get_cert_store(static_cast<SSL_CTX*>(sslCtx));
  for (const auto& cert : *static_cast<const CaCertificates*>(userdata)) {
    X509_STORE_add_cert(store, cert.get());  // a certificate already there is not an error
  }
  ERR_clear_error();
  return CURLE_OK;
}

// ---- the answer ----

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// The length announced by every Content-Length field (one field may list the value several
// times, "12, 12"), or why it is refused: malformed, or two different values (RFC 9112 6.3:
// the framing is unknown, so the answer cannot be trusted). -1 when there is none.
Result<int64_t> announcedLength(const std::vector<std::string>& fields) {
  int64_t length = -1;
  std::string first;
  for (const auto& field : fields) {
    size_t start = 0;
    for (;;) {
      const size_t comma = field.find(',', start);
      const std::string value = trimmed(field.substr(start, comma == std::string::npos ? comma : comma - start));
      if (!allDigits(value) || value.size() > 18) {
        return Status::error(ErrorCode::kUnreachable, "malformed Content-Length '" + value.substr(0, 32) + "'");
      }
      const int64_t n = std::stoll(value);
      if (length >= 0 && n != length) {
        return Status::error(ErrorCode::kUnreachable,
                             "two different Content-Length values (" + first + " and " + value + "): answer refused");
      }
      if (length < 0) first = value;
      length = n;
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  }
  return length;
}

}  // namespace

std::optional<std::chrono::seconds> parseRetryAfter(const std::string& value, int64_t now) {
  const std::string text = trimmed(value);
  if (text.empty() || hasControl(text)) return std::nullopt;
  if (allDigits(text)) {
    if (text.size() > 9) return kMaxRetryAfter;
    return std::min(std::chrono::seconds(std::stoll(text)), kMaxRetryAfter);
  }
  // An HTTP date. libcurl's parser takes the three formats HTTP allows (and more).
  const time_t when = curl_getdate(text.c_str(), nullptr);
  if (when == static_cast<time_t>(-1)) return std::nullopt;
  const int64_t delta = static_cast<int64_t>(when) - now;
  if (delta <= 0) return std::chrono::seconds(0);
  return std::min(std::chrono::seconds(delta), kMaxRetryAfter);
}

// What the header and write callbacks collect of one answer. Interim 1xx answers are forgotten
// when the next status line comes; trailer fields after a chunked body are ignored.
struct HttpStoreClient::Answer {
  enum class Stop { kNone, kStatus, kRefused, kOverLimit, kEnough };
  int64_t limit = 0;
  std::function<bool(const std::string&)> enough;  // Exchange::enough
  int status = 0;
  std::string reason;
  bool complete = false;  // the header block of the final answer ended
  std::vector<std::string> contentLengths;
  std::vector<std::string> transferEncodings;
  std::vector<std::string> contentEncodings;
  std::optional<std::string> etag, signature, retryAfter;
  int64_t declared = -1;
  bool anySuccess = false;  // a report: any 2xx is the answer wanted, its body is not kept
  Stop stop = Stop::kNone;  // why a callback ended the transfer
  std::string refusal;      // with kRefused
  std::string body;

  void startAnswer(const std::string& statusLine) {
    const int64_t keep = limit;
    const bool wanted = anySuccess;
    auto keepEnough = std::move(enough);
    *this = Answer();
    limit = keep;
    anySuccess = wanted;
    enough = std::move(keepEnough);
    // "HTTP/1.1 200 OK": the version, the code, the reason (which may be empty).
    const auto sp = statusLine.find(' ');
    if (sp == std::string::npos) return;
    const std::string code = statusLine.substr(sp + 1, 3);
    if (code.size() == 3 && allDigits(code)) status = std::stoi(code);
    if (statusLine.size() > sp + 5) reason = trimmed(statusLine.substr(sp + 5));
  }

  // The header block of the final answer ended: whether its body may be read.
  bool accept() {
    complete = true;
    if (anySuccess && status >= 200 && status < 300) return true;
    if (anySuccess || (status != 200 && status != 304)) {
      stop = Stop::kStatus;  // an error: its body is not read, the connection not kept
      return false;
    }
    auto length = announcedLength(contentLengths);
    if (!length) return refuse(length.status().message());
    declared = *length;
    if (status == 304) return true;
    for (const auto& coding : contentEncodings) {
      if (lower(trimmed(coding)) != "identity") return refuse("unsupported Content-Encoding " + coding);
    }
    for (const auto& coding : transferEncodings) {
      if (lower(trimmed(coding)) != "chunked") return refuse("unsupported Transfer-Encoding " + coding);
    }
    if (declared > limit) {
      stop = Stop::kOverLimit;  // refused before any byte of the body
      return false;
    }
    return true;
  }

  bool refuse(const std::string& why) {
    stop = Stop::kRefused;
    refusal = why;
    return false;
  }

  static size_t onHeader(char* data, size_t size, size_t count, void* userdata) {
    auto& a = *static_cast<Answer*>(userdata);
    const size_t n = size * count;
    std::string line(data, n);
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
    if (a.complete) return n;  // trailer fields
    if (startsWithNoCase(line, "HTTP/")) {
      a.startAnswer(line);
      return n;
    }
    if (line.empty()) {
      if (a.status >= 100 && a.status < 200) return n;  // an interim answer: the real one follows
      return a.accept() ? n : 0;
    }
    const auto colon = line.find(':');
    if (colon == std::string::npos || line[0] == ' ' || line[0] == '\t') return n;
    const std::string name = lower(trimmed(line.substr(0, colon)));
    const std::string value = trimmed(line.substr(colon + 1));
    if (name == "content-length") {
      a.contentLengths.push_back(value);
    } else if (name == "transfer-encoding") {
      a.transferEncodings.push_back(value);
    } else if (name == "content-encoding") {
      a.contentEncodings.push_back(value);
    } else if (name == "etag") {
      if (!a.etag) a.etag = value;
    } else if (name == "x-access-signature") {
      if (!a.signature) a.signature = value;
    } else if (name == "retry-after") {
      if (!a.retryAfter) a.retryAfter = value;
    }
    return n;
  }

  static size_t onBody(char* data, size_t size, size_t count, void* userdata) {
    auto& a = *static_cast<Answer*>(userdata);
    const size_t n = size * count;
    if (a.anySuccess) return n;  // a report's answer: read to its end (the connection is kept), not kept
    if (static_cast<int64_t>(a.body.size() + n) > a.limit) {
      a.stop = Stop::kOverLimit;  // at most limit bytes are ever held
      return 0;
    }
    a.body.append(data, n);
    if (a.enough && a.enough(a.body)) {
      a.stop = Stop::kEnough;
      return 0;
    }
    return n;
  }
};

// The libcurl handles of one client, and what they point to.
struct HttpStoreClient::CurlHandles {
  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  curl_slist* resolve = nullptr;
  CaCertificates caCertificates;
  char error[CURL_ERROR_SIZE] = {};

  ~CurlHandles() {
    if (easy != nullptr) curl_easy_cleanup(easy);
    curl_slist_free_all(headers);
    curl_slist_free_all(resolve);
  }
};

bool HttpStoreClient::asynchronousDns() {
  initLibcurl();
  const curl_version_info_data* info = curl_version_info(CURLVERSION_NOW);
  return info != nullptr && (info->features & CURL_VERSION_ASYNCHDNS) != 0;
}

HttpStoreClient::HttpStoreClient(Params params, std::string url, std::string shown, std::string peer, Logger log)
    : params_(std::move(params)),
      url_(std::move(url)),
      shown_(std::move(shown)),
      peer_(std::move(peer)),
      log_(std::move(log)),
      curl_(std::make_unique<CurlHandles>()) {
  hasQuery_ = url_.find('?') != std::string::npos;
}

HttpStoreClient::~HttpStoreClient() = default;

Result<std::unique_ptr<HttpStoreClient>> HttpStoreClient::create(Params params, Logger log) {
  // libcurl's URL parser is lenient ("https:///x" and "https:/x" name the host x): the form is
  // checked here first. The raw URL is never echoed: it may carry credentials.
  const std::string key = params.urlKey;
  const bool https = startsWithNoCase(params.url, "https://");
  const size_t authority = https ? 8 : 7;
  if ((!https && !startsWithNoCase(params.url, "http://")) || params.url.size() <= authority ||
      params.url[authority] == '/') {
    return Status::error(ErrorCode::kInvalid, key + ": malformed URL (expected http(s)://HOST[:PORT]/PATH)");
  }
  if (hasControlOrSpace(params.url)) {
    return Status::error(ErrorCode::kInvalid, key + ": white space or control character in URL");
  }
  if (!initLibcurl()) return Status::error(ErrorCode::kInternal, "store: libcurl cannot be initialised");
  std::unique_ptr<CURLU, decltype(&curl_url_cleanup)> parsed(curl_url(), curl_url_cleanup);
  if (!parsed) return Status::error(ErrorCode::kInternal, "store: out of memory");
  if (CURLUcode rc = curl_url_set(parsed.get(), CURLUPART_URL, params.url.c_str(), 0); rc != CURLUE_OK) {
    return Status::error(ErrorCode::kInvalid, std::string(key + ": malformed URL: ") + curl_url_strerror(rc));
  }
  auto part = [&](CURLUPart which, unsigned int flags = 0) {
    char* value = nullptr;
    std::string out;
    if (curl_url_get(parsed.get(), which, &value, flags) == CURLUE_OK && value != nullptr) out = value;
    curl_free(value);
    return out;
  };
  const std::string scheme = part(CURLUPART_SCHEME);
  const std::string host = part(CURLUPART_HOST);  // an IPv6 address in brackets
  const std::string port = part(CURLUPART_PORT, CURLU_DEFAULT_PORT);
  const std::string explicitPort = part(CURLUPART_PORT);
  std::string path = part(CURLUPART_PATH);
  if (path.empty()) path = "/";
  const bool defaultPort = explicitPort.empty() || port == (scheme == "https" ? "443" : "80");
  const std::string shown = scheme + "://" + host + (defaultPort ? "" : ":" + port) + path;
  if (host.empty()) return Status::error(ErrorCode::kInvalid, key + " " + shown + ": no host");
  if (!part(CURLUPART_USER).empty() || !part(CURLUPART_PASSWORD).empty() || !part(CURLUPART_OPTIONS).empty()) {
    return Status::error(ErrorCode::kInvalid,
                         key + " " + shown + ": credentials in the URL are not supported (use token_file)");
  }
  if (params.url.find('#') != std::string::npos) {
    return Status::error(ErrorCode::kInvalid, key + " " + shown + ": a fragment (#...) is not allowed");
  }
  const std::string url = part(CURLUPART_URL);

  CaCertificates caCertificates;
  if (scheme == "https" && !params.caPath.empty()) {
    auto certs = loadCaFile(params.caPath);
    if (!certs) return certs.status();
    caCertificates = std::move(*certs);
  } else if (scheme == "http") {
    if (!params.caPath.empty()) log->warn("store.ca_file is ignored for {}", shown);
    if (!params.tokenPath.empty()) log->warn("the bearer token is sent unencrypted to {}: use https://", shown);
  }
  if (!asynchronousDns()) {
    log->warn("store: this libcurl resolves names in the fetching thread: a hanging DNS look-up delays shutdown");
  }
  if (!params.proxy.url.empty()) {
    log->debug("store: {} through proxy {} (from {}){}", shown, params.proxy.describe(), params.proxy.origin,
               params.proxy.noProxy.empty() ? "" : ", except for NO_PROXY hosts");
  }

  std::unique_ptr<HttpStoreClient> client(
      new HttpStoreClient(std::move(params), url, shown, host + ":" + port, std::move(log)));
  client->origin_ = scheme + "://" + host + ":" + port;
  CurlHandles& c = *client->curl_;
  c.caCertificates = std::move(caCertificates);
  c.easy = curl_easy_init();
  if (client->params_.options.driver) {
    client->driver_ = client->params_.options.driver;
  } else {
    auto polling = std::make_shared<PollingTransferDriver>();
    if (polling->valid()) client->driver_ = std::move(polling);
  }
  if (c.easy == nullptr || !client->driver_) {
    return Status::error(ErrorCode::kInternal, "store: libcurl cannot make its handles");
  }
  const Params& p = client->params_;
  CURL* e = c.easy;
  bool ok = true;
  auto set = [&](CURLoption option, auto value) { ok = ok && curl_easy_setopt(e, option, value) == CURLE_OK; };
  set(CURLOPT_PROTOCOLS_STR, "http,https");
  set(CURLOPT_FOLLOWLOCATION, 0L);
  set(CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_1_1));
  // No Accept-Encoding is sent (CURLOPT_ACCEPT_ENCODING unset) and nothing is decoded.
  set(CURLOPT_HTTP_CONTENT_DECODING, 0L);
  set(CURLOPT_USERAGENT, "pim-access-agent/" PIM_VERSION);
  set(CURLOPT_HTTPAUTH, static_cast<long>(CURLAUTH_BEARER));
  // Never CURLOPT_VERBOSE and no debug callback: libcurl prints nothing, so neither the token nor
  // a proxy's password can reach a log through it. Errors come through this buffer, which never
  // holds a header.
  set(CURLOPT_ERRORBUFFER, c.error);
  // No signal handling by libcurl (it would flip SIGPIPE process-wide): it sends with MSG_NOSIGNAL.
  set(CURLOPT_NOSIGNAL, 1L);
  // A transfer removed during a name look-up leaves the resolver thread to finish alone.
  set(CURLOPT_QUICK_EXIT, 1L);
  set(CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(p.options.connectTimeout.count()));
  // libcurl's own idle limit counts whole seconds; fetch() applies maxIdle exactly before.
  set(CURLOPT_MAXAGE_CONN, static_cast<long>((p.options.maxIdle.count() + 999) / 1000));
  set(CURLOPT_OPENSOCKETFUNCTION, openSocketCloseOnExec);
  set(CURLOPT_HEADERFUNCTION, Answer::onHeader);
  set(CURLOPT_WRITEFUNCTION, Answer::onBody);
  // A proxy's CONNECT answer is not the store's.
  set(CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
  // Always set, so that libcurl never reads the proxy environment itself (store_proxy.h did).
  set(CURLOPT_PROXY, p.proxy.url.c_str());
  set(CURLOPT_NOPROXY, p.proxy.noProxy.c_str());
  // The system CAs from Debian's bundle file only: with the default CApath (/etc/ssl/certs) as
  // well, libcurl does not cache the verification store and parses the whole bundle again at
  // every handshake (~10 ms of CPU); the bundle holds the same certificates.
  set(CURLOPT_CAPATH, static_cast<const char*>(nullptr));
  set(CURLOPT_SSLVERSION, static_cast<long>(CURL_SSLVERSION_TLSv1_2));
  set(CURLOPT_SSL_VERIFYPEER, 1L);
  set(CURLOPT_SSL_VERIFYHOST, 2L);
  if (!c.caCertificates.empty()) {
    set(CURLOPT_SSL_CTX_FUNCTION, addCaCertificates);
    set(CURLOPT_SSL_CTX_DATA, static_cast<void*>(&c.caCertificates));
  }
  if (!p.clientCertPath.empty()) {
    set(CURLOPT_SSLCERT, p.clientCertPath.c_str());
    set(CURLOPT_SSLKEY, p.clientKeyPath.c_str());
  }
  for (const auto& entry : p.options.resolve) c.resolve = curl_slist_append(c.resolve, entry.c_str());
  if (!ok) return Status::error(ErrorCode::kInternal, "store: this libcurl lacks an option the agent needs (7.87+)");
  return client;
}

std::string HttpStoreClient::describe() const { return shown_; }

void HttpStoreClient::cancel() {
  cancelled_.store(true);
  // Wakes the transfer in progress, which then drops it (a later one sees the flag at its start).
  if (driver_) driver_->wake(curl_->easy);
}

Result<std::string> HttpStoreClient::bearerToken() const {
  if (params_.tokenPath.empty()) return std::string();
  return readToken();
}

Result<std::string> HttpStoreClient::readToken() const {
  const std::string& path = params_.tokenPath;
  auto text = readRegularFile(path, kMaxTokenFileBytes);
  // Only the path and the cause go into messages, never the content.
  if (!text) return Status::error(ErrorCode::kUnreachable, "store token file: " + text.status().message(), path);
  std::string token = trimmed(*text);
  if (token.empty()) return Status::error(ErrorCode::kUnreachable, "store token file " + path + ": empty", path);
  if (hasControlOrSpace(token)) {
    return Status::error(ErrorCode::kUnreachable,
                         "store token file " + path + ": the token contains white space or control characters", path);
  }
  return token;
}

bool HttpStoreClient::keptConnectionStale() const {
  if (keptFd_ < 0) return false;
  // Past maxIdle a middlebox may have dropped the connection without a word (a GET sent into it
  // would wait for the whole time-out); anything readable means the store closed it or sent
  // bytes nobody asked for.
  if (SteadyClock::now() - keptSince_ > params_.options.maxIdle) return true;
  pollfd p{keptFd_, POLLIN, 0};
  return ::poll(&p, 1, 0) != 0;
}

CURLcode HttpStoreClient::transfer() {
  const TransferEnd end = driver_->run(curl_->easy, cancelled_);
  if (!end.error.empty()) std::snprintf(curl_->error, sizeof curl_->error, "%s", end.error.c_str());
  keptFd_ = end.kept == CURL_SOCKET_BAD ? -1 : end.kept;
  keptSince_ = SteadyClock::now();
  return end.result;
}

Result<FetchOutcome> HttpStoreClient::fetch(const std::string& etag, int64_t waitSeconds) {
  retryAfter_.reset();
  notRegistered_ = 0;
  const std::string where =
      "GET " + shown_ + (params_.proxy.url.empty() ? "" : " via proxy " + params_.proxy.describe());
  auto unreachable = [&](const std::string& cause) {
    return Status::error(ErrorCode::kUnreachable, where + ": " + cause);
  };
  if (cancelled_.load()) return unreachable("cancelled");
  waitSeconds = std::max<int64_t>(0, waitSeconds);
  CurlHandles& c = *curl_;

  std::string url = url_;
  if (waitSeconds > 0) url += (hasQuery_ ? "&wait=" : "?wait=") + std::to_string(waitSeconds);
  curl_slist_free_all(c.headers);
  c.headers = curl_slist_append(nullptr, "Accept: application/json");
  if (!etag.empty()) {
    if (hasControl(etag)) {
      log_->warn("{}: stored ETag has control characters; fetching without If-None-Match", where);
    } else {
      c.headers = curl_slist_append(c.headers, ("If-None-Match: " + etag).c_str());
    }
  }
  const auto budget = params_.options.connectTimeout + params_.options.readTimeout + std::chrono::seconds(waitSeconds);
  auto token = bearerToken();
  if (!token) return token.status();
  refreshConnection(where);
  Answer answer;
  answer.limit = params_.maxBytes;
  curl_easy_setopt(c.easy, CURLOPT_HTTPGET, 1L);
  const CURLcode code = perform(url, answer, budget, *token);
  lastStatus_ = answer.complete ? answer.status : 0;
  long connects = 0;
  curl_easy_getinfo(c.easy, CURLINFO_NUM_CONNECTS, &connects);
  const char* how = connects == 0 ? "kept connection" : "new connection";

  if (cancelled_.load()) return unreachable("cancelled");
  if (answer.complete && (answer.status == 429 || answer.status == 503) && answer.retryAfter) {
    retryAfter_ = parseRetryAfter(*answer.retryAfter, static_cast<int64_t>(std::time(nullptr)));
  }
  if (answer.complete && (answer.status == 404 || answer.status == 410)) notRegistered_ = answer.status;
  if (code != CURLE_OK) return failure(code, answer, where);

  if (answer.status == 304) {
    if (etag.empty()) return unreachable("HTTP 304 " + answer.reason + " to a request without If-None-Match");
    FetchOutcome out;
    out.kind = FetchOutcome::Kind::kUnchanged;
    out.httpStatus = 304;
    const std::string newEtag = answer.etag ? *answer.etag : std::string();
    out.etag = newEtag.empty() || hasControl(newEtag) ? etag : newEtag;
    log_->debug("{}: 304, unchanged ({})", where, how);
    return out;
  }
  FetchOutcome out;
  out.kind = FetchOutcome::Kind::kDocument;
  out.httpStatus = 200;
  out.etag = answer.etag ? *answer.etag : std::string();
  if (out.etag.empty() || hasControl(out.etag)) out.etag = "\"sha256:" + sha256Hex(answer.body) + "\"";
  if (params_.verifier) {
    Status v = params_.verifier->verify(answer.body, answer.signature ? *answer.signature : std::string(), where);
    if (!v) return v;
  }
  out.body = std::move(answer.body);
  log_->debug("{}: 200, {} bytes, ETag {} ({})", where, out.body.size(), out.etag, how);
  return out;
}

void HttpStoreClient::refreshConnection(const std::string& where) {
  bool fresh = false;
  if (keptConnectionStale()) {
    log_->debug("{}: the kept connection is idle too long or closed by the store; opening a new one", where);
    // A driver whose connections are shared (the daemon's) cannot close this one: the transfer
    // asks for a new connection, and libcurl closes the old one when it keeps the new one.
    fresh = !driver_->dropConnections();
    keptFd_ = -1;
  }
  curl_easy_setopt(curl_->easy, CURLOPT_FRESH_CONNECT, fresh ? 1L : 0L);
}

CURLcode HttpStoreClient::perform(const std::string& url, Answer& answer, std::chrono::milliseconds budget,
                                  const std::string& token) {
  CurlHandles& c = *curl_;
  CURL* e = c.easy;
  curl_easy_setopt(e, CURLOPT_URL, url.c_str());
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, c.headers);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, static_cast<long>(budget.count()));
  curl_easy_setopt(e, CURLOPT_XOAUTH2_BEARER, token.empty() ? nullptr : token.c_str());
  curl_easy_setopt(e, CURLOPT_HEADERDATA, &answer);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, &answer);
  // libcurl loads these into the multi handle's DNS cache once per setting.
  if (c.resolve != nullptr) curl_easy_setopt(e, CURLOPT_RESOLVE, c.resolve);
  c.error[0] = '\0';
  const CURLcode code = transfer();
  curl_easy_setopt(e, CURLOPT_XOAUTH2_BEARER, nullptr);  // libcurl's copy of the token goes now
  return code;
}

Result<HttpStoreClient::Reply> HttpStoreClient::exchange(const Exchange& x) {
  retryAfter_.reset();
  lastStatus_ = 0;
  const std::string where =
      "POST " + origin_ + x.path + (params_.proxy.url.empty() ? "" : " via proxy " + params_.proxy.describe());
  auto unreachable = [&](const std::string& cause) {
    return Status::error(ErrorCode::kUnreachable, where + ": " + cause);
  };
  if (cancelled_.load()) return unreachable("cancelled");
  if (x.path.empty() || x.path[0] != '/' || hasControlOrSpace(x.path)) return unreachable("malformed request path");
  CurlHandles& c = *curl_;
  CURL* e = c.easy;
  curl_slist_free_all(c.headers);
  c.headers = curl_slist_append(nullptr, "Accept: application/json");
  c.headers = curl_slist_append(c.headers, "Content-Type: application/json");
  c.headers = curl_slist_append(c.headers, "Expect:");
  for (const auto& h : x.headers) {
    if (hasControl(h)) return unreachable("a request header has control characters");
    c.headers = curl_slist_append(c.headers, h.c_str());
  }
  refreshConnection(where);
  Answer answer;
  answer.limit = params_.maxBytes;
  answer.enough = x.enough;
  const auto budget = params_.options.connectTimeout + (x.hold.count() > 0 ? x.hold : params_.options.readTimeout);
  curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(x.body.size()));
  curl_easy_setopt(e, CURLOPT_POSTFIELDS, x.body.c_str());
  const CURLcode code = perform(origin_ + x.path, answer, budget, std::string());
  curl_easy_setopt(e, CURLOPT_POSTFIELDS, nullptr);
  curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
  // The headers may hold a secret (etcd's token): not kept past the exchange.
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, nullptr);
  curl_slist_free_all(c.headers);
  c.headers = nullptr;
  lastStatus_ = answer.complete ? answer.status : 0;
  if (cancelled_.load()) return unreachable("cancelled");
  Reply reply;
  if (code == CURLE_WRITE_ERROR && answer.stop == Answer::Stop::kEnough) {
    reply.body = std::move(answer.body);
    return reply;
  }
  if (code == CURLE_OPERATION_TIMEDOUT && x.hold.count() > 0 && answer.complete && answer.status == 200) {
    reply.timedOut = true;
    reply.body = std::move(answer.body);
    return reply;
  }
  if (code != CURLE_OK) return failure(code, answer, where);
  reply.body = std::move(answer.body);
  return reply;
}

Status HttpStoreClient::post(const std::string& body, const std::vector<std::string>& headers) {
  retryAfter_.reset();
  notRegistered_ = 0;
  lastStatus_ = 0;
  const std::string where =
      "POST " + shown_ + (params_.proxy.url.empty() ? "" : " via proxy " + params_.proxy.describe());
  auto unreachable = [&](const std::string& cause) {
    return Status::error(ErrorCode::kUnreachable, where + ": " + cause);
  };
  if (cancelled_.load()) return unreachable("cancelled");
  auto token = bearerToken();
  if (!token) return token.status();
  CurlHandles& c = *curl_;
  CURL* e = c.easy;
  curl_slist_free_all(c.headers);
  c.headers = curl_slist_append(nullptr, "Content-Type: application/json");
  // No "Expect: 100-continue" round trip before the body.
  c.headers = curl_slist_append(c.headers, "Expect:");
  for (const auto& h : headers) {
    if (!hasControl(h)) c.headers = curl_slist_append(c.headers, h.c_str());
  }
  refreshConnection(where);
  Answer answer;
  answer.limit = params_.maxBytes;
  answer.anySuccess = true;
  curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  curl_easy_setopt(e, CURLOPT_POSTFIELDS, body.data());
  const CURLcode code = perform(url_, answer, params_.options.connectTimeout + params_.options.readTimeout, *token);
  curl_easy_setopt(e, CURLOPT_POSTFIELDS, static_cast<const char*>(nullptr));
  curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
  lastStatus_ = answer.complete ? answer.status : 0;
  if (cancelled_.load()) return unreachable("cancelled");
  if (answer.complete && (answer.status == 429 || answer.status == 503) && answer.retryAfter) {
    retryAfter_ = parseRetryAfter(*answer.retryAfter, static_cast<int64_t>(std::time(nullptr)));
  }
  if (code != CURLE_OK) return failure(code, answer, where);
  log_->debug("{}: HTTP {}", where, answer.status);
  return Status::ok();
}

Status HttpStoreClient::failure(CURLcode code, const Answer& answer, const std::string& where) const {
  auto unreachable = [&](const std::string& cause) {
    return Status::error(ErrorCode::kUnreachable, where + ": " + cause);
  };
  const std::string detail = curl_->error[0] != '\0' ? std::string(curl_->error) : curl_easy_strerror(code);
  CURL* e = curl_->easy;
  if (code == CURLE_WRITE_ERROR && answer.stop != Answer::Stop::kNone) {
    const std::string status =
        "HTTP " + std::to_string(answer.status) + (answer.reason.empty() ? std::string() : " " + answer.reason);
    switch (answer.stop) {
      case Answer::Stop::kOverLimit: {
        const std::string size =
            answer.declared > answer.limit ? "document of " + std::to_string(answer.declared) + " bytes" : "document";
        return Status::error(ErrorCode::kRejected, where + ": " + size + " is over the limit of " +
                                                       std::to_string(answer.limit) + " bytes (max_document_bytes)");
      }
      case Answer::Stop::kRefused:
        return unreachable(status + ": " + answer.refusal);
      case Answer::Stop::kStatus:
        if (answer.status >= 300 && answer.status < 400) return unreachable(status + " (redirects are not followed)");
        if (retryAfter_) return unreachable(status + " (Retry-After: " + std::to_string(retryAfter_->count()) + " s)");
        return unreachable(status);
      case Answer::Stop::kNone:
      case Answer::Stop::kEnough:
        break;
    }
  }
  long proxyStatus = 0;
  curl_easy_getinfo(e, CURLINFO_HTTP_CONNECTCODE, &proxyStatus);
  if (proxyStatus >= 300) {
    return unreachable("proxy " + params_.proxy.describe() + " refused the tunnel to " + peer_ + ": HTTP " +
                       std::to_string(proxyStatus));
  }
  switch (code) {
    case CURLE_OPERATION_TIMEDOUT: {
      curl_off_t connected = 0, secured = 0;
      curl_easy_getinfo(e, CURLINFO_CONNECT_TIME_T, &connected);
      curl_easy_getinfo(e, CURLINFO_APPCONNECT_TIME_T, &secured);
      const bool tls = shown_.rfind("https:", 0) == 0;
      if (connected == 0 || (tls && secured == 0)) {
        return unreachable("timed out: no connection to " + peer_ + " within " +
                           seconds(params_.options.connectTimeout) + " (" + detail + ")");
      }
      return unreachable("timed out: no complete answer in time (" + detail + ")");
    }
    case CURLE_COULDNT_RESOLVE_HOST:
      return unreachable("cannot resolve the store's host name (" + detail + ")");
    case CURLE_COULDNT_RESOLVE_PROXY:
      return unreachable("cannot resolve the proxy's host name (" + detail + ")");
    case CURLE_COULDNT_CONNECT: {
      long osErrno = 0;
      curl_easy_getinfo(e, CURLINFO_OS_ERRNO, &osErrno);
      const std::string cause = osErrno != 0 ? std::string(std::strerror(static_cast<int>(osErrno))) : detail;
      const std::string to = params_.proxy.url.empty() ? peer_ : "proxy " + params_.proxy.describe();
      return unreachable("connect to " + to + ": " + cause);
    }
    case CURLE_PEER_FAILED_VERIFICATION: {
      // libcurl checks the name itself once OpenSSL accepted the chain ("SSL: no alternative
      // certificate subject name matches target host name ..."); OpenSSL's verdict on the chain
      // is the verification result.
      if (detail.find("target host name") != std::string::npos) {
        return unreachable("TLS with " + peer_ + ": server certificate: hostname mismatch (" + detail + ")");
      }
      long verify = X509_V_OK;
      curl_easy_getinfo(e, CURLINFO_SSL_VERIFYRESULT, &verify);
      const std::string reason = verify != X509_V_OK ? X509_verify_cert_error_string(verify) : "refused";
      return unreachable("TLS with " + peer_ + ": server certificate: " + reason + " (" + detail + ")");
    }
    case CURLE_GOT_NOTHING:
      return unreachable("connection closed before an answer");
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
      if (answer.complete && answer.status == 200) {
        if (answer.declared >= 0) {
          return unreachable("truncated body: received " + std::to_string(answer.body.size()) + " of " +
                             std::to_string(answer.declared) + " bytes (" + detail + ")");
        }
        return unreachable("truncated body: the connection ended after " + std::to_string(answer.body.size()) +
                           " bytes, before the end of the chunked encoding (" + detail + ")");
      }
      return unreachable(detail);
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_BAD_CONTENT_ENCODING:
      return unreachable("malformed answer: " + detail);
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_ISSUER_ERROR:
      return unreachable("TLS with " + peer_ + ": " + detail);
    default:
      return unreachable(detail);
  }
}

}  // namespace pim
