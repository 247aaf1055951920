// Reports to the store (agent/daemon/report.h, docs/agent.md "Reports") and "not registered
// yet" (404/410) polled at the normal pace: the SSH host key fingerprints against ssh-keygen,
// hostile host key files, when a report is due, the POST itself on the loopback test store, and
// the daemon and `once` driven as child processes on a --root sandbox (root only) against the
// built-in test store and its receiving end.

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <sys/stat.h>

#include <catch2/catch.hpp>

#include <chrono>
#include <csignal>
#include <string>
#include <thread>
#include <vector>

#include "agent/config/config.h"
#include "agent/daemon/daemon.h"
#include "agent/daemon/login_audit.h"
#include "agent/daemon/report.h"
#include "agent/document/document.h"
#include "agent/store/http_store_client.h"
#include "providers/host/real_host.h"
#include "tests/unit/agent_process.h"
#include "tests/unit/store_test_server.h"

using namespace pim;
using namespace pim::agenttest;
using SteadyClock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

namespace {

void stop(ChildProcess& daemon) {
  daemon.signal(SIGTERM);
  auto code = daemon.waitExit(seconds(10));
  INFO("daemon stderr:\n" << daemon.err());
  REQUIRE(code.has_value());
  CHECK(*code == 0);
}

/// The reports received so far, parsed.
std::vector<Poco::JSON::Object::Ptr> reportsOf(const storetest::StoreTestServer& server) {
  std::vector<Poco::JSON::Object::Ptr> out;
  for (const auto& body : server.reports()) out.push_back(parseObject(body));
  return out;
}

/// Waits for a report whose cycle outcome is `outcome` (and revision, when given); returns it.
Poco::JSON::Object::Ptr waitForReport(const storetest::StoreTestServer& server, const std::string& outcome,
                                      std::optional<int64_t> revision = std::nullopt,
                                      milliseconds deadline = seconds(10)) {
  Poco::JSON::Object::Ptr found;
  waitUntil(
      [&] {
        for (const auto& r : reportsOf(server)) {
          auto cycle = r->getObject("cycle");
          if (cycle->getValue<std::string>("outcome") != outcome) continue;
          if (revision && (cycle->isNull("revision") || cycle->getValue<int64_t>("revision") != *revision)) continue;
          found = r;
          return true;
        }
        return false;
      },
      deadline);
  return found;
}

/// A key line written by ssh-keygen and what `ssh-keygen -l` says of it.
struct GeneratedKey {
  std::string line;
  std::string fingerprint;
};
GeneratedKey generateHostKey(const std::string& dir, const std::string& type) {
  const std::string path = dir + "/ssh_host_" + type + "_key";
  Outcome gen = runProgram({"ssh-keygen", "-q", "-t", type, "-N", "", "-C", "root@test", "-f", path});
  REQUIRE(gen.exit == 0);
  Outcome list = runProgram({"ssh-keygen", "-l", "-E", "sha256", "-f", path + ".pub"});
  REQUIRE(list.exit == 0);
  // "256 SHA256:abc... root@test (ED25519)"
  const auto sp = list.out.find(' ');
  const auto end = list.out.find(' ', sp + 1);
  return {readText(path + ".pub"), list.out.substr(sp + 1, end - sp - 1)};
}

}  // namespace

TEST_CASE("report: host key fingerprints are ssh-keygen's; hostile files are reported, not trusted", "[report]") {
  storetest::StoreTestDir dir;
  const std::string etc = dir.path() + "/etc/ssh";
  REQUIRE(runProgram({"mkdir", "-p", etc}).exit == 0);
  const GeneratedKey ed = generateHostKey(etc, "ed25519");
  const GeneratedKey ecdsa = generateHostKey(etc, "ecdsa");
  // Hostile or broken files: garbage, a private key's header, an empty file, a huge file, a
  // directory, and a name outside the pattern (ignored).
  dir.write("etc/ssh/ssh_host_garbage_key.pub", "ssh-ed25519 !!!notbase64 x\n");
  dir.write("etc/ssh/ssh_host_private_key.pub", "-----BEGIN OPENSSH PRIVATE KEY-----\nsecret\n");
  dir.write("etc/ssh/ssh_host_empty_key.pub", "");
  dir.write("etc/ssh/ssh_host_huge_key.pub", std::string(1 << 20, 'A'));
  REQUIRE(::mkdir((etc + "/ssh_host_dir_key.pub").c_str(), 0755) == 0);
  dir.write("etc/ssh/not_a_host_key.pub", ed.line);

  RealHost host(dir.path(), makeLogger("host"));
  auto keys = readHostKeys(host);
  std::map<std::string, HostKey> byFile;
  for (const auto& k : keys) byFile[k.file] = k;
  CHECK(byFile.count("/etc/ssh/not_a_host_key.pub") == 0);
  REQUIRE(byFile.count("/etc/ssh/ssh_host_ed25519_key.pub") == 1);
  CHECK(byFile["/etc/ssh/ssh_host_ed25519_key.pub"].fingerprint == ed.fingerprint);
  CHECK(byFile["/etc/ssh/ssh_host_ed25519_key.pub"].type == "ssh-ed25519");
  CHECK(byFile["/etc/ssh/ssh_host_ecdsa_key.pub"].fingerprint == ecdsa.fingerprint);
  for (const char* bad : {"garbage", "private", "empty", "huge", "dir"}) {
    const std::string file = std::string("/etc/ssh/ssh_host_") + bad + "_key.pub";
    INFO(file);
    REQUIRE(byFile.count(file) == 1);
    CHECK_FALSE(byFile[file].error.empty());
    CHECK(byFile[file].fingerprint.empty());
    CHECK(byFile[file].error.find("secret") == std::string::npos);
  }
  // No /etc/ssh at all: no keys, no failure.
  storetest::StoreTestDir empty;
  RealHost bare(empty.path(), makeLogger("host"));
  CHECK(readHostKeys(bare).empty());
}

