#include "agent/document/document.h"

#include <Poco/Dynamic/Var.h>
#include <Poco/Exception.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/ParseHandler.h>
#include <Poco/JSON/Parser.h>
#include <Poco/JSONString.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <set>
#include <sstream>
#include <unordered_map>
#include <vector>

#include "agent/document/validators.h"

namespace pim {
namespace {

using Poco::Dynamic::Var;
using Poco::JSON::Array;
using Poco::JSON::Object;

Status rejected(std::string message) { return Status::error(ErrorCode::kRejected, std::move(message)); }

// ---------------------------------------------------------------------------------------------
// Before the JSON parser: the checks that keep hostile input from costing stack or memory.
// ---------------------------------------------------------------------------------------------

// Strict UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF); returns the offset of
// the first bad byte or npos.
size_t firstInvalidUtf8(std::string_view s) {
  const auto* b = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  auto cont = [&](size_t at, unsigned char lo, unsigned char hi) { return at < n && b[at] >= lo && b[at] <= hi; };
  while (i < n) {
    const unsigned char c = b[i];
    if (c < 0x80) {
      ++i;
    } else if (c >= 0xc2 && c <= 0xdf) {
      if (!cont(i + 1, 0x80, 0xbf)) return i;
      i += 2;
    } else if (c >= 0xe0 && c <= 0xef) {
      const unsigned char lo = (c == 0xe0) ? 0xa0 : 0x80;
      const unsigned char hi = (c == 0xed) ? 0x9f : 0xbf;
      if (!cont(i + 1, lo, hi) || !cont(i + 2, 0x80, 0xbf)) return i;
      i += 3;
    } else if (c >= 0xf0 && c <= 0xf4) {
      const unsigned char lo = (c == 0xf0) ? 0x90 : 0x80;
      const unsigned char hi = (c == 0xf4) ? 0x8f : 0xbf;
      if (!cont(i + 1, lo, hi) || !cont(i + 2, 0x80, 0xbf) || !cont(i + 3, 0x80, 0xbf)) return i;
      i += 4;
    } else {
      return i;
    }
  }
  return std::string_view::npos;
}

// NUL bytes, UTF-8, the nesting depth and the number of values, counted outside strings, so that
// the recursive parser never sees more than kMaxDocumentDepth levels and the parsed tree stays a
// small multiple of the body (an empty Poco object costs ~900 bytes, so 4 MiB of "{}," would
// otherwise take more than 1 GiB).
Status preScan(std::string_view body) {
  if (body.find('\0') != std::string_view::npos) {
    return rejected("document: contains a NUL byte at offset " + std::to_string(body.find('\0')));
  }
  if (size_t bad = firstInvalidUtf8(body); bad != std::string_view::npos) {
    return rejected("document: not valid UTF-8 at offset " + std::to_string(bad));
  }
  int depth = 0;
  bool inString = false;
  bool escaped = false;
  size_t containers = 0;
  size_t separators = 0;
  for (char c : body) {
    if (inString) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        inString = false;
      }
      continue;
    }
    if (c == '"') {
      inString = true;
    } else if (c == '{' || c == '[') {
      if (++depth > kMaxDocumentDepth) {
        return rejected("document: nesting deeper than " + std::to_string(kMaxDocumentDepth) + " levels");
      }
      if (++containers > kMaxJsonContainers) {
        return rejected("document: more than " + std::to_string(kMaxJsonContainers) + " JSON objects and arrays");
      }
    } else if (c == '}' || c == ']') {
      --depth;  // unbalanced input is left for the parser to report
    } else if (c == ',') {
      // Every value after the first in an array or object follows a comma.
      if (++separators >= kMaxJsonValues) {
        return rejected("document: more than " + std::to_string(kMaxJsonValues) + " JSON values");
      }
    }
  }
  return Status::ok();
}

// ---------------------------------------------------------------------------------------------
// The JSON parser: Poco's, with a handler that refuses duplicate keys (parsers disagree on which
// one wins, so a document that says two things must not be applied) and knows the current path.
// ---------------------------------------------------------------------------------------------

