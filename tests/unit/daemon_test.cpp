// The daemon (`run`) driven as a child process on a --root sandbox, with a file:// source or a
// loopback HTTP store (tests/unit/store_test_server.h): clean stop on SIGTERM/SIGINT (also while
// a long poll is held), key expiry with no new document, file:// changes and long-poll changes
// applied at once, retries with growing gaps while the store is down, SIGHUP, the daemon lock,
// the cycle lock shared with the command line, rollback/resume from the command line, and a
// failing cycle retried; the daemon's injected clock (a Daemon in a forked child). Needs root
// (useradd --prefix, unshare).

#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <Poco/Net/HTTPResponse.h>

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <mutex>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "agent/config/config.h"
#include "agent/cycle/file_lock.h"
#include "agent/daemon/daemon.h"
#include "providers/core/clock.h"
#include "providers/core/log.h"
#include "tests/support/skip.h"
#include "tests/unit/agent_process.h"
#include "tests/unit/etcd_test_server.h"
#include "tests/unit/store_test_server.h"

using namespace pim;
using namespace pim::agenttest;
using SteadyClock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

namespace {

/// Sends `signum` and returns how long the daemon took to exit with code 0 (REQUIREs both).
milliseconds stopWith(ChildProcess& daemon, int signum) {
  const auto sent = SteadyClock::now();
  daemon.signal(signum);
  auto code = daemon.waitExit(seconds(10));
  const auto took = std::chrono::duration_cast<milliseconds>(SteadyClock::now() - sent);
  INFO("daemon stderr:\n" << daemon.err());
  REQUIRE(code.has_value());
  CHECK(*code == 0);
  return took;
}

}  // namespace

TEST_CASE("daemon: SIGTERM and SIGINT stop it with exit 0 within 2 s", "[daemon]") {
  PIM_REQUIRE_ROOT();
  const int signum = GENERATE(SIGTERM, SIGINT);
  AgentBox box;
  box.setDocument(keysDocument(1, {"k-one"}));
  auto daemon = box.startDaemon();
  requireKey(box, *daemon, "k-one");
  const milliseconds took = stopWith(*daemon, signum);
  INFO("stopped in " << took.count() << " ms");
  CHECK(took < seconds(2));  // the contract's deadline
  CHECK_THAT(daemon->err(), Catch::Contains("daemon stopped"));
}

TEST_CASE("daemon: SIGTERM and SIGINT stop it within 2 s while a long poll is held", "[daemon]") {
  PIM_REQUIRE_ROOT();
  const int signum = GENERATE(SIGTERM, SIGINT);
  storetest::StoreTestServer server;
  server.setDocument(keysDocument(1, {"k-one"}));
  AgentBox box(Settings{{"store.source", server.url()}, {"store.long_poll_s", "60"}});
  auto daemon = box.startDaemon();
  requireKey(box, *daemon, "k-one");
  // The second request is the long poll with the ETag: the store holds it (no new document).
  REQUIRE(server.waitForRequests(2, seconds(10)));
  const auto held = server.requests()[1];
  REQUIRE(held.query.count("wait") == 1);
  REQUIRE(held.hasHeader("If-None-Match"));
  std::this_thread::sleep_for(milliseconds(200));  // well inside the 60 s hold
  const milliseconds took = stopWith(*daemon, signum);
  INFO("stopped in " << took.count() << " ms");
  CHECK(took < seconds(2));
  CHECK(server.requestCount() == 2);
}

TEST_CASE("daemon: an expired key disappears at its expiry with no new document", "[daemon]") {
  PIM_REQUIRE_ROOT();
  // An HTTP store that keeps answering 304: the expiry comes from the daemon's own timer.
  storetest::StoreTestServer server;
  const int64_t expiresAt = unixNow() + 3;
  server.setDocument(
      makeDocument(1, {docKey("k-stay", "daemon-stay"), docKey("k-expiring", "daemon-expiring", true, expiresAt)}, {},
                   {"127.0.0.0/8"}));
  AgentBox box(Settings{{"store.source", server.url()}, {"store.poll_interval_s", "1"}});
  auto daemon = box.startDaemon();
  requireKey(box, *daemon, "k-expiring");
  REQUIRE(hasKey(box, "k-stay"));
  // Still there shortly before its expiry ...
  while (unixNow() < expiresAt - 1) std::this_thread::sleep_for(milliseconds(50));
  CHECK(hasKey(box, "k-expiring"));
  // ... gone within about a second of it, while the document never changed.
  const auto expiry = std::chrono::system_clock::time_point(seconds(expiresAt));
  const bool gone = waitUntil(
      [&] { return !hasKey(box, "k-expiring"); },
      std::chrono::duration_cast<milliseconds>(expiry - std::chrono::system_clock::now()) + milliseconds(1500));
  const auto late = std::chrono::duration_cast<milliseconds>(std::chrono::system_clock::now() - expiry);
  INFO("removed " << late.count() << " ms after expires_at\n" << daemon->err());
  REQUIRE(gone);
  CHECK(late.count() >= -50);  // not before its time (whole seconds, plus polling slack)
  CHECK(hasKey(box, "k-stay"));
  // The store is still polled after the expiry's re-apply.
  const size_t seen = server.requestCount();
  CHECK(server.waitForRequests(seen + 2, seconds(5)));
  for (const auto& r : server.requests()) CHECK(r.target.find("wait=") == std::string::npos);
  stopWith(*daemon, SIGTERM);
  auto history = box.history();
  REQUIRE(history.size() == 2);  // the removal is a generation of its own, same revision
  CHECK(history.front().outcome == "applied");
  CHECK(history.front().revision == history.back().revision);
}

