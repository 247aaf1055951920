// The etcd:// source: the parsers against hostile input, and the client against a real etcd
// (Debian's etcd-server, started by the test on 127.0.0.1 with free ports and a temp data dir).

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <sstream>
#include <thread>

#include <spdlog/sinks/ostream_sink.h>

#include "agent/config/config.h"
#include "agent/daemon/report.h"
#include "agent/store/etcd_store_client.h"
#include "agent/store/signature.h"
#include "agent/store/store_client.h"
#include "tests/support/skip.h"
#include "tests/unit/etcd_test_server.h"
#include "tests/unit/store_test_server.h"

using Catch::Matchers::Contains;
using pim::ErrorCode;
using pim::FetchOutcome;
using pim::StoreClient;
using pim::StoreClientOptions;
using pim::StoreSettings;
using pim::storetest::EtcdTestServer;
using pim::storetest::StoreTestDir;
using pim::storetest::StoreTestSigner;
using std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

namespace {

const std::string kKey = "/pim/instances/test/access";
const std::string kDoc1 = R"({"version": 1, "revision": 7, "instance": "test"})";
const std::string kDoc2 = R"({"version": 1, "revision": 8, "instance": "test"})";

bool etcdHere() { return pim::test::runsHere(EtcdTestServer::available(), "needs etcd-server and etcd-client"); }

StoreClientOptions fastOptions() {
  StoreClientOptions o;
  o.connectTimeout = milliseconds(2000);
  o.readTimeout = milliseconds(2000);
  return o;
}

std::unique_ptr<StoreClient> makeClient(const StoreSettings& settings, pim::Logger log = pim::nullLogger()) {
  auto client = pim::makeStoreClient(settings, "", std::move(log), fastOptions());
  INFO(client.status().toString());
  REQUIRE(client.isOk());
  return std::move(*client);
}

StoreSettings settingsFor(const std::string& source) {
  StoreSettings s;
  s.source = source;
  return s;
}

long long msSince(SteadyClock::time_point t) {
  return std::chrono::duration_cast<milliseconds>(SteadyClock::now() - t).count();
}

// fetch(etag, wait) on a thread, `put` run after `after`; what came back and how long after the
// put it did.
struct WatchedChange {
  pim::Result<FetchOutcome> outcome = pim::Status::error(ErrorCode::kInternal, "not run");
  long long afterPutMs = -1;
  long long totalMs = -1;
};
WatchedChange fetchAcrossChange(StoreClient& client, const std::string& etag, int64_t wait, milliseconds after,
                                const std::function<void()>& put) {
  WatchedChange out;
  std::atomic<bool> done{false};
  SteadyClock::time_point putAt{};
  const auto start = SteadyClock::now();
  std::thread fetcher([&] {
    out.outcome = client.fetch(etag, wait);
    done = true;
  });
  std::this_thread::sleep_for(after);
  const bool early = done.load();
  putAt = SteadyClock::now();
  put();
  fetcher.join();
  out.afterPutMs = early ? -1 : msSince(putAt);
  out.totalMs = msSince(start);
  return out;
}

}  // namespace

TEST_CASE("etcd url: the accepted forms", "[etcd]") {
  auto one = pim::parseEtcdUrl("etcd://e1.example/pim/web-1/access");
  REQUIRE(one.isOk());
  CHECK_FALSE(one->tls);
  CHECK(one->endpoints == std::vector<std::string>{"e1.example:2379"});
  CHECK(one->key == "/pim/web-1/access");
  auto many = pim::parseEtcdUrl("ETCDS://10.0.0.1:2379,[fd00::1]:2380,e3/k");
  REQUIRE(many.isOk());
  CHECK(many->tls);
  CHECK(many->endpoints == std::vector<std::string>{"10.0.0.1:2379", "[fd00::1]:2380", "e3:2379"});
  CHECK(many->key == "/k");
}