TEST_CASE("report: the login audit's last logins and failed logins", "[report][audit]") {
  const std::string body = keysDocument(1, {"k-used", "k-idle"});
  auto doc = parseDocument(body, DocumentOptions{});
  REQUIRE(doc.isOk());
  REQUIRE(doc->keys.size() == 2);
  const std::string usedFp = fingerprintOfBase64(doc->keys[0].key.base64);
  REQUIRE_FALSE(usedFp.empty());
  ReportSnapshot s;
  s.time = 1796544000;
  GenerationRecord g;
  g.generation = 3;
  g.revision = 1;
  g.body = body;
  g.outcome = GenerationOutcome::kApplied;
  s.inForce = g;
  // The used key's login as the login user; the same key as another user is not its login.
  s.logins = {{"akeneo", usedFp, "publickey", 1796543000, "198.51.100.20"},
              {"other", fingerprintOfBase64(doc->keys[1].key.base64), "publickey", 1796543500, "198.51.100.21"}};
  s.failedLogins.total = 7;
  s.failedLogins.sources = 1;
  s.failedLogins.top = {{"203.0.113.9", 7, 1796543900}};
  auto report = parseObject(reportJson(Config{}, s, {}, "run-1", 1));
  auto keys = report->getArray("keys");
  REQUIRE(keys->size() == 2);
  auto used = keys->getObject(0)->getObject("last_login");
  REQUIRE(used);
  CHECK(used->getValue<std::string>("time") == "2026-12-06T07:43:20Z");
  CHECK(used->getValue<std::string>("address") == "198.51.100.20");
  CHECK(used->getValue<std::string>("method") == "publickey");
  CHECK(keys->getObject(1)->isNull("last_login"));
  auto failed = report->getObject("failed_logins");
  CHECK(failed->getValue<int64_t>("total") == 7);
  CHECK(failed->getArray("top")->getObject(0)->getValue<std::string>("address") == "203.0.113.9");
}

TEST_CASE("report: due after a change or a failure, else once per interval", "[report]") {
  CycleReport unchanged;
  unchanged.outcome = CycleOutcome::kUnchanged;
  const seconds interval(300);
  CHECK(reportDue(unchanged, std::nullopt, interval));  // the first one
  CHECK_FALSE(reportDue(unchanged, seconds(10), interval));
  CHECK(reportDue(unchanged, seconds(300), interval));
  CycleReport applied = unchanged;
  applied.outcome = CycleOutcome::kApplied;
  applied.changes.push_back(Action{});
  CHECK(reportDue(applied, seconds(1), interval));
  CycleReport rejected;
  rejected.exitCode = ExitCode::kRejected;
  rejected.outcome = CycleOutcome::kRejected;
  CHECK(reportDue(rejected, seconds(1), interval));
  CycleReport notRegistered;
  notRegistered.exitCode = ExitCode::kUnreachable;
  notRegistered.outcome = CycleOutcome::kUnreachable;
  notRegistered.notRegistered = 404;
  CHECK_FALSE(reportDue(notRegistered, seconds(1), interval));
  CycleReport down = notRegistered;
  down.notRegistered = 0;
  CHECK(reportDue(down, seconds(1), interval));
  CycleReport interrupted;
  interrupted.outcome = CycleOutcome::kInterrupted;
  CHECK_FALSE(reportDue(interrupted, std::nullopt, interval));
}