class DuplicateKey : public std::exception {
 public:
  explicit DuplicateKey(std::string message) : message_(std::move(message)) {}
  const char* what() const noexcept override { return message_.c_str(); }

 private:
  std::string message_;
};

class StrictHandler : public Poco::JSON::ParseHandler {
 public:
  // Members are kept sorted: Poco's insertion-order mode scans every key on each insert, which
  // is quadratic in the member count.
  StrictHandler() : ParseHandler(false) {}

  void reset() override {
    ParseHandler::reset();
    frames_.clear();
  }
  void startObject() override {
    beforeValue();
    frames_.push_back(Frame{true, {}, 0, false, {}});
    ParseHandler::startObject();
  }
  void endObject() override {
    if (!frames_.empty()) frames_.pop_back();
    ParseHandler::endObject();
  }
  void startArray() override {
    beforeValue();
    frames_.push_back(Frame{false, {}, 0, false, {}});
    ParseHandler::startArray();
  }
  void endArray() override {
    if (!frames_.empty()) frames_.pop_back();
    ParseHandler::endArray();
  }
  void key(const std::string& k) override {
    if (!frames_.empty() && frames_.back().object) {
      Frame& f = frames_.back();
      if (!f.keys.insert(k).second) {
        std::string where = path(frames_.size() - 1);
        throw DuplicateKey((where.empty() ? std::string("document") : where) + ": duplicate key '" +
                           printableForMessage(k) + "'");
      }
      f.key = k;
    }
    ParseHandler::key(k);
  }
  void value(int v) override {
    beforeValue();
    ParseHandler::value(v);
  }
  void value(unsigned v) override {
    beforeValue();
    ParseHandler::value(v);
  }
  void value(Poco::Int64 v) override {
    beforeValue();
    ParseHandler::value(v);
  }
  void value(Poco::UInt64 v) override {
    beforeValue();
    ParseHandler::value(v);
  }
  void value(const std::string& s) override {
    beforeValue();
    ParseHandler::value(s);
  }
  void value(double d) override {
    beforeValue();
    ParseHandler::value(d);
  }
  void value(bool b) override {
    beforeValue();
    ParseHandler::value(b);
  }
  void null() override {
    beforeValue();
    ParseHandler::null();
  }

 private:
  struct Frame {
    bool object;
    std::string key;  // objects: the member being read
    size_t index;     // arrays: the element being read
    bool started;     // arrays: at least one element seen
    std::set<std::string> keys;
  };

  void beforeValue() {
    if (!frames_.empty() && !frames_.back().object) {
      Frame& f = frames_.back();
      if (f.started) ++f.index;
      f.started = true;
    }
  }
  // The path of the value being read in frames_[0..upTo).
  std::string path(size_t upTo) const {
    std::string out;
    for (size_t i = 0; i < upTo; ++i) {
      const Frame& f = frames_[i];
      if (f.object) {
        if (!out.empty()) out += '.';
        out += printableForMessage(f.key);
      } else {
        out += "[" + std::to_string(f.index) + "]";
      }
    }
    return out;
  }

  std::vector<Frame> frames_;
};

// Parses JSON text already through preScan(). Errors: kRejected naming the cause.
Result<Var> parseJson(std::string_view body) {
  Poco::JSON::Parser parser(new StrictHandler);
  try {
    return parser.parse(std::string(body));
  } catch (const DuplicateKey& e) {
    return rejected(e.what());
  } catch (const Poco::Exception& e) {
    // Poco's handler cannot hold a scalar at the top; say what is wrong rather than its message.
    const size_t first = body.find_first_not_of(" \t\r\n");
    if (first != std::string_view::npos &&
        std::string_view("\"-0123456789ntf").find(body[first]) != std::string_view::npos) {
      return rejected("document: the top level must be an object");
    }
    return rejected("document: not JSON: " + printableForMessage(e.displayText(), 200));
  } catch (const std::exception& e) {
    return rejected("document: not JSON: " + printableForMessage(e.what(), 200));
  }
}