TEST_CASE("etcd url: hostile and malformed input is refused naming store.source", "[etcd]") {
  const std::vector<std::string> bad = {
      "",
      "etcd:/",
      "etcd://",
      "etcd:///key",
      "etcd://host",
      "etcd://host/",
      "etcd://host:0/k",
      "etcd://host:65536/k",
      "etcd://host:99999999999999999999/k",
      "etcd://host:/k",
      "etcd://host:x/k",
      "etcd://h,,h2/k",
      "etcd://h,/k",
      "etcd://user:pw@host/k",
      "etcd://host/k?x=1",
      "etcd://host/k#frag",
      "etcd://host/k%2f",
      "etcd://host/k k",
      std::string("etcd://host/k\0x", 15),
      "etcd://host/k\n",
      "etcd://ho$t/k",
      "etcd://[fd00::1/k",
      "etcd://[zz]/k",
      "etcd://[]/k",
      "etcd://host/" + std::string(1100, 'a'),
      "etcd://" + std::string(300, 'h') + "/k",
      "http://host/k",
  };
  for (const auto& url : bad) {
    INFO(url);
    auto r = pim::parseEtcdUrl(url);
    REQUIRE_FALSE(r.isOk());
    CHECK(r.status().code() == ErrorCode::kInvalid);
    CHECK_THAT(r.status().message(), Contains("store.source"));
  }
  std::string many = "etcd://";
  for (int i = 0; i < 17; ++i) many += (i ? ",h" : "h") + std::to_string(i);
  CHECK_FALSE(pim::parseEtcdUrl(many + "/k").isOk());
}

TEST_CASE("etcd range answer: hostile JSON is kUnreachable, never a document", "[etcd]") {
  auto good =
      pim::parseEtcdRange(R"({"header":{"revision":"12"},"kvs":[{"key":"L2s=","value":"dmFs","mod_revision":"11"}]})");
  REQUIRE(good.isOk());
  CHECK(good->revision == 12);
  REQUIRE(good->kvs.size() == 1);
  CHECK(good->kvs[0].key == "/k");
  CHECK(good->kvs[0].value == "val");
  CHECK(good->kvs[0].modRevision == 11);
  auto none = pim::parseEtcdRange(R"({"header":{"revision":"3"}})");
  REQUIRE(none.isOk());
  CHECK(none->kvs.empty());
  const std::vector<std::string> bad = {
      "",
      "[]",
      "null",
      "{",
      R"({"header":{}})",
      R"({"header":{"revision":"-1"}})",
      R"({"header":{"revision":"1e3"}})",
      R"({"header":{"revision":"99999999999999999999"}})",
      R"({"header":"x"})",
      R"({"header":{"revision":"1"},"kvs":{}})",
      R"({"header":{"revision":"1"},"kvs":[1]})",
      R"({"header":{"revision":"1"},"kvs":[{"value":"dmFs","mod_revision":"1"}]})",
      R"({"header":{"revision":"1"},"kvs":[{"key":"L2s=","value":"d m","mod_revision":"1"}]})",
      R"({"header":{"revision":"1"},"kvs":[{"key":"L2s=","value":"dmFs"}]})",
      R"({"header":{"revision":"1"},"kvs":[{"key":7,"value":"dmFs","mod_revision":"1"}]})",
      R"({"header":{"revision":"1"},"kvs":[{"key":"L2s=","value":["x"],"mod_revision":"1"}]})",
      std::string(100000, '['),
  };
  for (const auto& json : bad) {
    INFO(json.substr(0, 80));
    auto r = pim::parseEtcdRange(json);
    REQUIRE_FALSE(r.isOk());
    CHECK(r.status().code() == ErrorCode::kUnreachable);
  }
}

