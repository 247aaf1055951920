// status: generation in force, pin, store revision, last poll, skipped entries, last error, keys
// and accounts in force (a read-only view of the state database).
#include "agent/cli/commands.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>

#include <cstdlib>
#include <iostream>
#include <set>

#include "agent/cli/cli.h"
#include "agent/cli/cli_support.h"
#include "agent/cycle/cycle.h"
#include "agent/cycle/open_state.h"
#include "agent/daemon/login_audit.h"
#include "agent/document/document.h"
#include "providers/core/clock.h"
#include "providers/core/log.h"
#include "providers/firewall.h"
#include "providers/host/real_host.h"
#include "providers/ssh_keys.h"
#include "providers/sudoers.h"

namespace pim {
namespace {

/// How many sources `status` lists with their failed logins (the most failures first).
constexpr int64_t kTopFailedSources = 10;

/// "last login 2026-12-06T08:00:00Z from 198.51.100.20" or "no login seen" (since the audit began).
std::string lastLoginText(const std::optional<LastLogin>& login) {
  if (!login) return "no login seen";
  return "last login " + isoTime(login->time) + " from " + login->address;
}

/// The document in force, parsed without the instance check (it was accepted when it came).
std::optional<AccessDocument> inForceDocument(const Config& config, const std::optional<GenerationRecord>& record) {
  if (!record || record->body.empty()) return std::nullopt;
  DocumentOptions options;
  options.loginUser = config.host.loginUser;
  options.maxBytes = 0;
  auto doc = parseDocument(record->body, options);
  if (!doc) return std::nullopt;
  return *doc;
}

/// The ids of the document's sudo tasks whose rule is in force in the live sudoers file (the
/// agent's file, 0440 root:root): what sudo grants, not what the document asks for.
std::set<std::string> installedSudoTasks(Host& host, const Config& config, const std::optional<AccessDocument>& doc) {
  std::set<std::string> ids;
  if (!doc || doc->sudoTasks.empty()) return ids;
  auto info = host.lstat(kSudoersFile);
  if (!info || info->type != FileType::kRegular || (info->mode & 07777) != kSudoersFileMode || info->uid != 0 ||
      info->gid != 0) {
    return ids;
  }
  auto text = host.readFile(kSudoersFile, 4u << 20);
  if (!text) return ids;
  for (auto& id : installedTaskIds(config.host.loginUser, doc->sudoTasks, host.root(), *text)) ids.insert(id);
  return ids;
}

std::string commandLine(const SudoTask& t) {
  std::string out;
  for (const auto& w : t.command) out += (out.empty() ? "" : " ") + w;
  return out;
}

/// What `status` says of the firewall: its mode, its table and the defender's bans (read from the
/// table itself, the truth: element timeouts end them also while the agent is stopped).
struct FirewallView {
  std::string mode;   // "nftables", "off", "not managed (--root)"
  std::string table;  // "present", "absent", "drifted: ...", "unreadable: ..."
  std::vector<FirewallBan> bans;
};

FirewallView firewallView(const Config& config, Host& host) {
  FirewallView v;
  if (!config.network.managed) {
    v.mode = "not managed (--root)";
    v.table = "not looked at";
    return v;
  }
  v.mode = config.network.firewall == FirewallMode::kNftables ? "nftables" : "off";
  auto current = observeFirewall(host, config.network);
  if (!current) {
    v.table = "unreadable: " + current.status().message();
    return v;
  }
  v.table = !current->present ? "absent" : current->intact ? "present" : "drifted: " + current->drift;
  v.bans = current->bans;
  return v;
}

std::string joinSources(const std::vector<std::string>& sources) {
  std::string out;
  for (const auto& s : sources) out += (out.empty() ? "" : ",") + s;
  return out;
}

}  // namespace

ExitCode cmdStatus(const Config& config, bool json) {
  RealHost host(config.root, makeLogger("host"));
  auto opened = openStateForReading(config, host);
  if (!opened) return fail(opened.status(), json);
  StateStore& state = **opened;
  auto applied = state.lastApplied();
  auto pin = state.pin();
  auto storeRevision = state.storeRevision();
  auto poll = state.pollStatus();
  auto reloadPending = state.reloadPending();
  auto logins = state.logins();
  auto failedLogins = state.loginFailures(kTopFailedSources);
  if (!applied || !pin || !storeRevision || !poll || !reloadPending || !logins || !failedLogins) {
    for (const Status& s : {applied.status(), pin.status(), storeRevision.status(), poll.status(),
                            reloadPending.status(), logins.status(), failedLogins.status()}) {
      if (!s) return fail(s, json);
    }
  }
  const std::optional<GenerationRecord>& inForce = *applied;
  const LoginView loginView(*logins);
  std::optional<int64_t> generation, revision;
  std::vector<SkippedEntry> skipped;
  if (inForce) {
    generation = inForce->generation;
    revision = inForce->revision;
    skipped = fromSkippedRecords<SkippedEntry>(inForce->skipped);
  }
  // The last poll's error (cleared by a poll without one), else what the generation in force
  // still owes (a partial or failed cycle, retried): never a rejected document's error that a
  // later poll has superseded.
  std::string lastError = poll->error;
  if (lastError.empty() && inForce &&
      (inForce->outcome == GenerationOutcome::kFailed || inForce->outcome == GenerationOutcome::kPartial)) {
    lastError = inForce->error;
  }
  const int64_t now = SystemClock().nowSeconds();
  auto doc = inForceDocument(config, inForce);
  const std::set<std::string> sudoInstalled = installedSudoTasks(host, config, doc);
  // Lines the login user keeps in its own authorized_keys: sshd reads only the agent's file.
  const HomeKeysReport home = inspectHomeKeys(host, config.host.loginUser);
  const FirewallView firewall = firewallView(config, host);
  const std::string keysFile = loginKeysPath(config.host.authorizedKeysDir, config.host.loginUser);
  // How many documents the store published that the pin keeps from the host: the distinct
  // documents recorded after the pinned generation (not a difference of revision numbers).
  std::optional<int64_t> ahead;
  if (pin->has_value()) {
    auto all = state.history(0);
    if (!all) return fail(all.status(), json);
    std::set<std::string> documents;
    for (const auto& g : *all) {
      if (g.generation > **pin && g.outcome == GenerationOutcome::kRecorded) documents.insert(g.docHash);
    }
    ahead = int64_t(documents.size());
  }

  if (json) {
    Poco::JSON::Object::Ptr root = new Poco::JSON::Object(Poco::JSON_PRESERVE_KEY_ORDER);
    root->set("generation", optionalInt(generation));
    root->set("revision", optionalInt(revision));
    root->set("pinned", pin->has_value());
    root->set("pinned_generation", optionalInt(*pin));
    root->set("store_revision", optionalInt(*storeRevision));
    root->set("store_ahead_by", optionalInt(ahead));
    Poco::JSON::Object::Ptr lastPoll = new Poco::JSON::Object(Poco::JSON_PRESERVE_KEY_ORDER);
    lastPoll->set("time", poll->time ? Poco::Dynamic::Var(isoTime(*poll->time)) : Poco::Dynamic::Var());
    lastPoll->set("outcome", poll->time ? Poco::Dynamic::Var(poll->outcome) : Poco::Dynamic::Var());
    root->set("last_poll", lastPoll);
    root->set("skipped", skippedJson(skipped));
    root->set("last_error", lastError.empty() ? Poco::Dynamic::Var() : Poco::Dynamic::Var(lastError));
    root->set("outcome", inForce ? Poco::Dynamic::Var(outcomeName(inForce->outcome)) : Poco::Dynamic::Var());
    root->set("rollback_of", inForce ? optionalInt(inForce->rollbackOf) : Poco::Dynamic::Var());
    root->set("sshd_reload_pending",
              reloadPending->empty() ? Poco::Dynamic::Var() : Poco::Dynamic::Var(*reloadPending));
    Poco::JSON::Array::Ptr keys = new Poco::JSON::Array;
    Poco::JSON::Array::Ptr accounts = new Poco::JSON::Array;
    if (doc) {
      for (const auto& k : doc->keys) {
        Poco::JSON::Object::Ptr o = new Poco::JSON::Object(Poco::JSON_PRESERVE_KEY_ORDER);
        o->set("id", k.id);
        o->set("owner", k.owner);
        o->set("type", k.key.type);
        o->set("active", k.active);
        o->set("expires_at", k.expiresAt ? Poco::Dynamic::Var(isoTime(*k.expiresAt)) : Poco::Dynamic::Var());
        o->set("installed", k.installableAt(now));
        o->set("last_login", lastLoginJson(loginView.lastKeyLogin(config.host.loginUser, k.key.base64)));
        if (!k.allowedSources.empty()) {
          Poco::JSON::Array::Ptr own = new Poco::JSON::Array;
          for (const auto& c : k.allowedSources) own->add(c);
          o->set("allowed_sources", own);
        }
        keys->add(o);
      }
      for (const auto& a : doc->accounts) {
        Poco::JSON::Object::Ptr o = new Poco::JSON::Object(Poco::JSON_PRESERVE_KEY_ORDER);
        o->set("id", a.id);
        o->set("username", a.username);
        o->set("folder", a.folder);
        o->set("active", a.active);
        o->set("password", a.passwordHash.has_value());
        o->set("keys", int64_t(a.publicKeys.size()));
        o->set("access", sftpAccessName(a.access));
        o->set("last_login", lastLoginJson(loginView.lastUserLogin(a.username)));
        if (!a.allowedSources.empty()) {
          Poco::JSON::Array::Ptr own = new Poco::JSON::Array;
          for (const auto& c : a.allowedSources) own->add(c);
          o->set("allowed_sources", own);
        }
        accounts->add(o);
      }
    }
    Poco::JSON::Array::Ptr tasks = new Poco::JSON::Array;
    if (doc) {
      for (const auto& t : doc->sudoTasks) {
        Poco::JSON::Object::Ptr o = new Poco::JSON::Object(Poco::JSON_PRESERVE_KEY_ORDER);
        o->set("id", t.id);
        Poco::JSON::Array::Ptr command = new Poco::JSON::Array;
        for (const auto& w : t.command) command->add(w);
        o->set("command", command);
        o->set("run_as", t.runAs);
        o->set("active", t.active);
        o->set("installed", sudoInstalled.count(t.id) != 0);
        tasks->add(o);
      }
    }
    root->set("keys", keys);
    root->set("accounts", accounts);
    root->set("sudo_tasks", tasks);
    root->set("sudoers_file", kSudoersFile);
    Poco::JSON::Object::Ptr homeKeys = new Poco::JSON::Object(Poco::JSON_PRESERVE_KEY_ORDER);
    homeKeys->set("path", home.path);
    homeKeys->set("exists", home.exists);
    homeKeys->set("key_lines",
                  home.unreadable.empty() ? Poco::Dynamic::Var(int64_t(home.keyLines)) : Poco::Dynamic::Var());
    homeKeys->set("unreadable", home.unreadable.empty() ? Poco::Dynamic::Var() : Poco::Dynamic::Var(home.unreadable));
    homeKeys->set("ignored_by_sshd", true);
    homeKeys->set("keys_file", keysFile);
    root->set("home_authorized_keys", homeKeys);
    if (doc) {
      Poco::JSON::Array::Ptr sources = new Poco::JSON::Array;
      for (const auto& s : doc->allowedSources) sources->add(s.text);
      root->set("allowed_sources", sources);
    }
    // The operator's ranges from the config, never locked out, next to the document's.
    Poco::JSON::Array::Ptr always = new Poco::JSON::Array;
    for (const auto& s : config.host.alwaysAllow) always->add(s.text);
    root->set("always_allow", always);
    Poco::JSON::Object::Ptr fw = new Poco::JSON::Object(Poco::JSON_PRESERVE_KEY_ORDER);
    fw->set("mode", firewall.mode);
    fw->set("table", firewall.table);
    root->set("firewall", fw);
    Poco::JSON::Array::Ptr bans = new Poco::JSON::Array;
    for (const auto& b : firewall.bans) {
      Poco::JSON::Object::Ptr o = new Poco::JSON::Object(Poco::JSON_PRESERVE_KEY_ORDER);
      o->set("address", b.address);
      o->set("expires_in_s", b.expiresIn);
      bans->add(o);
    }
    root->set("bans", bans);
    root->set("failed_logins", failedLoginsJson(*failedLogins));
    std::cout << toJson(root) << "\n";
    return ExitCode::kOk;
  }
  std::cout << "generation:     " << optionalText(generation);
  if (inForce) {
    std::cout << " (" << outcomeName(inForce->outcome);
    if (inForce->rollbackOf) std::cout << ": rollback of generation " << *inForce->rollbackOf;
    std::cout << ", " << isoTime(inForce->time) << ")";
  }
  std::cout << "\nrevision:       " << optionalText(revision) << "\n";
  std::cout << "pinned:         " << (pin->has_value() ? "yes, generation " + std::to_string(**pin) : "no");
  if (ahead) std::cout << " (the store has " << *ahead << " newer document(s), recorded, not applied)";
  std::cout << "\nstore revision: " << optionalText(*storeRevision) << "\n";
  std::cout << "last poll:      " << (poll->time ? isoTime(*poll->time) + " " + poll->outcome : "never") << "\n";
  std::cout << "last error:     " << (lastError.empty() ? "none" : lastError) << "\n";
  if (!reloadPending->empty()) {
    std::cout << "sshd reload:    PENDING (" << *reloadPending
              << "): sshd runs its previous configuration, nothing is granted until it reloads\n";
  }
  printSkipped(std::cout, skipped);
  std::cout << "own keys:       " << home.path << ": ";
  if (!home.unreadable.empty()) {
    std::cout << "unreadable: " << home.unreadable;
  } else if (!home.exists) {
    std::cout << "none";
  } else {
    std::cout << home.keyLines << " key line(s)";
  }
  std::cout << "; sshd ignores them (" << config.host.loginUser << "'s keys come from " << keysFile << ")\n";
  if (doc) {
    std::cout << "keys of " << config.host.loginUser << ":\n";
    for (const auto& k : doc->keys) {
      std::cout << "  " << k.id << "  " << k.owner << "  "
                << (k.expiresAt ? "expires " + isoTime(*k.expiresAt) : std::string("no expiry")) << "  "
                << (k.installableAt(now) ? "installed" : (!k.active ? "inactive" : "expired"))
                << (k.allowedSources.empty() ? "" : "  only from " + joinSources(k.allowedSources)) << "  "
                << lastLoginText(loginView.lastKeyLogin(config.host.loginUser, k.key.base64)) << "\n";
    }
    std::cout << "sftp accounts:\n";
    for (const auto& a : doc->accounts) {
      std::cout << "  " << a.username << " (" << a.id << ")  folder " << a.folder << "  "
                << (a.active ? "active" : "locked") << "  " << (a.passwordHash ? "password" : "no password") << ", "
                << a.publicKeys.size() << " key(s)  " << sftpAccessName(a.access)
                << (a.allowedSources.empty() ? "" : "  only from " + joinSources(a.allowedSources)) << "  "
                << lastLoginText(loginView.lastUserLogin(a.username)) << "\n";
    }
    std::cout << "sudo tasks of " << config.host.loginUser << " (" << kSudoersFile << "):";
    if (doc->sudoTasks.empty()) std::cout << " none";
    std::cout << "\n";
    for (const auto& t : doc->sudoTasks) {
      std::cout << "  " << t.id << "  " << commandLine(t) << "  as " << t.runAs << "  "
                << (sudoInstalled.count(t.id) ? "installed" : (!t.active ? "inactive" : "not installed")) << "\n";
    }
    std::cout << "allowed sources:";
    for (const auto& s : doc->allowedSources) std::cout << " " << s.text;
    std::cout << "\n";
  }
  std::cout << "always allowed (config):";
  for (const auto& s : config.host.alwaysAllow) std::cout << " " << s.text;
  std::cout << "\n";
  std::cout << "firewall:       " << firewall.mode << ", table inet " << kFirewallTable << " " << firewall.table
            << "\n";
  std::cout << "bans:           " << (firewall.bans.empty() ? "none" : "") << "\n";
  for (const auto& b : firewall.bans) {
    std::cout << "  " << b.address << "  refused for " << b.expiresIn << " s more (failed password logins)\n";
  }
  std::cout << "failed logins:  " << failedLogins->total << " from " << failedLogins->sources
            << " source(s) (connections that ended during authentication)\n";
  for (const auto& f : failedLogins->top) {
    std::cout << "  " << f.address << "  " << f.count << ", last " << isoTime(f.lastTime) << "\n";
  }
  return ExitCode::kOk;
}

}  // namespace pim
