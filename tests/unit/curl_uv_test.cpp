// The daemon's transfer driver (agent/daemon/curl_uv.h): the store client's fetches run by
// libcurl's multi_socket interface on a real libuv loop in a thread of its own (as the daemon's
// loop thread), against the loopback test store (tests/unit/store_test_server.h), while the test's
// thread waits in fetch() as the daemon's worker does.

#include "agent/daemon/curl_uv.h"

#include <fcntl.h>
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "agent/store/http_store_client.h"
#include "agent/store/store_client.h"
#include "tests/support/skip.h"
#include "tests/unit/store_test_server.h"

using Catch::Matchers::Contains;
using pim::CurlUvDriver;
using pim::ErrorCode;
using pim::FetchOutcome;
using pim::StoreClient;
using pim::StoreClientOptions;
using pim::StoreSettings;
using pim::storetest::Exchange;
using pim::storetest::StoreTestDir;
using pim::storetest::StoreTestProxy;
using pim::storetest::StoreTestServer;
using std::chrono::milliseconds;

namespace {

const std::string kDoc = R"({"version": 1, "revision": 7, "instance": "test"})";

// A libuv loop on a thread of its own with a CurlUvDriver on it; the destructor closes the
// driver on the loop thread, ends the loop and checks that it closes (no handle left open).
class LoopThread {
 public:
  LoopThread() {
    REQUIRE(uv_loop_init(&loop_) == 0);
    auto driver = CurlUvDriver::create(&loop_, pim::nullLogger());
    REQUIRE(driver.isOk());
    driver_ = *driver;
    // The driver's handles do not hold the loop: this one does, until stop.
    REQUIRE(uv_async_init(&loop_, &stop_, onStop) == 0);
    stop_.data = this;
    thread_ = std::thread([this] { uv_run(&loop_, UV_RUN_DEFAULT); });
  }
  ~LoopThread() {
    if (thread_.joinable()) stop();
  }
  LoopThread(const LoopThread&) = delete;
  LoopThread& operator=(const LoopThread&) = delete;

  /// Closes the driver on the loop thread, ends the loop; whether uv_loop_close succeeded.
  bool stop() {
    uv_async_send(&stop_);
    thread_.join();
    return uv_loop_close(&loop_) == 0;
  }
  const std::shared_ptr<CurlUvDriver>& driver() const { return driver_; }
  StoreClientOptions options() const {
    StoreClientOptions o;
    o.connectTimeout = milliseconds(2000);
    o.readTimeout = milliseconds(1000);
    o.driver = driver_;
    return o;
  }

 private:
  static void onStop(uv_async_t* handle) {
    auto* self = static_cast<LoopThread*>(handle->data);
    self->driver_->close();
    uv_close(reinterpret_cast<uv_handle_t*>(&self->stop_), nullptr);
  }

  uv_loop_t loop_{};
  uv_async_t stop_{};
  std::shared_ptr<CurlUvDriver> driver_;
  std::thread thread_;
};

std::unique_ptr<StoreClient> makeClient(const StoreSettings& settings, const StoreClientOptions& options,
                                        const std::string& root = "") {
  auto client = pim::makeStoreClient(settings, root, pim::nullLogger(), options);
  INFO(client.status().toString());
  REQUIRE(client.isOk());
  return std::move(*client);
}

StoreSettings settingsFor(const std::string& source) {
  StoreSettings s;
  s.source = source;
  return s;
}

// The descriptors of this process without close-on-exec.
std::set<int> inheritable() {
  std::set<int> out;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    const int fd = std::stoi(entry.path().filename().string());
    const int flags = ::fcntl(fd, F_GETFD);
    if (flags >= 0 && (flags & FD_CLOEXEC) == 0) out.insert(fd);
  }
  return out;
}

