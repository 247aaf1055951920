#include "tests/unit/store_test_server.h"

#include <Poco/Net/Context.h>
#include <Poco/Net/HTTPRequestHandler.h>
#include <Poco/Net/HTTPRequestHandlerFactory.h>
#include <Poco/Net/HTTPServer.h>
#include <Poco/Net/HTTPServerParams.h>
#include <Poco/Net/HTTPServerRequestImpl.h>
#include <Poco/Net/SecureServerSocket.h>
#include <Poco/Net/ServerSocket.h>
#include <Poco/Net/SocketAddress.h>
#include <Poco/ThreadPool.h>
#include <Poco/URI.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "agent/store/signature.h"

namespace pim {
namespace storetest {
namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

}  // namespace

std::string shellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

std::string readAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Subprocess spawn(const std::vector<std::string>& argv, const std::string& output, const std::vector<std::string>& env) {
  SpawnOptions options;
  options.out = Redirect::truncate(output);
  options.err = Redirect::toStdout();
  options.group = SpawnOptions::Group::kInherit;
  options.env = env;
  options.inheritEnvironment = true;
  options.searchPath = true;
  auto spawned = Subprocess::spawn(argv, options);
  if (!spawned) throw std::runtime_error(spawned.status().message());
  return std::move(*spawned);
}

int waitFor(Subprocess& process, std::chrono::milliseconds timeout) {
  if (auto code = process.waitFor(timeout)) return *code;
  process.kill(SIGKILL);
  return process.wait();
}

bool acceptsConnections(uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

constexpr const char* kNamespaceVariable = "PIM_TEST_IN_NETNS";
constexpr const char* kNamespaceMarker = "pim-test: inside the namespaces";

// ---- RecordedRequest / Exchange ----

std::string RecordedRequest::header(const std::string& name) const {
  auto it = headers.find(lower(name));
  return it == headers.end() ? std::string() : it->second;
}

bool RecordedRequest::hasHeader(const std::string& name) const { return headers.count(lower(name)) > 0; }

void Exchange::abortConnection() {
  auto& impl = dynamic_cast<Poco::Net::HTTPServerRequestImpl&>(raw);
  // shutdown(2) rather than Socket::shutdown(): no TLS close_notify, the peer sees a cut.
  ::shutdown(impl.socket().impl()->sockfd(), SHUT_RDWR);
}

// ---- Poco plumbing ----

class StoreTestRequestHandler : public Poco::Net::HTTPRequestHandler {
 public:
  explicit StoreTestRequestHandler(StoreTestServer& server) : server_(server) {}
  void handleRequest(Poco::Net::HTTPServerRequest& request, Poco::Net::HTTPServerResponse& response) override {
    server_.handle(request, response);
  }

 private:
  StoreTestServer& server_;
};

namespace {

class HandlerFactory : public Poco::Net::HTTPRequestHandlerFactory {
 public:
  explicit HandlerFactory(StoreTestServer& server) : server_(server) {}
  Poco::Net::HTTPRequestHandler* createRequestHandler(const Poco::Net::HTTPServerRequest&) override {
    return new StoreTestRequestHandler(server_);
  }

 private:
  StoreTestServer& server_;
};

}  // namespace

// ---- StoreTestServer ----

StoreTestServer::StoreTestServer(Handler handler) : handler_(std::move(handler)) { start(nullptr, nullptr); }

StoreTestServer::StoreTestServer(Tls tls, Handler handler) : handler_(std::move(handler)) { start(&tls, nullptr); }

StoreTestServer::StoreTestServer(KeepAlive keepAlive, Handler handler) : handler_(std::move(handler)) {
  start(nullptr, &keepAlive);
}

StoreTestServer::StoreTestServer(Tls tls, KeepAlive keepAlive, Handler handler) : handler_(std::move(handler)) {
  start(&tls, &keepAlive);
}

void StoreTestServer::start(const Tls* tls, const KeepAlive* keepAlive) {
  std::signal(SIGPIPE, SIG_IGN);
  Poco::Net::SocketAddress address("127.0.0.1", 0);
  std::unique_ptr<Poco::Net::ServerSocket> socket;
  if (tls != nullptr) {
    Poco::Net::Context::Ptr context =
        new Poco::Net::Context(Poco::Net::Context::TLS_SERVER_USE, tls->keyFile, tls->certFile, "",
                               Poco::Net::Context::VERIFY_NONE, 9, false, "DEFAULT");
    socket = std::make_unique<Poco::Net::SecureServerSocket>(address, 64, context);
    secure_ = true;
  } else {
    socket = std::make_unique<Poco::Net::ServerSocket>(address, 64);
  }
  port_ = socket->address().port();
  auto* params = new Poco::Net::HTTPServerParams;
  params->setMaxThreads(16);
  params->setMaxQueued(64);
  params->setKeepAlive(keepAlive != nullptr);
  if (keepAlive != nullptr) {
    params->setKeepAliveTimeout(Poco::Timespan(std::chrono::microseconds(keepAlive->idleTimeout).count()));
  }
  // Bounds how long a connection thread waits for a request that never comes (e.g. a client
  // that gave up during the TLS handshake), hence how long the destructor may wait.
  params->setTimeout(Poco::Timespan(5, 0));
  pool_ = std::make_unique<Poco::ThreadPool>(2, 16, 60);
  server_ = std::make_unique<Poco::Net::HTTPServer>(new HandlerFactory(*this), *pool_, *socket, params);
  server_->start();
}

StoreTestServer::~StoreTestServer() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  // stopAll(false): aborting connections from this thread would call SSL_shutdown concurrently
  // with the handler threads; handlers return on their own since stopping() is true.
  server_->stopAll(false);
  pool_->joinAll();
  server_.reset();
  pool_.reset();
}

uint16_t StoreTestServer::port() const { return port_; }

std::string StoreTestServer::url(const std::string& path) const {
  return std::string(secure_ ? "https" : "http") + "://127.0.0.1:" + std::to_string(port_) + path;
}

std::vector<RecordedRequest> StoreTestServer::requests() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return requests_;
}

