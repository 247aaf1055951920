#include "agent/daemon/report.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <unistd.h>

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Stringifier.h>

#include <algorithm>
#include <ctime>
#include <sstream>

#include "agent/daemon/login_audit.h"
#include "agent/document/document.h"
#include "agent/document/validators.h"
#include "agent/store/etcd_store_client.h"
#include "agent/store/http_store_client.h"
#include "agent/store/signature.h"
#include "providers/core/text_fields.h"
#include "providers/host/real_host.h"

#ifndef PIM_VERSION
#define PIM_VERSION "0"
#endif

namespace pim {
namespace {

constexpr size_t kMaxHostKeyBytes = 16 * 1024;
constexpr int kReportVersion = 1;
constexpr int64_t kTopFailedSources = 10;

Poco::Dynamic::Var orNull(const std::optional<int64_t>& v) { return v ? Poco::Dynamic::Var(*v) : Poco::Dynamic::Var(); }
Poco::Dynamic::Var orNull(const std::string& v) { return v.empty() ? Poco::Dynamic::Var() : Poco::Dynamic::Var(v); }

Poco::JSON::Object::Ptr object() { return new Poco::JSON::Object(Poco::JSON_PRESERVE_KEY_ORDER); }

std::string randomHex(size_t bytes) {
  std::vector<unsigned char> raw(bytes);
  if (RAND_bytes(raw.data(), static_cast<int>(raw.size())) != 1) {
    // Unique enough for a report id when the random source fails: the time and the process.
    return std::to_string(std::time(nullptr)) + "p" + std::to_string(::getpid());
  }
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : raw) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

// Whether the generation in force grants what its document says (nothing held back).
bool grantsInForce(const GenerationRecord& g) {
  return g.outcome == GenerationOutcome::kApplied || g.outcome == GenerationOutcome::kUnchanged ||
         g.outcome == GenerationOutcome::kRolledBack;
}

}  // namespace

bool reportDue(const CycleReport& cycle, std::optional<std::chrono::steady_clock::duration> sinceLast,
               std::chrono::seconds interval) {
  if (cycle.outcome == CycleOutcome::kInterrupted) return false;
  // A store that does not know the instance yet is not a failure to report at every poll.
  const bool failed = cycle.exitCode != ExitCode::kOk && cycle.notRegistered == 0;
  if (!cycle.changes.empty() || failed) return true;
  return !sinceLast || *sinceLast >= interval;
}

Result<ReportSnapshot> snapshotForReport(const StateStore& state, const CycleReport& cycle, int64_t now) {
  ReportSnapshot s;
  s.cycle = cycle;
  s.time = now;
  auto inForce = state.lastApplied();
  if (!inForce) return inForce.status();
  s.inForce = std::move(*inForce);
  auto pin = state.pin();
  if (!pin) return pin.status();
  s.pin = *pin;
  auto poll = state.pollStatus();
  if (!poll) return poll.status();
  s.poll = *poll;
  auto logins = state.logins();
  if (!logins) return logins.status();
  s.logins = std::move(*logins);
  auto failed = state.loginFailures(kTopFailedSources);
  if (!failed) return failed.status();
  s.failedLogins = std::move(*failed);
  return s;
}

std::string sshFingerprint(const std::string& blob) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (EVP_Digest(blob.data(), blob.size(), digest, &size, EVP_sha256(), nullptr) != 1) return {};
  std::string b64(4 * ((size + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(&b64[0]), digest, static_cast<int>(size));
  b64.resize(n > 0 ? size_t(n) : 0);
  while (!b64.empty() && b64.back() == '=') b64.pop_back();
  return "SHA256:" + b64;
}

std::vector<HostKey> readHostKeys(Host& host) {
  std::vector<HostKey> out;
  const std::string dir = "/etc/ssh";
  auto names = host.listDirectory(dir);
  if (!names) return out;
  std::vector<std::string> files;
  const std::string prefix = "ssh_host_", suffix = "_key.pub";
  for (const auto& name : *names) {
    if (name.size() > prefix.size() + suffix.size() && name.compare(0, prefix.size(), prefix) == 0 &&
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
      files.push_back(name);
    }
  }
  std::sort(files.begin(), files.end());
  for (const auto& name : files) {
    HostKey k;
    k.file = dir + "/" + name;
    auto text = host.readFile(k.file, kMaxHostKeyBytes);
    if (!text) {
      k.error = "cannot read: " + text.status().message();
      out.push_back(std::move(k));
      continue;
    }
    std::string line = *text;
    const auto nl = line.find('\n');
    if (nl != std::string::npos) line.resize(nl);
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.pop_back();
    auto key = parsePublicKey(line);
    std::optional<std::string> blob;
    if (key) blob = decodeBase64(key->base64);
    if (!key || !blob) {
      k.error = key ? "not an OpenSSH public key" : "not an OpenSSH public key: " + key.status().message();
      out.push_back(std::move(k));
      continue;
    }
    k.type = key->type;
    k.fingerprint = sshFingerprint(*blob);
    out.push_back(std::move(k));
  }
  return out;
}

std::string reportJson(const Config& config, const ReportSnapshot& s, const std::vector<HostKey>& hostKeys,
                       const std::string& reportId, int64_t sequence) {
  const std::optional<GenerationRecord>& g = s.inForce;
  std::optional<AccessDocument> doc;
  if (g && !g->body.empty()) {
    DocumentOptions options;
    options.loginUser = config.host.loginUser;
    options.maxBytes = 0;
    auto parsed = parseDocument(g->body, options);
    if (parsed) doc = std::move(*parsed);
  }
  std::string instance = config.store.instance;
  if (instance.empty() && doc) instance = doc->instance;

  auto root = object();
  root->set("report_version", kReportVersion);
  root->set("report_id", reportId);
  root->set("sequence", sequence);
  root->set("time", isoTime(s.time));
  root->set("instance", orNull(instance));
  root->set("agent_version", std::string(PIM_VERSION));
  root->set("generation", g ? orNull(g->generation) : Poco::Dynamic::Var());
  root->set("revision", g ? orNull(g->revision) : Poco::Dynamic::Var());
  root->set("outcome", g ? Poco::Dynamic::Var(std::string(outcomeName(g->outcome))) : Poco::Dynamic::Var());
  root->set("cause", g ? Poco::Dynamic::Var(std::string(causeName(g->cause))) : Poco::Dynamic::Var());
  root->set("pinned", s.pin.has_value());
  root->set("pinned_generation", orNull(s.pin));

  // The cycle that made this report (a rejected document is not in force: it shows here).
  auto cycle = object();
  cycle->set("outcome", std::string(cycleOutcomeName(s.cycle.outcome)));
  cycle->set("exit_code", static_cast<int>(s.cycle.exitCode));
  cycle->set("generation", orNull(s.cycle.generation));
  cycle->set("revision", orNull(s.cycle.revision));
  cycle->set("changes", int64_t(s.cycle.changes.size()));
  cycle->set("error", orNull(s.cycle.error));
  cycle->set("not_registered", s.cycle.notRegistered != 0);
  root->set("cycle", cycle);

  // The last poll's error, else what the generation in force still owes (as `status` says it).
  std::string lastError = s.poll.error;
  if (lastError.empty() && g && !grantsInForce(*g)) lastError = g->error;
  root->set("last_error", orNull(lastError));

  std::vector<SkippedEntry> skipped;
  if (g) skipped = fromSkippedRecords<SkippedEntry>(g->skipped);
  auto skippedArray = Poco::JSON::Array::Ptr(new Poco::JSON::Array);
  for (const auto& e : skipped) {
    auto o = object();
    o->set("id", e.id);
    o->set("reason", e.reason);
    skippedArray->add(o);
  }
  root->set("skipped", skippedArray);

  auto skippedReason = [&](const std::string& id) -> std::string {
    for (const auto& e : skipped) {
      if (e.id == id) return "skipped: " + e.reason;
    }
    return {};
  };
  const bool granted = g && grantsInForce(*g);
  // A partial or failed generation: which entries made it is not recorded per entry, so
  // "installed" is null (unknown) rather than a guess either way.
  const std::string heldBack =
      g ? "generation " + std::string(outcomeName(g->outcome)) + ": not every part applied (see last_error)" : "";
  auto installed = [&](const std::string& why) {
    if (why.empty()) return Poco::Dynamic::Var(true);
    return why == heldBack ? Poco::Dynamic::Var() : Poco::Dynamic::Var(false);
  };
  auto keys = Poco::JSON::Array::Ptr(new Poco::JSON::Array);
  auto accounts = Poco::JSON::Array::Ptr(new Poco::JSON::Array);
  const LoginView logins(s.logins);
  if (doc) {
    for (const auto& k : doc->keys) {
      std::string why = skippedReason(k.id);
      if (why.empty() && !k.active) why = "inactive";
      if (why.empty() && !k.installableAt(s.time)) why = "expired";
      if (why.empty() && !granted) why = heldBack;
      auto o = object();
      o->set("id", k.id);
      o->set("owner", k.owner);
      o->set("installed", installed(why));
      o->set("reason", orNull(why));
      o->set("last_login", lastLoginJson(logins.lastKeyLogin(config.host.loginUser, k.key.base64)));
      keys->add(o);
    }
    for (const auto& a : doc->accounts) {
      std::string why = skippedReason(a.id);
      if (why.empty() && !a.active) why = "inactive: locked";
      if (why.empty() && !granted) why = heldBack;
      auto o = object();
      o->set("id", a.id);
      o->set("username", a.username);
      o->set("installed", installed(why));
      o->set("reason", orNull(why));
      o->set("last_login", lastLoginJson(logins.lastUserLogin(a.username)));
      accounts->add(o);
    }
  }
  root->set("keys", keys);
  root->set("accounts", accounts);
  root->set("failed_logins", failedLoginsJson(s.failedLogins));

  auto hostKeyArray = Poco::JSON::Array::Ptr(new Poco::JSON::Array);
  for (const auto& k : hostKeys) {
    auto o = object();
    o->set("file", k.file);
    o->set("type", orNull(k.type));
    o->set("fingerprint", orNull(k.fingerprint));
    o->set("error", orNull(k.error));
    hostKeyArray->add(o);
  }
  root->set("host_keys", hostKeyArray);

  std::ostringstream out;
  Poco::JSON::Stringifier::condense(root, out);
  return out.str();
}

// ---- Reporter ----

namespace {

class HttpReportSink : public ReportSink {
 public:
  explicit HttpReportSink(std::unique_ptr<HttpStoreClient> client) : client_(std::move(client)) {}
  Status send(const std::string& body, const std::string& reportId) override {
    return client_->post(body, {"Idempotency-Key: " + reportId});
  }
  std::optional<std::chrono::seconds> retryAfter() const override { return client_->retryAfter(); }
  void cancel() override { client_->cancel(); }

 private:
  std::unique_ptr<HttpStoreClient> client_;
};

class EtcdReportSink : public ReportSink {
 public:
  EtcdReportSink(std::unique_ptr<EtcdStoreClient> client, int64_t ttlSeconds)
      : client_(std::move(client)), ttl_(ttlSeconds) {}
  // The report carries its id: a repeated write of the same report is the same value.
  Status send(const std::string& body, const std::string& /*reportId*/) override {
    return client_->putWithLease(body, ttl_);
  }
  void cancel() override { client_->cancel(); }

 private:
  std::unique_ptr<EtcdStoreClient> client_;
  int64_t ttl_;
};

bool isEtcdUrl(const std::string& url) { return url.rfind("etcd://", 0) == 0 || url.rfind("etcds://", 0) == 0; }

}  // namespace

Result<std::unique_ptr<ReportSink>> makeReportSink(const Config& config, Logger log,
                                                   const StoreClientOptions& options) {
  if (isEtcdUrl(config.store.reportUrl)) {
    auto client = makeEtcdReportClient(config.store, config.root, std::move(log), options);
    if (!client) return client.status();
    const int64_t ttl = std::max<int64_t>(3 * config.store.reportIntervalS, 60);
    return std::unique_ptr<ReportSink>(std::make_unique<EtcdReportSink>(std::move(*client), ttl));
  }
  auto client = makeReportClient(config.store, config.root, std::move(log), options);
  if (!client) return client.status();
  return std::unique_ptr<ReportSink>(std::make_unique<HttpReportSink>(std::move(*client)));
}

Result<std::unique_ptr<Reporter>> Reporter::create(const Config& config, Logger log, Options options) {
  auto sink = makeReportSink(config, log, options.client);
  if (!sink) return sink.status();
  return std::unique_ptr<Reporter>(new Reporter(config, std::move(log), std::move(options), std::move(*sink)));
}

Reporter::Reporter(Config config, Logger log, Options options, std::unique_ptr<ReportSink> client)
    : config_(std::move(config)),
      log_(std::move(log)),
      options_(std::move(options)),
      client_(std::move(client)),
      host_(std::make_unique<RealHost>(config_.root, makeLogger("host"))),
      runId_(randomHex(8)) {
  thread_ = std::thread([this] { run(); });
}

Reporter::~Reporter() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  client_->cancel();
  thread_.join();
}

void Reporter::submit(ReportSnapshot snapshot) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    pending_ = std::move(snapshot);
  }
  cv_.notify_all();
}