TEST_CASE("etcd watch stream: only a plain creation keeps waiting", "[etcd]") {
  using pim::EtcdWatchState;
  const std::string created = R"({"result":{"header":{"revision":"5"},"created":true}})";
  CHECK(pim::scanEtcdWatch("") == EtcdWatchState::kWaiting);
  CHECK(pim::scanEtcdWatch(created) == EtcdWatchState::kWaiting);
  CHECK(pim::scanEtcdWatch(created + "\n") == EtcdWatchState::kWaiting);
  CHECK(pim::scanEtcdWatch(created + "\n{\"result\":{\"ev") == EtcdWatchState::kWaiting);  // not all there yet
  CHECK(pim::scanEtcdWatch(created + "\n" + R"({"result":{"events":[{}]}})") == EtcdWatchState::kChanged);
  CHECK(pim::scanEtcdWatch(R"({"result":{"created":true,"canceled":true,"compact_revision":"9"}})") ==
        EtcdWatchState::kChanged);
  CHECK(pim::scanEtcdWatch(R"({"error":{"grpc_code":16}})") == EtcdWatchState::kChanged);
  CHECK(pim::scanEtcdWatch("garbage\n") == EtcdWatchState::kChanged);
  CHECK(pim::scanEtcdWatch("[]\n") == EtcdWatchState::kChanged);
  CHECK(pim::scanEtcdWatch(std::string(100000, '{') + "\n") == EtcdWatchState::kChanged);
}

TEST_CASE("etcd config: the etcd keys are checked and name themselves", "[etcd]") {
  auto refused = [](StoreSettings s, const std::string& key) {
    auto c = pim::makeStoreClient(s, "", pim::nullLogger(), fastOptions());
    REQUIRE_FALSE(c.isOk());
    CHECK(c.status().code() == ErrorCode::kInvalid);
    CHECK_THAT(c.status().message(), Contains(key));
  };
  StoreSettings s = settingsFor("https://store.example/x");
  s.etcdUser = "agent";
  s.etcdPasswordFile = "/etc/pw";
  refused(s, "store.etcd_user");
  s = settingsFor("etcd://127.0.0.1:1/k");
  s.etcdUser = "agent";
  refused(s, "store.etcd_password_file");
  s = settingsFor("etcds://127.0.0.1:1/k");
  s.clientCert = "/etc/cert.pem";
  refused(s, "store.client_key");
  s = settingsFor("etcds://127.0.0.1:1/k");
  s.clientCert = "/nonexistent/cert.pem";
  s.clientKey = "/nonexistent/key.pem";
  refused(s, "store.client_cert");
  s = settingsFor("etcd://127.0.0.1:1/k");
  s.tokenFile = "/etc/token";
  refused(s, "store.token_file");
  refused(settingsFor("etcd://127.0.0.1:1"), "store.source");
}

TEST_CASE("etcd: first fetch, then unchanged, then the new value", "[etcd]") {
  if (!etcdHere()) return;
  EtcdTestServer etcd;
  etcd.put(kKey, kDoc1);
  auto client = makeClient(settingsFor(etcd.url(kKey)));
  CHECK(client->describe() == etcd.url(kKey));
  auto first = client->fetch("", 0);
  INFO(first.status().toString());
  REQUIRE(first.isOk());
  CHECK(first->kind == FetchOutcome::Kind::kDocument);
  CHECK(first->body == kDoc1);
  auto again = client->fetch(first->etag, 0);
  REQUIRE(again.isOk());
  CHECK(again->kind == FetchOutcome::Kind::kUnchanged);
  etcd.put("/pim/other", "x");  // another key's change is not the document's
  auto still = client->fetch(first->etag, 0);
  REQUIRE(still.isOk());
  CHECK(still->kind == FetchOutcome::Kind::kUnchanged);
  etcd.put(kKey, kDoc2);
  auto second = client->fetch(first->etag, 0);
  REQUIRE(second.isOk());
  CHECK(second->kind == FetchOutcome::Kind::kDocument);
  CHECK(second->body == kDoc2);
  CHECK(second->etag != first->etag);

  auto missing = makeClient(settingsFor(etcd.url("/pim/none")))->fetch("", 0);
  REQUIRE_FALSE(missing.isOk());
  CHECK(missing.status().code() == ErrorCode::kUnreachable);
  CHECK_THAT(missing.status().message(), Contains("no such key"));
}

