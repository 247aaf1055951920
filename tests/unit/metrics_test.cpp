// Metrics for node_exporter's textfile collector: the rendering (golden file), the counters, the
// snapshot read from a real state database, the atomic 0644 write, and the config key.
#include "agent/daemon/metrics.h"

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "agent/config/config.h"
#include "agent/document/document.h"
#include "providers/core/log.h"
#include "providers/host/real_host.h"
#include "state/state_store.h"
#include "tests/support/temp_dir.h"

namespace fs = std::filesystem;
using pim::MetricsCounters;
using pim::MetricsSnapshot;

namespace {

using TempDir = pim::test::TempDir;

std::string readText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void checkGolden(const std::string& name, const std::string& actual) {
  const std::string path = std::string(PIM_SOURCE_DIR) + "/tests/golden/" + name;
  const char* update = std::getenv("PIM_UPDATE_GOLDEN");
  if (update != nullptr && std::string(update) == "1") {
    std::ofstream(path, std::ios::binary) << actual;
    WARN("rewrote " << path);
  }
  INFO("golden file " << path << " (PIM_UPDATE_GOLDEN=1 rewrites it)");
  REQUIRE(readText(path) == actual);
}

MetricsSnapshot fullSnapshot() {
  MetricsSnapshot s;
  s.version = "0.1.0";
  s.lastSuccessTime = 1763719200;
  s.appliedRevision = 42;
  s.generation = 7;
  s.pinned = true;
  s.reloadPending = true;
  s.keysInstalled = 3;
  s.sftpAccountsActive = 2;
  s.sftpAccountsInactive = 1;
  s.skippedEntries = 4;
  s.permissionFixes = 15;
  s.bansTotal = 2;
  s.errors = {{"store", 5}, {"apply", 1}, {"internal", 0}, {"rejected", 2}, {"permissions", 3}};
  s.keyLastLogin = {{"k-alice", 1763719100}, {"k-\"odd\"", 0}};
  s.accountLastLogin = {{"acme", 1763719000}};
  s.failedLogins = 12;
  s.failedLoginSources = 3;
  return s;
}

// Metric name of a sample or HELP/TYPE line.
std::string metricName(const std::string& line) {
  std::string rest = line;
  if (line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0) rest = line.substr(7);
  return rest.substr(0, rest.find_first_of(" {"));
}

// Two keys installable at kNow (no expiry; expiry in 2099), one expired, one inactive, one invalid
// (skipped); one active and one inactive account.
constexpr int64_t kNow = 1763719200;  // 2025-11-21T10:00:00Z
const char* kDocument = R"({
  "version": 1,
  "revision": 42,
  "instance": "demo-staging",
  "ssh": {"keys": [
    {"id": "k-alice", "owner": "alice@example.com", "active": true, "expires_at": null,
     "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF672WCNFtqcThBzVbXOfOSdud0k+tJpV0314p0yRK8S alice@example"},
    {"id": "k-bob", "owner": "bob@example.com", "active": true, "expires_at": "2099-01-01T00:00:00Z",
     "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAg7v4H/R7qlLTp6jImLLe8EscgHgg++alEsXvikDhGK bob@example"},
    {"id": "k-carol-old", "owner": "carol@example.com", "active": true, "expires_at": "2020-01-01T00:00:00Z",
     "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPf/YX1AhEE0iNB/rVYkbnJI4fcm9tIHYyNY0xe3oxkK carol@example"},
    {"id": "k-dave", "owner": "dave@example.com", "active": false, "expires_at": null,
     "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMdaN7ETVptdE1IzgE4VMWfNwliL5oK4WOXqEq7uMRz7 dave@example"},
    {"id": "k-bad", "owner": "x", "active": true, "public_key": "ssh-ed25519 not-base64!!"}
  ]},
  "sftp": {"accounts": [
    {"id": "sftp-main", "username": "akeneosftp", "password_hash": null, "folder": ".", "active": true,
     "public_keys": []},
    {"id": "sftp-old", "username": "oldpartner", "password_hash": null, "folder": "old", "active": false,
     "public_keys": []}
  ]},
  "network": {"allowed_sources": ["203.0.113.0/24"]}
})";

