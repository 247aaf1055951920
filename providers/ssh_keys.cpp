#include "providers/ssh_keys.h"

#include <algorithm>
#include <cstdio>
#include <map>

namespace pim {
namespace {

constexpr size_t kMaxKeysFileBytes = 64u << 20;
constexpr mode_t kSshDirMode = 0700;
constexpr mode_t kKeysFileMode = 0600;
constexpr size_t kMaxIdsInDetail = 10;
constexpr size_t kMaxIdsInSummary = 50;
constexpr const char* kIdPrefix = "pim:";

bool isTokenOf(const std::string& s, const char* extra) {
  if (s.empty()) return false;
  for (char c : s) {
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (!alnum && std::string(extra).find(c) == std::string::npos) return false;
  }
  return true;
}

/// A line of the block can never carry options or a second line: every part is a plain token.
bool renderable(const SshKey& k) {
  return isTokenOf(k.id, "._-") && isTokenOf(k.key.type, "@.-") && isTokenOf(k.key.base64, "+/=");
}

std::string keyLine(const SshKey& k) { return k.key.type + " " + k.key.base64 + " " + kIdPrefix + k.id; }

/// One line without its terminator and without a trailing '\r' (CRLF files).
std::string lineBody(const std::string& text, size_t start, size_t end) {
  size_t e = end;
  if (e > start && text[e - 1] == '\n') --e;
  if (e > start && text[e - 1] == '\r') --e;
  return text.substr(start, e - start);
}

std::string mergeParsed(const ParsedAuthorizedKeys& p, const std::string& block) {
  if (p.hasBlock) return p.before + block + p.after;
  std::string out = p.before;
  if (!out.empty() && out.back() != '\n') out += '\n';
  return out + block;
}

/// id -> line inside a block's inner text (lines that carry a pim:<id> comment).
std::map<std::string, std::string> blockLines(const std::string& inner) {
  std::map<std::string, std::string> out;
  size_t pos = 0;
  while (pos < inner.size()) {
    size_t nl = inner.find('\n', pos);
    size_t end = nl == std::string::npos ? inner.size() : nl + 1;
    std::string body = lineBody(inner, pos, end);
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

}  // namespace

Result<ParsedAuthorizedKeys> parseAuthorizedKeys(const std::string& text) {
  ParsedAuthorizedKeys p;
  std::optional<size_t> beginStart, beginEnd, endStart, endEnd;
  int beginLineNo = 0;
  int lineNo = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    size_t end = nl == std::string::npos ? text.size() : nl + 1;
    ++lineNo;
    const std::string body = lineBody(text, pos, end);
    const std::string where = "authorized_keys line " + std::to_string(lineNo) + ": ";
    if (body == kKeysBeginMarker) {
      if (beginStart && !endStart) {
        return Status::error(
            ErrorCode::kInvalid,
            where + "second BEGIN marker before the END of the block opened at line " + std::to_string(beginLineNo));
      }
      if (endStart) return Status::error(ErrorCode::kInvalid, where + "a second managed block");
      beginStart = pos;
      beginEnd = end;
      beginLineNo = lineNo;
    } else if (body == kKeysEndMarker) {
      if (!beginStart) return Status::error(ErrorCode::kInvalid, where + "END marker without BEGIN");
      if (endStart) return Status::error(ErrorCode::kInvalid, where + "second END marker");
      endStart = pos;
      endEnd = end;
    }
    pos = end;
  }
  if (beginStart && !endStart) {
    return Status::error(ErrorCode::kInvalid,
                         "authorized_keys line " + std::to_string(beginLineNo) + ": BEGIN marker without END");
  }
  if (!beginStart) {
    p.before = text;
    return p;
  }
  p.hasBlock = true;
  p.before = text.substr(0, *beginStart);
  p.beginLine = text.substr(*beginStart, *beginEnd - *beginStart);
  p.inner = text.substr(*beginEnd, *endStart - *beginEnd);
  p.endLine = text.substr(*endStart, *endEnd - *endStart);
  p.after = text.substr(*endEnd);
  return p;
}

std::string renderKeyBlock(const std::vector<SshKey>& keys, int64_t now) {
  std::vector<const SshKey*> chosen;
  for (const auto& k : keys) {
    if (k.installableAt(now) && renderable(k)) chosen.push_back(&k);
  }
  std::sort(chosen.begin(), chosen.end(), [](const SshKey* a, const SshKey* b) { return a->id < b->id; });
  std::string out;
  out.reserve(64 + chosen.size() * 128);
  out += kKeysBeginMarker;
  out += '\n';
  for (const SshKey* k : chosen) {
    out += keyLine(*k);
    out += '\n';
  }
  out += kKeysEndMarker;
  out += '\n';
  return out;
}

Result<std::string> mergeAuthorizedKeys(const std::string& existing, const std::string& block) {
  auto parsed = parseAuthorizedKeys(existing);
  if (!parsed) return parsed.status();
  return mergeParsed(*parsed, block);
}

std::vector<std::string> installedKeyIds(const std::string& existing) {
  std::vector<std::string> ids;
  auto parsed = parseAuthorizedKeys(existing);
  if (!parsed || !parsed->hasBlock) return ids;
  const std::string& inner = parsed->inner;
  size_t pos = 0;
  while (pos < inner.size()) {
    size_t nl = inner.find('\n', pos);
    size_t end = nl == std::string::npos ? inner.size() : nl + 1;
    std::string body = lineBody(inner, pos, end);
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

std::string sshDirPath(const std::string& home) {
  return (home.size() > 1 && home.back() == '/') ? home + ".ssh" : home + "/.ssh";
}

std::string authorizedKeysPath(const std::string& home) { return sshDirPath(home) + "/authorized_keys"; }

Result<SshKeysCurrent> observeSshKeys(Host& host, const std::string& user) {
  SshKeysCurrent c;
  auto found = host.findUser(user);
  if (!found) return found.status();
  if (*found) {
    c.userExists = true;
    c.uid = (*found)->uid;
    c.gid = (*found)->gid;
    c.home = (*found)->home;
  } else {
    c.home = "/home/" + user;  // what login_user will create
  }
  if (c.home.empty() || c.home[0] != '/' || c.home == "/") {
    return Status::error(ErrorCode::kInvalid, "keys of " + user + ": home '" + c.home + "' is not usable", c.home);
  }
  auto home = host.lstat(c.home);
  if (!home) return home.status();
  if (!home->exists()) return c;
  if (home->type != FileType::kDirectory) return unsafe(c.home, "the home is not a directory");

  const std::string dir = sshDirPath(c.home);
  auto sshDir = host.lstat(dir);
  if (!sshDir) return sshDir.status();
  c.sshDir = *sshDir;
  if (!c.sshDir.exists()) return c;
  if (c.sshDir.type == FileType::kSymlink) return unsafe(dir, "is a symbolic link");
  if (c.sshDir.type != FileType::kDirectory) return unsafe(dir, "is not a directory");
  if (c.userExists && c.sshDir.uid != c.uid && c.sshDir.uid != 0) {
    return unsafe(dir, "owned by uid " + std::to_string(c.sshDir.uid) + ", not by " + user + " or root");
  }

  const std::string file = authorizedKeysPath(c.home);
  auto keysFile = host.lstat(file);
  if (!keysFile) return keysFile.status();
  c.keysFile = *keysFile;
  if (!c.keysFile.exists()) return c;
  if (c.keysFile.type == FileType::kSymlink) return unsafe(file, "is a symbolic link");
  if (c.keysFile.type != FileType::kRegular) return unsafe(file, "is not a regular file");
  if (c.keysFile.nlink > 1) {
    return unsafe(file, "has " + std::to_string(c.keysFile.nlink) + " hard links");
  }
  if (c.userExists && c.keysFile.uid != c.uid && c.keysFile.uid != 0) {
    return unsafe(file, "owned by uid " + std::to_string(c.keysFile.uid) + ", not by " + user + " or root");
  }
  auto text = host.readFile(file, kMaxKeysFileBytes);
  if (!text) return text.status();
  auto parsed = parseAuthorizedKeys(*text);
  if (!parsed) {
    return Status::error(ErrorCode::kInvalid,
                         "parse " + file + ": " + parsed.status().message() + "; fix or remove the markers by hand",
                         file);
  }
  c.content = std::move(*text);
  return c;
}

std::vector<Action> planSshKeys(const SshKeysDesired& desired, const SshKeysCurrent& current) {
  std::vector<Action> actions;
  const std::string dir = sshDirPath(current.home);
  const std::string file = authorizedKeysPath(current.home);

  if (!current.sshDir.exists()) {
    Action a;
    a.provider = "ssh_keys";
    a.verb = "create";
    a.object = dir;
    a.detail = "directory " + modeText(kSshDirMode) + " owned by " + desired.user;
    a.after = "directory " + modeText(kSshDirMode);
    actions.push_back(std::move(a));
  } else if (current.userExists && (current.sshDir.mode != kSshDirMode || current.sshDir.uid != current.uid ||
                                    current.sshDir.gid != current.gid)) {
    Action a;
    a.provider = "ssh_keys";
    a.verb = "fix";
    a.object = dir;
    a.detail = "mode " + modeText(current.sshDir.mode) + " -> " + modeText(kSshDirMode) + ", owner " +
               ownerText(current.sshDir.uid, current.sshDir.gid) + " -> " + ownerText(current.uid, current.gid);
    a.before = "mode " + modeText(current.sshDir.mode) + " owner " + ownerText(current.sshDir.uid, current.sshDir.gid);
    a.after = "mode " + modeText(kSshDirMode) + " owner " + ownerText(current.uid, current.gid);
    actions.push_back(std::move(a));
  }

  const std::string block = renderKeyBlock(desired.keys, desired.now);
  std::string merged;
  std::map<std::string, std::string> have;
  bool hadBlock = false;
  if (current.content) {
    auto parsed = parseAuthorizedKeys(*current.content);
    if (!parsed) return actions;
    merged = mergeParsed(*parsed, block);
    hadBlock = parsed->hasBlock;
    if (hadBlock) have = blockLines(parsed->inner);
  } else {
    merged = block;
  }
  const auto want = blockLines(block.substr(std::string(kKeysBeginMarker).size() + 1));
  const bool contentDiffers = !current.content || merged != *current.content;
  const bool ownDiffers = current.keysFile.exists() && current.userExists &&
                          (current.keysFile.mode != kKeysFileMode || current.keysFile.uid != current.uid ||
                           current.keysFile.gid != current.gid);
  if (!contentDiffers && !ownDiffers) return actions;

  std::vector<std::string> parts;
  if (!current.content) {
    parts.push_back("new file");
  } else if (contentDiffers) {
    std::string changes = keyChanges(have, want);
    if (!changes.empty()) {
      parts.push_back(changes);
    } else {
      parts.push_back(hadBlock ? "rewrite managed block" : "add managed block");
    }
  }
  if (ownDiffers) {
    if (current.keysFile.mode != kKeysFileMode) {
      parts.push_back("mode " + modeText(current.keysFile.mode) + " -> " + modeText(kKeysFileMode));
    }
    if (current.keysFile.uid != current.uid || current.keysFile.gid != current.gid) {
      parts.push_back("owner " + ownerText(current.keysFile.uid, current.keysFile.gid) + " -> " +
                      ownerText(current.uid, current.gid));
    }
  }
  parts.push_back(std::to_string(want.size()) + (want.size() == 1 ? " key" : " keys"));
  // Keys that go away are revoked with the other revocations; new keys are a grant, written once
  // the configuration confining the login user is live. A change with both is two writes.
  const bool adds = std::any_of(want.begin(), want.end(), [&](const auto& w) {
    auto it = have.find(w.first);
    return it == have.end() || it->second != w.second;
  });
  const bool removes = std::any_of(have.begin(), have.end(), [&](const auto& h) {
    auto it = want.find(h.first);
    return it == want.end() || it->second != h.second;
  });
  if (adds && removes && current.content) {
    std::vector<SshKey> kept;
    for (const auto& k : desired.keys) {
      auto it = have.find(k.id);
      auto w = want.find(k.id);
      if (it != have.end() && w != want.end() && it->second == w->second) kept.push_back(k);
    }
    auto parsed = parseAuthorizedKeys(*current.content);
    if (parsed) {
      Action r;
      r.stage = Stage::kRevoke;
      r.provider = "ssh_keys";
      r.verb = "write";
      r.object = file;
      r.detail = "keys revoked before new ones are granted";
      r.payload = renderKeyBlock(kept, desired.now);
      r.before = idSummary(have);
      r.after = "fewer keys";
      actions.push_back(std::move(r));
    }
  }
  Action a;
  // A file that does not exist yet needs the user (made in the preparation stage) first.
  a.stage = adds ? Stage::kGrant : (current.content ? Stage::kRevoke : Stage::kPrepare);
  a.provider = "ssh_keys";
  a.verb = "write";
  a.object = file;
  for (const auto& p : parts) a.detail += (a.detail.empty() ? "" : "; ") + p;
  a.payload = block;
  a.before = current.content ? idSummary(have) : "missing";
  a.after = idSummary(want);
  actions.push_back(std::move(a));
  return actions;
}

SshKeysProvider::SshKeysProvider(Logger log) : log_(std::move(log)) {}

std::string SshKeysProvider::name() const { return "ssh_keys"; }

Result<std::vector<Action>> SshKeysProvider::plan(const Desired& desired, Host& host) {
  auto current = observeSshKeys(host, desired.host.loginUser);
  if (!current) return current.status();
  for (const auto& k : desired.document.keys) {
    if (k.installableAt(desired.now) && !renderable(k)) {
      log_->warn("key {} skipped: its type, base64 or id is not a plain token", k.id);
    }
  }
  SshKeysDesired want{desired.host.loginUser, desired.document.keys, desired.now};
  auto actions = planSshKeys(want, *current);
  for (const auto& a : actions) log_->debug("plan: {}", a.describe());
  return actions;
}

Status SshKeysProvider::apply(const Action& action, const Desired& desired, Host& host) {
  const std::string& user = desired.host.loginUser;
  auto current = observeSshKeys(host, user);
  if (!current) return current.status();
  if (!current->userExists) {
    return Status::error(ErrorCode::kNotFound, "write keys of " + user + ": no such user");
  }
  const SshKeysCurrent& c = *current;
  const std::string dir = sshDirPath(c.home);
  const std::string file = authorizedKeysPath(c.home);
  auto home = host.lstat(c.home);
  if (!home) return home.status();
  if (!home->exists()) {
    return Status::error(ErrorCode::kNotFound, "write keys of " + user + ": home " + c.home + " does not exist",
                         c.home);
  }

  // Every action makes sure .ssh is right first: a write planned alone must not land in a
  // directory that someone loosened since plan().
  if (!c.sshDir.exists()) {
    if (Status s = host.makeDirectory(dir, {kSshDirMode, c.uid, c.gid}); !s) return s;
    log_->info("created {} ({} {})", dir, modeText(kSshDirMode), user);
  } else if (c.sshDir.mode != kSshDirMode || c.sshDir.uid != c.uid || c.sshDir.gid != c.gid) {
    // A directory cannot be a hard link and setOwner/setMode refuse symlinks, so fixing it in
    // place cannot reach another file.
    log_->warn("drift on {}: mode {} owner {}, setting {} {}", dir, modeText(c.sshDir.mode),
               ownerText(c.sshDir.uid, c.sshDir.gid), modeText(kSshDirMode), ownerText(c.uid, c.gid));
    if (Status s = host.setOwner(dir, c.uid, c.gid); !s) return s;
    if (Status s = host.setMode(dir, kSshDirMode); !s) return s;
  }
  if (action.verb != "write") return Status::ok();

  std::string merged = action.payload;
  if (c.content) {
    auto m = mergeAuthorizedKeys(*c.content, action.payload);
    if (!m) return Status::error(ErrorCode::kInvalid, "parse " + file + ": " + m.status().message(), file);
    merged = std::move(*m);
  }
  const bool ownDiffers =
      c.keysFile.exists() && (c.keysFile.mode != kKeysFileMode || c.keysFile.uid != c.uid || c.keysFile.gid != c.gid);
  if (c.content && merged == *c.content && !ownDiffers) return Status::ok();
  if (ownDiffers) {
    log_->warn("drift on {}: mode {} owner {}, rewriting it {} {}", file, modeText(c.keysFile.mode),
               ownerText(c.keysFile.uid, c.keysFile.gid), modeText(kKeysFileMode), ownerText(c.uid, c.gid));
  }
  if (Status s = host.writeFileAtomic(file, merged, {kKeysFileMode, c.uid, c.gid}); !s) return s;
  log_->info("wrote {} ({})", file, action.detail);
  return Status::ok();
}

}  // namespace pim