TEST_CASE("etcd: the watch brings a change in well under a second, and times out unchanged", "[etcd]") {
  if (!etcdHere()) return;
  EtcdTestServer etcd;
  etcd.put(kKey, kDoc1);
  auto client = makeClient(settingsFor(etcd.url(kKey)));
  auto first = client->fetch("", 0);
  REQUIRE(first.isOk());
  auto w = fetchAcrossChange(*client, first->etag, 30, milliseconds(700), [&] { etcd.put(kKey, kDoc2); });
  INFO(w.outcome.status().toString());
  REQUIRE(w.outcome.isOk());
  CHECK(w.outcome->kind == FetchOutcome::Kind::kDocument);
  CHECK(w.outcome->body == kDoc2);
  CHECK(w.afterPutMs >= 0);  // it was held until the change
  CHECK(w.afterPutMs < 1000);
  WARN("etcd watch: change returned " << w.afterPutMs << " ms after the put (etcdctl's own run included)");

  // No change: held for the whole wait, then unchanged.
  const auto t = SteadyClock::now();
  auto idle = client->fetch(w.outcome->etag, 2);
  REQUIRE(idle.isOk());
  CHECK(idle->kind == FetchOutcome::Kind::kUnchanged);
  CHECK(msSince(t) >= 1500);
}

TEST_CASE("etcd: a fetch held in a watch is cancelled at once", "[etcd]") {
  if (!etcdHere()) return;
  EtcdTestServer etcd;
  etcd.put(kKey, kDoc1);
  auto client = makeClient(settingsFor(etcd.url(kKey)));
  auto first = client->fetch("", 0);
  REQUIRE(first.isOk());
  SteadyClock::time_point cancelledAt{};
  std::thread canceller([&] {
    std::this_thread::sleep_for(milliseconds(500));
    cancelledAt = SteadyClock::now();
    client->cancel();
  });
  auto held = client->fetch(first->etag, 60);
  const auto late = msSince(cancelledAt);
  canceller.join();
  REQUIRE_FALSE(held.isOk());
  CHECK_THAT(held.status().message(), Contains("cancelled"));
  CHECK(late < 300);
}

TEST_CASE("etcd: a restart of etcd and a compaction are survived", "[etcd]") {
  if (!etcdHere()) return;
  EtcdTestServer etcd;
  etcd.put(kKey, kDoc1);
  auto client = makeClient(settingsFor(etcd.url(kKey)));
  auto first = client->fetch("", 0);
  REQUIRE(first.isOk());

  SECTION("restart: down is kUnreachable, back is served, the watch works again") {
    etcd.stop();
    auto down = client->fetch(first->etag, 2);
    REQUIRE_FALSE(down.isOk());
    CHECK(down.status().code() == ErrorCode::kUnreachable);
    etcd.start();
    auto back = client->fetch(first->etag, 0);
    INFO(back.status().toString());
    REQUIRE(back.isOk());
    CHECK(back->kind == FetchOutcome::Kind::kUnchanged);
    auto w = fetchAcrossChange(*client, first->etag, 30, milliseconds(500), [&] { etcd.put(kKey, kDoc2); });
    INFO(w.outcome.status().toString());
    REQUIRE(w.outcome.isOk());
    CHECK(w.outcome->body == kDoc2);
    CHECK(w.afterPutMs >= 0);
    CHECK(w.afterPutMs < 1000);
  }
  SECTION("a watch broken by a restart falls back to a range") {
    auto w = fetchAcrossChange(*client, first->etag, 30, milliseconds(500), [&] {
      etcd.stop();
      etcd.start();
      etcd.put(kKey, kDoc2);
    });
    INFO(w.outcome.status().toString());
    // The broken watch read the key again: either still down (kUnreachable, the daemon retries),
    // or the new value; never a wait for the full 30 s.
    CHECK(w.totalMs < 20000);
    if (w.outcome.isOk()) CHECK(w.outcome->body == kDoc2);
    auto after = client->fetch(first->etag, 0);
    REQUIRE(after.isOk());
    CHECK(after->body == kDoc2);
  }
  SECTION("compaction: a watch from a compacted revision is not a busy loop, and brings the change") {
    for (int i = 0; i < 5; ++i) etcd.put("/pim/other", std::to_string(i));
    etcd.compact();
    // A new client knows the document's mod_revision only (compacted away).
    auto fresh = makeClient(settingsFor(etcd.url(kKey)));
    auto w = fetchAcrossChange(*fresh, first->etag, 30, milliseconds(800), [&] { etcd.put(kKey, kDoc2); });
    INFO(w.outcome.status().toString());
    REQUIRE(w.outcome.isOk());
    CHECK(w.outcome->kind == FetchOutcome::Kind::kDocument);
    CHECK(w.outcome->body == kDoc2);
    CHECK(w.afterPutMs >= 0);  // held past the compaction's cancellation
    CHECK(w.afterPutMs < 1000);
  }
}