std::unique_ptr<pim::StateStore> openStore(const TempDir& dir) {
  auto store = pim::StateStore::open(dir.path() + "/state.db", nullptr);
  INFO(store.status().toString());
  REQUIRE(store.isOk());
  return std::move(store.value());
}

int64_t recordApplied(pim::StateStore& store, const std::string& body) {
  auto doc = pim::parseDocument(body, pim::DocumentOptions{});
  INFO(doc.status().toString());
  REQUIRE(doc.isOk());
  pim::GenerationInput in;
  in.time = kNow - 600;
  in.source = "file:///tmp/access.json";
  in.revision = doc->revision;
  in.docHash = std::string(64, 'a');
  in.body = body;
  in.outcome = pim::GenerationOutcome::kApplied;
  in.skipped = pim::toSkippedRecords(doc->skipped);
  auto n = store.recordGeneration(in);
  REQUIRE(n.isOk());
  return *n;
}

pim::CycleReport reportWithExit(pim::ExitCode code) {
  pim::CycleReport r;
  r.exitCode = code;
  return r;
}

}  // namespace

TEST_CASE("metrics: rendering matches the golden file", "[metrics]") {
  checkGolden("metrics.prom", pim::renderMetrics(fullSnapshot()));
}

TEST_CASE("metrics: every metric has HELP and TYPE before its samples", "[metrics]") {
  const std::string text = pim::renderMetrics(fullSnapshot());
  REQUIRE(text.back() == '\n');
  std::set<std::string> helped, typed, sampled;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    const std::string name = metricName(line);
    REQUIRE(name.rfind("pim_access_agent_", 0) == 0);
    if (line.rfind("# HELP ", 0) == 0) {
      helped.insert(name);
    } else if (line.rfind("# TYPE ", 0) == 0) {
      REQUIRE(helped.count(name) == 1);
      typed.insert(name);
    } else {
      INFO(line);
      REQUIRE(typed.count(name) == 1);
      sampled.insert(name);
    }
  }
  const std::set<std::string> expected = {"pim_access_agent_info",
                                          "pim_access_agent_last_success_timestamp_seconds",
                                          "pim_access_agent_applied_revision",
                                          "pim_access_agent_generation",
                                          "pim_access_agent_pinned",
                                          "pim_access_agent_sshd_reload_pending",
                                          "pim_access_agent_keys_installed",
                                          "pim_access_agent_sftp_accounts",
                                          "pim_access_agent_skipped_entries",
                                          "pim_access_agent_permission_fixes_total",
                                          "pim_access_agent_bans_total",
                                          "pim_access_agent_errors_total",
                                          "pim_access_agent_key_last_login_timestamp_seconds",
                                          "pim_access_agent_sftp_account_last_login_timestamp_seconds",
                                          "pim_access_agent_failed_logins",
                                          "pim_access_agent_failed_login_sources"};
  REQUIRE(sampled == expected);
  REQUIRE(typed == expected);
}

TEST_CASE("metrics: an empty snapshot writes zeros and every error kind", "[metrics]") {
  const std::string text = pim::renderMetrics(MetricsSnapshot{});
  CHECK(text.find("pim_access_agent_last_success_timestamp_seconds 0\n") != std::string::npos);
  CHECK(text.find("pim_access_agent_applied_revision 0\n") != std::string::npos);
  CHECK(text.find("pim_access_agent_pinned 0\n") != std::string::npos);
  CHECK(text.find("pim_access_agent_sshd_reload_pending 0\n") != std::string::npos);
  for (const char* kind : pim::kMetricErrorKinds) {
    CHECK(text.find("pim_access_agent_errors_total{kind=\"" + std::string(kind) + "\"} 0\n") != std::string::npos);
  }
}

