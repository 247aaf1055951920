// The cycle never grants more than the document in force: failpoints (parsing, the reconciler
// honouring them), stages (revocations before grants), a failure part-way that is isolated and
// contained (never a return to the previous document, which would grant again what the new one
// revoked), and crash recovery that finishes the interrupted document's cycle.
// - In process, with small providers writing one file per key on RealHost(tmpdir): no root.
// - Through the real binary on a --root sandbox with the real providers (useradd, sshd -t):
//   `kill -9` at several points of a cycle (PIM_FAILPOINT=crash-...), then the next command must
//   finish the cycle, and the host must equal what a clean run gives. Needs root.

#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <spdlog/sinks/ostream_sink.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "agent/cycle/cycle.h"
#include "agent/cycle/failpoint.h"
#include "agent/cycle/reconciler.h"
#include "agent/store/signature.h"
#include "providers/core/log.h"
#include "providers/host/real_host.h"
#include "state/state_store.h"
#include "tests/unit/agent_process.h"
#include "tests/unit/store_test_server.h"

using namespace pim;
using namespace pim::agenttest;

namespace {

// ---- in-process fixtures ----

/// What a simulated crash throws: not a std::exception, so nothing on the way catches it.
struct SimulatedCrash {
  std::string where;
};

FailPoints failpoints(const std::string& spec, bool simulateCrash = true) {
  auto fp = FailPoints::parse(spec);
  REQUIRE(fp.isOk());
  if (simulateCrash) fp->crashHook = [](const std::string& where) { throw SimulatedCrash{where}; };
  return *fp;
}

/// A provider that keeps one file per installable key of the document under /out/<name>/:
/// plan() lists what to write and remove, apply() does it through the host. `calls` records
/// "plan:<name>" and "apply:<name>:<key>".
class KeyFilesProvider : public Provider {
 public:
  KeyFilesProvider(std::string name, std::vector<std::string>* calls) : name_(std::move(name)), calls_(calls) {}
  std::string name() const override { return name_; }
  Result<std::vector<Action>> plan(const Desired& desired, Host& host) override {
    if (calls_) calls_->push_back("plan:" + name_);
    const std::string dir = "/out/" + name_;
    Status s = host.makeDirectories(dir, Ownership{0755, ::geteuid(), ::getegid()});
    if (!s) return s;
    auto present = host.listDirectory(dir);
    if (!present) return present.status();
    std::set<std::string> want;
    for (const auto& k : desired.document.keys) {
      if (k.installableAt(desired.now)) want.insert(k.id);
    }
    std::vector<Action> actions;
    for (const auto& id : want) {
      if (std::find(present->begin(), present->end(), id) == present->end()) {
        actions.push_back(Action{name_, Verb::kWrite, dir + "/" + id, "", id, "", "", Stage::kGrant, ""});
      }
    }
    for (const auto& id : *present) {
      if (!want.count(id))
        actions.push_back(Action{name_, Verb::kRemove, dir + "/" + id, "", "", "", "", Stage::kRevoke, ""});
    }
    return actions;
  }
  Status apply(const Action& action, const Desired&, Host& host) override {
    if (calls_) calls_->push_back("apply:" + name_ + ":" + action.object.substr(action.object.rfind('/') + 1));
    if (action.verb == Verb::kRemove) return host.removeFile(action.object);
    return host.writeFileAtomic(action.object, action.payload, Ownership{0644, ::geteuid(), ::getegid()});
  }