size_t StoreTestServer::connectionCount() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::set<std::string> peers;
  for (const auto& r : requests_) peers.insert(r.peer);
  return peers.size();
}

size_t StoreTestServer::requestCount() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return requests_.size();
}

bool StoreTestServer::waitForRequests(size_t n, std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> lock(mutex_);
  return cv_.wait_for(lock, timeout, [&] { return requests_.size() >= n; });
}

void StoreTestServer::setDocument(std::string body, std::string etag, std::string signature) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    etag_ = etag.empty() ? "\"" + sha256Hex(body) + "\"" : std::move(etag);
    body_ = std::move(body);
    signature_ = std::move(signature);
  }
  cv_.notify_all();
}

void StoreTestServer::setForcedStatus(int status) {
  std::lock_guard<std::mutex> lock(mutex_);
  forcedStatus_ = status;
}

int StoreTestServer::heldLongPolls() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return heldLongPolls_;
}

bool StoreTestServer::stopping() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stopping_;
}

bool StoreTestServer::sleepFor(std::chrono::milliseconds d) {
  std::unique_lock<std::mutex> lock(mutex_);
  return !cv_.wait_for(lock, d, [this] { return stopping_; });
}

void StoreTestServer::addBytesWritten(int64_t n) { bytesWritten_ += n; }

int64_t StoreTestServer::bytesWritten() const { return bytesWritten_.load(); }

void StoreTestServer::handle(Poco::Net::HTTPServerRequest& raw, Poco::Net::HTTPServerResponse& response) {
  RecordedRequest rec;
  rec.method = raw.getMethod();
  rec.target = raw.getURI();
  rec.peer = raw.clientAddress().toString();
  try {
    Poco::URI uri(raw.getURI());
    rec.path = uri.getPath();
    for (const auto& kv : uri.getQueryParameters()) rec.query[kv.first] = kv.second;
  } catch (const Poco::Exception&) {
    rec.path = raw.getURI();
  }
  for (const auto& h : raw) rec.headers[lower(h.first)] = h.second;
  if (rec.method == "POST" || rec.method == "PUT") {
    std::istream& in = raw.stream();
    char buf[8192];
    while (in && rec.body.size() < (size_t(1) << 20)) {
      in.read(buf, sizeof buf);
      rec.body.append(buf, size_t(in.gcount()));
    }
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    requests_.push_back(rec);
  }
  cv_.notify_all();
  Exchange ex{rec, raw, response, *this};
  if (handler_) {
    handler_(ex);
  } else {
    serveDocument(ex);
  }
}