bool Reporter::flush(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  return cv_.wait_for(lock, timeout, [&] { return !pending_ && !busy_; });
}

int64_t Reporter::delivered() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return delivered_;
}

void Reporter::run() {
  for (;;) {
    ReportSnapshot snapshot;
    int64_t sequence = 0;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      busy_ = false;
      cv_.notify_all();
      cv_.wait(lock, [&] { return stopping_ || pending_.has_value(); });
      if (stopping_) return;
      snapshot = std::move(*pending_);
      pending_.reset();
      busy_ = true;
      sequence = ++sequence_;
    }
    const std::string reportId = runId_ + "-" + std::to_string(sequence);
    const std::string body = reportJson(config_, snapshot, readHostKeys(*host_), reportId, sequence);
    if (deliver(body, reportId, sequence)) {
      std::lock_guard<std::mutex> lock(mutex_);
      ++delivered_;
    }
  }
}

bool Reporter::deliver(const std::string& body, const std::string& reportId, int64_t sequence) {
  std::chrono::milliseconds retry = options_.firstRetry;
  for (int attempt = 1;; ++attempt) {
    Status s = client_->send(body, reportId);
    if (s) {
      log_->debug("report {} delivered ({} bytes)", sequence, body.size());
      return true;
    }
    std::unique_lock<std::mutex> lock(mutex_);
    if (stopping_) return false;
    if (attempt >= options_.attempts) {
      log_->warn("report {} dropped after {} attempts: {}", sequence, attempt, s.message());
      return false;
    }
    if (pending_) {
      log_->info("report {} not delivered ({}); a newer report replaces it", sequence, s.message());
      return false;
    }
    std::chrono::milliseconds delay = retry;
    if (auto after = client_->retryAfter()) {
      delay = std::max(delay, std::min<std::chrono::milliseconds>(*after, options_.maxRetryAfter));
    }
    log_->warn("report {} not delivered ({}); retrying in {} ms", sequence, s.message(), delay.count());
    // A newer report or the stop ends the wait: the newer one is sent instead.
    if (cv_.wait_for(lock, delay, [&] { return stopping_ || pending_.has_value(); })) {
      if (!stopping_) log_->info("report {} superseded by a newer one", sequence);
      return false;
    }
    retry *= 2;
  }
}

}  // namespace pim