TEST_CASE("report: the POST carries the token and the body; 2xx only is delivered", "[report][store]") {
  storetest::StoreTestServer server;
  storetest::StoreTestDir dir;
  const std::string token = "report-token-0123456789";
  dir.write("token", token + "\n");
  StoreSettings settings;
  settings.source = server.url();
  settings.reportUrl = server.url() + "/report";
  settings.tokenFile = dir.file("token");
  auto client = makeReportClient(settings, "", makeLogger("report"));
  REQUIRE(client.isOk());
  Status s = (*client)->post("{\"a\":1}", {"Idempotency-Key: abc-1"});
  INFO(s.toString());
  REQUIRE(s.isOk());
  auto requests = server.requests();
  REQUIRE(requests.size() == 1);
  CHECK(requests[0].method == "POST");
  CHECK(requests[0].path == "/v1/instances/test/access/report");
  CHECK(requests[0].body == "{\"a\":1}");
  CHECK(requests[0].header("Authorization") == "Bearer " + token);
  CHECK(requests[0].header("Content-Type") == "application/json");
  CHECK(requests[0].header("Idempotency-Key") == "abc-1");
  CHECK_FALSE(requests[0].hasHeader("Expect"));

  server.setReportStatus(500);
  s = (*client)->post("{}", {});
  CHECK(s.code() == ErrorCode::kUnreachable);
  CHECK_THAT(s.message(), Catch::Contains("POST") && Catch::Contains("HTTP 500"));
  CHECK(s.message().find(token) == std::string::npos);
  server.setReportStatus(200);
  CHECK((*client)->post("{}", {}).isOk());
  server.setReportStatus(302);
  CHECK_FALSE((*client)->post("{}", {}).isOk());

  // The config key is named in errors about the URL.
  settings.reportUrl = "https:///nohost";
  auto bad = makeReportClient(settings, "", makeLogger("report"));
  REQUIRE_FALSE(bad.isOk());
  CHECK_THAT(bad.status().message(), Catch::Contains("store.report_url"));
}

TEST_CASE("daemon: reports for an applied generation, a rejected document and a failed apply", "[report][daemon]") {
  PIM_REQUIRE_ROOT();
  storetest::StoreTestServer server;
  server.setDocument(keysDocument(1, {"k-one", "k-two"}));
  const std::string token = "sekret-report-token-42";
  AgentBox box(Settings{{"store.source", server.url()},
                        {"store.report_url", server.url() + "/report"},
                        {"store.poll_interval_s", "1"},
                        {"store.instance", "test"}});
  box.configure({{"store.token_file", "/etc/pim-token"}});
  // Host keys under --root, fingerprinted into the report.
  REQUIRE(runProgram({"mkdir", "-p", box.real("/etc/ssh")}).exit == 0);
  writeTextAtomic(box.real("/etc/pim-token"), token + "\n");
  const GeneratedKey hostKey = generateHostKey(box.real("/etc/ssh"), "ed25519");
  auto daemon = box.startDaemon();
  requireKey(box, *daemon, "k-one");

  auto applied = waitForReport(server, "applied", 1);
  INFO(daemon->err());
  REQUIRE(applied);
  CHECK(applied->getValue<int>("report_version") == 1);
  CHECK(applied->getValue<std::string>("instance") == "test");
  CHECK_FALSE(applied->getValue<std::string>("agent_version").empty());
  CHECK(applied->getValue<int64_t>("revision") == 1);
  CHECK(applied->getValue<std::string>("outcome") == "applied");
  CHECK(applied->getValue<std::string>("cause") == "store");
  CHECK_FALSE(applied->getValue<bool>("pinned"));
  CHECK(applied->isNull("last_error"));
  CHECK(applied->getValue<int64_t>("generation") >= 1);
  CHECK_FALSE(applied->getValue<std::string>("report_id").empty());
  auto keys = applied->getArray("keys");
  REQUIRE(keys->size() == 2);
  CHECK(keys->getObject(0)->getValue<std::string>("id") == "k-one");
  CHECK(keys->getObject(0)->getValue<bool>("installed"));
  CHECK(keys->getObject(0)->has("last_login"));
  auto hostKeys = applied->getArray("host_keys");
  REQUIRE(hostKeys->size() == 1);
  CHECK(hostKeys->getObject(0)->getValue<std::string>("fingerprint") == hostKey.fingerprint);
  // Every report request carried the token as a bearer; the log never shows it.
  for (const auto& req : server.requests()) {
    if (req.method == "POST") CHECK(req.header("Authorization") == "Bearer " + token);
  }
  CHECK(daemon->err().find(token) == std::string::npos);

  // A rejected document: reported with its error; the generation in force stays revision 1.
  server.setDocument("{\"version\": 1, \"revision\": 2}");
  auto rejected = waitForReport(server, "rejected");
  REQUIRE(rejected);
  CHECK(rejected->getObject("cycle")->getValue<int>("exit_code") == 3);
  CHECK_FALSE(rejected->getObject("cycle")->getValue<std::string>("error").empty());
  CHECK(rejected->getValue<int64_t>("revision") == 1);
  CHECK(daemon->err().find(token) == std::string::npos);
  stop(*daemon);

  // A failed apply (the key provider fails): reported partial, with the error and why keys are
  // not installed.
  server.setDocument(keysDocument(3, {"k-three"}));
  auto failing = box.startDaemon({"PIM_FAILPOINT=fail-provider:ssh_keys"});
  auto partial = waitForReport(server, "partial", 3);
  INFO(failing->err());
  REQUIRE(partial);
  CHECK(partial->getValue<std::string>("outcome") == "partial");
  CHECK_THAT(partial->getValue<std::string>("last_error"), Catch::Contains("failpoint fail-provider:ssh_keys"));
  auto partialKeys = partial->getArray("keys");
  REQUIRE(partialKeys->size() == 1);
  CHECK(partialKeys->getObject(0)->isNull("installed"));  // not known per entry
  CHECK_THAT(partialKeys->getObject(0)->getValue<std::string>("reason"), Catch::Contains("partial"));
  stop(*failing);
}