 private:
  std::string name_;
  std::vector<std::string>* calls_;
};

class ThrowingProvider : public Provider {
 public:
  std::string name() const override { return "thrower"; }
  Result<std::vector<Action>> plan(const Desired&, Host&) override {
    return std::vector<Action>{Action{"thrower", Verb::kWrite, "/x", "", "", "", "", Stage::kGrant, ""}};
  }
  Status apply(const Action&, const Desired&, Host&) override { throw std::runtime_error("boom"); }
};

std::vector<std::unique_ptr<Provider>> keyFileProviders(std::vector<std::string>* calls) {
  std::vector<std::unique_ptr<Provider>> v;
  for (const char* n : {"alpha", "beta", "gamma"}) v.push_back(std::make_unique<KeyFilesProvider>(n, calls));
  return v;
}

AccessDocument docWithKeys(int64_t revision, const std::vector<std::string>& ids) {
  AccessDocument doc;
  doc.revision = revision;
  for (const auto& id : ids) {
    SshKey k;
    k.id = id;
    k.key = PublicKey{"ssh-ed25519", "AAAA", ""};
    doc.keys.push_back(k);
  }
  return doc;
}

/// A store that hands out one body (ETag = its hash) or an error.
class FakeStore : public StoreClient {
 public:
  std::string body;
  Result<FetchOutcome> fetch(const std::string& etag, int64_t) override {
    FetchOutcome o;
    o.etag = "\"" + sha256Hex(body) + "\"";
    o.kind = etag == o.etag ? FetchOutcome::Kind::kUnchanged : FetchOutcome::Kind::kDocument;
    if (o.kind == FetchOutcome::Kind::kDocument) o.body = body;
    return o;
  }
  void cancel() override {}
  std::string describe() const override { return "fake://store"; }
};

/// An Agent on RealHost(tmpdir) with the key-file providers and a state database in the same
/// directory; a second Agent on the same directory stands for the next start of the process.
struct InProcess {
  storetest::StoreTestDir dir;
  Config config;
  std::unique_ptr<RealHost> host;
  std::unique_ptr<StateStore> state;
  FixedClock clock{1'900'000'000};
  FakeStore store;

  InProcess() {
    config.root = dir.path();
    config.sshd.reloadCommand = "";
    host = std::make_unique<RealHost>(dir.path(), nullLogger());
    reopenState();
  }
  void reopenState() {
    state.reset();
    auto s = StateStore::open(dir.file("state.db"), nullLogger());
    REQUIRE(s.isOk());
    state = std::move(*s);
  }
  Agent agent(FailPoints fp = {}) {
    return Agent(
        config, *host, *state, clock, [](Ledger&) { return keyFileProviders(nullptr); }, nullLogger(), std::move(fp));
  }
  std::set<std::string> files(const std::string& provider) {
    std::set<std::string> out;
    auto names = host->listDirectory("/out/" + provider);
    if (names) out.insert(names->begin(), names->end());
    return out;
  }
  void publish(int64_t revision, const std::vector<std::string>& ids) {
    store.body = makeDocument(revision,
                              [&] {
                                std::vector<DocKey> keys;
                                for (const auto& id : ids) keys.push_back(docKey(id, "cycle-" + id));
                                return keys;
                              }(),
                              {}, {"127.0.0.0/8"});
  }
};

}  // namespace

// ---- failpoint parsing ----

TEST_CASE("failpoints parse the PIM_FAILPOINT grammar", "[cycle]") {
  auto fp = FailPoints::parse("after-action:3, before-provider:sshd,fail-provider:sftp_chroots");
  REQUIRE(fp.isOk());
  CHECK(fp->failAfterAction == 3);
  CHECK(fp->failBeforeProvider == "sshd");
  CHECK(fp->failProvider == "sftp_chroots");
  CHECK_FALSE(fp->crashBeforeFinish);
  CHECK(fp->describe() == "after-action:3,before-provider:sshd,fail-provider:sftp_chroots");

  auto crash = FailPoints::parse("crash-after-action:5,crash-before-finish,crash-before-provider:ssh_keys");
  REQUIRE(crash.isOk());
  CHECK(crash->crashAfterAction == 5);
  CHECK(crash->crashBeforeFinish);
  CHECK(crash->crashBeforeProvider == "ssh_keys");

  auto none = FailPoints::parse("");
  REQUIRE(none.isOk());
  CHECK(none->empty());

  for (const char* bad : {"after-action", "after-action:0", "after-action:x", "crash-after-action:-1",
                          "fail-provider:", "fail-provider:Bad Name", "crash-before-finish:1", "explode"}) {
    INFO(bad);
    auto r = FailPoints::parse(bad);
    REQUIRE_FALSE(r.isOk());
    CHECK(r.status().code() == ErrorCode::kInvalid);
  }
}

// ---- the reconciler honours failpoints ----

TEST_CASE("reconciler failpoints stop the convergence where they say", "[cycle]") {
  storetest::StoreTestDir dir;
  RealHost host(dir.path(), nullLogger());
  AccessDocument doc = docWithKeys(1, {"k1", "k2"});  // 2 actions per provider, 6 in all
  HostSettings hs;
  SshdSettings ss;
  Desired desired{doc, hs, ss, 0};
  auto applies = [](const std::vector<std::string>& calls) {
    return std::count_if(calls.begin(), calls.end(), [](const std::string& c) { return c.rfind("apply:", 0) == 0; });
  };

  SECTION("none: every action of every provider") {
    std::vector<std::string> calls;
    Reconciler r(keyFileProviders(&calls), nullLogger());
    auto out = r.converge(desired, host, false);
    CHECK(out.status().isOk());
    CHECK(out.applied.size() == 6);
    CHECK(r.plan(desired, host).actions.empty());  // after converging, a fresh plan is empty
  }
  SECTION("after-action:3 fails right after the third action: nothing more is granted") {
    std::vector<std::string> calls;
    Reconciler r(keyFileProviders(&calls), nullLogger(), failpoints("after-action:3"));
    auto out = r.converge(desired, host, false);
    REQUIRE_FALSE(out.status().isOk());
    CHECK_THAT(out.status().message(), Catch::Contains("failpoint after-action:3"));
    CHECK(out.applied.size() == 3);
    CHECK(applies(calls) == 3);
  }
  SECTION("before-provider:beta: beta cannot plan, the others still converge") {
    std::vector<std::string> calls;
    Reconciler r(keyFileProviders(&calls), nullLogger(), failpoints("before-provider:beta"));
    auto out = r.converge(desired, host, false);
    REQUIRE_FALSE(out.status().isOk());
    CHECK_THAT(out.status().message(), Catch::Contains("beta: plan"));
    CHECK(out.applied.size() == 4);
    CHECK(std::find(calls.begin(), calls.end(), "plan:beta") == calls.end());
    CHECK(std::find(calls.begin(), calls.end(), "apply:gamma:k2") != calls.end());
  }
  SECTION("fail-provider:beta fails beta's first action; beta grants nothing more, gamma goes on") {
    std::vector<std::string> calls;
    Reconciler r(keyFileProviders(&calls), nullLogger(), failpoints("fail-provider:beta"));
    auto out = r.converge(desired, host, false);
    REQUIRE_FALSE(out.status().isOk());
    CHECK_THAT(out.status().message(), Catch::Contains("beta: write /out/beta/k1"));
    CHECK(out.applied.size() == 4);
    CHECK(std::find(calls.begin(), calls.end(), "apply:beta:k1") == calls.end());
    CHECK(std::find(calls.begin(), calls.end(), "apply:beta:k2") == calls.end());
    CHECK(std::find(calls.begin(), calls.end(), "apply:gamma:k2") != calls.end());
  }
  SECTION("crash-after-action:4 runs the crash hook after the fourth action") {
    std::vector<std::string> calls;
    Reconciler r(keyFileProviders(&calls), nullLogger(), failpoints("crash-after-action:4"));
    std::string where;
    try {
      (void)r.converge(desired, host, false);
    } catch (const SimulatedCrash& c) {
      where = c.where;
    }
    CHECK(where == "crash-after-action:4");
    CHECK(calls.back() == "apply:beta:k2");
  }
  SECTION("a provider that throws is a failure, not an escape") {
    std::vector<std::unique_ptr<Provider>> v;
    v.push_back(std::make_unique<ThrowingProvider>());
    Reconciler r(std::move(v), nullLogger());
    auto out = r.converge(desired, host, false);
    REQUIRE_FALSE(out.status().isOk());
    CHECK_THAT(out.status().message(), Catch::Contains("boom"));
  }
}

TEST_CASE("reconciler: every revocation of every provider runs before any grant", "[cycle]") {
  storetest::StoreTestDir dir;
  RealHost host(dir.path(), nullLogger());
  HostSettings hs;
  SshdSettings ss;
  AccessDocument first = docWithKeys(1, {"a", "b"});
  REQUIRE(Reconciler(keyFileProviders(nullptr), nullLogger())
              .converge(Desired{first, hs, ss, 0}, host, false)
              .status()
              .isOk());

  AccessDocument second = docWithKeys(2, {"a", "c"});
  std::vector<std::string> calls;
  Reconciler r(keyFileProviders(&calls), nullLogger());
  REQUIRE(r.converge(Desired{second, hs, ss, 0}, host, false).status().isOk());
  std::vector<std::string> applied;
  for (const auto& c : calls) {
    if (c.rfind("apply:", 0) == 0) applied.push_back(c);
  }
  CHECK(applied == std::vector<std::string>{"apply:alpha:b", "apply:beta:b", "apply:gamma:b", "apply:alpha:c",
                                            "apply:beta:c", "apply:gamma:c"});
}

// ---- the cycle in process ----

TEST_CASE("a cycle observes the host once: the drift check's plan is the one it converges from", "[cycle]") {
  InProcess p;
  std::vector<std::string> calls;
  auto agent = [&] {
    return Agent(
        p.config, *p.host, *p.state, p.clock, [&](Ledger&) { return keyFileProviders(&calls); }, nullLogger());
  };
  p.publish(1, {"a", "b"});
  REQUIRE(agent().cycle(p.store, 0).exitCode == ExitCode::kOk);
  REQUIRE(p.files("beta") == std::set<std::string>{"a", "b"});

  // Drift: a key file is gone. The store is unchanged, so the cycle checks the host, finds the
  // difference and repairs it as a generation of its own, planning each provider once.
  REQUIRE(p.host->removeFile("/out/beta/a").isOk());
  calls.clear();
  CycleReport repaired = agent().cycle(p.store, 0);
  REQUIRE(repaired.exitCode == ExitCode::kOk);
  CHECK(repaired.outcome == CycleOutcome::kApplied);
  CHECK(p.files("beta") == std::set<std::string>{"a", "b"});
  for (const char* provider : {"alpha", "beta", "gamma"}) {
    INFO(provider);
    CHECK(std::count(calls.begin(), calls.end(), std::string("plan:") + provider) == 1);
  }
  CHECK(std::count(calls.begin(), calls.end(), "apply:beta:a") == 1);
  CHECK(calls.size() == 4);  // three plans, one write
  CHECK(p.state->history()->size() == 2);

  // Nothing to do: one plan each, nothing applied, no generation.
  calls.clear();
  CycleReport quiet = agent().cycle(p.store, 0);
  CHECK(quiet.outcome == CycleOutcome::kUnchanged);
  CHECK(calls == std::vector<std::string>{"plan:alpha", "plan:beta", "plan:gamma"});
  CHECK(p.state->history()->size() == 2);
}

TEST_CASE("a cycle that fails part-way keeps its revocations, is partial, and is finished by the next one", "[cycle]") {
  InProcess p;
  p.publish(1, {"a", "b"});
  {
    Agent agent = p.agent();
    CycleReport first = agent.cycle(p.store, 0);
    REQUIRE(first.exitCode == ExitCode::kOk);
    REQUIRE(first.outcome == CycleOutcome::kApplied);
  }
  REQUIRE(p.files("gamma") == std::set<std::string>{"a", "b"});

  // Three revocations (b, everywhere), then the failpoint stops the grants after c in alpha.
  p.publish(2, {"a", "c", "d"});
  Agent failing = p.agent(failpoints("after-action:4"));
  CycleReport r = failing.cycle(p.store, 0);
  CHECK(r.exitCode == ExitCode::kApplyFailed);
  CHECK(r.outcome == CycleOutcome::kPartial);
  CHECK_THAT(r.error, Catch::Contains("failpoint after-action:4"));
  CHECK(p.files("alpha") == std::set<std::string>{"a", "c"});
  for (const char* provider : {"beta", "gamma"}) {
    INFO(provider);
    CHECK(p.files(provider) == std::set<std::string>{"a"});  // b revoked, nothing granted
  }
  auto latest = p.state->latest();
  REQUIRE(latest.isOk());
  REQUIRE(latest->has_value());
  const int64_t generation = (*latest)->generation;
  CHECK((*latest)->outcome == GenerationOutcome::kPartial);
  CHECK_THAT((*latest)->error, Catch::Contains("failpoint"));
  CHECK(p.state->pollStatus()->error == (*latest)->error);
  CHECK_FALSE(p.state->pendingCycle()->has_value());
  // The document in force is the new one: nothing goes back to revision 1.
  CHECK(*(*p.state->lastApplied())->revision == 2);

  // The next cycle retries the same generation and finishes it.
  Agent healthy = p.agent();
  CycleReport again = healthy.cycle(p.store, 0);
  CHECK(again.exitCode == ExitCode::kOk);
  CHECK(again.generation == generation);
  for (const char* provider : {"alpha", "beta", "gamma"}) {
    INFO(provider);
    CHECK(p.files(provider) == std::set<std::string>{"a", "c", "d"});
  }
  auto record = p.state->generation(generation);
  REQUIRE(record->has_value());
  CHECK((*record)->outcome == GenerationOutcome::kApplied);
  CHECK(p.state->history()->size() == 2);  // a retry is not a generation of its own
}

TEST_CASE("a crash in the middle of a cycle is finished at the next start, never undone", "[cycle]") {
  for (const char* spec :
       {"crash-after-action:1", "crash-after-action:4", "crash-before-provider:gamma", "crash-before-finish"}) {
    DYNAMIC_SECTION(spec) {
      InProcess p;
      p.publish(1, {"a", "b"});
      REQUIRE(p.agent().cycle(p.store, 0).exitCode == ExitCode::kOk);
      p.publish(2, {"c"});
      {
        Agent crashing = p.agent(failpoints(spec));
        CHECK_THROWS_AS(crashing.cycle(p.store, 0), SimulatedCrash);
      }
      auto pending = p.state->pendingCycle();
      REQUIRE(pending.isOk());
      REQUIRE(pending->has_value());  // the journal survived the "crash"
      // Wherever it crashed, nothing of the new document was granted before every revocation
      // was done: "c" somewhere means "a" and "b" nowhere.
      bool granted = false, revoked = true;
      for (const char* provider : {"alpha", "beta", "gamma"}) {
        const auto files = p.files(provider);
        granted = granted || files.count("c") > 0;
        revoked = revoked && files.count("a") == 0 && files.count("b") == 0;
      }
      CHECK((!granted || revoked));

      p.reopenState();  // the next start
      Agent next = p.agent();
      REQUIRE(next.recoverInterruptedCycle().isOk());
      for (const char* provider : {"alpha", "beta", "gamma"}) {
        INFO(provider);
        CHECK(p.files(provider) == std::set<std::string>{"c"});
      }
      CHECK_FALSE(p.state->pendingCycle()->has_value());
      auto g2 = p.state->generation((*pending)->generation);
      REQUIRE(g2->has_value());
      CHECK((*g2)->outcome == GenerationOutcome::kApplied);
      CHECK_THAT((*g2)->error, Catch::Contains("interrupted"));
      CHECK(*(*p.state->lastApplied())->revision == 2);
      // Recovery is idempotent, and the next cycle has nothing left to do.
      REQUIRE(next.recoverInterruptedCycle().isOk());
      CycleReport after = next.cycle(p.store, 0);
      CHECK(after.exitCode == ExitCode::kOk);
      CHECK(after.changes.empty());
    }
  }
}

TEST_CASE("a cycle whose recovery keeps crashing is recovered with its revocations only", "[cycle]") {
  InProcess p;
  p.publish(1, {"a", "b"});
  REQUIRE(p.agent().cycle(p.store, 0).exitCode == ExitCode::kOk);
  p.publish(2, {"a", "c"});
  {
    Agent crashing = p.agent(failpoints("crash-before-provider:alpha"));
    CHECK_THROWS_AS(crashing.cycle(p.store, 0), SimulatedCrash);
  }
  // Two recoveries that "crash" (the journal stays open: they never finish).
  REQUIRE(p.state->noteRecoveryAttempt().isOk());
  REQUIRE(p.state->noteRecoveryAttempt().isOk());
  p.reopenState();
  Agent next = p.agent();
  REQUIRE(next.recoverInterruptedCycle().isOk());
  for (const char* provider : {"alpha", "beta", "gamma"}) {
    INFO(provider);
    CHECK(p.files(provider) == std::set<std::string>{"a"});  // b revoked, c not granted
  }
  auto latest = p.state->latest();
  CHECK((*latest)->outcome == GenerationOutcome::kFailed);
  CHECK_THAT((*latest)->error, Catch::Contains("revocations only"));
  CHECK_FALSE(p.state->pendingCycle()->has_value());
  // The next cycle retries it in full.
  CHECK(next.cycle(p.store, 0).exitCode == ExitCode::kOk);
  CHECK(p.files("gamma") == std::set<std::string>{"a", "c"});
}

TEST_CASE("a crash in the very first cycle is finished at the next start", "[cycle]") {
  InProcess p;
  p.publish(1, {"a", "b"});
  {
    Agent crashing = p.agent(failpoints("crash-after-action:3"));
    CHECK_THROWS_AS(crashing.cycle(p.store, 0), SimulatedCrash);
  }
  CHECK(p.files("alpha") == std::set<std::string>{"a", "b"});
  p.reopenState();
  Agent next = p.agent();
  REQUIRE(next.recoverInterruptedCycle().isOk());
  for (const char* provider : {"alpha", "beta", "gamma"}) {
    INFO(provider);
    CHECK(p.files(provider) == std::set<std::string>{"a", "b"});
  }
  CHECK(*(*p.state->lastApplied())->revision == 1);
}

TEST_CASE("a state database write that fails is logged, never silently dropped", "[cycle]") {
  InProcess p;
  p.store.body = "{ not a document";
  // Every write of the poll record and of a generation fails from now on.
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(p.dir.file("state.db").c_str(), &db) == SQLITE_OK);
  REQUIRE(
      sqlite3_exec(db,
                   "CREATE TRIGGER fail_meta_u BEFORE UPDATE ON meta BEGIN SELECT RAISE(ABORT, 'injected'); END;"
                   "CREATE TRIGGER fail_meta_i BEFORE INSERT ON meta BEGIN SELECT RAISE(ABORT, 'injected'); END;"
                   "CREATE TRIGGER fail_gen BEFORE INSERT ON generations BEGIN SELECT RAISE(ABORT, 'injected'); END;",
                   nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(db);
  std::ostringstream logged;
  auto log = std::make_shared<spdlog::logger>("agent", std::make_shared<spdlog::sinks::ostream_sink_mt>(logged));
  Agent agent(
      p.config, *p.host, *p.state, p.clock, [](Ledger&) { return keyFileProviders(nullptr); }, log, FailPoints{});
  CycleReport r = agent.cycle(p.store, 0);
  CHECK(r.exitCode == ExitCode::kRejected);  // the document is still rejected
  INFO(logged.str());
  CHECK_THAT(logged.str(), Catch::Contains("state database: record the poll:"));
  CHECK_THAT(logged.str(), Catch::Contains("state database: record the document:"));
  CHECK_THAT(logged.str(), Catch::Contains("injected"));
}

// ---- the real binary, real providers, kill -9 ----

namespace {

const std::vector<std::string> kSourcesA = {"127.0.0.0/8"};
const std::vector<std::string> kSourcesB = {"10.0.0.0/8", "127.0.0.0/8"};

std::string documentA() {
  return makeDocument(1, {docKey("k-one", "one"), docKey("k-two", "two")},
                      {{"sftp-main", "akeneosftp", ".", true, true}}, kSourcesA);
}

// Users created and removed, keys added and removed, the drop-in rewritten.
std::string documentB() {
  return makeDocument(2, {docKey("k-one", "one"), docKey("k-three", "three"), docKey("k-two", "two", false)},
                      {{"sftp-main", "akeneosftp", ".", false, true},
                       {"sftp-partner", "partnersftp", "imports/erp", true, true},
                       {"sftp-export", "exportsftp", "exports", true, true}},
                      kSourcesB);
}

/// Snapshots of clean runs: A alone, and A then B (with the number of actions of the A -> B cycle).
struct Reference {
  std::string a;
  std::string ab;
  int abActions = 0;
  int bFirstActions = 0;  // B applied on a fresh host
};

int changeCount(const std::string& onceOutput) {
  const auto at = onceOutput.find("changes: ");
  return at == std::string::npos ? 0 : std::stoi(onceOutput.substr(at + 9));
}

const Reference& reference() {
  static const Reference ref = [] {
    Reference r;
    AgentBox box;
    box.setDocument(documentA());
    Outcome once = box.run({"once"});
    if (once.exit != 0) FAIL("clean once A: " << once.out << once.err);
    r.a = box.snapshot();
    box.setDocument(documentB());
    once = box.run({"once"});
    if (once.exit != 0) FAIL("clean once B: " << once.out << once.err);
    r.ab = box.snapshot();
    r.abActions = changeCount(once.out);
    AgentBox fresh;
    fresh.setDocument(documentB());
    once = fresh.run({"once"});
    if (once.exit != 0) FAIL("clean once B: " << once.out << once.err);
    r.bFirstActions = changeCount(once.out);
    return r;
  }();
  return ref;
}

int64_t jsonInt(const std::string& json, const std::string& key) {
  Poco::JSON::Parser parser;
  auto o = parser.parse(json).extract<Poco::JSON::Object::Ptr>();
  return o->isNull(key) ? -1 : o->getValue<int64_t>(key);
}

std::string jsonText(const std::string& json, const std::string& key) {
  Poco::JSON::Parser parser;
  auto o = parser.parse(json).extract<Poco::JSON::Object::Ptr>();
  return o->isNull(key) ? std::string() : o->getValue<std::string>(key);
}

}  // namespace

TEST_CASE("the state database records which generation created each object the agent owns", "[cycle][root]") {
  PIM_REQUIRE_ROOT();
  AgentBox box;
  box.setDocument(documentA());
  REQUIRE(box.run({"once"}).exit == 0);
  box.setDocument(documentB());
  REQUIRE(box.run({"once"}).exit == 0);
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(box.real("/var/lib/pim-access-agent/state.db").c_str(), &db, SQLITE_OPEN_READONLY, nullptr) ==
          SQLITE_OK);
  auto generationOf = [&](const std::string& kind, const std::string& name) -> std::optional<int64_t> {
    sqlite3_stmt* stmt = nullptr;
    REQUIRE(sqlite3_prepare_v2(db, "SELECT created_generation FROM owned WHERE kind = ? AND name = ?", -1, &stmt,
                               nullptr) == SQLITE_OK);
    sqlite3_bind_text(stmt, 1, kind.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 2, name.c_str(), -1, SQLITE_TRANSIENT);
    std::optional<int64_t> out;
    if (sqlite3_step(stmt) == SQLITE_ROW && sqlite3_column_type(stmt, 0) != SQLITE_NULL) {
      out = sqlite3_column_int64(stmt, 0);
    }
    sqlite3_finalize(stmt);
    return out;
  };
  CHECK(generationOf("user", "akeneosftp") == std::optional<int64_t>(1));
  CHECK(generationOf("user", "partnersftp") == std::optional<int64_t>(2));
  CHECK(generationOf("user", "exportsftp") == std::optional<int64_t>(2));
  sqlite3_stmt* unknown = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM owned WHERE created_generation IS NULL", -1, &unknown,
                             nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(unknown) == SQLITE_ROW);
  CHECK(sqlite3_column_int64(unknown, 0) == 0);
  sqlite3_finalize(unknown);
  sqlite3_close(db);
}