TEST_CASE("daemon: a file:// change is applied without waiting for the poll interval", "[daemon]") {
  PIM_REQUIRE_ROOT();
  AgentBox box(Settings{{"store.poll_interval_s", "3600"}});
  box.setDocument(keysDocument(1, {"k-one"}));
  auto daemon = box.startDaemon();
  requireKey(box, *daemon, "k-one");
  const auto changed = SteadyClock::now();
  box.setDocument(keysDocument(2, {"k-two"}));
  requireKey(box, *daemon, "k-two", seconds(3));
  INFO("applied " << std::chrono::duration_cast<milliseconds>(SteadyClock::now() - changed).count()
                  << " ms after the change");
  CHECK_FALSE(hasKey(box, "k-one"));
  stopWith(*daemon, SIGTERM);
}

TEST_CASE("daemon: once while the daemon runs leaves the daemon's metrics file (and its counters) alone",
          "[daemon][metrics]") {
  PIM_REQUIRE_ROOT();
  AgentBox box(Settings{{"store.poll_interval_s", "3600"}, {"state.metrics_file", "/var/lib/pim-metrics.prom"}});
  box.setDocument(keysDocument(1, {"k-one"}));
  const std::string metrics = box.real("/var/lib/pim-metrics.prom");
  const std::string noApplyError = "pim_access_agent_errors_total{kind=\"apply\"} 0\n";
  // The daemon's cycles fail (its counter of apply errors grows), `once`'s does not.
  auto daemon = box.startDaemon({"PIM_FAILPOINT=fail-provider:ssh_keys"});
  REQUIRE(waitUntil(
      [&] { return std::filesystem::exists(metrics) && readText(metrics).find(noApplyError) == std::string::npos; },
      seconds(10)));
  Outcome once = box.run({"once"});
  INFO(once.out << once.err);
  CHECK(once.exit == 0);
  CHECK(hasKey(box, "k-one"));
  // Not rewritten with once's own single cycle, which would reset the daemon's counter to 0.
  CHECK(readText(metrics).find(noApplyError) == std::string::npos);
  stopWith(*daemon, SIGTERM);

  // Without a daemon, once writes it.
  ::unlink(metrics.c_str());
  REQUIRE(box.run({"once"}).exit == 0);
  CHECK_THAT(readText(metrics), Catch::Contains(noApplyError));
}

TEST_CASE("daemon: a store down at start leaves the host alone, retried with back-off", "[daemon]") {
  PIM_REQUIRE_ROOT();
  std::mutex mutex;
  std::vector<SteadyClock::time_point> arrivals;
  std::atomic<bool> up{false};
  const std::string body = keysDocument(2, {"k-two"});
  storetest::StoreTestServer server([&](storetest::Exchange& ex) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      arrivals.push_back(SteadyClock::now());
    }
    if (!up.load()) {
      ex.response.setStatus(Poco::Net::HTTPResponse::HTTP_SERVICE_UNAVAILABLE);
      ex.response.setContentLength(0);
      ex.response.send();
      return;
    }
    ex.response.setStatus(Poco::Net::HTTPResponse::HTTP_OK);
    ex.response.set("ETag", "\"two\"");
    ex.response.setContentType("application/json");
    ex.response.setContentLength(std::streamsize(body.size()));
    ex.response.send() << body;
  });
  AgentBox box;
  box.setDocument(keysDocument(1, {"k-one"}));
  REQUIRE(box.run({"once"}).exit == 0);  // the generation in force before the daemon starts
  const std::string before = box.snapshot();
  box.configure({{"store.source", server.url()}, {"store.poll_interval_s", "1"}});
  auto daemon = box.startDaemon();
  std::vector<SteadyClock::time_point> t;
  REQUIRE(waitUntil(
      [&] {
        std::lock_guard<std::mutex> lock(mutex);
        t = arrivals;
        return t.size() >= 3;
      },
      seconds(8)));
  const auto gap0 = std::chrono::duration_cast<milliseconds>(t[1] - t[0]);
  const auto gap1 = std::chrono::duration_cast<milliseconds>(t[2] - t[1]);
  INFO("gaps " << gap0.count() << " ms, " << gap1.count() << " ms\n" << daemon->err());
  // base = min(poll interval, 2 s) = 1 s; full jitter with a 200 ms floor: [0.2, 1] s, then
  // [0.2, 2] s, each logged before it is waited.
  std::vector<long> delays;
  const std::regex retry("retrying in ([0-9]+) ms \\(([0-9]+) consecutive failures\\)");
  const std::string err = daemon->err();
  for (std::sregex_iterator it(err.begin(), err.end(), retry), end; it != end; ++it) {
    delays.push_back(std::stol((*it)[1].str()));
  }
  REQUIRE(delays.size() >= 2);
  CHECK(delays[0] >= 200);
  CHECK(delays[0] <= 1000);
  CHECK(delays[1] >= 200);
  CHECK(delays[1] <= 2000);
  CHECK(gap0 + milliseconds(50) >= milliseconds(delays[0]));
  CHECK(gap1 + milliseconds(50) >= milliseconds(delays[1]));
  CHECK(box.snapshot() == before);  // unreachable store: host untouched
  CHECK_THAT(box.statusJson(), Catch::Contains("503"));

  up.store(true);
  requireKey(box, *daemon, "k-two", seconds(8));
  CHECK_FALSE(hasKey(box, "k-one"));
  stopWith(*daemon, SIGTERM);
}