TEST_CASE("metrics: label values are escaped and unknown error kinds are kept", "[metrics]") {
  MetricsSnapshot s;
  s.version = "1.0\"x\\y\nz";
  s.errors = {{"zz-other", 9}};
  const std::string text = pim::renderMetrics(s);
  CHECK(text.find("pim_access_agent_info{version=\"1.0\\\"x\\\\y\\nz\"} 1\n") != std::string::npos);
  CHECK(text.find("pim_access_agent_errors_total{kind=\"zz-other\"} 9\n") != std::string::npos);
  CHECK(text.find("pim_access_agent_errors_total{kind=\"store\"} 0\n") != std::string::npos);
}

TEST_CASE("metrics: counters map exit codes to error kinds and keep the last success", "[metrics]") {
  MetricsCounters c;
  CHECK_FALSE(c.lastSuccessTime().has_value());
  c.countCycle(reportWithExit(pim::ExitCode::kOk), 100);
  c.countCycle(reportWithExit(pim::ExitCode::kUnreachable), 110);
  c.countCycle(reportWithExit(pim::ExitCode::kUnreachable), 120);
  c.countCycle(reportWithExit(pim::ExitCode::kRejected), 130);
  c.countCycle(reportWithExit(pim::ExitCode::kApplyFailed), 140);
  c.countCycle(reportWithExit(pim::ExitCode::kInternal), 150);
  REQUIRE(c.lastSuccessTime() == std::optional<int64_t>(100));
  auto errors = c.errors();
  CHECK(errors["store"] == 2);
  CHECK(errors["rejected"] == 1);
  CHECK(errors["apply"] == 1);
  CHECK(errors["internal"] == 1);
  CHECK(errors["permissions"] == 0);
  c.countCycle(reportWithExit(pim::ExitCode::kOk), 160);
  CHECK(c.lastSuccessTime() == std::optional<int64_t>(160));

  c.setPermissionTotals(10, 2);
  c.setPermissionTotals(12, 3);  // running sums from the watcher replace, not add
  CHECK(c.permissionFixes() == 12);
  CHECK(c.errors()["permissions"] == 3);
  c.addPermissionPass(5, 1);  // a one-off pass adds
  CHECK(c.permissionFixes() == 17);
  CHECK(c.errors()["permissions"] == 4);
}

TEST_CASE("metrics: snapshot of an empty database", "[metrics]") {
  TempDir dir;
  auto store = openStore(dir);
  pim::Config config;
  auto s = pim::snapshotFrom(*store, config, MetricsCounters{}, kNow);
  REQUIRE(s.isOk());
  CHECK_FALSE(s->generation.has_value());
  CHECK_FALSE(s->appliedRevision.has_value());
  CHECK_FALSE(s->lastSuccessTime.has_value());
  CHECK_FALSE(s->pinned);
  CHECK(s->keysInstalled == 0);
  CHECK(s->version == PIM_VERSION);

  // A failed first poll is no success: the gauge stays 0 (nothing ever succeeded).
  REQUIRE(store->recordPoll(kNow, "error", "connect: refused").isOk());
  s = pim::snapshotFrom(*store, config, MetricsCounters{}, kNow);
  REQUIRE(s.isOk());
  CHECK_FALSE(s->lastSuccessTime.has_value());
  CHECK(pim::renderMetrics(*s).find("pim_access_agent_last_success_timestamp_seconds 0\n") != std::string::npos);
}