// ---------------------------------------------------------------------------------------------
// Typed access to the parsed tree.
// ---------------------------------------------------------------------------------------------

bool isObject(const Var& v) { return !v.isEmpty() && v.type() == typeid(Object::Ptr); }
bool isArray(const Var& v) { return !v.isEmpty() && v.type() == typeid(Array::Ptr); }
bool isNull(const Var& v) { return v.isEmpty(); }

std::string jsonType(const Var& v) {
  if (v.isEmpty()) return "null";
  if (isObject(v)) return "an object";
  if (isArray(v)) return "an array";
  if (v.isBoolean()) return "a boolean";
  if (v.isString()) return "a string";
  if (v.isNumeric()) return "a number";
  return "an unknown value";
}

// An integer that fits int64; nullopt for any other value (1.0 and 1e0 are not integers).
std::optional<int64_t> asInt64(const Var& v) {
  if (v.isEmpty() || !v.isInteger() || v.isBoolean()) return std::nullopt;
  try {
    return v.convert<Poco::Int64>();
  } catch (const Poco::Exception&) {
    return std::nullopt;
  }
}

Object::Ptr objectOf(const Var& v) { return v.extract<Object::Ptr>(); }
Array::Ptr arrayOf(const Var& v) { return v.extract<Array::Ptr>(); }

// Lists every member of `obj` that is not in `known` as an unknown field.
void noteUnknown(const Object& obj, std::initializer_list<std::string_view> known, const std::string& where,
                 std::vector<std::string>& out) {
  for (const std::string& name : obj.getNames()) {
    if (std::find(known.begin(), known.end(), name) == known.end()) {
      out.push_back((where.empty() ? std::string() : where + ".") + printableForMessage(name));
    }
  }
}

// A required section: present, of the expected type.
Status requireMember(const Object& obj, const std::string& name, const std::string& path, bool wantObject) {
  if (!obj.has(name)) return rejected(path + ": missing");
  const Var v = obj.get(name);
  if (wantObject ? !isObject(v) : !isArray(v)) {
    return rejected(path + ": must be " + (wantObject ? "an object" : "an array") + ", got " + jsonType(v));
  }
  return Status::ok();
}

std::string indexPath(const std::string& list, size_t i) { return list + "[" + std::to_string(i) + "]"; }

// Duplicate string values of `field` across the objects of `list` (other types are skipped here
// and reported per entry).
Status checkDuplicates(const Array& list, const std::string& listPath, const std::string& field) {
  std::unordered_map<std::string, size_t> seen;
  for (size_t i = 0; i < list.size(); ++i) {
    const Var e = list.get(static_cast<unsigned>(i));
    if (!isObject(e)) continue;
    Object::Ptr obj = objectOf(e);
    if (!obj->has(field)) continue;
    const Var v = obj->get(field);
    if (!v.isString()) continue;
    const std::string s = v.extract<std::string>();
    auto [it, inserted] = seen.emplace(s, i);
    if (!inserted) {
      return rejected(indexPath(listPath, i) + "." + field + ": duplicate '" + printableForMessage(s) + "' (also in " +
                      indexPath(listPath, it->second) + ")");
    }
  }
  return Status::ok();
}

// Reads an optional boolean (default true).
std::optional<std::string> readActive(const Object& obj, bool& out) {
  out = true;
  if (!obj.has("active")) return std::nullopt;
  const Var v = obj.get("active");
  if (!v.isBoolean()) return "active: must be a boolean, got " + jsonType(v);
  out = v.extract<bool>();
  return std::nullopt;
}

// Reads a required string member; the error is "<name>: missing" or "<name>: must be a string".
std::optional<std::string> readString(const Object& obj, const std::string& name, std::string& out) {
  if (!obj.has(name)) return name + ": missing";
  const Var v = obj.get(name);
  if (!v.isString()) return name + ": must be a string, got " + jsonType(v);
  out = v.extract<std::string>();
  return std::nullopt;
}