TEST_CASE("daemon: SIGHUP re-reads the config", "[daemon]") {
  PIM_REQUIRE_ROOT();
  AgentBox box;
  box.setDocument(keysDocument(1, {"k-one"}));
  auto daemon = box.startDaemon();
  requireKey(box, *daemon, "k-one");
  // A new source in the config: nothing happens until SIGHUP.
  const std::string other = box.dir() + "/other.json";
  writeTextAtomic(other, keysDocument(2, {"k-two"}));
  box.configure({{"store.source", "file://" + other}});
  std::this_thread::sleep_for(milliseconds(700));  // the daemon does not watch its config file
  CHECK_FALSE(hasKey(box, "k-two"));
  daemon->signal(SIGHUP);
  requireKey(box, *daemon, "k-two", seconds(3));
  CHECK_THAT(daemon->err(), Catch::Contains("configuration reloaded"));
  // A broken config on SIGHUP keeps the running one.
  writeTextAtomic(box.configPath(), "[store]\nfrobs = 1\n");
  daemon->signal(SIGHUP);
  REQUIRE(waitUntil([&] { return daemon->err().find("config not reloaded") != std::string::npos; }, seconds(3)));
  writeTextAtomic(other, keysDocument(3, {"k-three"}));
  requireKey(box, *daemon, "k-three", seconds(3));
  stopWith(*daemon, SIGTERM);
}

TEST_CASE("daemon: a second run on the same state is refused", "[daemon]") {
  PIM_REQUIRE_ROOT();
  AgentBox box;
  box.setDocument(keysDocument(1, {"k-one"}));
  auto daemon = box.startDaemon();
  requireKey(box, *daemon, "k-one");
  Outcome second = box.run({"run"});
  CHECK(second.exit == 6);  // busy: the unit restarts on it (unlike a configuration error, 2)
  CHECK_THAT(second.err, Catch::Contains("another pim-access-agent daemon is running"));
  CHECK(daemon->running());
  stopWith(*daemon, SIGTERM);
}

TEST_CASE("daemon: it never reconciles while a command line cycle holds the lock", "[daemon]") {
  PIM_REQUIRE_ROOT();
  AgentBox box;
  box.setDocument(keysDocument(1, {"k-one"}));
  auto daemon = box.startDaemon();
  requireKey(box, *daemon, "k-one");
  // The test stands for a `once` in progress: it holds the cycle lock.
  auto lock = FileLock::acquire(box.real("/var/lib/pim-access-agent/state.db.lock"), 5000);
  REQUIRE(lock.isOk());
  box.setDocument(keysDocument(2, {"k-two"}));
  REQUIRE(waitUntil([&] { return daemon->err().find("waiting for the cycle lock") != std::string::npos; }, seconds(5)));
  CHECK_FALSE(hasKey(box, "k-two"));
  CHECK(hasKey(box, "k-one"));
  lock->release();
  requireKey(box, *daemon, "k-two", seconds(3));

  // A stop while it waits for the lock is still a clean stop within the deadline.
  lock = FileLock::acquire(box.real("/var/lib/pim-access-agent/state.db.lock"), 5000);
  REQUIRE(lock.isOk());
  box.setDocument(keysDocument(3, {"k-three"}));
  REQUIRE(waitUntil([&] { return occurrences(daemon->err(), "waiting for the cycle lock") == 2; }, seconds(5)));
  const milliseconds took = stopWith(*daemon, SIGTERM);
  CHECK(took < seconds(2));
  CHECK_FALSE(hasKey(box, "k-three"));
}

TEST_CASE("daemon: SIGPIPE does not kill it, and the programs it runs get the default", "[daemon]") {
  PIM_REQUIRE_ROOT();
  AgentBox box;
  // The reload command reports the signals it ignores (SigIgn of /proc/self/status, in hex).
  const std::string script = box.dir() + "/reload.sh";
  writeTextAtomic(script, "#!/bin/sh\ngrep SigIgn /proc/self/status >> '" + box.dir() + "/sigign'\n");
  ::chmod(script.c_str(), 0755);
  box.configure({{"sshd.reload_command", script}});
  box.setDocument(keysDocument(1, {"k-one"}));
  auto daemon = box.startDaemon();
  requireKey(box, *daemon, "k-one");
  daemon->signal(SIGPIPE);
  box.setDocument(keysDocument(2, {"k-two"}));  // a full cycle after the signal
  requireKey(box, *daemon, "k-two", seconds(3));
  CHECK(daemon->running());
  const std::string sigign = readText(box.dir() + "/sigign");
  REQUIRE(sigign.rfind("SigIgn:", 0) == 0);
  const unsigned long long ignored = std::stoull(sigign.substr(7), nullptr, 16);
  CHECK((ignored & (1ULL << (SIGPIPE - 1))) == 0);
  stopWith(*daemon, SIGTERM);
}

TEST_CASE("daemon: long polling applies a change at once; rollback and resume from the command line", "[daemon]") {
  PIM_REQUIRE_ROOT();
  storetest::StoreTestServer server;
  server.setDocument(keysDocument(1, {"k-one"}));
  AgentBox box(Settings{{"store.source", server.url()}, {"store.long_poll_s", "30"}});
  auto daemon = box.startDaemon();
  requireKey(box, *daemon, "k-one");
  REQUIRE(server.waitForRequests(2, seconds(5)));  // the long poll is held

  const auto changed = SteadyClock::now();
  server.setDocument(keysDocument(2, {"k-two"}));
  requireKey(box, *daemon, "k-two", seconds(2));
  INFO("long poll: applied " << std::chrono::duration_cast<milliseconds>(SteadyClock::now() - changed).count()
                             << " ms after the change");
  CHECK_FALSE(hasKey(box, "k-one"));

  // rollback 1 while the daemon holds its next long poll: the command does not wait for it.
  REQUIRE(server.waitForRequests(3, seconds(5)));
  const auto started = SteadyClock::now();
  Outcome rollback = box.run({"rollback", "1"});
  const auto rollbackTook = SteadyClock::now() - started;
  INFO(rollback.out << rollback.err);
  REQUIRE(rollback.exit == 0);
  CHECK(rollbackTook < seconds(15));  // not blocked by the 30 s long poll
  CHECK(hasKey(box, "k-one"));
  CHECK_FALSE(hasKey(box, "k-two"));

  // The daemon picks the pin up: the store's newer documents are recorded, not applied.
  server.setDocument(keysDocument(3, {"k-three"}));
  const bool recorded = waitUntil(
      [&] {
        for (const auto& g : box.history()) {
          if (g.outcome == "recorded" && g.revision == 3) return true;
        }
        return false;
      },
      seconds(5));
  INFO(daemon->err());
  REQUIRE(recorded);
  CHECK(hasKey(box, "k-one"));
  CHECK_FALSE(hasKey(box, "k-three"));
  auto status = parseObject(box.statusJson());
  CHECK(status->getValue<bool>("pinned"));
  CHECK(status->getValue<int64_t>("revision") == 1);
  CHECK(status->getValue<int64_t>("store_revision") == 3);

  // resume lifts the pin: the daemon applies the store's current document.
  REQUIRE(box.run({"resume"}).exit == 0);
  requireKey(box, *daemon, "k-three", seconds(5));
  CHECK_FALSE(hasKey(box, "k-one"));
  stopWith(*daemon, SIGTERM);
}