TEST_CASE("etcd: with a signing key, an unsigned or tampered value is rejected", "[etcd]") {
  if (!etcdHere()) return;
  EtcdTestServer etcd;
  StoreTestSigner signer;
  StoreTestDir dir;
  StoreSettings s = settingsFor(etcd.url(kKey));
  s.signingKey = dir.write("store.pub", signer.publicKeyPem());
  auto client = makeClient(s);

  etcd.put(kKey, kDoc1);
  auto unsigned_ = client->fetch("", 0);
  REQUIRE_FALSE(unsigned_.isOk());
  CHECK(unsigned_.status().code() == ErrorCode::kRejected);

  etcd.put(kKey + ".sig", signer.sign(kDoc1));
  auto good = client->fetch("", 0);
  INFO(good.status().toString());
  REQUIRE(good.isOk());
  CHECK(good->body == kDoc1);

  etcd.put(kKey, kDoc2);  // tampered: the old signature
  auto tampered = client->fetch(good->etag, 0);
  REQUIRE_FALSE(tampered.isOk());
  CHECK(tampered.status().code() == ErrorCode::kRejected);

  etcd.put(kKey + ".sig", "not base64 !");
  auto garbage = client->fetch(good->etag, 0);
  REQUIRE_FALSE(garbage.isOk());
  CHECK(garbage.status().code() == ErrorCode::kRejected);

  // A signature change alone wakes the watch too: the pair is read again.
  auto w = fetchAcrossChange(*client, good->etag, 30, milliseconds(500),
                             [&] { etcd.put(kKey + ".sig", signer.sign(kDoc2)); });
  INFO(w.outcome.status().toString());
  REQUIRE(w.outcome.isOk());
  CHECK(w.outcome->body == kDoc2);
  CHECK(w.afterPutMs < 1000);

  // Two puts, the document first: its signature, written right after, is waited for.
  etcd.put(kKey, kDoc1);
  auto late = fetchAcrossChange(*client, w.outcome->etag, 0, milliseconds(300),
                                [&] { etcd.put(kKey + ".sig", signer.sign(kDoc1)); });
  INFO(late.outcome.status().toString());
  REQUIRE(late.outcome.isOk());
  CHECK(late.outcome->body == kDoc1);
}

TEST_CASE("etcd: a value over max_document_bytes is rejected", "[etcd]") {
  if (!etcdHere()) return;
  EtcdTestServer etcd;
  StoreSettings s = settingsFor(etcd.url(kKey));
  s.maxDocumentBytes = 2048;
  etcd.put(kKey, std::string(2049, 'x'));
  auto over = makeClient(s)->fetch("", 0);
  REQUIRE_FALSE(over.isOk());
  CHECK(over.status().code() == ErrorCode::kRejected);
  CHECK_THAT(over.status().message(), Contains("max_document_bytes"));
  etcd.put(kKey, std::string(2048, 'x'));
  CHECK(makeClient(s)->fetch("", 0).isOk());
}

TEST_CASE("etcd: endpoints are tried in turn", "[etcd]") {
  if (!etcdHere()) return;
  EtcdTestServer etcd;
  etcd.put(kKey, kDoc1);
  const uint16_t dead = pim::storetest::unusedLoopbackPort();
  auto client = makeClient(
      settingsFor("etcd://127.0.0.1:" + std::to_string(dead) + ",127.0.0.1:" + std::to_string(etcd.port()) + kKey));
  auto first = client->fetch("", 0);
  INFO(first.status().toString());
  REQUIRE(first.isOk());
  CHECK(first->body == kDoc1);
  auto none = makeClient(settingsFor("etcd://127.0.0.1:" + std::to_string(dead) + kKey))->fetch("", 0);
  REQUIRE_FALSE(none.isOk());
  CHECK(none.status().code() == ErrorCode::kUnreachable);
}

