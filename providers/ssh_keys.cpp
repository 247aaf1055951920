#include "providers/ssh_keys.h"

#include <algorithm>
#include <cstdio>
#include <map>

#include "providers/core/settings.h"

namespace pim {
namespace {

constexpr size_t kMaxKeysFileBytes = 64u << 20;
constexpr size_t kMaxIdsInDetail = 10;
constexpr size_t kMaxIdsInSummary = 50;
constexpr const char* kIdPrefix = "pim:";
constexpr const char* kProvider = "ssh_keys";

bool isTokenOf(const std::string& s, const char* extra) {
  if (s.empty()) return false;
  for (char c : s) {
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (!alnum && std::string(extra).find(c) == std::string::npos) return false;
  }
  return true;
}

/// A line of the file can never carry options of the store's or a second line: every part is a
/// plain token, and the one option the agent writes, from="...", holds CIDRs only.
bool renderable(const SshKey& k) {
  return isTokenOf(k.id, "._-") && isTokenOf(k.key.type, "@.-") && isTokenOf(k.key.base64, "+/=") &&
         std::all_of(k.allowedSources.begin(), k.allowedSources.end(),
                     [](const std::string& c) { return isTokenOf(c, ".:/") && c.find('/') != std::string::npos; });
}

std::string keyLine(const SshKey& k) {
  std::string from;
  if (!k.allowedSources.empty()) {
    from = "from=\"";
    for (size_t i = 0; i < k.allowedSources.size(); ++i) from += (i ? "," : "") + k.allowedSources[i];
    from += "\" ";
  }
  return from + k.key.type + " " + k.key.base64 + " " + kIdPrefix + k.id;
}

/// One line without its terminator and without a trailing '\r' (CRLF files).
std::string lineBody(const std::string& text, size_t start, size_t end) {
  size_t e = end;
  if (e > start && text[e - 1] == '\n') --e;
  if (e > start && text[e - 1] == '\r') --e;
  return text.substr(start, e - start);
}

/// id -> line, for the lines that carry a pim:<id> comment.
std::map<std::string, std::string> keyLines(const std::string& text) {
  std::map<std::string, std::string> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    size_t end = nl == std::string::npos ? text.size() : nl + 1;
    std::string body = lineBody(text, pos, end);
    pos = end;
    if (body.empty() || body[0] == '#') continue;
    size_t sp = body.find_last_of(" \t");
    std::string last = sp == std::string::npos ? body : body.substr(sp + 1);
    if (last.compare(0, 4, kIdPrefix) == 0 && last.size() > 4) out.emplace(last.substr(4), body);
  }
  return out;
}

std::string modeText(mode_t m) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", unsigned(m & 07777));
  return buf;
}

std::string ownerText(uid_t u, gid_t g) { return std::to_string(u) + ":" + std::to_string(g); }

std::string idSummary(const std::map<std::string, std::string>& lines) {
  std::string s = std::to_string(lines.size()) + (lines.size() == 1 ? " key" : " keys");
  size_t n = 0;
  for (const auto& kv : lines) {
    s += (n == 0 ? ": " : ",");
    if (++n > kMaxIdsInSummary) {
      s += "... +" + std::to_string(lines.size() - kMaxIdsInSummary) + " more";
      break;
    }
    s += kv.first;
  }
  return s;
}

/// "+k-bob -k-carol-old ~k-dan" (capped), for describe().
std::string keyChanges(const std::map<std::string, std::string>& have, const std::map<std::string, std::string>& want) {
  std::vector<std::string> changes;
  size_t added = 0, removed = 0, changed = 0;
  for (const auto& kv : want) {
    auto it = have.find(kv.first);
    if (it == have.end()) {
      changes.push_back("+" + kv.first);
      ++added;
    } else if (it->second != kv.second) {
      changes.push_back("~" + kv.first);
      ++changed;
    }
  }
  for (const auto& kv : have) {
    if (want.count(kv.first) == 0) {
      changes.push_back("-" + kv.first);
      ++removed;
    }
  }
  if (changes.empty()) return {};
  if (changes.size() > kMaxIdsInDetail) {
    return "+" + std::to_string(added) + " -" + std::to_string(removed) + " ~" + std::to_string(changed) + " keys";
  }
  std::string s;
  for (const auto& c : changes) s += (s.empty() ? "" : " ") + c;
  return s;
}