TEST_CASE("daemon: a failing cycle is retried on the same generation, with back-off", "[daemon]") {
  PIM_REQUIRE_ROOT();
  AgentBox box(Settings{{"store.poll_interval_s", "1"}});
  box.setDocument(keysDocument(1, {"k-one"}));
  REQUIRE(box.run({"once"}).exit == 0);
  box.setDocument(keysDocument(2, {"k-two"}));
  auto daemon = box.startDaemon({"PIM_FAILPOINT=fail-provider:ssh_keys"});
  auto retries = [&] {
    const std::string err = daemon->err();
    size_t n = 0;
    for (auto at = err.find("generation 2 (retried)"); at != std::string::npos; at = err.find("(retried)", at + 1)) ++n;
    return n;
  };
  const bool retried = waitUntil([&] { return retries() >= 2; }, seconds(8));
  INFO(daemon->err());
  REQUIRE(retried);
  // The key provider failed its first action (the revocation of k-one): nothing of k-two was
  // granted, and the retries did not add a generation each.
  CHECK_FALSE(hasKey(box, "k-two"));
  auto history = box.history();
  REQUIRE(history.size() == 2);
  CHECK(history.front().outcome == "partial");
  CHECK_THAT(parseObject(box.statusJson())->getValue<std::string>("last_error"),
             Catch::Contains("failpoint fail-provider:ssh_keys"));
  stopWith(*daemon, SIGTERM);
}

TEST_CASE("daemon: drift on the host is repaired at once, without waiting for a poll", "[daemon]") {
  PIM_REQUIRE_ROOT();
  AgentBox box;  // poll every 3600 s: only the watch on the host can bring the key back
  box.setDocument(keysDocument(1, {"k-one"}));
  auto daemon = box.startDaemon();
  requireKey(box, *daemon, "k-one");
  // The key file is written early in the first cycle (the sshd drop-in and its checks come
  // after): wait for the cycle's end, then for the check that follows it and sets the watches.
  REQUIRE(
      waitUntil([&] { return daemon->err().find("cycle: applied, generation 1") != std::string::npos; }, seconds(10)));
  std::this_thread::sleep_for(milliseconds(500));

  // Someone rewrites the agent's keys file (in place: same file, owner and mode) with a key of
  // their own.
  {
    std::ofstream(box.real("/etc/pim-access-agent/authorized_keys/akeneo"), std::ios::trunc)
        << "ssh-ed25519 AAAA hand-written\n";
  }
  REQUIRE_FALSE(hasKey(box, "k-one"));
  requireKey(box, *daemon, "k-one", seconds(5));
  CHECK(box.authorizedKeys().find("hand-written") == std::string::npos);  // the file is the agent's
  CHECK_THAT(daemon->err(), Catch::Contains("the host changed"));

  // A file of a watched directory that no check reads is not a reason to look again.
  const size_t checks = occurrences(daemon->err(), "the host changed");
  std::this_thread::sleep_for(milliseconds(2500));  // past the spacing of drift checks
  writeTextAtomic(box.real("/etc/unrelated.conf"), "x\n");
  std::this_thread::sleep_for(milliseconds(1000));
  CHECK(occurrences(daemon->err(), "the host changed") == checks);
  // A change of the account files is.
  writeTextAtomic(box.real("/etc/group"), readText(box.real("/etc/group")));
  REQUIRE(waitUntil([&] { return occurrences(daemon->err(), "the host changed") > checks; }, seconds(5)));
  stopWith(*daemon, SIGTERM);
}

TEST_CASE("daemon: SIGTERM while sshd -t hangs: exits 0 within 2 s, the next start finishes the cycle", "[daemon]") {
  PIM_REQUIRE_ROOT();
  AgentBox box;
  const std::string slow = box.dir() + "/slow-sshd";
  writeTextAtomic(
      slow, "#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = -t ] && exec sleep 31.4159; done\nexec /usr/sbin/sshd \"$@\"\n");
  ::chmod(slow.c_str(), 0755);
  box.configure({{"sshd.binary", slow}});
  box.setDocument(keysDocument(1, {"k-one"}));
  auto daemon = box.startDaemon();
  // Wait until the cycle sits in the slow `sshd -t`.
  // (matched by its unusual duration: other programs on the machine may sleep too)
  auto slowCheckRuns = [] { return runProgram({"/usr/bin/pgrep", "-f", "^sleep 31.4159$"}).exit == 0; };
  const bool inCheck = waitUntil(slowCheckRuns, seconds(20));
  INFO(daemon->err());
  REQUIRE(inCheck);
  const milliseconds took = stopWith(*daemon, SIGTERM);
  CHECK(took < milliseconds(2000));
  CHECK_FALSE(slowCheckRuns());  // what it ran was killed
  CHECK_THAT(daemon->err(), Catch::Contains("crash recovery"));
  auto history = box.history();
  REQUIRE(history.size() == 1);
  CHECK(history.front().outcome == "pending");  // left to the next start

  // The next start (sshd -t quick again) finishes it.
  box.configure({{"sshd.binary", "/usr/sbin/sshd"}});
  Outcome once = box.run({"once"});
  INFO(once.out << once.err);
  CHECK(once.exit == 0);
  CHECK(hasKey(box, "k-one"));
  history = box.history();
  REQUIRE(history.size() == 1);
  CHECK(history.front().outcome == "applied");
}