TEST_CASE("etcd: user and password file; neither password nor token is logged", "[etcd]") {
  if (!etcdHere()) return;
  EtcdTestServer etcd;
  etcd.put(kKey, kDoc1);
  etcd.enableAuth("agent", "pw-SECRET-17");
  StoreTestDir dir;
  std::ostringstream logged;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(logged);
  auto log = std::make_shared<spdlog::logger>("store.test", sink);
  log->set_level(spdlog::level::trace);

  auto anonymous = makeClient(settingsFor(etcd.url(kKey)))->fetch("", 0);
  REQUIRE_FALSE(anonymous.isOk());  // auth is on

  StoreSettings s = settingsFor(etcd.url(kKey));
  s.etcdUser = "agent";
  s.etcdPasswordFile = dir.write("pw", "wrong\n");
  auto wrong = makeClient(s, log)->fetch("", 0);
  REQUIRE_FALSE(wrong.isOk());
  CHECK_THAT(wrong.status().message(), Contains("authentication as agent failed"));

  s.etcdPasswordFile = dir.write("pw", "pw-SECRET-17\n");
  auto client = makeClient(s, log);
  auto first = client->fetch("", 0);
  INFO(first.status().toString());
  REQUIRE(first.isOk());
  CHECK(first->body == kDoc1);
  // The token also carries the watch.
  auto w = fetchAcrossChange(*client, first->etag, 30, milliseconds(500), [&] { etcd.put(kKey, kDoc2); });
  REQUIRE(w.outcome.isOk());
  CHECK(w.outcome->body == kDoc2);
  CHECK(w.afterPutMs < 1000);
  CHECK_FALSE(logged.str().empty());
  CHECK_THAT(logged.str(), !Contains("SECRET"));
  CHECK_THAT(logged.str(), !Contains("wrong"));
  CHECK_THAT(logged.str(), !Contains("Authorization"));
}

TEST_CASE("etcd: etcds:// with a CA file, and client certificates", "[etcd]") {
  if (!etcdHere()) return;
  StoreTestDir dir;
  auto pki = pim::storetest::makeStoreTestPki(dir.path());
  SECTION("server certificate checked against ca_file") {
    EtcdTestServer etcd(EtcdTestServer::Options{&pki, false});
    etcd.put(kKey, kDoc1);
    auto noCa = makeClient(settingsFor(etcd.url(kKey)))->fetch("", 0);
    REQUIRE_FALSE(noCa.isOk());
    CHECK_THAT(noCa.status().message(), Contains("certificate"));
    StoreSettings s = settingsFor(etcd.url(kKey));
    s.caFile = pki.caCert;
    auto client = makeClient(s);
    auto first = client->fetch("", 0);
    INFO(first.status().toString());
    REQUIRE(first.isOk());
    CHECK(first->body == kDoc1);
    auto w = fetchAcrossChange(*client, first->etag, 30, milliseconds(500), [&] { etcd.put(kKey, kDoc2); });
    REQUIRE(w.outcome.isOk());
    CHECK(w.outcome->body == kDoc2);
    CHECK(w.afterPutMs < 1000);
  }
  SECTION("etcd requiring client certificates") {
    EtcdTestServer etcd(EtcdTestServer::Options{&pki, true});
    etcd.put(kKey, kDoc1);
    StoreSettings s = settingsFor(etcd.url(kKey));
    s.caFile = pki.caCert;
    auto without = makeClient(s)->fetch("", 0);
    REQUIRE_FALSE(without.isOk());
    s.clientCert = pki.clientCert;
    s.clientKey = pki.clientKey;
    auto with = makeClient(s)->fetch("", 0);
    INFO(with.status().toString());
    REQUIRE(with.isOk());
    CHECK(with->body == kDoc1);
  }
}