Status unsafe(const std::string& path, const std::string& why) {
  return Status::error(ErrorCode::kUnsafe, "check " + path + ": " + why + "; refusing to write through it", path);
}

Action makeAction(Verb verb, const std::string& object, const std::string& detail, const std::string& before,
                  const std::string& after, Stage stage = Stage::kRevoke) {
  return makeProviderAction(kProvider, stage, verb, object, detail, before, after);
}

std::string stripTrailingSlashes(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

}  // namespace

std::string loginKeysPath(const std::string& keysDir, const std::string& user) {
  return stripTrailingSlashes(keysDir) + "/" + user;
}

std::string renderKeysFile(const std::string& user, const std::vector<SshKey>& keys, int64_t now) {
  std::vector<const SshKey*> chosen;
  for (const auto& k : keys) {
    if (k.installableAt(now) && renderable(k)) chosen.push_back(&k);
  }
  std::sort(chosen.begin(), chosen.end(), [](const SshKey* a, const SshKey* b) { return a->id < b->id; });
  std::string out;
  out.reserve(192 + chosen.size() * 128);
  out += "# Managed by pim-access-agent: the SSH keys of " + user + " from the access store.\n";
  out += "# Do not edit: this file is rewritten on every change. sshd reads no other file for " + user + ".\n";
  for (const SshKey* k : chosen) {
    out += keyLine(*k);
    out += '\n';
  }
  return out;
}

std::vector<std::string> installedKeyIds(const std::string& keysFile) {
  std::vector<std::string> ids;
  size_t pos = 0;
  while (pos < keysFile.size()) {
    size_t nl = keysFile.find('\n', pos);
    size_t end = nl == std::string::npos ? keysFile.size() : nl + 1;
    std::string body = lineBody(keysFile, pos, end);
    pos = end;
    if (body.empty() || body[0] == '#') continue;
    size_t sp = body.find_last_of(" \t");
    std::string last = sp == std::string::npos ? body : body.substr(sp + 1);
    if (last.compare(0, 4, kIdPrefix) == 0 && last.size() > 4) ids.push_back(last.substr(4));
  }
  return ids;
}

std::optional<int64_t> nextExpiry(const AccessDocument& document, int64_t now) {
  std::optional<int64_t> next;
  for (const auto& k : document.keys) {
    if (!k.active || !k.expiresAt || *k.expiresAt <= now) continue;
    if (!next || *k.expiresAt < *next) next = *k.expiresAt;
  }
  return next;
}

Result<SshKeysCurrent> observeSshKeys(Host& host, const std::string& keysDir, const std::string& user,
                                      const Ledger* ledger) {
  SshKeysCurrent c;
  const std::string dir = stripTrailingSlashes(keysDir);
  auto dirInfo = host.lstat(dir);
  if (!dirInfo) return dirInfo.status();
  c.keysDir = *dirInfo;
  if (c.keysDir.exists()) {
    if (c.keysDir.type != FileType::kDirectory) return unsafe(dir, "not a directory (or a symbolic link)");
    const std::string file = loginKeysPath(dir, user);
    auto info = host.lstat(file);
    if (!info) return info.status();
    c.keysFile = *info;
    if (c.keysFile.exists()) {
      if (c.keysFile.type == FileType::kSymlink) return unsafe(file, "is a symbolic link");
      if (c.keysFile.type != FileType::kRegular) return unsafe(file, "is not a regular file");
      auto text = host.readFile(file, kMaxKeysFileBytes);
      if (!text) return text.status();
      c.content = std::move(*text);
    }
  }

  if (ledger == nullptr || dir == kLegacySftpKeysDir) return c;
  const std::string legacyPrefix = std::string(kLegacySftpKeysDir) + "/";
  for (const auto& path : ledger->owned(OwnedKind::kFile)) {
    if (path.compare(0, legacyPrefix.size(), legacyPrefix) == 0 && path.size() > legacyPrefix.size() &&
        path.find('/', legacyPrefix.size()) == std::string::npos) {
      c.legacyFiles.push_back(path);
    }
  }
  if (c.legacyFiles.empty()) return c;
  auto legacy = host.lstat(kLegacySftpKeysDir);
  if (!legacy) return legacy.status();
  c.legacyDir = *legacy;
  if (c.legacyDir.type == FileType::kDirectory) {
    auto names = host.listDirectory(kLegacySftpKeysDir);
    if (!names) return names.status();
    for (const auto& n : *names) {
      if (std::find(c.legacyFiles.begin(), c.legacyFiles.end(), legacyPrefix + n) == c.legacyFiles.end()) {
        c.legacyOthers.push_back(n);
      }
    }
  }
  return c;
}