// The owner is free text shown in `status` and logs only (never written to authorized_keys). The
// body was already checked to be strict UTF-8, so non-ASCII names ("Zoë") are fine; control
// characters (C0, DEL, C1) are not, since they could forge log lines or terminal output.
std::optional<std::string> checkOwner(const std::string& owner) {
  if (owner.size() > kMaxOwnerBytes) return "owner: longer than " + std::to_string(kMaxOwnerBytes) + " characters";
  for (size_t i = 0; i < owner.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(owner[i]);
    const bool c1 = c == 0xc2 && i + 1 < owner.size() && static_cast<unsigned char>(owner[i + 1]) < 0xa0;
    if (c < 0x20 || c == 0x7f || c1) return std::string("owner: contains a control character");
  }
  return std::nullopt;
}

// An entry's own allowed_sources: absent or null for none; otherwise a non-empty array of CIDRs
// (at most kMaxEntrySources), each valid. Anything else is the entry's error: fail closed, the
// entry is skipped rather than granted from the document's wider list.
std::optional<std::string> readEntrySources(const Object& obj, std::vector<std::string>& out) {
  out.clear();
  if (!obj.has("allowed_sources") || obj.isNull("allowed_sources")) return std::nullopt;
  const Var v = obj.get("allowed_sources");
  if (!isArray(v)) return "allowed_sources: must be an array of CIDRs, got " + jsonType(v);
  const Array& list = *arrayOf(v);
  if (list.size() == 0) return std::string("allowed_sources: empty: no address could log in with it");
  if (list.size() > kMaxEntrySources) {
    return "allowed_sources: " + std::to_string(list.size()) + " entries, at most " + std::to_string(kMaxEntrySources) +
           " allowed";
  }
  std::set<std::string> seen;
  for (size_t i = 0; i < list.size(); ++i) {
    const Var e = list.get(static_cast<unsigned>(i));
    const std::string where = "allowed_sources[" + std::to_string(i) + "]: ";
    if (!e.isString()) return where + "must be a string, got " + jsonType(e);
    auto c = parseCidr(e.extract<std::string>());
    if (!c) return where + c.status().message();
    seen.insert(c->text);
  }
  out.assign(seen.begin(), seen.end());
  return std::nullopt;
}

class DocumentReader {
 public:
  DocumentReader(const DocumentOptions& options, AccessDocument& doc) : options_(options), doc_(doc) {}

  void readKey(const Var& entry, size_t index) {
    const std::string where = indexPath("ssh.keys", index);
    if (!isObject(entry)) return skip(where, "must be an object, got " + jsonType(entry));
    const Object& obj = *objectOf(entry);
    noteUnknown(obj, {"id", "owner", "public_key", "active", "expires_at", "allowed_sources"}, where,
                doc_.unknownFields);
    SshKey key;
    if (auto err = readString(obj, "id", key.id)) return skip(where, *err);
    if (Status s = checkEntryId(key.id); !s) return skip(where, "id: " + s.message());
    // The owner only labels the key: absent or null is an empty label, not a reason to refuse it.
    if (obj.has("owner") && !obj.isNull("owner")) {
      if (auto err = readString(obj, "owner", key.owner)) return skip(key.id, *err);
    }
    if (auto err = checkOwner(key.owner)) return skip(key.id, *err);
    std::string text;
    if (auto err = readString(obj, "public_key", text)) return skip(key.id, *err);
    auto pk = parsePublicKey(text);
    if (!pk) return skip(key.id, "public_key: " + pk.status().message());
    key.key = *pk;
    if (auto err = readActive(obj, key.active)) return skip(key.id, *err);
    if (obj.has("expires_at")) {
      const Var v = obj.get("expires_at");
      if (v.isString()) {
        auto t = parseRfc3339(v.extract<std::string>());
        if (!t) return skip(key.id, "expires_at: " + t.status().message());
        key.expiresAt = *t;
      } else if (!isNull(v)) {
        return skip(key.id, "expires_at: must be null or an RFC 3339 time, got " + jsonType(v));
      }
    }
    if (auto err = readEntrySources(obj, key.allowedSources)) return skip(key.id, *err);
    doc_.keys.push_back(std::move(key));
  }