TEST_CASE("daemon: history says why each generation exists: drift, boot, and one line for 20 failed retries",
          "[daemon]") {
  PIM_REQUIRE_ROOT();
  AgentBox box(Settings{{"store.poll_interval_s", "1"}});
  box.setDocument(
      makeDocument(1, {docKey("k-one", "cause-one")}, {{"sftp-main", "akeneosftp", ".", true, true}}, {"127.0.0.0/8"}));
  REQUIRE(box.run({"once"}).exit == 0);
  auto causes = [&] {
    Outcome h = box.run({"history", "--json"});
    REQUIRE(h.exit == 0);
    Poco::JSON::Parser parser;
    auto arr = parser.parse(h.out).extract<Poco::JSON::Array::Ptr>();
    std::vector<std::string> out;
    for (size_t i = 0; i < arr->size(); ++i) out.push_back(arr->getObject(unsigned(i))->getValue<std::string>("cause"));
    return out;
  };
  REQUIRE(causes() == std::vector<std::string>{"store"});

  size_t drifts = 0;
  {
    // Drift: the key file is removed by hand; the daemon puts it back as a drift generation.
    auto daemon = box.startDaemon();
    // After the first cycle and its own re-check of the host, when the watches are set: the
    // removal is then one drift, repaired once.
    REQUIRE(waitUntil([&] { return daemon->err().find("cycle: ") != std::string::npos; }, seconds(10)));
    std::this_thread::sleep_for(milliseconds(1000));
    // (The daemon runs in a mount namespace of its own: its first cycle may already have put the
    // bind mount back, as a drift.)
    const auto before = causes();
    drifts = size_t(std::count(before.begin(), before.end(), "drift"));
    ::unlink(box.authorizedKeysPath().c_str());
    requireKey(box, *daemon, "k-one");
    REQUIRE(waitUntil([&] { return causes().size() == before.size() + 1; }, seconds(10)));
    CHECK(causes().front() == "drift");
    ++drifts;
    stopWith(*daemon, SIGTERM);
  }
  const size_t afterDrift = causes().size();
  {
    // A reboot while the store is down: the bind mounts are gone (each daemon here runs in its own
    // mount namespace), and the daemon applies the document in force again, cause boot.
    box.configure({{"store.source", "file://" + box.dir() + "/no-such-document.json"}});
    auto daemon = box.startDaemon();
    REQUIRE(waitUntil([&] { return causes().size() > afterDrift; }, seconds(10)));
    stopWith(*daemon, SIGTERM);
  }
  CHECK(causes().front() == "boot");
  const size_t afterBoot = causes().size();

  // A new document that fails, retried 20 times: one generation, 20 attempts.
  box.configure({{"store.source", "file://" + box.documentPath()}});
  box.setDocument(makeDocument(2, {docKey("k-one", "cause-one"), docKey("k-two", "cause-two")},
                               {{"sftp-main", "akeneosftp", ".", true, true}}, {"127.0.0.0/8"}));
  for (int i = 0; i < 20; ++i) CHECK(box.run({"once"}, {"PIM_FAILPOINT=fail-provider:ssh_keys"}).exit == 5);
  const auto all = causes();
  CHECK(all.size() == afterBoot + 1);
  CHECK(all.front() == "store");
  Outcome h = box.run({"history", "--json"});
  Poco::JSON::Parser parser;
  auto newest = parser.parse(h.out).extract<Poco::JSON::Array::Ptr>()->getObject(0);
  CHECK(newest->getValue<std::string>("outcome") == "partial");
  CHECK(newest->getValue<int64_t>("attempts") == 20);
  // Each line of the text listing names its cause.
  Outcome text = box.run({"history"});
  INFO(text.out);
  CHECK(occurrences(text.out, " drift ") == drifts);
  CHECK(occurrences(text.out, " boot ") == 1);
  CHECK_THAT(text.out, Catch::Contains("20 attempts"));
}

TEST_CASE("daemon: the STATUS= line says where the agent stands", "[daemon]") {
  CycleReport r;
  r.outcome = CycleOutcome::kApplied;
  r.revision = 42;
  r.generation = 7;
  CHECK(statusLine(r) == "applied revision 42 (generation 7)");
  r.outcome = CycleOutcome::kUnchanged;
  CHECK(statusLine(r) == "in force: revision 42 (generation 7)");
  CycleReport down;
  down.exitCode = ExitCode::kUnreachable;
  down.outcome = CycleOutcome::kUnreachable;
  down.error = "store https://portal.example/x: HTTP 404 Not Found";
  CHECK(statusLine(down) == "waiting for the store: store https://portal.example/x: HTTP 404 Not Found");
  down.notRegistered = 404;  // the store does not know the instance yet: not an outage
  CHECK(statusLine(down) == "waiting for the store (404: not registered yet)");
  down.notRegistered = 410;
  CHECK(statusLine(down) == "waiting for the store (410: not registered yet)");
  CycleReport partial = r;
  partial.exitCode = ExitCode::kApplyFailed;
  partial.outcome = CycleOutcome::kPartial;
  partial.error = std::string(400, 'x');
  CHECK(statusLine(partial).size() < 220);
  CHECK_THAT(statusLine(partial), Catch::StartsWith("revision 42 (generation 7) partial, retried: xxx"));
}