std::vector<Action> planSshKeys(const SshKeysDesired& desired, const SshKeysCurrent& current) {
  std::vector<Action> actions;
  const std::string dir = stripTrailingSlashes(desired.keysDir);
  const std::string file = loginKeysPath(dir, desired.user);

  const FileInfo& d = current.keysDir;
  if (d.exists() && (d.mode != kKeysDirMode || d.uid != 0 || d.gid != 0)) {
    actions.push_back(makeAction(Verb::kFixDir, dir,
                                 "mode " + modeText(d.mode) + " owner " + ownerText(d.uid, d.gid) + " -> " +
                                     modeText(kKeysDirMode) + " root:root",
                                 "mode " + modeText(d.mode) + " owner " + ownerText(d.uid, d.gid),
                                 "mode " + modeText(kKeysDirMode) + " owner 0:0"));
  }

  const std::string content = renderKeysFile(desired.user, desired.keys, desired.now);
  const auto want = keyLines(content);
  const auto have = current.content ? keyLines(*current.content) : std::map<std::string, std::string>{};
  const bool contentDiffers = !current.content || *current.content != content;
  const FileInfo& f = current.keysFile;
  const bool ownDiffers = f.exists() && (f.mode != kLoginKeysFileMode || f.uid != 0 || f.gid != 0);
  if (contentDiffers || ownDiffers) {
    std::vector<std::string> parts;
    if (!current.content) {
      parts.push_back("new file");
    } else if (contentDiffers) {
      std::string changes = keyChanges(have, want);
      parts.push_back(changes.empty() ? "rewrite" : changes);
    }
    if (ownDiffers) {
      if (f.mode != kLoginKeysFileMode) {
        parts.push_back("mode " + modeText(f.mode) + " -> " + modeText(kLoginKeysFileMode));
      }
      if (f.uid != 0 || f.gid != 0) parts.push_back("owner " + ownerText(f.uid, f.gid) + " -> 0:0");
    }
    parts.push_back(std::to_string(want.size()) + (want.size() == 1 ? " key" : " keys"));
    // Keys that go away are revoked with the other revocations; new keys are a grant, written once
    // the configuration confining the login user is live. A change with both is two writes.
    const bool adds = std::any_of(want.begin(), want.end(), [&](const auto& w) {
      auto it = have.find(w.first);
      return it == have.end() || it->second != w.second;
    });
    if (adds && current.content) {
      // What stays: the keys the file already grants and the document still wants, unchanged;
      // anything else in the file (a removed key, a line someone added) goes first.
      std::vector<SshKey> kept;
      for (const auto& k : desired.keys) {
        auto it = have.find(k.id);
        auto w = want.find(k.id);
        if (it != have.end() && w != want.end() && it->second == w->second) kept.push_back(k);
      }
      const std::string narrowed = renderKeysFile(desired.user, kept, desired.now);
      if (narrowed != *current.content || ownDiffers) {
        Action r = makeAction(Verb::kWrite, file, "keys revoked before new ones are granted", idSummary(have),
                              "fewer keys", Stage::kRevoke);
        r.payload = narrowed;
        actions.push_back(std::move(r));
      }
    }
    const Stage stage = adds ? Stage::kGrant : (current.content ? Stage::kRevoke : Stage::kPrepare);
    Action a =
        makeAction(Verb::kWrite, file, "", current.content ? idSummary(have) : "missing", idSummary(want), stage);
    for (const auto& p : parts) a.detail += (a.detail.empty() ? "" : "; ") + p;
    a.payload = content;
    actions.push_back(std::move(a));
  }

  for (const auto& path : current.legacyFiles) {
    actions.push_back(makeAction(Verb::kRemoveLegacy, path,
                                 "SFTP key file of agent 0.1, replaced by " + dir + "/<user>", "keys file", "absent"));
  }
  if (!current.legacyFiles.empty() && current.legacyDir.type == FileType::kDirectory && current.legacyOthers.empty() &&
      current.legacyDir.uid == 0) {
    actions.push_back(
        makeAction(Verb::kRemoveLegacyDir, kLegacySftpKeysDir, "empty directory of agent 0.1", "directory", "absent"));
  }
  return actions;
}