TEST_CASE("an entry the providers refuse is logged once per cycle, however often the host is observed",
          "[cycle][root]") {
  PIM_REQUIRE_ROOT();
  AgentBox box;
  box.setDocument(documentA());
  REQUIRE(box.run({"once"}).exit == 0);  // the sandbox's account files exist from here on
  // partnersftp exists and is not the agent's: its entry is refused.
  {
    std::ofstream passwd(box.real("/etc/passwd"), std::ios::app);
    passwd << "partnersftp:x:1501:1501::/home/partnersftp:/bin/bash\n";
  }
  box.setDocument(documentB());
  Outcome first = box.run({"once"});
  INFO(first.out << first.err);
  CHECK(occurrences(first.err, "skipped sftp-partner:") == 1);
  // Drift makes the next cycle observe the host, find a change, and apply again.
  ::unlink(box.authorizedKeysPath().c_str());
  Outcome second = box.run({"once"});
  INFO(second.out << second.err);
  CHECK(occurrences(second.err, "skipped sftp-partner:") == 1);
  CHECK(!box.authorizedKeys().empty());
}

TEST_CASE("kill -9 during a cycle: the next start finishes it, whatever the store does", "[cycle][root]") {
  PIM_REQUIRE_ROOT();
  const Reference& ref = reference();
  REQUIRE(ref.abActions >= 6);
  REQUIRE(ref.a != ref.ab);
  const std::string spec =
      GENERATE_COPY(std::string("crash-after-action:1"), "crash-after-action:" + std::to_string(ref.abActions / 2),
                    "crash-after-action:" + std::to_string(ref.abActions - 1),
                    std::string("crash-before-provider:sshd"), std::string("crash-before-finish"));
  INFO("failpoint " << spec << " of " << ref.abActions << " actions");
  AgentBox box;
  box.setDocument(documentA());
  REQUIRE(box.run({"once"}).exit == 0);
  REQUIRE(box.snapshot() == ref.a);

  box.setDocument(documentB());
  Outcome crashed = box.run({"once"}, {"PIM_FAILPOINT=" + spec});
  INFO(crashed.err);
  REQUIRE(crashed.exit == 128 + SIGKILL);
  auto history = box.history();
  REQUIRE(!history.empty());
  CHECK(history.front().outcome == "pending");

  // The next start, with the store unreachable (after a reboot, say): nothing but the recovery
  // happens, and it finishes B, which was in force: A's grants never come back.
  box.configure({{"store.source", "file://" + box.dir() + "/no-such-document.json"}});
  Outcome recovered = box.run({"once"});
  INFO(recovered.out << recovered.err);
  CHECK(recovered.exit == 4);
  CHECK(box.snapshot() == ref.ab);
  history = box.history();
  REQUIRE(history.size() == 2);
  CHECK(history.front().outcome == "applied");
  CHECK(jsonInt(box.statusJson(), "revision") == 2);

  // The store's document is then already in force (only the bind mounts, which end with each
  // command's private mount namespace here, are made again).
  box.configure({{"store.source", "file://" + box.documentPath()}});
  Outcome again = box.run({"once"});
  INFO(again.out << again.err);
  CHECK(again.exit == 0);
  CHECK(box.snapshot() == ref.ab);
}

