// The all-or-nothing cycle: failpoints (parsing, the reconciler honouring them), a failure
// part-way that restores the previous generation, and crash recovery through the pending-cycle
// journal.
// - In process, with small providers writing one file per key on RealHost(tmpdir): no root.
// - Through the real binary on a --root sandbox with the real providers (useradd, sshd -t):
//   `kill -9` at several points of a cycle (PIM_FAILPOINT=crash-...), then the next command must
//   restore, and the host must equal what a clean run gives. Needs root.

#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <sys/stat.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <csignal>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "agent/agent.h"
#include "agent/failpoint.h"
#include "agent/reconciler.h"
#include "agent/signature.h"
#include "providers/log.h"
#include "providers/real_host.h"
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
        actions.push_back(Action{name_, "write", dir + "/" + id, "", id, "", ""});
      }
    }
    for (const auto& id : *present) {
      if (!want.count(id)) actions.push_back(Action{name_, "remove", dir + "/" + id, "", "", "", ""});
    }
    return actions;
  }
  Status apply(const Action& action, const Desired&, Host& host) override {
    if (calls_) calls_->push_back("apply:" + name_ + ":" + action.object.substr(action.object.rfind('/') + 1));
    if (action.verb == "remove") return host.removeFile(action.object);
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
    return std::vector<Action>{Action{"thrower", "write", "/x", "", "", "", ""}};
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

TEST_CASE("reconciler failpoints stop the apply where they say", "[cycle]") {
  storetest::StoreTestDir dir;
  RealHost host(dir.path(), nullLogger());
  AccessDocument doc = docWithKeys(1, {"k1", "k2"});  // 2 actions per provider, 6 in all
  HostSettings hs;
  SshdSettings ss;
  Desired desired{doc, hs, ss, 0};

  SECTION("none: every action of every provider") {
    std::vector<std::string> calls;
    Reconciler r(keyFileProviders(&calls), nullLogger());
    auto out = r.apply(desired, host);
    CHECK(out.status.isOk());
    CHECK(out.applied.size() == 6);
    CHECK(r.plan(desired, host)->empty());  // after apply, a fresh plan is empty
  }
  SECTION("after-action:3 fails right after the third action") {
    std::vector<std::string> calls;
    Reconciler r(keyFileProviders(&calls), nullLogger(), failpoints("after-action:3"));
    auto out = r.apply(desired, host);
    REQUIRE_FALSE(out.status.isOk());
    CHECK_THAT(out.status.message(), Catch::Contains("failpoint after-action:3"));
    CHECK(out.applied.size() == 3);
    CHECK(std::count_if(calls.begin(), calls.end(), [](const std::string& c) { return c.rfind("apply:", 0) == 0; }) ==
          3);
  }
  SECTION("before-provider:beta fails before beta plans") {
    std::vector<std::string> calls;
    Reconciler r(keyFileProviders(&calls), nullLogger(), failpoints("before-provider:beta"));
    auto out = r.apply(desired, host);
    REQUIRE_FALSE(out.status.isOk());
    CHECK(out.applied.size() == 2);
    CHECK(std::find(calls.begin(), calls.end(), "plan:beta") == calls.end());
  }
  SECTION("fail-provider:beta fails beta's first action without applying it") {
    std::vector<std::string> calls;
    Reconciler r(keyFileProviders(&calls), nullLogger(), failpoints("fail-provider:beta"));
    auto out = r.apply(desired, host);
    REQUIRE_FALSE(out.status.isOk());
    CHECK_THAT(out.status.message(), Catch::Contains("beta: write /out/beta/k1"));
    CHECK(out.applied.size() == 2);
    CHECK(std::find(calls.begin(), calls.end(), "plan:beta") != calls.end());
    CHECK(std::find(calls.begin(), calls.end(), "apply:beta:k1") == calls.end());
  }
  SECTION("crash-after-action:4 runs the crash hook after the fourth action") {
    std::vector<std::string> calls;
    Reconciler r(keyFileProviders(&calls), nullLogger(), failpoints("crash-after-action:4"));
    std::string where;
    try {
      (void)r.apply(desired, host);
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
    auto out = r.apply(desired, host);
    REQUIRE_FALSE(out.status.isOk());
    CHECK_THAT(out.status.message(), Catch::Contains("boom"));
  }
}

// ---- the cycle in process ----

TEST_CASE("a cycle that fails part-way restores the previous generation", "[cycle]") {
  InProcess p;
  p.publish(1, {"a", "b"});
  {
    Agent agent = p.agent();
    CycleReport first = agent.cycle(p.store, 0);
    REQUIRE(first.exitCode == 0);
    REQUIRE(first.outcome == "applied");
  }
  const std::set<std::string> before = {"a", "b"};
  REQUIRE(p.files("gamma") == before);

  p.publish(2, {"a", "c", "d"});
  Agent failing = p.agent(failpoints("after-action:4"));
  CycleReport r = failing.cycle(p.store, 0);
  CHECK(r.exitCode == 5);
  CHECK(r.outcome == "failed");
  CHECK_THAT(r.error, Catch::Contains("failpoint after-action:4"));
  CHECK_THAT(r.error, !Catch::Contains("restore incomplete"));  // failpoints never hit the restore
  for (const char* provider : {"alpha", "beta", "gamma"}) {
    INFO(provider);
    CHECK(p.files(provider) == before);
  }
  auto latest = p.state->latest();
  REQUIRE(latest.isOk());
  REQUIRE(latest->has_value());
  CHECK((*latest)->outcome == GenerationOutcome::kFailed);
  CHECK_THAT((*latest)->error, Catch::Contains("failpoint"));
  CHECK(p.state->pollStatus()->error == (*latest)->error);
  CHECK_FALSE(p.state->pendingCycle()->has_value());
  CHECK(*(*p.state->lastApplied())->revision == 1);

  // Without the failpoint the same document goes through: the failure did not stick.
  Agent healthy = p.agent();
  CycleReport again = healthy.cycle(p.store, 0);
  CHECK(again.exitCode == 0);
  CHECK(p.files("beta") == std::set<std::string>{"a", "c", "d"});
}

TEST_CASE("a crash in the middle of a cycle is undone at the next start", "[cycle]") {
  for (const char* spec :
       {"crash-after-action:1", "crash-after-action:5", "crash-before-provider:gamma", "crash-before-finish"}) {
    DYNAMIC_SECTION(spec) {
      InProcess p;
      p.publish(1, {"a", "b"});
      REQUIRE(p.agent().cycle(p.store, 0).exitCode == 0);
      p.publish(2, {"c"});
      {
        Agent crashing = p.agent(failpoints(spec));
        CHECK_THROWS_AS(crashing.cycle(p.store, 0), SimulatedCrash);
      }
      auto pending = p.state->pendingCycle();
      REQUIRE(pending.isOk());
      REQUIRE(pending->has_value());  // the journal survived the "crash"
      CHECK((*pending)->previousGeneration == 1);

      p.reopenState();  // the next start
      Agent next = p.agent();
      REQUIRE(next.recoverInterruptedCycle().isOk());
      for (const char* provider : {"alpha", "beta", "gamma"}) {
        INFO(provider);
        CHECK(p.files(provider) == std::set<std::string>{"a", "b"});
      }
      CHECK_FALSE(p.state->pendingCycle()->has_value());
      auto g2 = p.state->generation((*pending)->generation);
      REQUIRE(g2->has_value());
      CHECK((*g2)->outcome == GenerationOutcome::kFailed);
      CHECK_THAT((*g2)->error, Catch::Contains("interrupted"));
      CHECK(*(*p.state->lastApplied())->revision == 1);
      // Recovery is idempotent, and the next cycle applies the document for real.
      REQUIRE(next.recoverInterruptedCycle().isOk());
      CHECK(next.cycle(p.store, 0).exitCode == 0);
      CHECK(p.files("gamma") == std::set<std::string>{"c"});
    }
  }
}

TEST_CASE("a crash in the very first cycle removes what it created", "[cycle]") {
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
    CHECK(p.files(provider).empty());
  }
  CHECK_FALSE(p.state->lastApplied()->has_value());
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

/// A reload command that appends the drop-in sshd would load (or "(no drop-in)") and
/// "--- reload" to dir/reloads.log; returns the script's path.
std::string reloadRecorder(const AgentBox& box) {
  const std::string dropin = box.real("/etc/ssh/sshd_config.d/10-pim-access-agent.conf");
  const std::string script = box.dir() + "/reload.sh";
  writeTextAtomic(script, "#!/bin/sh\n{ cat '" + dropin +
                              "' 2>/dev/null || echo '(no drop-in)'; echo '--- reload'; } >> '" + box.dir() +
                              "/reloads.log'\n");
  ::chmod(script.c_str(), 0755);
  return script;
}

size_t reloadCount(const std::string& log) {
  size_t count = 0;
  for (auto at = log.find("--- reload"); at != std::string::npos; at = log.find("--- reload", at + 1)) ++count;
  return count;
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

TEST_CASE("kill -9 during a cycle: the next start restores the previous generation", "[cycle][root]") {
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
  CHECK(box.snapshot() != ref.a);  // the crash left the host half-way
  auto history = box.history();
  REQUIRE(!history.empty());
  CHECK(history.front().outcome == "pending");

  // The next start (an unreachable store: nothing but the recovery happens) restores A.
  box.configure({{"store.source", "file://" + box.dir() + "/no-such-document.json"}});
  Outcome recovered = box.run({"once"});
  CHECK(recovered.exit == 4);
  CHECK(box.snapshot() == ref.a);
  history = box.history();
  REQUIRE(history.size() >= 2);
  CHECK(history.front().outcome == "failed");
  const std::string status = box.statusJson();
  CHECK(jsonInt(status, "revision") == 1);

  // And the store's document then applies as on a clean host.
  box.configure({{"store.source", "file://" + box.documentPath()}});
  Outcome again = box.run({"once"});
  INFO(again.out << again.err);
  CHECK(again.exit == 0);
  CHECK(box.snapshot() == ref.ab);
}

TEST_CASE("kill -9 during the first cycle: the next start removes what it created", "[cycle][root]") {
  PIM_REQUIRE_ROOT();
  AgentBox box;
  box.setDocument(documentB());
  Outcome crashed = box.run({"once"}, {"PIM_FAILPOINT=crash-before-provider:sshd"});
  REQUIRE(crashed.exit == 128 + SIGKILL);
  REQUIRE(readText(box.real("/etc/passwd")).find("partnersftp:") != std::string::npos);

  // `status` is a read-only view: the restore is the next start's job (once, rollback, run).
  Outcome status = box.run({"status"});
  CHECK(status.exit == 0);
  CHECK(readText(box.real("/etc/passwd")).find("partnersftp:") != std::string::npos);

  box.configure({{"store.source", "file://" + box.dir() + "/no-such-document.json"}});
  CHECK(box.run({"once"}).exit == 4);
  const std::string passwd = readText(box.real("/etc/passwd"));
  for (const char* user : {"akeneosftp:", "partnersftp:", "exportsftp:"}) {
    INFO(user);
    CHECK(passwd.find(user) == std::string::npos);
  }
  CHECK(box.authorizedKeys().empty());  // did not exist before: removed again
  CHECK_FALSE(std::filesystem::exists(box.real("/etc/pim-access-agent/authorized_keys/akeneo")));
  CHECK_FALSE(std::filesystem::exists(box.real("/etc/ssh/sshd_config.d/10-pim-access-agent.conf")));
  std::error_code ec;
  CHECK(std::filesystem::is_empty(box.real("/srv/pim-sftp"), ec));

  // The login user and its group stay (every generation has them); with the document applied
  // again, the host matches a clean run of it.
  box.configure({{"store.source", "file://" + box.documentPath()}});
  CHECK(box.run({"once"}).exit == 0);
  AgentBox clean;
  clean.setDocument(documentB());
  REQUIRE(clean.run({"once"}).exit == 0);
  CHECK(box.snapshot() == clean.snapshot());
}

TEST_CASE("a failing provider: once exits 5, the host is as before, history and status say why", "[cycle][root]") {
  PIM_REQUIRE_ROOT();
  const Reference& ref = reference();
  const std::string spec = GENERATE(std::string("fail-provider:sshd"), std::string("fail-provider:sftp_chroots"),
                                    std::string("after-action:3"), std::string("before-provider:ssh_keys"));
  INFO("failpoint " << spec);
  AgentBox box;
  box.setDocument(documentA());
  REQUIRE(box.run({"once"}).exit == 0);
  const std::string keysBefore = box.authorizedKeys();
  REQUIRE(keysBefore.find("pim:k-two") != std::string::npos);

  box.setDocument(documentB());
  Outcome failed = box.run({"once"}, {"PIM_FAILPOINT=" + spec});
  INFO(failed.out << failed.err);
  CHECK(failed.exit == 5);
  CHECK_THAT(failed.err, Catch::Contains("failpoint"));
  CHECK(box.authorizedKeys() == keysBefore);
  CHECK(box.snapshot() == ref.a);
  auto history = box.history();
  REQUIRE(history.size() == 2);
  CHECK(history.front().outcome == "failed");
  CHECK(history.front().revision == 2);
  const std::string status = box.statusJson();
  CHECK(jsonInt(status, "revision") == 1);
  CHECK_THAT(jsonText(status, "last_error"), Catch::Contains("failpoint " + spec));
  Outcome show = box.run({"history"});
  CHECK_THAT(show.out, Catch::Contains("failpoint"));

  // The failure does not stick: without the failpoint the document applies.
  Outcome again = box.run({"once"});
  CHECK(again.exit == 0);
  CHECK(box.snapshot() == ref.ab);
  CHECK(jsonText(box.statusJson(), "last_error").empty());
}

TEST_CASE("a failing first cycle leaves no account, key file or drop-in behind", "[cycle][root]") {
  PIM_REQUIRE_ROOT();
  const Reference& ref = reference();
  AgentBox box;
  box.configure({{"sshd.reload_command", reloadRecorder(box)}});
  box.setDocument(documentB());
  // Fail right after the last action, the drop-in write: sshd loaded it.
  Outcome failed = box.run({"once"}, {"PIM_FAILPOINT=after-action:" + std::to_string(ref.bFirstActions)});
  INFO(failed.out << failed.err);
  CHECK(failed.exit == 5);
  CHECK_THAT(failed.err, Catch::Contains("sshd: write"));
  // The drop-in is gone again, and sshd was told so last.
  const std::string reloads = readText(box.dir() + "/reloads.log");
  const std::string last = "(no drop-in)\n--- reload\n";
  REQUIRE(reloads.size() >= last.size());
  CHECK(reloads.compare(reloads.size() - last.size(), last.size(), last) == 0);
  const std::string passwd = readText(box.real("/etc/passwd"));
  CHECK(passwd.find("partnersftp:") == std::string::npos);
  CHECK(passwd.find("exportsftp:") == std::string::npos);
  CHECK_FALSE(std::filesystem::exists(box.real("/etc/pim-access-agent/authorized_keys/akeneo")));
  CHECK_FALSE(std::filesystem::exists(box.real("/etc/ssh/sshd_config.d/10-pim-access-agent.conf")));
}

TEST_CASE("sshd is reloaded with the restored drop-in after a failed cycle", "[cycle][root]") {
  PIM_REQUIRE_ROOT();
  const Reference& ref = reference();
  AgentBox box;
  // The reload command records the drop-in sshd would load at each reload.
  const std::string dropin = box.real("/etc/ssh/sshd_config.d/10-pim-access-agent.conf");
  const std::string log = box.dir() + "/reloads.log";
  box.configure({{"sshd.reload_command", reloadRecorder(box)}});
  box.setDocument(documentA());
  REQUIRE(box.run({"once"}).exit == 0);
  const std::string dropinA = readText(dropin);
  REQUIRE(readText(log) == dropinA + "--- reload\n");

  // Fail right after the last action, the drop-in write (sshd loaded B's drop-in)...
  box.setDocument(documentB());
  Outcome failed = box.run({"once"}, {"PIM_FAILPOINT=after-action:" + std::to_string(ref.abActions)});
  INFO(failed.out << failed.err);
  REQUIRE(failed.exit == 5);
  CHECK_THAT(failed.err, Catch::Contains("sshd: write"));
  // ... so the restore must reload it with A's again.
  CHECK(readText(dropin) == dropinA);
  const std::string reloads = readText(log);
  const std::string last = "\n" + dropinA + "--- reload\n";
  REQUIRE(reloads.size() > last.size());
  CHECK(reloads.compare(reloads.size() - last.size(), last.size(), last) == 0);
  CHECK(reloadCount(reloads) == 3);  // A, B, then A again
}

TEST_CASE("a failed sshd reload is a warning in status, not a failed cycle", "[cycle][root]") {
  PIM_REQUIRE_ROOT();
  AgentBox box(Settings{{"sshd.reload_command", "/bin/false"}});
  box.setDocument(documentA());
  Outcome once = box.run({"once"});
  INFO(once.out << once.err);
  CHECK(once.exit == 0);
  CHECK(std::filesystem::exists(box.real("/etc/ssh/sshd_config.d/10-pim-access-agent.conf")));
  auto history = box.history();
  REQUIRE(history.size() == 1);
  CHECK(history.front().outcome == "applied");
  const std::string lastError = jsonText(box.statusJson(), "last_error");
  CHECK_THAT(lastError, Catch::Contains("warning") && Catch::Contains("reload sshd"));
}