void StoreTestServer::receiveReport(Exchange& ex) {
  std::unique_lock<std::mutex> lock(mutex_);
  reports_.push_back(ex.request.body);
  cv_.notify_all();
  cv_.wait(lock, [&] { return stopping_ || !reportHang_; });
  if (stopping_) {
    lock.unlock();
    ex.abortConnection();
    return;
  }
  const int status = reportStatus_;
  lock.unlock();
  ex.response.setStatusAndReason(static_cast<Poco::Net::HTTPResponse::HTTPStatus>(status));
  ex.response.setContentLength(0);
  ex.response.send();
}

std::vector<std::string> StoreTestServer::reports() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return reports_;
}

bool StoreTestServer::waitForReports(size_t n, std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> lock(mutex_);
  return cv_.wait_for(lock, timeout, [&] { return reports_.size() >= n; });
}

void StoreTestServer::setReportStatus(int status) {
  std::lock_guard<std::mutex> lock(mutex_);
  reportStatus_ = status;
}

void StoreTestServer::setReportHang(bool hang) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    reportHang_ = hang;
  }
  cv_.notify_all();
}

void StoreTestServer::serveDocument(Exchange& ex) {
  auto& response = ex.response;
  if (ex.request.method == "POST" && ex.request.path.size() >= 7 &&
      ex.request.path.compare(ex.request.path.size() - 7, 7, "/report") == 0) {
    receiveReport(ex);
    return;
  }
  int wait = 0;
  auto w = ex.request.query.find("wait");
  if (w != ex.request.query.end()) wait = std::atoi(w->second.c_str());
  std::unique_lock<std::mutex> lock(mutex_);
  if (!body_ && forcedStatus_ == 0 && wait > 0) {
    cv_.wait_for(lock, std::chrono::seconds(wait), [&] { return stopping_ || body_.has_value(); });
    ++heldLongPolls_;
  }
  if (forcedStatus_ != 0) {
    int status = forcedStatus_;
    lock.unlock();
    response.setStatusAndReason(static_cast<Poco::Net::HTTPResponse::HTTPStatus>(status));
    response.setContentLength(0);
    response.send();
    return;
  }
  if (!body_) {
    lock.unlock();
    response.setStatusAndReason(Poco::Net::HTTPResponse::HTTP_NOT_FOUND);
    response.setContentLength(0);
    response.send();
    return;
  }
  const std::string inm = ex.request.header("If-None-Match");
  if (!inm.empty() && inm == etag_) {
    if (wait > 0) {
      const std::string before = etag_;
      cv_.wait_for(lock, std::chrono::seconds(wait), [&] { return stopping_ || etag_ != before; });
      ++heldLongPolls_;
    }
    if (inm == etag_) {
      std::string etag = etag_;
      lock.unlock();
      response.setStatusAndReason(Poco::Net::HTTPResponse::HTTP_NOT_MODIFIED);
      response.set("ETag", etag);
      response.send();
      return;
    }
  }
  std::string body = *body_;
  std::string etag = etag_;
  std::string signature = signature_;
  lock.unlock();
  response.setStatusAndReason(Poco::Net::HTTPResponse::HTTP_OK);
  response.setContentType("application/json");
  response.set("ETag", etag);
  if (!signature.empty()) response.set("X-Access-Signature", signature);
  response.setContentLength(static_cast<std::streamsize>(body.size()));
  response.send() << body;
  addBytesWritten(static_cast<int64_t>(body.size()));
}

// ---- StoreTestDir ----

StoreTestDir::StoreTestDir() {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/pim-store-test-XXXXXX";
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) throw std::runtime_error("mkdtemp " + pattern + " failed");
  path_ = buf.data();
}

StoreTestDir::~StoreTestDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string StoreTestDir::file(const std::string& name) const { return path_ + "/" + name; }

std::string StoreTestDir::write(const std::string& name, const std::string& content) const {
  std::string path = file(name);
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << content;
    if (!out) throw std::runtime_error("write " + path + " failed");
  }
  ::chmod(path.c_str(), 0600);
  return path;
}

// ---- PKI ----