TEST_CASE("kill -9 during the first cycle: the next start finishes it", "[cycle][root]") {
  PIM_REQUIRE_ROOT();
  const Reference& ref = reference();
  AgentBox box;
  box.setDocument(documentB());
  Outcome crashed = box.run({"once"}, {"PIM_FAILPOINT=crash-after-action:" + std::to_string(ref.bFirstActions / 2)});
  REQUIRE(crashed.exit == 128 + SIGKILL);

  // `status` is a read-only view: the recovery is the next start's job (once, rollback, run).
  const std::string before = box.snapshot();
  Outcome status = box.run({"status"});
  CHECK(status.exit == 0);
  CHECK(box.snapshot() == before);

  box.configure({{"store.source", "file://" + box.dir() + "/no-such-document.json"}});
  CHECK(box.run({"once"}).exit == 4);
  AgentBox clean;
  clean.setDocument(documentB());
  REQUIRE(clean.run({"once"}).exit == 0);
  CHECK(box.snapshot() == clean.snapshot());
}

TEST_CASE("a failing part: once exits 5, the revocations are done, nothing unconfined is granted", "[cycle][root]") {
  PIM_REQUIRE_ROOT();
  const Reference& ref = reference();
  struct Case {
    std::string spec;
    std::string outcome;
  };
  const Case c = GENERATE(Case{"fail-provider:sshd", "failed"}, Case{"after-action:2", "failed"},
                          Case{"fail-provider:sftp_chroots", "partial"}, Case{"before-provider:ssh_keys", "partial"});
  INFO("failpoint " << c.spec);
  AgentBox box;
  box.setDocument(documentA());
  REQUIRE(box.run({"once"}).exit == 0);
  REQUIRE(box.authorizedKeys().find("pim:k-two") != std::string::npos);

  box.setDocument(documentB());
  Outcome failed = box.run({"once"}, {"PIM_FAILPOINT=" + c.spec});
  INFO(failed.out << failed.err);
  CHECK(failed.exit == 5);
  CHECK_THAT(failed.err, Catch::Contains("failpoint"));
  auto history = box.history();
  REQUIRE(history.size() == 2);
  CHECK(history.front().outcome == c.outcome);
  CHECK(history.front().revision == 2);
  const std::string status = box.statusJson();
  CHECK(jsonInt(status, "revision") == 2);  // B is in force, with what it revokes
  CHECK_THAT(jsonText(status, "last_error"), Catch::Contains("failpoint"));
  // What B revokes is gone (but for ssh_keys when it could not even plan), and akeneosftp,
  // inactive in B, is locked whatever failed.
  if (c.spec != "before-provider:ssh_keys") CHECK(box.authorizedKeys().find("pim:k-two") == std::string::npos);
  const std::string shadow = readText(box.real("/etc/shadow"));
  CHECK(shadow.find("akeneosftp:!") != std::string::npos);
  if (c.outcome == "failed") {
    // No grant without the configuration that confines it.
    CHECK(box.authorizedKeys().find("pim:k-three") == std::string::npos);
    CHECK(readText(box.real("/etc/passwd")).find("partnersftp:") == std::string::npos);
  }

  // The failure does not stick: without the failpoint the same generation is finished.
  Outcome again = box.run({"once"});
  INFO(again.out << again.err);
  CHECK(again.exit == 0);
  CHECK(box.snapshot() == ref.ab);
  CHECK(jsonText(box.statusJson(), "last_error").empty());
  CHECK(box.history().size() == 2);
}