HomeKeysReport inspectHomeKeys(Host& host, const std::string& user) {
  HomeKeysReport r;
  std::string home = "/home/" + user;
  auto found = host.findUser(user);
  if (found && *found && !(*found)->home.empty()) home = (*found)->home;
  home = stripTrailingSlashes(home);
  r.path = (home == "/" ? "" : home) + "/.ssh/authorized_keys";
  auto info = host.lstat(r.path);
  if (!info) {
    r.exists = true;
    r.unreadable = info.status().message();
    return r;
  }
  if (!info->exists()) return r;
  r.exists = true;
  auto text = host.readFile(r.path, kMaxKeysFileBytes);
  if (!text) {
    r.unreadable = text.status().message();
    return r;
  }
  size_t pos = 0;
  while (pos < text->size()) {
    size_t nl = text->find('\n', pos);
    size_t end = nl == std::string::npos ? text->size() : nl + 1;
    std::string body = lineBody(*text, pos, end);
    pos = end;
    size_t b = body.find_first_not_of(" \t");
    if (b != std::string::npos && body[b] != '#') ++r.keyLines;
  }
  return r;
}

SshKeysProvider::SshKeysProvider(Logger log, Ledger* ledger) : log_(std::move(log)), ledger_(ledger) {}

std::string SshKeysProvider::name() const { return kProvider; }

Result<std::vector<Action>> SshKeysProvider::plan(const Desired& desired, Host& host) {
  const std::string& user = desired.host.loginUser;
  auto current = observeSshKeys(host, desired.host.authorizedKeysDir, user, ledger_);
  if (!current) return current.status();
  skipped_.clear();
  for (const auto& k : desired.document.keys) {
    if (k.installableAt(desired.now) && !renderable(k)) {
      skipped_.push_back(SkippedEntry{k.id, "its type, base64 or id is not a plain token"});  // the cycle logs it
    }
  }
  SshKeysDesired want{user, desired.host.authorizedKeysDir, desired.document.keys, desired.now};
  auto actions = planSshKeys(want, *current);
  logPlan(log_, actions);
  return actions;
}

Status SshKeysProvider::apply(const Action& action, const Desired& desired, Host& host) {
  try {
    const std::string dir = stripTrailingSlashes(desired.host.authorizedKeysDir);
    if (action.verb == Verb::kFixDir) {
      // The directory sits in root-owned /etc: setOwner/setMode refuse a symbolic link anyway.
      if (Status s = host.setOwner(dir, 0, 0); !s) return s;
      if (Status s = host.setMode(dir, kKeysDirMode); !s) return s;
      log_->warn("corrected {}: {}", dir, action.detail);
      return Status::ok();
    }
    if (action.verb == Verb::kWrite) {
      if (action.object != loginKeysPath(dir, desired.host.loginUser)) {
        return Status::error(ErrorCode::kInternal, "ssh_keys: cannot apply " + action.describe());
      }
      if (Status s = host.makeDirectories(dir, {kKeysDirMode, 0, 0}); !s) return s;
      auto info = host.lstat(dir);
      if (!info) return info.status();
      if (info->type != FileType::kDirectory) return unsafe(dir, "not a directory (or a symbolic link)");
      if (Status s = host.writeFileAtomic(action.object, action.payload, {kLoginKeysFileMode, 0, 0}); !s) return s;
      log_->info("wrote {} ({})", action.object, action.detail);
      return Status::ok();
    }
    if (action.verb == Verb::kRemoveLegacy) {
      if (Status s = host.removeFile(action.object); !s) return s;
      if (ledger_ != nullptr) {
        if (Status s = ledger_->recordRemoved(OwnedKind::kFile, action.object); !s) return s;
      }
      log_->info("removed {} ({})", action.object, action.detail);
      return Status::ok();
    }
    if (action.verb == Verb::kRemoveLegacyDir) {
      if (Status s = host.removeDirectory(action.object); !s) {
        // Something appeared in it since plan(): it stays, and nothing is lost.
        log_->warn("{} kept: {}", action.object, s.message());
        return Status::ok();
      }
      log_->info("removed {} ({})", action.object, action.detail);
      return Status::ok();
    }
    return Status::error(ErrorCode::kInternal, "ssh_keys: cannot apply " + action.describe());
  } catch (const std::exception& e) {
    return Status::error(ErrorCode::kInternal, "ssh_keys: " + action.describe() + ": " + e.what());
  }
}

}  // namespace pim