// The fd of this process's IPv4 TCP socket bound to 127.0.0.1:localPort, -1 when none.
int socketFdWithLocalPort(uint16_t localPort) {
  char wanted[32];
  std::snprintf(wanted, sizeof wanted, "0100007F:%04X", localPort);
  std::ifstream tcp("/proc/self/net/tcp");
  std::string line, inode;
  std::getline(tcp, line);  // header
  while (std::getline(tcp, line)) {
    std::istringstream fields(line);
    std::string sl, local, remote, state, queues, timer, retransmit, uid, timeout, node;
    fields >> sl >> local >> remote >> state >> queues >> timer >> retransmit >> uid >> timeout >> node;
    if (local == wanted) inode = node;
  }
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    if (!inode.empty() && std::filesystem::read_symlink(entry.path(), ec).string() == "socket:[" + inode + "]") {
      return std::stoi(entry.path().filename().string());
    }
  }
  return -1;
}

}  // namespace

TEST_CASE("curl_uv: the driver's multi handle leaves no descriptor to the programs the agent runs",
          "[store][curl_uv]") {
  const std::set<int> before = inheritable();
  {
    LoopThread loop;
    std::set<int> added;
    for (int fd : inheritable()) {
      if (before.count(fd) == 0) added.insert(fd);
    }
    CHECK(added.empty());
    CHECK(loop.stop());
  }
}