TEST_CASE("a failed sshd reload holds every grant back, is remembered, and is retried", "[cycle][root]") {
  PIM_REQUIRE_ROOT();
  const Reference& ref = reference();
  AgentBox box;
  box.setDocument(documentA());
  REQUIRE(box.run({"once"}).exit == 0);

  box.configure({{"sshd.reload_command", "/bin/false"}});
  box.setDocument(documentB());
  Outcome once = box.run({"once"});
  INFO(once.out << once.err);
  CHECK(once.exit == 5);
  CHECK_THAT(once.out + once.err, Catch::Contains("reload sshd"));
  CHECK(readText(box.real("/etc/passwd")).find("partnersftp:") == std::string::npos);
  CHECK(box.authorizedKeys().find("pim:k-three") == std::string::npos);
  CHECK(box.authorizedKeys().find("pim:k-two") == std::string::npos);  // revoked all the same
  CHECK(box.history().front().outcome == "failed");

  // Remembered across processes: the next once (same document, nothing new) still says so and
  // retries; status shows it.
  Outcome still = box.run({"once"});
  CHECK(still.exit == 5);
  CHECK_THAT(jsonText(box.statusJson(), "last_error"), Catch::Contains("reload sshd"));

  // With a reload that works, the next once reloads and grants.
  box.configure({{"sshd.reload_command", "/bin/true"}});
  Outcome healed = box.run({"once"});
  INFO(healed.out << healed.err);
  CHECK(healed.exit == 0);
  CHECK(box.snapshot() == ref.ab);
  CHECK(jsonText(box.statusJson(), "last_error").empty());
  CHECK(box.history().size() == 2);
}