TEST_CASE("daemon: a report endpoint that never answers delays no cycle", "[report][daemon]") {
  PIM_REQUIRE_ROOT();
  storetest::StoreTestServer server;
  server.setReportHang(true);
  server.setDocument(keysDocument(1, {"k-one"}));
  AgentBox box(Settings{
      {"store.source", server.url()}, {"store.report_url", server.url() + "/report"}, {"store.poll_interval_s", "1"}});
  auto daemon = box.startDaemon();
  requireKey(box, *daemon, "k-one");
  REQUIRE(server.waitForReports(1, seconds(5)));  // held, never answered
  // New documents are applied within a poll interval while the report hangs.
  for (int revision = 2; revision <= 4; ++revision) {
    const std::string id = "k-" + std::to_string(revision);
    const auto changed = SteadyClock::now();
    server.setDocument(keysDocument(revision, {id}));
    requireKey(box, *daemon, id, seconds(3));
    CHECK(SteadyClock::now() - changed < milliseconds(2500));
  }
  CHECK(server.reports().size() == 1);  // the one in flight; the newer ones wait (the newest only)
  // SIGTERM is not held up by the report in flight either.
  const auto sent = SteadyClock::now();
  stop(*daemon);
  CHECK(SteadyClock::now() - sent < seconds(2));
  server.setReportHang(false);
}

TEST_CASE("daemon: an unchanged cycle reports once per report_interval_s", "[report][daemon]") {
  PIM_REQUIRE_ROOT();
  storetest::StoreTestServer server;
  server.setDocument(keysDocument(1, {"k-one"}));
  AgentBox box(Settings{{"store.source", server.url()},
                        {"store.report_url", server.url() + "/report"},
                        {"store.poll_interval_s", "1"},
                        {"store.report_interval_s", "4"}});
  auto daemon = box.startDaemon();
  requireKey(box, *daemon, "k-one");
  REQUIRE(server.waitForReports(1, seconds(5)));
  const auto first = SteadyClock::now();
  // Polls every second, unchanged: no report before the interval, one after it.
  std::this_thread::sleep_for(milliseconds(2500));
  INFO(daemon->err());
  CHECK(server.reports().size() == 1);
  CHECK(server.requests().size() >= 3);
  REQUIRE(server.waitForReports(2, seconds(5)));
  CHECK(SteadyClock::now() - first >= milliseconds(3500));
  auto second = parseObject(server.reports()[1]);
  CHECK(second->getObject("cycle")->getValue<std::string>("outcome") == "unchanged");
  CHECK(second->getValue<int64_t>("sequence") == 2);
  stop(*daemon);
}

TEST_CASE("once: sends its report, and exits in bounded time when the endpoint hangs", "[report][daemon]") {
  PIM_REQUIRE_ROOT();
  storetest::StoreTestServer server;
  server.setDocument(keysDocument(1, {"k-one"}));
  AgentBox box(Settings{{"store.source", server.url()}, {"store.report_url", server.url() + "/report"}});
  Outcome once = box.run({"once"});
  INFO(once.out << once.err);
  REQUIRE(once.exit == 0);
  REQUIRE(server.reports().size() == 1);
  CHECK(parseObject(server.reports()[0])->getObject("cycle")->getValue<std::string>("outcome") == "applied");
  server.setReportHang(true);
  const auto started = SteadyClock::now();
  once = box.run({"once"});
  CHECK(once.exit == 0);
  CHECK(SteadyClock::now() - started < seconds(10));
  CHECK_THAT(once.err, Catch::Contains("report: not delivered"));
  server.setReportHang(false);
}