  void readAccount(const Var& entry, size_t index) {
    const std::string where = indexPath("sftp.accounts", index);
    if (!isObject(entry)) return skip(where, "must be an object, got " + jsonType(entry));
    const Object& obj = *objectOf(entry);
    noteUnknown(obj,
                {"id", "username", "password_hash", "folder", "active", "public_keys", "access", "allowed_sources"},
                where, doc_.unknownFields);
    // Whatever else is wrong, a valid username of an account we may manage stays locked.
    std::string lockable;
    if (obj.has("username") && obj.get("username").isString()) {
      std::string u = obj.get("username").extract<std::string>();
      if (checkUsername(u) && u != "root" && u != options_.loginUser) lockable = u;
    }
    auto skipAccount = [&](const std::string& label, const std::string& reason) {
      skip(label, reason);
      if (!lockable.empty()) doc_.lockedUsernames.push_back(lockable);
    };
    SftpAccount acc;
    if (auto err = readString(obj, "id", acc.id)) return skipAccount(where, *err);
    if (Status s = checkEntryId(acc.id); !s) return skipAccount(where, "id: " + s.message());
    if (auto err = readString(obj, "username", acc.username)) return skipAccount(acc.id, *err);
    if (Status s = checkUsername(acc.username); !s) return skipAccount(acc.id, "username: " + s.message());
    if (acc.username == "root") return skipAccount(acc.id, "username: 'root' is not allowed");
    if (acc.username == options_.loginUser) {
      return skipAccount(acc.id, "username: '" + acc.username + "' is the login user");
    }
    if (!obj.has("password_hash")) return skipAccount(acc.id, "password_hash: missing (null for key-only)");
    const Var hash = obj.get("password_hash");
    if (hash.isString()) {
      std::string h = hash.extract<std::string>();
      if (Status s = checkCryptHash(h); !s) return skipAccount(acc.id, "password_hash: " + s.message());
      acc.passwordHash = std::move(h);
    } else if (!isNull(hash)) {
      return skipAccount(acc.id, "password_hash: must be a string or null, got " + jsonType(hash));
    }
    std::string folder;
    if (auto err = readString(obj, "folder", folder)) return skipAccount(acc.id, *err);
    auto f = parseFolder(folder);
    if (!f) return skipAccount(acc.id, "folder: " + f.status().message());
    acc.folder = *f;
    if (auto err = readActive(obj, acc.active)) return skipAccount(acc.id, *err);
    // What the account may do: an unknown value must not fall back to more rights than meant.
    if (obj.has("access")) {
      std::string access;
      if (auto err = readString(obj, "access", access)) return skipAccount(acc.id, *err);
      auto parsed = parseSftpAccess(access);
      if (!parsed) return skipAccount(acc.id, "access: " + parsed.status().message());
      acc.access = *parsed;
    }
    if (auto err = readEntrySources(obj, acc.allowedSources)) return skipAccount(acc.id, *err);
    if (obj.has("public_keys")) {
      const Var keys = obj.get("public_keys");
      if (!isArray(keys)) return skipAccount(acc.id, "public_keys: must be an array, got " + jsonType(keys));
      const Array& list = *arrayOf(keys);
      for (size_t j = 0; j < list.size(); ++j) {
        const std::string keyLabel = acc.id + ".public_keys[" + std::to_string(j) + "]";
        const Var k = list.get(static_cast<unsigned>(j));
        if (!k.isString()) {
          skip(keyLabel, "must be a string, got " + jsonType(k));
          continue;
        }
        auto pk = parsePublicKey(k.extract<std::string>());
        if (!pk) {
          skip(keyLabel, pk.status().message());
          continue;
        }
        acc.publicKeys.push_back(*pk);
      }
    }
    doc_.accounts.push_back(std::move(acc));
  }