// ---- operations: one decision, JSON in every case, read-only diagnostics ----

TEST_CASE("once, plan and status agree on every document, also one republished after a rollback", "[cycle][root]") {
  PIM_REQUIRE_ROOT();
  AgentBox box;
  const std::string good = documentA();
  box.setDocument(good);
  REQUIRE(box.run({"once"}).exit == 0);
  box.setDocument(documentB());
  REQUIRE(box.run({"once"}).exit == 0);
  // The last good document republished as it was: below the highest revision applied, refused
  // by all three as a replay.
  box.setDocument(good);
  Outcome replay = box.run({"once"});
  CHECK(replay.exit == 3);
  Outcome planReplay = box.run({"plan", "--json"});
  CHECK(planReplay.exit == 3);
  CHECK(jsonInt(planReplay.out, "exit") == 3);
  CHECK_THAT(jsonText(planReplay.out, "error"), Catch::Contains("replay"));

  // Rolled back to it, then resumed: the store's document is the document in force, unchanged
  // for all three, and status carries no stale error.
  REQUIRE(box.run({"rollback", "1"}).exit == 0);
  REQUIRE(box.run({"resume"}).exit == 0);
  const size_t generations = box.history().size();
  Outcome once = box.run({"once"});
  INFO(once.out << once.err);
  CHECK(once.exit == 0);
  // No store generation: at most the drift of the bind mounts (each command here has its own
  // mount namespace) applied again with the document in force.
  auto history = box.history();
  CHECK(history.size() <= generations + 1);
  CHECK(history.front().outcome == "rolled_back");
  Outcome plan = box.run({"plan", "--json"});
  CHECK(plan.exit == 0);
  CHECK(jsonText(plan.out, "verdict") == "unchanged");
  CHECK(jsonText(box.statusJson(), "last_error").empty());
  Outcome planText = box.run({"plan"});
  CHECK_THAT(planText.out, Catch::Contains("unchanged: the document in force"));
}