StoreTestPki makeStoreTestPki(const std::string& dir, const std::string& subjectAltName) {
  StoreTestPki pki;
  pki.caCert = dir + "/ca.pem";
  pki.serverCert = dir + "/server.pem";
  pki.serverKey = dir + "/server.key";
  pki.clientCert = dir + "/client.pem";
  pki.clientKey = dir + "/client.key";
  const std::string clientCsr = dir + "/client.csr";
  const std::string clientExt = dir + "/client.ext";
  const std::string caKey = dir + "/ca.key";
  const std::string csr = dir + "/server.csr";
  const std::string ext = dir + "/server.ext";
  const std::string log = dir + "/openssl.log";
  {
    std::ofstream out(ext);
    out << "subjectAltName=" << subjectAltName << "\nbasicConstraints=CA:FALSE\n"
        << "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n";
    std::ofstream client(clientExt);
    client << "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n";
  }
  const std::string q = " 2>>" + shellQuote(log) + " >/dev/null";
  const std::vector<std::string> commands = {
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj '/CN=pim test CA'"
      " -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign -keyout " +
          shellQuote(caKey) + " -out " + shellQuote(pki.caCert) + q,
      "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj '/CN=pim test store' -keyout " +
          shellQuote(pki.serverKey) + " -out " + shellQuote(csr) + q,
      "openssl x509 -req -days 2 -in " + shellQuote(csr) + " -CA " + shellQuote(pki.caCert) + " -CAkey " +
          shellQuote(caKey) + " -CAcreateserial -extfile " + shellQuote(ext) + " -out " + shellQuote(pki.serverCert) +
          q,
      "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj '/CN=pim test client' -keyout " +
          shellQuote(pki.clientKey) + " -out " + shellQuote(clientCsr) + q,
      "openssl x509 -req -days 2 -in " + shellQuote(clientCsr) + " -CA " + shellQuote(pki.caCert) + " -CAkey " +
          shellQuote(caKey) + " -CAcreateserial -extfile " + shellQuote(clientExt) + " -out " +
          shellQuote(pki.clientCert) + q,
  };
  for (const auto& cmd : commands) {
    if (std::system(cmd.c_str()) != 0) throw std::runtime_error("openssl failed: " + cmd + "\n" + readAll(log));
  }
  return pki;
}

// ---- tinyproxy ----

bool StoreTestProxy::available() { return ::access("/usr/bin/tinyproxy", X_OK) == 0; }