  void readTask(const Var& entry, size_t index) {
    const std::string where = indexPath("sudo.tasks", index);
    if (!isObject(entry)) return skip(where, "must be an object, got " + jsonType(entry));
    const Object& obj = *objectOf(entry);
    noteUnknown(obj, {"id", "command", "run_as", "active"}, where, doc_.unknownFields);
    SudoTask task;
    if (auto err = readString(obj, "id", task.id)) return skip(where, *err);
    if (Status s = checkEntryId(task.id); !s) return skip(where, "id: " + s.message());
    if (!obj.has("command")) return skip(task.id, "command: missing");
    const Var command = obj.get("command");
    if (!isArray(command)) return skip(task.id, "command: must be an array, got " + jsonType(command));
    const Array& words = *arrayOf(command);
    if (words.size() == 0) return skip(task.id, "command: empty (the program's absolute path comes first)");
    if (words.size() > 1 + kMaxSudoArguments) {
      return skip(task.id, "command: more than " + std::to_string(kMaxSudoArguments) + " arguments");
    }
    for (size_t j = 0; j < words.size(); ++j) {
      const std::string label = "command[" + std::to_string(j) + "]: ";
      const Var w = words.get(static_cast<unsigned>(j));
      if (!w.isString()) return skip(task.id, label + "must be a string, got " + jsonType(w));
      std::string text = w.extract<std::string>();
      if (Status s = j == 0 ? checkSudoProgram(text) : checkSudoArgument(text); !s) {
        return skip(task.id, label + s.message());
      }
      task.command.push_back(std::move(text));
    }
    if (obj.has("run_as")) {
      if (auto err = readString(obj, "run_as", task.runAs)) return skip(task.id, *err);
      if (Status s = checkUsername(task.runAs); !s) return skip(task.id, "run_as: " + s.message());
      if (task.runAs == options_.loginUser) {
        return skip(task.id, "run_as: '" + task.runAs + "' is the login user (a task runs as root or a system user)");
      }
    }
    if (auto err = readActive(obj, task.active)) return skip(task.id, *err);
    doc_.sudoTasks.push_back(std::move(task));
  }

  void readSource(const Var& entry, size_t index) {
    if (!entry.isString()) {
      return skip(indexPath("network.allowed_sources", index), "must be a string, got " + jsonType(entry));
    }
    const std::string text = entry.extract<std::string>();
    auto c = parseCidr(text);
    if (!c) return skip(printableForMessage(text, 128), c.status().message());
    if (std::find(doc_.allowedSources.begin(), doc_.allowedSources.end(), *c) == doc_.allowedSources.end()) {
      doc_.allowedSources.push_back(*c);
    }
  }

 private:
  void skip(const std::string& id, const std::string& reason) { doc_.skipped.push_back(SkippedEntry{id, reason}); }

  const DocumentOptions& options_;
  AccessDocument& doc_;
};

bool isSecretName(const std::string& name) {
  std::string lower = name;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return lower.find("password") != std::string::npos || lower.find("secret") != std::string::npos ||
         lower.find("token") != std::string::npos;
}

// Pretty-prints while parsing (no tree: linear time and memory) and prints "********" for every
// scalar under a secret member name; null stays null so that "key-only" remains visible.
class MaskingPrinter : public Poco::JSON::Handler {
 public:
  explicit MaskingPrinter(std::ostream& out) : out_(out) {}

  void reset() override {
    counts_.clear();
    afterKey_ = false;
    pending_ = false;
    secretDepth_ = 0;
  }
  void startObject() override { open('{'); }
  void endObject() override { close('}'); }
  void startArray() override { open('['); }
  void endArray() override { close(']'); }
  void key(const std::string& k) override {
    separate();
    Poco::toJSON(k, out_, Poco::JSON_WRAP_STRINGS);
    out_ << ": ";
    afterKey_ = true;
    pending_ = isSecretName(k);
  }
  void null() override {
    separate();
    out_ << "null";
    pending_ = false;
  }
  void value(int v) override { scalar(std::to_string(v)); }
  void value(unsigned v) override { scalar(std::to_string(v)); }
  void value(Poco::Int64 v) override { scalar(std::to_string(v)); }
  void value(Poco::UInt64 v) override { scalar(std::to_string(v)); }
  void value(bool v) override { scalar(v ? "true" : "false"); }
  void value(double v) override {
    // The shortest of 15 or 17 significant digits that reads back as the same double.
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.15g", v);
    if (std::strtod(buf, nullptr) != v) std::snprintf(buf, sizeof(buf), "%.17g", v);
    scalar(buf);
  }
  void value(const std::string& v) override {
    std::ostringstream quoted;
    Poco::toJSON(v, quoted, Poco::JSON_WRAP_STRINGS);
    scalar(quoted.str());
  }