TEST_CASE("every --json command prints JSON, errors included", "[cycle][root]") {
  PIM_REQUIRE_ROOT();
  AgentBox box;
  box.setDocument(documentA());
  REQUIRE(box.run({"once"}).exit == 0);
  struct Case {
    std::vector<std::string> args;
    int exit;
  };
  for (const Case& c : {Case{{"show", "999", "--json"}, 2}, Case{{"show", "x", "--json"}, 2},
                        Case{{"status", "extra", "--json"}, 2}, Case{{"history", "--json"}, 0}}) {
    INFO(c.args[0] << " " << c.args.back());
    Outcome o = box.run(c.args);
    CHECK(o.exit == c.exit);
    Poco::JSON::Parser parser;
    CHECK_NOTHROW(parser.parse(o.out));
    if (c.exit != 0) CHECK(jsonInt(o.out, "exit") == c.exit);
  }
  // A document rejected as a whole: plan says so in JSON, with exit 3.
  writeTextAtomic(box.documentPath(), "{\"version\": 2}");
  Outcome rejected = box.run({"plan", "--json"});
  CHECK(rejected.exit == 3);
  CHECK(jsonInt(rejected.out, "exit") == 3);
  CHECK_THAT(jsonText(rejected.out, "error"), Catch::Contains("version"));
}