StoreTestProxy::StoreTestProxy() {
  port_ = unusedLoopbackPort();
  // No ConnectPort line: CONNECT to any port (the stores of the tests listen on ephemeral ones).
  dir_.write("tinyproxy.conf", "Port " + std::to_string(port_) +
                                   "\nListen 127.0.0.1\nTimeout 60\nMaxClients 20\nAllow 127.0.0.1\n"
                                   "LogLevel Info\nLogFile \"" +
                                   dir_.file("tinyproxy.log") + "\"\n");
  process_.emplace(spawn({"/usr/bin/tinyproxy", "-d", "-c", dir_.file("tinyproxy.conf")}, dir_.file("tinyproxy.out")));
  for (int i = 0; i < 250; ++i) {
    if (acceptsConnections(port_)) return;
    if (!process_->running()) {
      throw std::runtime_error("tinyproxy exited at start: " + readAll(dir_.file("tinyproxy.out")) +
                               readAll(dir_.file("tinyproxy.log")));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  throw std::runtime_error("tinyproxy does not accept connections on port " + std::to_string(port_));
}

StoreTestProxy::~StoreTestProxy() {
  if (!process_) return;
  process_->kill(SIGTERM);
  (void)waitFor(*process_, std::chrono::seconds(5));
}

std::string StoreTestProxy::url() const { return "http://127.0.0.1:" + std::to_string(port_); }

std::vector<std::string> StoreTestProxy::requests() const {
  // "CONNECT   Dec 06 02:17:52.186 [23804]: Request (file descriptor 4): GET http://... HTTP/1.1"
  std::vector<std::string> out;
  std::istringstream log(readAll(dir_.file("tinyproxy.log")));
  const std::string marker = "Request (file descriptor ";
  for (std::string line; std::getline(log, line);) {
    const auto at = line.find(marker);
    if (at == std::string::npos) continue;
    const auto colon = line.find("): ", at);
    if (colon != std::string::npos) out.push_back(line.substr(colon + 3));
  }
  return out;
}

uint16_t unusedLoopbackPort() {
  Poco::Net::ServerSocket probe(Poco::Net::SocketAddress("127.0.0.1", 0));
  return probe.address().port();
}

// ---- a name server that never answers ----

BlackholeDns::BlackholeDns() {
  auto fail = [](const std::string& what) { throw std::runtime_error(what + ": " + std::strerror(errno)); };
  // The loopback interface of a new network namespace is down.
  {
    const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
    if (fd < 0 || ::ioctl(fd, SIOCGIFFLAGS, &ifr) != 0) fail("SIOCGIFFLAGS lo");
    ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
    if (::ioctl(fd, SIOCSIFFLAGS, &ifr) != 0) fail("SIOCSIFFLAGS lo up");
    ::close(fd);
  }
  // Not close-on-exec: the programs the test starts keep the name server alive too.
  socket_ = ::socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(53);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (socket_ < 0 || ::bind(socket_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) fail("bind 127.0.0.1:53/udp");
  const std::string resolv = dir_.write("resolv.conf", "nameserver 127.0.0.1\noptions timeout:30 attempts:1\n");
  const std::string nsswitch = dir_.write("nsswitch.conf", "hosts: dns\n");
  ::chmod(resolv.c_str(), 0644);
  ::chmod(nsswitch.c_str(), 0644);
  if (::mount(resolv.c_str(), "/etc/resolv.conf", nullptr, MS_BIND, nullptr) != 0) fail("bind mount /etc/resolv.conf");
  if (::mount(nsswitch.c_str(), "/etc/nsswitch.conf", nullptr, MS_BIND, nullptr) != 0) {
    fail("bind mount /etc/nsswitch.conf");
  }
}

BlackholeDns::~BlackholeDns() {
  ::umount2("/etc/nsswitch.conf", MNT_DETACH);
  ::umount2("/etc/resolv.conf", MNT_DETACH);
  if (socket_ >= 0) ::close(socket_);
}

bool BlackholeDns::queried(std::chrono::milliseconds timeout) const {
  pollfd p{socket_, POLLIN, 0};
  return ::poll(&p, 1, static_cast<int>(timeout.count())) > 0;
}

bool inNetworkNamespace() {
  const char* v = std::getenv(kNamespaceVariable);
  const bool inside = v != nullptr && *v != '\0';
  if (inside) std::printf("%s\n", kNamespaceMarker);
  return inside;
}

std::optional<NamespaceRun> runInNetworkNamespace(const std::string& testName, std::string& why) {
  char self[4096];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) {
    why = "readlink /proc/self/exe failed";
    return std::nullopt;
  }
  self[n] = '\0';
  std::vector<std::string> argv = {"unshare"};
  if (::geteuid() != 0) argv.insert(argv.end(), {"--user", "--map-root-user"});
  argv.insert(argv.end(), {"--net", "--mount", "--propagation", "private", self, testName});
  StoreTestDir dir;
  const std::string output = dir.file("output");
  Subprocess process = spawn(argv, output, {std::string(kNamespaceVariable) + "=1"});
  NamespaceRun run;
  run.exit = waitFor(process, std::chrono::seconds(120));
  run.output = readAll(output);
  if (run.output.find(kNamespaceMarker) == std::string::npos) {
    why = "cannot make network and mount namespaces here (unshare: exit " + std::to_string(run.exit) + ", " +
          run.output.substr(0, 300) + ")";
    return std::nullopt;
  }
  return run;
}

// ---- Signer ----

StoreTestSigner::StoreTestSigner() : pkey_(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519")) {
  if (pkey_ == nullptr) throw std::runtime_error("EVP_PKEY_Q_keygen(ED25519) failed");
}

StoreTestSigner::~StoreTestSigner() { EVP_PKEY_free(static_cast<EVP_PKEY*>(pkey_)); }

std::string StoreTestSigner::publicKeyPem() const {
  BIO* bio = BIO_new(BIO_s_mem());
  if (bio == nullptr || PEM_write_bio_PUBKEY(bio, static_cast<EVP_PKEY*>(pkey_)) != 1) {
    BIO_free(bio);
    throw std::runtime_error("PEM_write_bio_PUBKEY failed");
  }
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<size_t>(len));
  BIO_free(bio);
  return pem;
}

std::string StoreTestSigner::sign(const std::string& body) const {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  unsigned char sig[64];
  size_t sigLen = sizeof sig;
  bool ok = ctx != nullptr && EVP_DigestSignInit(ctx, nullptr, nullptr, nullptr, static_cast<EVP_PKEY*>(pkey_)) == 1 &&
            EVP_DigestSign(ctx, sig, &sigLen, reinterpret_cast<const unsigned char*>(body.data()), body.size()) == 1;
  EVP_MD_CTX_free(ctx);
  if (!ok) throw std::runtime_error("EVP_DigestSign failed");
  return encodeBase64(std::string(reinterpret_cast<char*>(sig), sigLen));
}

}  // namespace storetest
}  // namespace pim