TEST_CASE("wait: returns as soon as a store document is applied, or says why not", "[daemon]") {
  PIM_REQUIRE_ROOT();
  AgentBox box;
  auto startWait = [&](std::vector<std::string> args) {
    std::vector<std::string> argv{agentBinary(), "--config", box.configPath(), "--root", box.root(), "wait"};
    argv.insert(argv.end(), args.begin(), args.end());
    static int n = 0;
    ++n;
    return std::make_unique<ChildProcess>(argv, std::vector<std::string>{},
                                          box.dir() + "/wait-" + std::to_string(n) + ".out",
                                          box.dir() + "/wait-" + std::to_string(n) + ".err");
  };
  // Nothing applied yet (no state database even): it waits; the first document ends it at once.
  auto waiting = startWait({"--timeout", "30"});
  std::this_thread::sleep_for(milliseconds(500));
  REQUIRE(waiting->running());
  box.setDocument(keysDocument(1, {"k-one"}));
  REQUIRE(box.run({"once"}).exit == 0);
  auto code = waiting->waitExit(seconds(3));
  REQUIRE(code.has_value());
  CHECK(*code == 0);
  CHECK_THAT(waiting->out(), Catch::Contains("revision 1 applied"));

  // A revision not reached yet: times out (7).
  auto later = startWait({"--timeout", "1", "--revision", "2"});
  code = later->waitExit(seconds(5));
  REQUIRE(code.has_value());
  CHECK(*code == 7);
  CHECK_THAT(later->err(), Catch::Contains("revision 2 or above"));

  // That revision rejected: 3; failing: 5.
  box.setDocument("{\"version\": 1, \"revision\": 2}");
  CHECK(box.run({"once"}).exit == 3);
  auto rejected = startWait({"--timeout", "5", "--revision", "2"});
  code = rejected->waitExit(seconds(8));
  REQUIRE(code.has_value());
  CHECK(*code == 3);
  box.setDocument(keysDocument(3, {"k-one", "k-two"}));
  CHECK(box.run({"once"}, {"PIM_FAILPOINT=fail-provider:ssh_keys"}).exit == 5);
  auto failing = startWait({"--timeout", "5", "--revision", "3"});
  code = failing->waitExit(seconds(8));
  REQUIRE(code.has_value());
  CHECK(*code == 5);
  // Options are checked.
  CHECK(box.run({"wait", "--timeout", "soon"}).exit == 2);
  CHECK(box.run({"status", "--revision", "3"}).exit == 2);
}

TEST_CASE("daemon: a retry waits at least the store's Retry-After, capped at the back-off ceiling", "[daemon]") {
  using std::chrono::minutes;
  const milliseconds cap = minutes(10);
  CHECK(retryDelay(milliseconds(0), std::nullopt, cap) == milliseconds(200));  // the floor
  CHECK(retryDelay(milliseconds(1500), std::nullopt, cap) == milliseconds(1500));
  CHECK(retryDelay(milliseconds(1500), seconds(5), cap) == seconds(5));
  CHECK(retryDelay(seconds(40), seconds(5), cap) == seconds(40));  // the draw is longer
  CHECK(retryDelay(milliseconds(0), seconds(0), cap) == milliseconds(200));
  CHECK(retryDelay(milliseconds(300), std::chrono::hours(24 * 30), cap) == cap);
}

TEST_CASE("daemon: the store's Retry-After on a 503 is honoured", "[daemon]") {
  PIM_REQUIRE_ROOT();
  std::mutex mutex;
  std::vector<SteadyClock::time_point> arrivals;
  const std::string body = keysDocument(1, {"k-one"});
  storetest::StoreTestServer server([&](storetest::Exchange& ex) {
    size_t n;
    {
      std::lock_guard<std::mutex> lock(mutex);
      arrivals.push_back(SteadyClock::now());
      n = arrivals.size();
    }
    if (n <= 2) {
      ex.response.setStatus(Poco::Net::HTTPResponse::HTTP_SERVICE_UNAVAILABLE);
      ex.response.set("Retry-After", "3");
      ex.response.setContentLength(0);
      ex.response.send();
      return;
    }
    ex.response.setStatus(Poco::Net::HTTPResponse::HTTP_OK);
    ex.response.set("ETag", "\"one\"");
    ex.response.setContentLength(std::streamsize(body.size()));
    ex.response.send() << body;
  });
  // base = min(poll interval, 2 s) = 1 s: without Retry-After the first retries come within 1 and 2 s.
  AgentBox box(Settings{{"store.source", server.url()}, {"store.poll_interval_s", "1"}});
  auto daemon = box.startDaemon();
  requireKey(box, *daemon, "k-one", seconds(15));
  std::vector<SteadyClock::time_point> t;
  {
    std::lock_guard<std::mutex> lock(mutex);
    t = arrivals;
  }
  REQUIRE(t.size() >= 3);
  const auto gap0 = std::chrono::duration_cast<milliseconds>(t[1] - t[0]);
  const auto gap1 = std::chrono::duration_cast<milliseconds>(t[2] - t[1]);
  INFO("gaps " << gap0.count() << " ms, " << gap1.count() << " ms\n" << daemon->err());
  CHECK(gap0 >= milliseconds(2950));
  CHECK(gap1 >= milliseconds(2950));
  CHECK(occurrences(daemon->err(), "as the store asked (Retry-After: 3 s)") == 2);
  stopWith(*daemon, SIGTERM);
}