 private:
  void scalar(const std::string& json) {
    separate();
    out_ << ((pending_ || secretDepth_ != 0) ? std::string("\"********\"") : json);
    pending_ = false;
  }
  // The comma and line break before an array element or an object member.
  void separate() {
    if (afterKey_) {
      afterKey_ = false;
      return;
    }
    if (counts_.empty()) return;
    if (counts_.back()++ > 0) out_ << ',';
    out_ << '\n' << std::string(2 * counts_.size(), ' ');
  }
  void open(char c) {
    separate();
    if (pending_ && secretDepth_ == 0) secretDepth_ = counts_.size() + 1;
    pending_ = false;
    out_ << c;
    counts_.push_back(0);
  }
  void close(char c) {
    if (counts_.empty()) return;
    const size_t n = counts_.back();
    counts_.pop_back();
    if (n > 0) out_ << '\n' << std::string(2 * counts_.size(), ' ');
    out_ << c;
    if (secretDepth_ == counts_.size() + 1) secretDepth_ = 0;
  }

  std::ostream& out_;
  std::vector<size_t> counts_;  // members/elements written per open container
  bool afterKey_ = false;       // a key was written; its value follows on the same line
  bool pending_ = false;        // the next value belongs to a secret member
  size_t secretDepth_ = 0;      // depth of the container that is a secret member's value, or 0
};

}  // namespace