namespace {

// The lease of `key` as `etcdctl get -w json` shows it (decimal), 0 when none.
int64_t leaseOf(const EtcdTestServer& etcd, const std::string& key) {
  const std::string json = etcd.ctl({"get", "-w", "json", key});
  const size_t at = json.find("\"lease\":");
  return at == std::string::npos ? 0 : std::stoll(json.substr(at + 8));
}

std::string timeToLive(const EtcdTestServer& etcd, int64_t lease) {
  std::ostringstream hex;
  hex << std::hex << lease;
  return etcd.ctl({"lease", "timetolive", hex.str()});
}

}  // namespace

TEST_CASE("etcd: reports go to their key under a lease; each write revokes the previous lease", "[etcd][report]") {
  if (!etcdHere()) return;
  EtcdTestServer etcd;
  StoreSettings settings = settingsFor(etcd.url(kKey));
  settings.reportUrl = etcd.url(kKey + "/report");
  auto client = pim::makeEtcdReportClient(settings, "", pim::nullLogger(), fastOptions());
  INFO(client.status().toString());
  REQUIRE(client.isOk());
  REQUIRE((*client)->putWithLease(R"({"sequence": 1})", 900).isOk());
  CHECK(etcd.ctl({"get", "--print-value-only", kKey + "/report"}) == "{\"sequence\": 1}\n");
  const int64_t first = leaseOf(etcd, kKey + "/report");
  REQUIRE(first != 0);
  CHECK_THAT(timeToLive(etcd, first), Contains("granted with TTL(900s)"));

  REQUIRE((*client)->putWithLease(R"({"sequence": 2})", 900).isOk());
  CHECK(etcd.ctl({"get", "--print-value-only", kKey + "/report"}) == "{\"sequence\": 2}\n");
  const int64_t second = leaseOf(etcd, kKey + "/report");
  CHECK(second != first);
  CHECK_THAT(timeToLive(etcd, first), Contains("already expired"));  // revoked
  CHECK_THAT(timeToLive(etcd, second), Contains("granted with TTL(900s)"));

  // The report of a writer that stopped goes away with its lease.
  REQUIRE((*client)->putWithLease(R"({"sequence": 3})", 2).isOk());
  const auto deadline = SteadyClock::now() + std::chrono::seconds(10);
  while (etcd.ctl({"get", "--print-value-only", kKey + "/report"}) != "" && SteadyClock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(200));
  }
  CHECK(etcd.ctl({"get", "--print-value-only", kKey + "/report"}).empty());

  // The reporter writes the report there.
  pim::Config config;
  config.store = settings;
  pim::Reporter::Options options;
  options.client = fastOptions();
  auto reporter = pim::Reporter::create(config, pim::nullLogger(), options);
  INFO(reporter.status().toString());
  REQUIRE(reporter.isOk());
  (*reporter)->submit(pim::ReportSnapshot{});
  REQUIRE((*reporter)->flush(std::chrono::seconds(10)));
  CHECK((*reporter)->delivered() == 1);
  CHECK_THAT(etcd.ctl({"get", "--print-value-only", kKey + "/report"}), Contains("\"report_version\":1"));
  CHECK_THAT(timeToLive(etcd, leaseOf(etcd, kKey + "/report")), Contains("granted with TTL(900s)"));  // 3 x 300 s

  // An etcd report needs an etcd source.
  StoreSettings http = settings;
  http.source = "https://store.example/pim/test";
  auto refused = pim::makeEtcdReportClient(http, "", pim::nullLogger(), fastOptions());
  REQUIRE_FALSE(refused.isOk());
  CHECK_THAT(refused.status().message(), Contains("store.report_url"));
  StoreSettings bad = settings;
  bad.reportUrl = "etcd://127.0.0.1:1/";
  auto malformed = pim::makeEtcdReportClient(bad, "", pim::nullLogger(), fastOptions());
  REQUIRE_FALSE(malformed.isOk());
  CHECK_THAT(malformed.status().message(), Contains("store.report_url"));
}