TEST_CASE("daemon: an https store through the proxy of HTTPS_PROXY in its environment", "[daemon][proxy]") {
  PIM_REQUIRE_ROOT();
  if (!test::runsHere(storetest::StoreTestProxy::available(), "tinyproxy is not installed (scripts/install-deps)")) {
    return;
  }
  storetest::StoreTestProxy proxy;
  storetest::StoreTestDir pkiDir;
  auto pki = storetest::makeStoreTestPki(pkiDir.path(), "IP:127.0.0.1");
  storetest::StoreTestServer server(storetest::StoreTestServer::Tls{pki.serverCert, pki.serverKey});
  server.setDocument(keysDocument(1, {"k-one"}));
  AgentBox box(Settings{{"store.source", server.url()}, {"store.ca_file", "/store-ca.pem"}});
  writeTextAtomic(box.real("/store-ca.pem"), readText(pki.caCert));
  auto daemon = box.startDaemon({"HTTPS_PROXY=" + proxy.url(), "NO_PROXY=store.example"});
  requireKey(box, *daemon, "k-one");
  const auto requests = proxy.requests();
  INFO(daemon->err());
  REQUIRE_FALSE(requests.empty());
  CHECK(requests[0] == "CONNECT 127.0.0.1:" + std::to_string(server.port()) + " HTTP/1.1");
  stopWith(*daemon, SIGTERM);

  // `once`, the same way; and a proxy variable that holds no URL is a configuration error.
  CHECK(box.run({"once"}, {"HTTPS_PROXY=" + proxy.url()}).exit == 0);
  CHECK(proxy.requests().size() == requests.size() + 1);
  Outcome bad = box.run({"once"}, {"HTTPS_PROXY=ftp://proxy.example"});
  CHECK(bad.exit == 2);
  CHECK_THAT(bad.err, Catch::Contains("HTTPS_PROXY"));
}

TEST_CASE("daemon: SIGTERM stops it within 2 s while the store's name look-up hangs", "[daemon][dns]") {
  PIM_REQUIRE_ROOT();
  if (storetest::inNetworkNamespace()) {
    storetest::BlackholeDns dns;
    AgentBox box(Settings{{"store.source", "https://store.hang.test/v1/instances/test/access"}});
    auto daemon = box.startDaemon();
    REQUIRE(dns.queried(seconds(10)));  // the daemon's first fetch is looking the name up
    std::this_thread::sleep_for(milliseconds(300));
    REQUIRE(daemon->running());
    const milliseconds took = stopWith(*daemon, SIGTERM);
    INFO("stopped in " << took.count() << " ms");
    CHECK(took < seconds(2));
    return;
  }
  std::string why;
  auto run = storetest::runInNetworkNamespace(Catch::getResultCapture().getCurrentTestName(), why);
  if (!test::runsHere(run.has_value(), why)) return;
  INFO(run->output);
  CHECK(run->exit == 0);
}

TEST_CASE("wait: returns within a poll interval after a store that answered 404 starts serving", "[daemon]") {
  PIM_REQUIRE_ROOT();
  const bool longPoll = GENERATE(false, true);
  storetest::StoreTestServer server;  // 404 until a document is set
  Settings settings{{"store.source", server.url()}, {"store.poll_interval_s", "2"}};
  if (longPoll) settings["store.long_poll_s"] = "30";
  AgentBox box(settings);
  auto daemon = box.startDaemon();
  // Several 404s, asked again at the poll interval (or held as long polls), never backed off.
  REQUIRE(server.waitForRequests(2, seconds(6)));
  std::this_thread::sleep_for(milliseconds(longPoll ? 500 : 4500));
  INFO(daemon->err());
  CHECK(daemon->err().find("retrying in") == std::string::npos);
  CHECK_THAT(daemon->err(), Catch::Contains("does not know this instance yet (HTTP 404)"));
  CHECK(box.history().empty());

  std::vector<std::string> argv{agentBinary(), "--config", box.configPath(), "--root",
                                box.root(),    "wait",     "--timeout",      "30"};
  ChildProcess waiting(argv, {}, box.dir() + "/wait.out", box.dir() + "/wait.err");
  std::this_thread::sleep_for(milliseconds(300));
  REQUIRE(waiting.running());
  const auto registered = SteadyClock::now();
  server.setDocument(keysDocument(1, {"k-one"}));
  auto code = waiting.waitExit(seconds(10));
  const auto took = SteadyClock::now() - registered;
  INFO("wait returned " << std::chrono::duration_cast<milliseconds>(took).count() << " ms after registration");
  REQUIRE(code.has_value());
  CHECK(*code == 0);
  // One poll interval (2 s) plus the first cycle (~0.7 s on an idle machine: useradd, sshd -t
  // and -T) and wait's 200 ms look. A long poll held by the store answers at once: what remains is
  // that first cycle (under 1 s idle; the bound leaves room for a loaded CI machine).
  CHECK(took < (longPoll ? milliseconds(1500) : milliseconds(3500)));
  if (longPoll) CHECK(server.heldLongPolls() >= 1);  // the 404 long poll was held, then answered
  stopWith(*daemon, SIGTERM);
}

TEST_CASE("daemon: an etcd:// source follows the watch: a change is on the host within a second", "[daemon][etcd]") {
  PIM_REQUIRE_ROOT();
  if (!test::runsHere(storetest::EtcdTestServer::available(), "needs etcd-server and etcd-client")) return;
  storetest::EtcdTestServer etcd;
  const std::string key = "/pim/instances/test/access";
  etcd.put(key, keysDocument(1, {"k-one"}));
  // poll_interval_s stays 3600 (AgentBox's default) and no long_poll_s: only the watch can bring
  // the change in time.
  AgentBox box(Settings{{"store.source", etcd.url(key)}});
  auto daemon = box.startDaemon();
  requireKey(box, *daemon, "k-one");
  std::this_thread::sleep_for(milliseconds(500));  // the watch is armed
  const auto before = SteadyClock::now();
  etcd.put(key, keysDocument(2, {"k-one", "k-two"}));
  const auto put = SteadyClock::now();
  requireKey(box, *daemon, "k-two", seconds(5));
  const auto now = SteadyClock::now();
  const auto sincePut = std::chrono::duration_cast<milliseconds>(now - put);
  const auto sinceBefore = std::chrono::duration_cast<milliseconds>(now - before);
  WARN("etcd watch -> key file: " << sincePut.count() << " ms after etcdctl put returned, " << sinceBefore.count()
                                  << " ms after it started");
  CHECK(sinceBefore < seconds(1));
  // SIGTERM while the watch is held.
  std::this_thread::sleep_for(milliseconds(300));
  const milliseconds took = stopWith(*daemon, SIGTERM);
  CHECK(took < seconds(2));
}