TEST_CASE("metrics: snapshot counts the document in force", "[metrics]") {
  TempDir dir;
  auto store = openStore(dir);
  const int64_t generation = recordApplied(*store, kDocument);
  pim::Config config;
  MetricsCounters counters;
  counters.countCycle(reportWithExit(pim::ExitCode::kOk), kNow);
  counters.countCycle(reportWithExit(pim::ExitCode::kUnreachable), kNow + 30);
  counters.setPermissionTotals(6, 1);

  auto s = pim::snapshotFrom(*store, config, counters, kNow + 30);
  INFO(s.status().toString());
  REQUIRE(s.isOk());
  CHECK(s->generation == std::optional<int64_t>(generation));
  CHECK(s->appliedRevision == std::optional<int64_t>(42));
  CHECK(s->keysInstalled == 2);  // k-alice, k-bob; not the expired, inactive or invalid ones
  CHECK(s->sftpAccountsActive == 1);
  CHECK(s->sftpAccountsInactive == 1);
  CHECK(s->skippedEntries == 1);  // k-bad
  CHECK_FALSE(s->pinned);
  CHECK(s->lastSuccessTime == std::optional<int64_t>(kNow));
  CHECK(s->permissionFixes == 6);
  CHECK(s->errors.at("store") == 1);
  CHECK(s->errors.at("permissions") == 1);

  // k-bob expires: one key less at a later `now`.
  auto later = pim::snapshotFrom(*store, config, counters, 4102444800 + 1);  // after 2099-01-01
  REQUIRE(later.isOk());
  CHECK(later->keysInstalled == 1);

  REQUIRE(store->setPin(generation).isOk());
  auto pinned = pim::snapshotFrom(*store, config, counters, kNow);
  REQUIRE(pinned.isOk());
  CHECK(pinned->pinned);
  CHECK_FALSE(pinned->reloadPending);

  // The login audit: k-alice's fingerprint (ssh-keygen -l) logged in as the login user, the
  // account with a password; failures summed over their sources.
  REQUIRE(store
              ->recordLogins({{"akeneo", "SHA256:h5SgJuZRFyXhHe1unT758WQC0467LmMwowjsmtdQTyU", "publickey", kNow - 5,
                               "198.51.100.20"},
                              {"bob", "SHA256:h5SgJuZRFyXhHe1unT758WQC0467LmMwowjsmtdQTyU", "publickey", kNow, "x"},
                              {"akeneosftp", "", "password", kNow - 9, "198.51.100.21"}},
                             {{"203.0.113.9", 4, kNow}, {"2001:db8::9", 1, kNow}}, "")
              .isOk());
  auto audited = pim::snapshotFrom(*store, config, counters, kNow);
  REQUIRE(audited.isOk());
  using Seen = std::vector<std::pair<std::string, int64_t>>;
  CHECK(audited->keyLastLogin ==
        Seen{{"k-alice", kNow - 5}, {"k-bob", 0}, {"k-carol-old", 0}, {"k-dave", 0}});  // k-bad was skipped
  CHECK(audited->accountLastLogin == Seen{{"akeneosftp", kNow - 9}, {"oldpartner", 0}});
  CHECK(audited->failedLogins == 5);
  CHECK(audited->failedLoginSources == 2);

  // A reload of sshd owed since a failed one shows until sshd reloads.
  REQUIRE(store->setReloadPending("reload sshd (systemctl reload ssh): exit code 1").isOk());
  auto owed = pim::snapshotFrom(*store, config, counters, kNow);
  REQUIRE(owed.isOk());
  CHECK(owed->reloadPending);
}

TEST_CASE("metrics: without counters the last success comes from the database", "[metrics]") {
  TempDir dir;
  auto store = openStore(dir);
  recordApplied(*store, kDocument);
  pim::Config config;

  // A failed last poll: the in-force generation's time is the best known success.
  REQUIRE(store->recordPoll(kNow, "error", "connect: refused").isOk());
  auto s = pim::snapshotFrom(*store, config, MetricsCounters{}, kNow);
  REQUIRE(s.isOk());
  CHECK(s->lastSuccessTime == std::optional<int64_t>(kNow - 600));

  // A good last poll: its time.
  REQUIRE(store->recordPoll(kNow + 60, "not_modified", "").isOk());
  s = pim::snapshotFrom(*store, config, MetricsCounters{}, kNow + 60);
  REQUIRE(s.isOk());
  CHECK(s->lastSuccessTime == std::optional<int64_t>(kNow + 60));
}