TEST_CASE("curl_uv: 200 then 304s on the kept connection, driven by the loop", "[store][curl_uv][keepalive]") {
  StoreTestDir dir;
  auto pki = pim::storetest::makeStoreTestPki(dir.path(), "IP:127.0.0.1");
  const StoreTestServer::KeepAlive keepAlive{milliseconds(10000)};
  std::unique_ptr<StoreTestServer> server;
  SECTION("http") { server = std::make_unique<StoreTestServer>(keepAlive, StoreTestServer::Handler{}); }
  SECTION("https") {
    server = std::make_unique<StoreTestServer>(StoreTestServer::Tls{pki.serverCert, pki.serverKey}, keepAlive,
                                               StoreTestServer::Handler{});
  }
  server->setDocument(kDoc, "\"k1\"");
  LoopThread loop;
  StoreSettings s = settingsFor(server->url());
  s.caFile = "/ca.pem";
  auto client = makeClient(s, loop.options(), dir.path());
  auto first = client->fetch("", 0);
  INFO(first.status().toString());
  REQUIRE(first.isOk());
  CHECK(first->body == kDoc);
  auto again = client->fetch("\"k1\"", 0);
  INFO(again.status().toString());
  REQUIRE(again.isOk());
  CHECK(again->kind == FetchOutcome::Kind::kUnchanged);
  CHECK(server->requestCount() == 2);
  CHECK(server->connectionCount() == 1);
  // The loop ran the transfers: libcurl told it which sockets to watch, and it ended both.
  const auto c = loop.driver()->counters();
  CHECK(c.completed == 2);
  CHECK(c.socketCallbacks > 0);
  CHECK(c.socketActions > 0);
  // The kept connection is not inherited by the commands the agent runs.
  const std::string peer = server->requests().back().peer;
  const auto port = static_cast<uint16_t>(std::stoi(peer.substr(peer.rfind(':') + 1)));
  const int fd = socketFdWithLocalPort(port);
  REQUIRE(fd >= 0);
  CHECK((::fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0);
  client.reset();
  CHECK(loop.stop());
}

TEST_CASE("curl_uv: a fresh client after a cancel shares the driver and its kept connection",
          "[store][curl_uv][keepalive]") {
  StoreTestServer server(StoreTestServer::KeepAlive{milliseconds(10000)}, StoreTestServer::Handler{});
  server.setDocument(kDoc, "\"k1\"");
  LoopThread loop;
  auto first = makeClient(settingsFor(server.url()), loop.options());
  REQUIRE(first->fetch("", 0).isOk());
  first->cancel();  // as the daemon does: the client is done for, the driver is not
  auto later = first->fetch("\"k1\"", 0);
  REQUIRE_FALSE(later.isOk());
  CHECK_THAT(later.status().message(), Contains("cancelled"));
  first.reset();
  auto second = makeClient(settingsFor(server.url()), loop.options());
  auto out = second->fetch("\"k1\"", 0);
  INFO(out.status().toString());
  REQUIRE(out.isOk());
  CHECK(out->kind == FetchOutcome::Kind::kUnchanged);
  CHECK(server.requestCount() == 2);
  CHECK(server.connectionCount() == 1);
  second.reset();
  CHECK(loop.stop());
}

TEST_CASE("curl_uv: a long poll cancelled from another thread ends at once", "[store][curl_uv]") {
  StoreTestServer server(StoreTestServer::KeepAlive{milliseconds(10000)}, StoreTestServer::Handler{});
  server.setDocument(kDoc, "\"k1\"");
  LoopThread loop;
  StoreClientOptions slow = loop.options();
  slow.connectTimeout = milliseconds(10000);
  slow.readTimeout = milliseconds(30000);
  auto client = makeClient(settingsFor(server.url()), slow);
  REQUIRE(client->fetch("", 0).isOk());
  pim::Result<FetchOutcome> result = pim::Status::error(ErrorCode::kInternal, "not run");
  std::thread fetcher([&] { result = client->fetch("\"k1\"", 25); });
  REQUIRE(server.waitForRequests(2, milliseconds(10000)));
  const auto start = std::chrono::steady_clock::now();
  std::thread canceller([&] { client->cancel(); });
  canceller.join();
  fetcher.join();
  CHECK(std::chrono::steady_clock::now() - start < milliseconds(500));
  REQUIRE_FALSE(result.isOk());
  CHECK(result.status().code() == ErrorCode::kUnreachable);
  CHECK_THAT(result.status().message(), Contains("cancelled"));
  CHECK(loop.driver()->counters().completed == 2);
  client.reset();
  CHECK(loop.stop());
}

TEST_CASE("curl_uv: closing the driver ends a transfer in progress; later ones fail at once", "[store][curl_uv]") {
  StoreTestServer server([](Exchange& ex) {
    if (!ex.server.sleepFor(milliseconds(30000))) return;
    ex.response.setContentLength(0);
    ex.response.send();
  });
  LoopThread loop;
  StoreClientOptions slow = loop.options();
  slow.readTimeout = milliseconds(30000);
  auto client = makeClient(settingsFor(server.url()), slow);
  pim::Result<FetchOutcome> result = pim::Status::error(ErrorCode::kInternal, "not run");
  std::thread fetcher([&] { result = client->fetch("", 25); });
  REQUIRE(server.waitForRequests(1, milliseconds(10000)));
  CHECK(loop.stop());  // the loop closes cleanly with a transfer in the multi handle
  fetcher.join();
  REQUIRE_FALSE(result.isOk());
  CHECK(result.status().code() == ErrorCode::kUnreachable);
  CHECK_THAT(result.status().message(), Contains("closing"));
  auto later = client->fetch("", 0);
  REQUIRE_FALSE(later.isOk());
  CHECK_THAT(later.status().message(), Contains("closed"));
}

TEST_CASE("curl_uv: the size limit holds on the loop", "[store][curl_uv]") {
  std::string body;
  StoreTestServer server([&](Exchange& ex) {
    ex.response.setChunkedTransferEncoding(true);  // no length: the limit is found by reading
    ex.response.send() << body;
  });
  LoopThread loop;
  StoreSettings s = settingsFor(server.url());
  s.maxDocumentBytes = 1024;
  auto client = makeClient(s, loop.options());
  body.assign(1024, 'x');
  auto ok = client->fetch("", 0);
  INFO(ok.status().toString());
  REQUIRE(ok.isOk());
  CHECK(ok->body.size() == 1024);
  body.assign(64 * 1024, 'x');
  auto over = client->fetch("", 0);
  REQUIRE_FALSE(over.isOk());
  CHECK(over.status().code() == ErrorCode::kRejected);
  CHECK_THAT(over.status().message(), Contains("1024"));
  CHECK(loop.driver()->counters().completed == 2);
  client.reset();
  CHECK(loop.stop());
}

TEST_CASE("curl_uv: a kept connection the store closed, or idle too long, is not reused",
          "[store][curl_uv][keepalive]") {
  SECTION("closed by the store while idle") {
    StoreTestServer server(StoreTestServer::KeepAlive{milliseconds(100)}, StoreTestServer::Handler{});
    server.setDocument(kDoc, "\"k1\"");
    LoopThread loop;
    auto client = makeClient(settingsFor(server.url()), loop.options());
    REQUIRE(client->fetch("", 0).isOk());
    std::this_thread::sleep_for(milliseconds(600));  // the server's idle time-out closes it
    auto again = client->fetch("\"k1\"", 0);
    INFO(again.status().toString());
    REQUIRE(again.isOk());
    CHECK(again->kind == FetchOutcome::Kind::kUnchanged);
    CHECK(server.requestCount() == 2);  // the closed connection was seen as such, not tried
    CHECK(server.connectionCount() == 2);
    client.reset();
    CHECK(loop.stop());
  }
  SECTION("idle longer than max_idle") {
    StoreTestServer server(StoreTestServer::KeepAlive{milliseconds(10000)}, StoreTestServer::Handler{});
    server.setDocument(kDoc, "\"k1\"");
    LoopThread loop;
    StoreClientOptions options = loop.options();
    options.maxIdle = milliseconds(300);
    auto client = makeClient(settingsFor(server.url()), options);
    REQUIRE(client->fetch("", 0).isOk());
    REQUIRE(client->fetch("\"k1\"", 0).isOk());  // at once: the kept connection
    CHECK(server.connectionCount() == 1);
    std::this_thread::sleep_for(milliseconds(600));  // the server would still take it
    REQUIRE(client->fetch("\"k1\"", 0).isOk());
    REQUIRE(client->fetch("\"k1\"", 0).isOk());  // the new connection is kept in its turn
    CHECK(server.requestCount() == 4);
    CHECK(server.connectionCount() == 2);
    client.reset();
    CHECK(loop.stop());
  }
}

TEST_CASE("curl_uv: through a real proxy (tinyproxy)", "[store][curl_uv][proxy]") {
  if (!pim::test::runsHere(StoreTestProxy::available(), "tinyproxy is not installed (scripts/install-deps)")) return;
  StoreTestProxy proxy;
  StoreTestDir dir;
  auto pki = pim::storetest::makeStoreTestPki(dir.path(), "IP:127.0.0.1");
  LoopThread loop;
  StoreClientOptions options = loop.options();
  options.environment = [](const std::string&) -> std::optional<std::string> { return std::nullopt; };
  SECTION("http:// forwarded") {
    StoreTestServer server;
    server.setDocument(kDoc, "\"p1\"");
    StoreSettings s = settingsFor(server.url());
    s.proxy = proxy.url();
    auto client = makeClient(s, options);
    auto out = client->fetch("", 0);
    INFO(out.status().toString());
    REQUIRE(out.isOk());
    CHECK(out->body == kDoc);
    CHECK_THAT(server.requests().at(0).header("Via"), Contains("tinyproxy"));
    REQUIRE(proxy.requests().size() == 1);
    CHECK(proxy.requests()[0] == "GET " + server.url() + " HTTP/1.1");
  }
  SECTION("https:// tunnelled, kept") {
    StoreTestServer server(StoreTestServer::Tls{pki.serverCert, pki.serverKey},
                           StoreTestServer::KeepAlive{milliseconds(10000)}, StoreTestServer::Handler{});
    server.setDocument(kDoc, "\"p1\"");
    StoreSettings s = settingsFor(server.url());
    s.caFile = "/ca.pem";
    s.proxy = proxy.url();
    auto client = makeClient(s, options, dir.path());
    auto out = client->fetch("", 0);
    INFO(out.status().toString());
    REQUIRE(out.isOk());
    REQUIRE(client->fetch("\"p1\"", 0).isOk());
    CHECK_FALSE(server.requests().at(0).hasHeader("Via"));  // end to end TLS
    CHECK(server.connectionCount() == 1);                   // the tunnel carried both polls
    REQUIRE(proxy.requests().size() == 1);
    CHECK(proxy.requests()[0] == "CONNECT 127.0.0.1:" + std::to_string(server.port()) + " HTTP/1.1");
  }
  CHECK(loop.driver()->counters().completed >= 1);
  CHECK(loop.stop());
}