TEST_CASE("daemon: a restart with a document in force re-applies it and asks the store after U[0, poll interval]",
          "[daemon]") {
  PIM_REQUIRE_ROOT();
  storetest::StoreTestServer server;
  server.setDocument(keysDocument(1, {"k-one"}));
  AgentBox box(Settings{{"store.source", server.url()}, {"store.poll_interval_s", "3600"}});
  {
    auto first = box.startDaemon();
    requireKey(box, *first, "k-one");
    CHECK_THAT(first->err(), !Catch::Contains("first store request in"));  // nothing in force: at once
    stopWith(*first, SIGTERM);
  }
  // Drift while the daemon is down: the boot re-apply puts the key back without the store.
  REQUIRE(::unlink(box.authorizedKeysPath().c_str()) == 0);
  const size_t before = server.requestCount();
  auto daemon = box.startDaemon();
  std::smatch m;
  const std::regex announced("first store request in ([0-9]+) ms");
  std::string err;
  REQUIRE(waitUntil(
      [&] {
        err = daemon->err();
        return std::regex_search(err, m, announced);
      },
      seconds(10)));
  const int64_t delayMs = std::stoll(m[1].str());
  CHECK(delayMs >= 0);
  CHECK(delayMs <= 3600 * 1000);
  requireKey(box, *daemon, "k-one");
  if (delayMs > 15000) CHECK(server.requestCount() == before);  // restored before the store was asked
  stopWith(*daemon, SIGTERM);
}

namespace {

// The machine's time shifted by `offsetS`: the daemon's timers still run in real time.
class ShiftedClock : public Clock {
 public:
  explicit ShiftedClock(int64_t offsetS) : offsetS_(offsetS) {}
  int64_t nowSeconds() const override { return system_.nowSeconds() + offsetS_; }
  int64_t nowMilliseconds() const override { return system_.nowMilliseconds() + offsetS_ * 1000; }

 private:
  SystemClock system_;
  int64_t offsetS_;
};

// A Daemon with `clock` on `box`, in a forked child in a mount namespace of its own (what
// `unshare -m --propagation private` does for the binary); stderr to `errPath`. Killed (SIGKILL)
// and reaped on destruction unless stop() reaped it.
class ForkedDaemon {
 public:
  ForkedDaemon(const AgentBox& box, const Clock& clock, const std::string& errPath) {
    pid_ = ::fork();
    if (pid_ != 0) return;
    const int fd = ::open(errPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || ::dup2(fd, STDERR_FILENO) < 0) ::_exit(120);
    if (::unshare(CLONE_NEWNS) != 0 || ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
      ::_exit(121);
    }
    setLogLevel(spdlog::level::info);
    auto loadConfig = [&box]() -> Result<Config> {
      auto config = parseConfig(readText(box.configPath()));
      if (!config) return config;
      config->root = box.root();
      config->network.managed = false;  // as under --root
      return config;
    };
    int code = 0;
    {
      Daemon daemon(loadConfig, clock, makeLogger("daemon"));
      code = static_cast<int>(daemon.run());
    }
    ::_exit(code);
  }
  ~ForkedDaemon() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  ForkedDaemon(const ForkedDaemon&) = delete;
  ForkedDaemon& operator=(const ForkedDaemon&) = delete;

  bool started() const { return pid_ > 0; }
  /// SIGTERM, then its exit code (nullopt when it did not exit within 10 s).
  std::optional<int> stop() {
    ::kill(pid_, SIGTERM);
    int status = 0;
    const bool exited = waitUntil([&] { return ::waitpid(pid_, &status, WNOHANG) == pid_; }, seconds(10));
    if (!exited) return std::nullopt;
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

 private:
  pid_t pid_ = -1;
};

}  // namespace

TEST_CASE("daemon: key expiry follows the injected clock, not the machine's", "[daemon]") {
  PIM_REQUIRE_ROOT();
  // The daemon's clock is 30 days ahead of the machine's. A key that expires 3 s from now by it
  // (in 30 days by the machine's) is installed, then removed by the expiry timer 3 s later: the
  // timer is set from the injected clock. With the machine's clock it would stay for 30 days.
  const ShiftedClock clock(30 * 86400);
  const int64_t expiresAt = clock.nowSeconds() + 3;
  AgentBox box;
  box.setDocument(
      makeDocument(1, {docKey("k-stay", "daemon-stay"), docKey("k-expiring", "daemon-expiring", true, expiresAt)}, {},
                   {"127.0.0.0/8"}));
  const std::string err = box.dir() + "/daemon-clock.err";
  ForkedDaemon daemon(box, clock, err);
  REQUIRE(daemon.started());
  if (!waitUntil([&] { return hasKey(box, "k-expiring"); }, seconds(10))) {
    FAIL("k-expiring was not installed; daemon stderr:\n" << readText(err));
  }
  CHECK(hasKey(box, "k-stay"));
  const auto expiry = std::chrono::system_clock::time_point(seconds(expiresAt - 30 * 86400));
  const bool gone = waitUntil(
      [&] { return !hasKey(box, "k-expiring"); },
      std::chrono::duration_cast<milliseconds>(expiry - std::chrono::system_clock::now()) + milliseconds(1500));
  const auto late = std::chrono::duration_cast<milliseconds>(std::chrono::system_clock::now() - expiry);
  INFO("removed " << late.count() << " ms after expires_at by the daemon's clock\n" << readText(err));
  CHECK(gone);
  CHECK(late.count() >= -50);  // not before its time by the daemon's clock
  CHECK(hasKey(box, "k-stay"));
  const auto code = daemon.stop();
  INFO(readText(err));
  REQUIRE(code.has_value());
  CHECK(*code == 0);
}