TEST_CASE("metrics: the file is written atomically with mode 0644 below the root", "[metrics]") {
  TempDir dir;
  fs::create_directories(dir.path() + "/var/lib/node-exporter");
  pim::RealHost host(dir.path(), pim::nullLogger());
  const std::string path = "/var/lib/node-exporter/pim-access-agent.prom";
  const std::string real = dir.path() + path;

  ::umask(0077);  // the mode must not depend on the umask
  REQUIRE(pim::writeMetrics(host, path, "first 1\n").isOk());
  ::umask(0022);
  REQUIRE(readText(real) == "first 1\n");
  struct stat st;
  REQUIRE(::stat(real.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0644);

  const std::string text = pim::renderMetrics(fullSnapshot());
  REQUIRE(pim::writeMetrics(host, path, text).isOk());
  REQUIRE(readText(real) == text);
  // Nothing but the file: no temporary file left behind.
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir.path() + "/var/lib/node-exporter")) {
    names.push_back(e.path().filename().string());
  }
  REQUIRE(names == std::vector<std::string>{"pim-access-agent.prom"});
}

TEST_CASE("metrics: a symlink or a missing directory is refused", "[metrics]") {
  TempDir dir;
  fs::create_directories(dir.path() + "/metrics");
  fs::create_directories(dir.path() + "/elsewhere");
  pim::RealHost host(dir.path(), pim::nullLogger());
  fs::create_symlink(dir.path() + "/elsewhere/target.prom", dir.path() + "/metrics/agent.prom");
  auto s = pim::writeMetrics(host, "/metrics/agent.prom", "x 1\n");
  REQUIRE_FALSE(s.isOk());
  CHECK(s.code() == pim::ErrorCode::kUnsafe);
  CHECK_FALSE(fs::exists(dir.path() + "/elsewhere/target.prom"));

  auto missing = pim::writeMetrics(host, "/nowhere/agent.prom", "x 1\n");
  REQUIRE_FALSE(missing.isOk());
  CHECK_FALSE(fs::exists(dir.path() + "/nowhere"));
}

TEST_CASE("metrics: publishMetrics writes the configured file, and nothing when it is unset", "[metrics]") {
  TempDir dir;
  fs::create_directories(dir.path() + "/prom");
  pim::RealHost host(dir.path(), pim::nullLogger());
  auto store = openStore(dir);
  recordApplied(*store, kDocument);
  MetricsCounters counters;
  counters.countCycle(reportWithExit(pim::ExitCode::kOk), kNow);

  pim::Config off;
  REQUIRE(pim::publishMetrics(host, *store, off, counters, kNow).isOk());
  CHECK(fs::is_empty(dir.path() + "/prom"));

  pim::Config on;
  on.state.metricsFile = "/prom/pim-access-agent.prom";
  REQUIRE(pim::publishMetrics(host, *store, on, counters, kNow).isOk());
  const std::string text = readText(dir.path() + "/prom/pim-access-agent.prom");
  CHECK(text.find("pim_access_agent_applied_revision 42\n") != std::string::npos);
  CHECK(text.find("pim_access_agent_keys_installed 2\n") != std::string::npos);
  CHECK(text.find("pim_access_agent_last_success_timestamp_seconds " + std::to_string(kNow) + "\n") !=
        std::string::npos);

  on.state.metricsFile = "/missing-dir/pim-access-agent.prom";
  CHECK_FALSE(pim::publishMetrics(host, *store, on, counters, kNow).isOk());
}

TEST_CASE("config: [state] metrics_file", "[config][metrics]") {
  auto defaults = pim::parseConfig("");
  REQUIRE(defaults.isOk());
  CHECK(defaults->state.metricsFile.empty());

  auto set = pim::parseConfig("[state]\nmetrics_file = /var/lib/prometheus/node-exporter/pim-access-agent.prom\n");
  REQUIRE(set.isOk());
  CHECK(set->state.metricsFile == "/var/lib/prometheus/node-exporter/pim-access-agent.prom");

  auto empty = pim::parseConfig("[state]\nmetrics_file =\n");
  REQUIRE(empty.isOk());
  CHECK(empty->state.metricsFile.empty());

  auto relative = pim::parseConfig("[state]\nmetrics_file = metrics.prom\n");
  REQUIRE_FALSE(relative.isOk());
  CHECK(relative.status().message().find("state.metrics_file") != std::string::npos);
}

TEST_CASE("metrics: the defender's bans are counted", "[metrics][defender]") {
  MetricsCounters c;
  CHECK(c.bans() == 0);
  c.countBan();
  c.countBan();
  CHECK(c.bans() == 2);
}