Result<AccessDocument> parseDocument(std::string_view body, const DocumentOptions& options) {
  if (options.maxBytes > 0 && body.size() > static_cast<uint64_t>(options.maxBytes)) {
    return rejected("document: " + std::to_string(body.size()) + " bytes exceeds max_document_bytes " +
                    std::to_string(options.maxBytes));
  }
  if (Status s = preScan(body); !s) return s;
  auto parsed = parseJson(body);
  if (!parsed) return parsed.status();
  const Var& rootVar = *parsed;
  if (!isObject(rootVar)) return rejected("document: the top level must be an object, got " + jsonType(rootVar));
  const Object& root = *objectOf(rootVar);

  AccessDocument doc;
  if (!root.has("version")) return rejected("version: missing");
  {
    const Var v = root.get("version");
    auto n = asInt64(v);
    if (!n) return rejected("version: must be the integer 1, got " + jsonType(v));
    if (*n != 1) return rejected("version: must be 1, got " + std::to_string(*n));
    doc.version = *n;
  }
  if (!root.has("revision")) return rejected("revision: missing");
  {
    const Var v = root.get("revision");
    auto n = asInt64(v);
    if (!n) return rejected("revision: must be an integer >= 1, got " + jsonType(v));
    if (*n < 1) return rejected("revision: must be an integer >= 1, got " + std::to_string(*n));
    doc.revision = *n;
  }
  if (!root.has("instance")) return rejected("instance: missing");
  {
    const Var v = root.get("instance");
    if (!v.isString()) return rejected("instance: must be a string, got " + jsonType(v));
    doc.instance = v.extract<std::string>();
    for (unsigned char c : doc.instance) {
      if (c < 0x20 || c == 0x7f) return rejected("instance: contains a control character");
    }
    if (!options.expectedInstance.empty() && doc.instance != options.expectedInstance) {
      return rejected("instance: the document is for '" + printableForMessage(doc.instance) +
                      "', this agent is configured for '" + printableForMessage(options.expectedInstance) + "'");
    }
  }
  if (Status s = requireMember(root, "ssh", "ssh", true); !s) return s;
  const Object& ssh = *root.getObject("ssh");
  if (Status s = requireMember(ssh, "keys", "ssh.keys", false); !s) return s;
  if (Status s = requireMember(root, "sftp", "sftp", true); !s) return s;
  const Object& sftp = *root.getObject("sftp");
  if (Status s = requireMember(sftp, "accounts", "sftp.accounts", false); !s) return s;
  if (Status s = requireMember(root, "network", "network", true); !s) return s;
  const Object& network = *root.getObject("network");
  if (Status s = requireMember(network, "allowed_sources", "network.allowed_sources", false); !s) return s;

  const Array& keys = *ssh.getArray("keys");
  const Array& accounts = *sftp.getArray("accounts");
  const Array& sources = *network.getArray("allowed_sources");
  if (sources.size() > kMaxAllowedSources) {
    return rejected("network.allowed_sources: " + std::to_string(sources.size()) + " entries, at most " +
                    std::to_string(kMaxAllowedSources) + " allowed");
  }
  if (Status s = checkDuplicates(keys, "ssh.keys", "id"); !s) return s;
  if (Status s = checkDuplicates(accounts, "sftp.accounts", "id"); !s) return s;
  if (Status s = checkDuplicates(accounts, "sftp.accounts", "username"); !s) return s;

  // sudo is optional (absent or null: no task); when present it has the shape of the others.
  const Array* tasks = nullptr;
  if (root.has("sudo") && !root.isNull("sudo")) {
    if (Status s = requireMember(root, "sudo", "sudo", true); !s) return s;
    const Object& sudo = *root.getObject("sudo");
    if (Status s = requireMember(sudo, "tasks", "sudo.tasks", false); !s) return s;
    tasks = root.getObject("sudo")->getArray("tasks").get();
    if (tasks->size() > kMaxSudoTasks) {
      return rejected("sudo.tasks: " + std::to_string(tasks->size()) + " entries, at most " +
                      std::to_string(kMaxSudoTasks) + " allowed");
    }
    if (Status s = checkDuplicates(*tasks, "sudo.tasks", "id"); !s) return s;
    noteUnknown(sudo, {"tasks"}, "sudo", doc.unknownFields);
  }

  noteUnknown(root, {"version", "revision", "instance", "ssh", "sftp", "network", "sudo"}, "", doc.unknownFields);
  noteUnknown(ssh, {"keys"}, "ssh", doc.unknownFields);
  noteUnknown(sftp, {"accounts"}, "sftp", doc.unknownFields);
  noteUnknown(network, {"allowed_sources"}, "network", doc.unknownFields);

  DocumentReader reader(options, doc);
  for (size_t i = 0; i < keys.size(); ++i) reader.readKey(keys.get(static_cast<unsigned>(i)), i);
  for (size_t i = 0; i < accounts.size(); ++i) reader.readAccount(accounts.get(static_cast<unsigned>(i)), i);
  for (size_t i = 0; i < sources.size(); ++i) reader.readSource(sources.get(static_cast<unsigned>(i)), i);
  if (tasks != nullptr) {
    for (size_t i = 0; i < tasks->size(); ++i) reader.readTask(tasks->get(static_cast<unsigned>(i)), i);
  }
  return doc;
}

std::string maskSecrets(std::string_view body) {
  // The note is a JSON string so that callers may embed the result in JSON output as it is.
  auto note = [](const std::string& why) {
    std::ostringstream out;
    Poco::toJSON("(document not shown: " + why + ")", out, Poco::JSON_WRAP_STRINGS);
    return out.str();
  };
  if (Status s = preScan(body); !s) return note(s.message());
  std::ostringstream out;
  Poco::JSON::Parser parser(new MaskingPrinter(out));
  try {
    parser.parse(std::string(body));
  } catch (const std::exception&) {
    return note("it is not valid JSON");
  }
  return out.str();
}

}  // namespace pim