TEST_CASE("status, history and show work on a read-only state directory and create nothing", "[cycle][root]") {
  PIM_REQUIRE_ROOT();
  AgentBox box;
  box.setDocument(documentA());
  REQUIRE(box.run({"once"}).exit == 0);
  const std::string stateDir = box.real("/var/lib/pim-access-agent");
  auto listing = [&] {
    std::set<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(stateDir)) names.insert(e.path().filename());
    return names;
  };
  const auto before = listing();
  for (const std::vector<std::string>& args : {std::vector<std::string>{"status", "--json"},
                                               {"history", "--json"},
                                               {"show", "1", "--json"},
                                               {"plan", "--json"}}) {
    INFO(args[0]);
    std::vector<std::string> argv{
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        "mount --bind \"$1\" \"$1\" && mount -o remount,bind,ro \"$1\" && shift && exec \"$@\"",
        "sh",
        stateDir,
        agentBinary(),
        "--config",
        box.configPath(),
        "--root",
        box.root()};
    argv.insert(argv.end(), args.begin(), args.end());
    Outcome o = runProgram(argv);
    INFO(o.out << o.err);
    CHECK(o.exit == 0);
    Poco::JSON::Parser parser;
    CHECK_NOTHROW(parser.parse(o.out));
  }
  CHECK(listing() == before);
  // With no state database at all, they report an empty state and create nothing either.
  AgentBox fresh;
  fresh.setDocument(documentA());
  Outcome status = fresh.run({"status", "--json"});
  CHECK(status.exit == 0);
  CHECK(jsonInt(status.out, "generation") == -1);
  CHECK_FALSE(std::filesystem::exists(fresh.real("/var/lib/pim-access-agent/state.db")));
}
