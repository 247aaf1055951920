#include "agent/daemon/metrics.h"

#include <unistd.h>

#include <algorithm>
#include <sstream>

#include "agent/daemon/login_audit.h"
#include "agent/document/document.h"

namespace pim {
namespace {

constexpr const char* kPrefix = "pim_access_agent_";

// Label values escape backslash, double quote and newline (text format 0.0.4).
std::string escapeLabel(const std::string& v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

void header(std::ostringstream& out, const std::string& name, const char* type, const char* help) {
  out << "# HELP " << kPrefix << name << ' ' << help << '\n';
  out << "# TYPE " << kPrefix << name << ' ' << type << '\n';
}

template <class T>
void sample(std::ostringstream& out, const std::string& name, T value, const std::string& labels = {}) {
  out << kPrefix << name;
  if (!labels.empty()) out << '{' << labels << '}';
  out << ' ' << value << '\n';
}

}  // namespace

std::string renderMetrics(const MetricsSnapshot& s) {
  std::ostringstream out;
  header(out, "info", "gauge", "Build information of the running agent (always 1).");
  sample(out, "info", 1, "version=\"" + escapeLabel(s.version) + "\"");
  header(out, "last_success_timestamp_seconds", "gauge",
         "Unix time of the last cycle that ended without error (0: none yet).");
  sample(out, "last_success_timestamp_seconds", s.lastSuccessTime.value_or(0));
  header(out, "applied_revision", "gauge", "Store revision of the document in force (0: none).");
  sample(out, "applied_revision", s.appliedRevision.value_or(0));
  header(out, "generation", "gauge", "Generation in force in the state database (0: none).");
  sample(out, "generation", s.generation.value_or(0));
  header(out, "pinned", "gauge", "1 when a rollback pinned a generation (the store's documents are only recorded).");
  sample(out, "pinned", s.pinned ? 1 : 0);
  header(out, "sshd_reload_pending", "gauge",
         "1 while a drop-in is in place that sshd did not load (grants are held back until it does).");
  sample(out, "sshd_reload_pending", s.reloadPending ? 1 : 0);
  header(out, "keys_installed", "gauge", "Active, unexpired SSH keys of the document in force.");
  sample(out, "keys_installed", s.keysInstalled);
  header(out, "sftp_accounts", "gauge", "SFTP accounts of the document in force, by state (inactive ones are locked).");
  sample(out, "sftp_accounts", s.sftpAccountsActive, "state=\"active\"");
  sample(out, "sftp_accounts", s.sftpAccountsInactive, "state=\"inactive\"");
  header(out, "skipped_entries", "gauge", "Entries of the document in force that were skipped as invalid.");
  sample(out, "skipped_entries", s.skippedEntries);
  header(out, "permission_fixes_total", "counter",
         "Entries under the transfer root whose mode or group was corrected.");
  sample(out, "permission_fixes_total", s.permissionFixes);
  header(out, "bans_total", "counter",
         "Source addresses the defender banned for failed password logins (the firewall refuses them).");
  sample(out, "bans_total", s.bansTotal);
  header(out, "errors_total", "counter", "Errors by kind: store, rejected, apply, internal, permissions.");
  for (const char* kind : kMetricErrorKinds) {
    auto it = s.errors.find(kind);
    sample(out, "errors_total", it == s.errors.end() ? 0 : it->second, "kind=\"" + std::string(kind) + "\"");
  }
  for (const auto& entry : s.errors) {
    // A named variable, not a structured binding: lambdas capture those only from C++20 (clang).
    const std::string& kind = entry.first;
    const bool known = std::any_of(std::begin(kMetricErrorKinds), std::end(kMetricErrorKinds),
                                   [&](const char* k) { return kind == k; });
    if (!known) sample(out, "errors_total", entry.second, "kind=\"" + escapeLabel(kind) + "\"");
  }
  header(out, "key_last_login_timestamp_seconds", "gauge",
         "Unix time of the last login with each key of the document in force (0: none seen).");
  for (const auto& [id, time] : s.keyLastLogin)
    sample(out, "key_last_login_timestamp_seconds", time, "id=\"" + escapeLabel(id) + "\"");
  header(out, "sftp_account_last_login_timestamp_seconds", "gauge",
         "Unix time of the last login of each SFTP account of the document in force (0: none seen).");
  for (const auto& [user, time] : s.accountLastLogin) {
    sample(out, "sftp_account_last_login_timestamp_seconds", time, "username=\"" + escapeLabel(user) + "\"");
  }
  header(out, "failed_logins", "gauge",
         "Connections that ended during authentication, summed over the source addresses kept (at most 1000).");
  sample(out, "failed_logins", s.failedLogins);
  header(out, "failed_login_sources", "gauge", "Source addresses with failed logins kept by the login audit.");
  sample(out, "failed_login_sources", s.failedLoginSources);
  return out.str();
}

void MetricsCounters::countCycle(const CycleReport& report, int64_t now) {
  switch (report.exitCode) {
    case ExitCode::kOk:
      lastSuccess_ = now;
      break;
    case ExitCode::kRejected:
      ++errors_["rejected"];
      break;
    case ExitCode::kUnreachable:
      ++errors_["store"];
      break;
    case ExitCode::kApplyFailed:
      ++errors_["apply"];
      break;
    default:
      ++errors_["internal"];
      break;
  }
}

void MetricsCounters::countBan() { ++bans_; }

void MetricsCounters::setPermissionTotals(uint64_t fixes, uint64_t errors) {
  permissionFixes_ = fixes;
  permissionErrors_ = errors;
}

void MetricsCounters::addPermissionPass(uint64_t fixes, uint64_t errors) {
  permissionFixes_ += fixes;
  permissionErrors_ += errors;
}

std::map<std::string, uint64_t> MetricsCounters::errors() const {
  std::map<std::string, uint64_t> out;
  for (const char* kind : kMetricErrorKinds) out[kind] = 0;
  for (const auto& [kind, count] : errors_) out[kind] = count;
  out["permissions"] = permissionErrors_;
  return out;
}

Result<MetricsSnapshot> snapshotFrom(const StateStore& state, const Config& config, const MetricsCounters& counters,
                                     int64_t now) {
  MetricsSnapshot s;
  s.version = PIM_VERSION;
  s.permissionFixes = counters.permissionFixes();
  s.bansTotal = counters.bans();
  s.errors = counters.errors();

  auto pin = state.pin();
  if (!pin) return pin.status();
  s.pinned = pin->has_value();
  auto reload = state.reloadPending();
  if (!reload) return reload.status();
  s.reloadPending = !reload->empty();

  auto inForce = state.lastApplied();
  if (!inForce) return inForce.status();
  if (inForce->has_value()) {
    const GenerationRecord& record = **inForce;
    s.generation = record.generation;
    s.appliedRevision = record.revision;
    s.skippedEntries = int64_t(record.skipped.size());
    // The stored document was accepted when it arrived: parse it as the agent does for a
    // restore, without the instance check and with room for its own size.
    DocumentOptions options;
    options.loginUser = config.host.loginUser;
    options.maxBytes = std::max<int64_t>(config.store.maxDocumentBytes, int64_t(record.body.size()));
    auto doc = parseDocument(record.body, options);
    if (!doc) {
      return Status::error(ErrorCode::kInvalid,
                           "metrics: generation " + std::to_string(record.generation) + ": " + doc.status().message());
    }
    auto logins = state.logins();
    if (!logins) return logins.status();
    const LoginView view(*logins);
    for (const auto& key : doc->keys) {
      if (key.installableAt(now)) ++s.keysInstalled;
      auto last = view.lastKeyLogin(config.host.loginUser, key.key.base64);
      s.keyLastLogin.emplace_back(key.id, last ? last->time : 0);
    }
    for (const auto& account : doc->accounts) {
      ++(account.active ? s.sftpAccountsActive : s.sftpAccountsInactive);
      auto last = view.lastUserLogin(account.username);
      s.accountLastLogin.emplace_back(account.username, last ? last->time : 0);
    }
  }
  auto failed = state.loginFailures(0);
  if (!failed) return failed.status();
  s.failedLogins = failed->total;
  s.failedLoginSources = failed->sources;

  s.lastSuccessTime = counters.lastSuccessTime();
  if (!s.lastSuccessTime) {
    auto poll = state.pollStatus();
    if (!poll) return poll.status();
    if (poll->time && poll->error.empty()) {
      s.lastSuccessTime = poll->time;
    } else if (inForce->has_value()) {
      s.lastSuccessTime = (**inForce).time;
    }
  }
  return s;
}

Status writeMetrics(Host& host, const std::string& path, const std::string& text) {
  // Owned by the agent's own user: root in production, the developer in unprivileged tests.
  return host.writeFileAtomic(path, text, Ownership{0644, ::geteuid(), ::getegid()});
}

Status publishMetrics(Host& host, const StateStore& state, const Config& config, const MetricsCounters& counters,
                      int64_t now) {
  if (config.state.metricsFile.empty()) return Status::ok();
  auto snapshot = snapshotFrom(state, config, counters, now);
  if (!snapshot) return snapshot.status();
  return writeMetrics(host, config.state.metricsFile, renderMetrics(*snapshot));
}

}  // namespace pim
