#include "agent/document/document.h"

#include <catch2/catch.hpp>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace {

using pim::AccessDocument;
using pim::DocumentOptions;
using pim::parseDocument;

const std::string kExamples = PIM_SOURCE_DIR "/docs/examples/";

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

const std::string kEd =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF672WCNFtqcThBzVbXOfOSdud0k+tJpV0314p0yRK8S alice@example";
const std::string kEd2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAg7v4H/R7qlLTp6jImLLe8EscgHgg++alEsXvikDhGK bob@example";
const std::string kHash =
    "$6$exampleSalt1$pHYVlXEFLZqkut9Q5xM5jYWKUuC/qosvfRtZIM/gMgqEER6Maxx6bnVwImBJEfZtBXH1hbWoy.jhHPoyinVFG.";

std::string key(const std::string& id, const std::string& extra = "") {
  return R"({"id":")" + id + R"(","owner":"o@example.com","public_key":")" + kEd + "\"" + extra + "}";
}

std::string account(const std::string& id, const std::string& user, const std::string& extra = "") {
  return R"({"id":")" + id + R"(","username":")" + user + R"(","password_hash":")" + kHash + R"(","folder":".")" +
         extra + "}";
}

std::string doc(const std::string& keys, const std::string& accounts, const std::string& sources,
                const std::string& head = R"("version":1,"revision":3,"instance":"demo")") {
  return "{" + head + R"(,"ssh":{"keys":[)" + keys + R"(]},"sftp":{"accounts":[)" + accounts +
         R"(]},"network":{"allowed_sources":[)" + sources + "]}}";
}

AccessDocument parseOk(const std::string& body, const DocumentOptions& options = {}) {
  auto r = parseDocument(body, options);
  INFO(r.status().message());
  REQUIRE(r.isOk());
  return *r;
}

std::string rejectReason(const std::string& body, const DocumentOptions& options = {}) {
  auto r = parseDocument(body, options);
  REQUIRE_FALSE(r.isOk());
  CHECK(r.status().code() == pim::ErrorCode::kRejected);
  return r.status().message();
}

std::set<std::string> skippedIds(const AccessDocument& d) {
  std::set<std::string> ids;
  for (const auto& s : d.skipped) ids.insert(s.id);
  return ids;
}

std::string reasonFor(const AccessDocument& d, const std::string& id) {
  for (const auto& s : d.skipped) {
    if (s.id == id) return s.reason;
  }
  return "(not skipped)";
}

}  // namespace

// --- the samples of the spec -----------------------------------------------------------------

TEST_CASE("document: minimal.json", "[document][samples]") {
  auto d = parseOk(readFile(kExamples + "minimal.json"), {"demo-staging", "akeneo", 4194304});
  CHECK(d.version == 1);
  CHECK(d.revision == 1);
  CHECK(d.instance == "demo-staging");
  CHECK(d.skipped.empty());
  CHECK(d.unknownFields.empty());
  REQUIRE(d.keys.size() == 1);
  CHECK(d.keys[0].id == "k-alice");
  CHECK(d.keys[0].owner == "alice@example.com");
  CHECK(d.keys[0].key.type == "ssh-ed25519");
  CHECK(d.keys[0].key.comment == "alice@example");
  CHECK_FALSE(d.keys[0].expiresAt.has_value());
  REQUIRE(d.accounts.size() == 1);
  CHECK(d.accounts[0].username == "akeneosftp");
  CHECK(d.accounts[0].folder == ".");
  CHECK(d.accounts[0].passwordHash.has_value());
  CHECK(d.allowedSources == std::vector<pim::Cidr>{{"127.0.0.0/8"}, {"203.0.113.0/24"}});
}

TEST_CASE("document: full.json", "[document][samples]") {
  auto d = parseOk(readFile(kExamples + "full.json"));
  CHECK(d.revision == 7);
  CHECK(d.skipped.empty());
  CHECK(d.lockedUsernames.empty());
  REQUIRE(d.keys.size() == 5);
  const int64_t now = 1800000000;  // 2027-01-15
  std::vector<std::string> installable;
  for (const auto& k : d.keys) {
    if (k.installableAt(now)) installable.push_back(k.id);
  }
  CHECK(installable == std::vector<std::string>{"k-alice", "k-bob", "k-erin"});
  CHECK(d.keys[1].expiresAt == 4070908800);  // 2099-01-01
  CHECK(d.keys[2].expiresAt == 1577836800);  // 2020-01-01: expired, still valid
  CHECK(d.keys[3].active == false);
  CHECK(d.keys[4].key.type == "ssh-rsa");
  CHECK(d.keys[4].active);  // no expires_at: never
  REQUIRE(d.accounts.size() == 5);
  CHECK(d.accounts[0].access == pim::SftpAccess::kReadWrite);
  CHECK(d.accounts[1].access == pim::SftpAccess::kReadWrite);  // the default
  CHECK(d.accounts[3].access == pim::SftpAccess::kReadOnly);
  CHECK(d.accounts[4].access == pim::SftpAccess::kUploadOnly);
  REQUIRE(d.sudoTasks.size() == 4);
  CHECK(d.sudoTasks[0].command == std::vector<std::string>{"/usr/bin/systemctl", "restart", "php8.2-fpm"});
  CHECK(d.sudoTasks[1].runAs == "root");  // the default
  CHECK(d.sudoTasks[1].command[2] == "pim-worker@*.service");
  CHECK(d.sudoTasks[2].command == std::vector<std::string>{"/usr/bin/whoami"});
  CHECK(d.sudoTasks[2].runAs == "www-data");
  CHECK_FALSE(d.sudoTasks[3].active);
  CHECK(d.accounts[1].folder == "imports/erp");
  REQUIRE(d.accounts[1].publicKeys.size() == 1);
  CHECK(d.accounts[1].publicKeys[0].comment == "bob@example");
  CHECK_FALSE(d.accounts[2].passwordHash.has_value());
  CHECK_FALSE(d.accounts[2].active);
  CHECK(d.allowedSources.size() == 3);
  CHECK(d.allowedSources[2].text == "2001:db8:42::/48");
}

TEST_CASE("document: some-entries-invalid.json skips exactly six entries", "[document][samples]") {
  auto d = parseOk(readFile(kExamples + "some-entries-invalid.json"));
  CHECK(d.revision == 8);
  CHECK(d.skipped.size() == 6);
  CHECK(skippedIds(d) == std::set<std::string>{"k-bad", "k-opts", "k-weak", "sftp-plain", "sftp-escape", "not-a-cidr"});
  CHECK_THAT(reasonFor(d, "k-bad"), Catch::StartsWith("public_key: not valid base64"));
  CHECK_THAT(reasonFor(d, "k-opts"), Catch::Contains("options"));
  CHECK_THAT(reasonFor(d, "k-weak"), Catch::Contains("1024 bits"));
  CHECK(reasonFor(d, "sftp-plain") == "password_hash: not a supported crypt(3) hash ($y$, $6$, $5$, $2b$)");
  CHECK(reasonFor(d, "sftp-escape") == "folder: '..' is not allowed");
  CHECK_THAT(reasonFor(d, "not-a-cidr"), Catch::Contains("not a CIDR"));
  // As full.json otherwise.
  CHECK(d.keys.size() == 5);
  CHECK(d.accounts.size() == 3);
  CHECK(d.allowedSources.size() == 3);
  // The invalid accounts stay locked, never removed.
  CHECK(std::set<std::string>(d.lockedUsernames.begin(), d.lockedUsernames.end()) ==
        std::set<std::string>{"plainpw", "escaper"});
  for (const auto& s : d.skipped) CHECK(s.reason.find("hunter2") == std::string::npos);
}

TEST_CASE("document: the rejected samples are rejected", "[document][samples]") {
  CHECK(rejectReason(readFile(kExamples + "rejected-version.json")) == "version: must be 1, got 2");
  CHECK(rejectReason(readFile(kExamples + "rejected-duplicate-username.json")) ==
        "sftp.accounts[1].username: duplicate 'akeneosftp' (also in sftp.accounts[0])");
}

// --- whole-document rejections ---------------------------------------------------------------

TEST_CASE("document: whole-document rejections name the field", "[document]") {
  const std::string keys = key("k1");
  const std::string accs = account("a1", "sftpuser");
  const std::string srcs = R"("10.0.0.0/8")";
  std::string manySources;
  for (int i = 0; i < 1025; ++i)
    manySources += std::string(i ? "," : "") + "\"10.0.0." + std::to_string(i % 256) + "/32\"";
  struct Case {
    std::string name;
    std::string body;
    std::string why;
  };
  const std::vector<Case> cases = {
      {"empty body", "", "not JSON"},
      {"truncated", doc(keys, accs, srcs).substr(0, 40), "not JSON"},
      {"trailing garbage", doc(keys, accs, srcs) + " x", "not JSON"},
      {"two documents", doc(keys, accs, srcs) + doc(keys, accs, srcs), "not JSON"},
      {"comment", "/* hi */" + doc(keys, accs, srcs), "not JSON"},
      {"single quotes", "{'version':1}", "not JSON"},
      {"array at top", "[" + doc(keys, accs, srcs) + "]", "top level must be an object, got an array"},
      {"null at top", "null", "top level"},
      {"number at top", "1", "top level"},
      {"version missing", doc(keys, accs, srcs, R"("revision":3,"instance":"demo")"), "version: missing"},
      {"version 2", doc(keys, accs, srcs, R"("version":2,"revision":3,"instance":"demo")"),
       "version: must be 1, got 2"},
      {"version 0", doc(keys, accs, srcs, R"("version":0,"revision":3,"instance":"demo")"),
       "version: must be 1, got 0"},
      {"version string", doc(keys, accs, srcs, R"("version":"1","revision":3,"instance":"demo")"),
       "version: must be the integer 1, got a string"},
      {"version float", doc(keys, accs, srcs, R"("version":1.0,"revision":3,"instance":"demo")"),
       "version: must be the integer 1, got a number"},
      {"version true", doc(keys, accs, srcs, R"("version":true,"revision":3,"instance":"demo")"), "version"},
      {"revision missing", doc(keys, accs, srcs, R"("version":1,"instance":"demo")"), "revision: missing"},
      {"revision 0", doc(keys, accs, srcs, R"("version":1,"revision":0,"instance":"demo")"),
       "revision: must be an integer >= 1, got 0"},
      {"revision negative", doc(keys, accs, srcs, R"("version":1,"revision":-4,"instance":"demo")"), "revision"},
      {"revision string", doc(keys, accs, srcs, R"("version":1,"revision":"3","instance":"demo")"), "revision"},
      {"revision 1.5", doc(keys, accs, srcs, R"("version":1,"revision":1.5,"instance":"demo")"), "revision"},
      {"revision overflow", doc(keys, accs, srcs, R"("version":1,"revision":9223372036854775808,"instance":"demo")"),
       "revision"},
      {"instance missing", doc(keys, accs, srcs, R"("version":1,"revision":3)"), "instance: missing"},
      {"instance number", doc(keys, accs, srcs, R"("version":1,"revision":3,"instance":5)"),
       "instance: must be a string"},
      {"instance control char", doc(keys, accs, srcs, R"("version":1,"revision":3,"instance":"a\u001b")"),
       "instance: contains a control character"},
      {"ssh missing",
       R"({"version":1,"revision":3,"instance":"demo","sftp":{"accounts":[]},"network":{"allowed_sources":[]}})",
       "ssh: missing"},
      {"ssh array",
       R"({"version":1,"revision":3,"instance":"demo","ssh":[],"sftp":{"accounts":[]},"network":{"allowed_sources":[]}})",
       "ssh: must be an object, got an array"},
      {"ssh.keys missing",
       R"({"version":1,"revision":3,"instance":"demo","ssh":{},"sftp":{"accounts":[]},"network":{"allowed_sources":[]}})",
       "ssh.keys: missing"},
      {"ssh.keys object",
       R"({"version":1,"revision":3,"instance":"demo","ssh":{"keys":{}},"sftp":{"accounts":[]},"network":{"allowed_sources":[]}})",
       "ssh.keys: must be an array, got an object"},
      {"sftp null",
       R"({"version":1,"revision":3,"instance":"demo","ssh":{"keys":[]},"sftp":null,"network":{"allowed_sources":[]}})",
       "sftp: must be an object, got null"},
      {"sftp.accounts string",
       R"({"version":1,"revision":3,"instance":"demo","ssh":{"keys":[]},"sftp":{"accounts":"x"},"network":{"allowed_sources":[]}})",
       "sftp.accounts: must be an array, got a string"},
      {"network missing", R"({"version":1,"revision":3,"instance":"demo","ssh":{"keys":[]},"sftp":{"accounts":[]}})",
       "network: missing"},
      {"allowed_sources object",
       R"({"version":1,"revision":3,"instance":"demo","ssh":{"keys":[]},"sftp":{"accounts":[]},"network":{"allowed_sources":{}}})",
       "network.allowed_sources: must be an array"},
      {"1025 sources", doc(keys, accs, manySources), "network.allowed_sources: 1025 entries, at most 1024"},
      {"duplicate key id", doc(key("k1") + "," + key("k2") + "," + key("k1"), accs, srcs),
       "ssh.keys[2].id: duplicate 'k1' (also in ssh.keys[0])"},
      {"duplicate account id", doc(keys, account("a1", "u1") + "," + account("a1", "u2"), srcs),
       "sftp.accounts[1].id: duplicate 'a1' (also in sftp.accounts[0])"},
      {"duplicate username", doc(keys, account("a1", "u1") + "," + account("a2", "u1"), srcs),
       "sftp.accounts[1].username: duplicate 'u1' (also in sftp.accounts[0])"},
      {"duplicate username of a bad entry",
       doc(keys, account("a1", "u1") + "," + account("a2", "u1", R"(,"active":"x")"), srcs), "duplicate 'u1'"},
      {"duplicate JSON key at top", R"({"version":1,"version":2})", "document: duplicate key 'version'"},
      {"duplicate JSON key in an entry",
       doc(key("k1") + "," + key("k2", R"(,"active":true,"active":false)"), accs, srcs),
       "ssh.keys[1]: duplicate key 'active'"},
      {"NUL byte", doc(keys, accs, srcs).insert(10, std::string(1, '\0')), "NUL byte"},
      {"invalid UTF-8", doc(keys, accs, srcs, "\"version\":1,\"revision\":3,\"instance\":\"\xff\""), "not valid UTF-8"},
      {"overlong UTF-8", doc(keys, accs, srcs, "\"version\":1,\"revision\":3,\"instance\":\"\xc0\xaf\""), "UTF-8"},
      {"UTF-16 surrogate in UTF-8", doc(keys, accs, srcs, "\"version\":1,\"revision\":3,\"instance\":\"\xed\xa0\x80\""),
       "UTF-8"},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    CHECK_THAT(rejectReason(c.body), Catch::Contains(c.why));
  }
}

TEST_CASE("document: instance must match when configured", "[document]") {
  const std::string body = doc(key("k1"), "", "");
  CHECK(parseOk(body).instance == "demo");
  CHECK(parseOk(body, {"demo", "akeneo", 4194304}).instance == "demo");
  CHECK_THAT(rejectReason(body, {"other", "akeneo", 4194304}),
             Catch::Contains("instance: the document is for 'demo', this agent is configured for 'other'"));
}

TEST_CASE("document: size limit", "[document]") {
  // A 10 MB body is refused before it is parsed.
  std::string big = doc(key("k1"), "", "");
  big.insert(1, "\"pad\":\"" + std::string(10 * 1024 * 1024, 'x') + "\",");
  CHECK(rejectReason(big) == "document: " + std::to_string(big.size()) + " bytes exceeds max_document_bytes 4194304");
  // The same body within a larger limit parses, and the pad is an unknown field.
  auto d = parseOk(big, {"", "akeneo", 16 * 1024 * 1024});
  CHECK(d.unknownFields == std::vector<std::string>{"pad"});
  // Exactly at the limit is fine.
  const std::string small = doc(key("k1"), "", "");
  CHECK(parseDocument(small, {"", "akeneo", static_cast<int64_t>(small.size())}).isOk());
  CHECK_FALSE(parseDocument(small, {"", "akeneo", static_cast<int64_t>(small.size()) - 1}).isOk());
}

TEST_CASE("document: nesting depth 64 is accepted, 65 rejected before parsing", "[document]") {
  auto nested = [](int arrays) {
    // The top-level object is level 1; `arrays` more levels inside an unknown field.
    return doc(key("k1"), "", "").insert(1, "\"deep\":" + std::string(arrays, '[') + std::string(arrays, ']') + ",");
  };
  auto d = parseOk(nested(63));
  CHECK(d.unknownFields == std::vector<std::string>{"deep"});
  CHECK(rejectReason(nested(64)) == "document: nesting deeper than 64 levels");
  // Hostile depth far beyond the stack is refused the same way.
  CHECK(rejectReason(std::string(1000000, '[')) == "document: nesting deeper than 64 levels");
  CHECK(rejectReason(std::string(100000, '{')) == "document: nesting deeper than 64 levels");
  // Brackets inside strings (also after escaped quotes) do not count.
  const std::string inString = "\"s\":\"\\\"" + std::string(200, '[') + "\\\\\",";
  CHECK(parseOk(doc(key("k1"), "", "").insert(1, inString)).keys.size() == 1);
}

TEST_CASE("document: value counts are bounded before parsing", "[document]") {
  // 4 MiB of "{}," would cost Poco more than 1 GiB; of "0," some 100 MB.
  auto withPad = [](const std::string& item, size_t n) {
    std::string pad = "\"pad\":[";
    for (size_t i = 0; i < n; ++i) pad += (i ? "," : "") + item;
    return doc(key("k1"), "", "").insert(1, pad + "],");
  };
  CHECK(rejectReason(withPad("{}", 40000)) == "document: more than 32768 JSON objects and arrays");
  CHECK(rejectReason(withPad("0", 300000)) == "document: more than 262144 JSON values");
  CHECK(parseOk(withPad("{}", 1000)).keys.size() == 1);
  CHECK(parseOk(withPad("0", 100000)).keys.size() == 1);
  // Commas and brackets inside strings do not count.
  CHECK(
      parseOk(doc(key("k1"), "", "").insert(1, "\"s\":\"" + std::string(300000, ',') + std::string(40000, '{') + "\","))
          .keys.size() == 1);
}

// --- per-entry problems ----------------------------------------------------------------------

TEST_CASE("document: bad keys are skipped one by one", "[document]") {
  struct Case {
    std::string entry;
    std::string id;
    std::string reason;
  };
  const std::vector<Case> cases = {
      {R"("not an object")", "ssh.keys[1]", "must be an object, got a string"},
      {key("bad id!"), "ssh.keys[1]", "id: must be 1-64 characters"},
      {R"({"owner":"o","public_key":")" + kEd + "\"}", "ssh.keys[1]", "id: missing"},
      {R"({"id":7,"owner":"o","public_key":")" + kEd + "\"}", "ssh.keys[1]", "id: must be a string, got a number"},
      {R"({"id":"k","owner":"a\u009bb","public_key":")" + kEd + "\"}", "k", "owner: contains"},
      {R"({"id":"k","owner":5,"public_key":")" + kEd + "\"}", "k", "owner: must be a string"},
      {R"({"id":"k","owner":")" + std::string(257, 'o') + R"(","public_key":")" + kEd + "\"}", "k",
       "owner: longer than 256"},
      {R"({"id":"k","owner":"a\u0007b","public_key":")" + kEd + "\"}", "k", "owner: contains"},
      {R"({"id":"k","owner":"o"})", "k", "public_key: missing"},
      {R"({"id":"k","owner":"o","public_key":")" + kEd + R"(\n"})", "k", "public_key: contains a newline"},
      {R"({"id":"k","owner":"o","public_key":")" + kEd + R"(\u0000"})", "k", "public_key: contains a NUL byte"},
      {R"({"id":"k","owner":"o","public_key":"ssh-ed25519 AAAA"})", "k", "public_key:"},
      {key("k", R"(,"active":"yes")"), "k", "active: must be a boolean, got a string"},
      {key("k", R"(,"active":null)"), "k", "active: must be a boolean, got null"},
      {key("k", R"(,"expires_at":"tomorrow")"), "k", "expires_at: not an RFC 3339"},
      {key("k", R"(,"expires_at":"2027-01-31T00:00:00+02:00")"), "k", "expires_at: not a UTC time"},
      {key("k", R"(,"expires_at":1801353600)"), "k", "expires_at: must be null or an RFC 3339 time, got a number"},
  };
  for (const auto& c : cases) {
    INFO(c.entry);
    auto d = parseOk(doc(key("good") + "," + c.entry, "", ""));
    REQUIRE(d.keys.size() == 1);
    CHECK(d.keys[0].id == "good");
    REQUIRE(d.skipped.size() == 1);
    CHECK(d.skipped[0].id == c.id);
    CHECK_THAT(d.skipped[0].reason, Catch::StartsWith(c.reason));
  }
}

TEST_CASE("document: key defaults and expiry", "[document]") {
  auto d = parseOk(doc(key("a") + "," + key("b", R"(,"active":false,"expires_at":null)") + "," +
                           key("c", R"(,"expires_at":"2020-01-01T00:00:00Z")"),
                       "", ""));
  REQUIRE(d.keys.size() == 3);
  CHECK(d.keys[0].active);
  CHECK_FALSE(d.keys[0].expiresAt.has_value());
  CHECK_FALSE(d.keys[1].active);
  CHECK(d.keys[2].expiresAt == 1577836800);  // expired but valid: the provider decides
  CHECK(d.skipped.empty());
}

TEST_CASE("document: bad accounts are skipped and their users kept locked", "[document]") {
  struct Case {
    std::string entry;
    std::string id;
    std::string reason;
    std::vector<std::string> locked;
  };
  const std::vector<Case> cases = {
      {"[]", "sftp.accounts[1]", "must be an object, got an array", {}},
      {account("bad id!", "lockme"), "sftp.accounts[1]", "id: must be", {"lockme"}},
      {account("a", "Bad"), "a", "username: must match", {}},
      {account("a", "root"), "a", "username: 'root' is not allowed", {}},
      {account("a", "akeneo"), "a", "username: 'akeneo' is the login user", {}},
      {R"({"id":"a","password_hash":null,"folder":"."})", "a", "username: missing", {}},
      {R"({"id":"a","username":"u","password_hash":"hunter2","folder":"."})",
       "a",
       "password_hash: not a supported crypt(3) hash ($y$, $6$, $5$, $2b$)",
       {"u"}},
      {R"({"id":"a","username":"u","password_hash":"!","folder":"."})", "a", "password_hash: not a supported", {"u"}},
      {R"({"id":"a","username":"u","password_hash":"$1$abc$qjXMvbEw8oaL.CzflDugX/","folder":"."})",
       "a",
       "password_hash: not a supported",
       {"u"}},
      {R"({"id":"a","username":"u","password_hash":"$6$s$short","folder":"."})",
       "a",
       "password_hash: malformed",
       {"u"}},
      {R"({"id":"a","username":"u","password_hash":5,"folder":"."})",
       "a",
       "password_hash: must be a string or null, got a number",
       {"u"}},
      {R"({"id":"a","username":"u","folder":"."})", "a", "password_hash: missing", {"u"}},
      {R"({"id":"a","username":"u","password_hash":null})", "a", "folder: missing", {"u"}},
      {R"({"id":"a","username":"u","password_hash":null,"folder":"../../etc"})",
       "a",
       "folder: '..' is not allowed",
       {"u"}},
      {R"({"id":"a","username":"u","password_hash":null,"folder":"a//b"})", "a", "folder: empty path component", {"u"}},
      {R"({"id":"a","username":"u","password_hash":null,"folder":"/etc"})", "a", "folder: must be relative", {"u"}},
      {account("a", "u", R"(,"active":"no")"), "a", "active: must be a boolean", {"u"}},
      {account("a", "u", R"(,"public_keys":")" + kEd + "\""),
       "a",
       "public_keys: must be an array, got a string",
       {"u"}},
  };
  for (const auto& c : cases) {
    INFO(c.entry);
    auto d = parseOk(doc("", account("good", "gooduser") + "," + c.entry, ""));
    REQUIRE(d.accounts.size() == 1);
    CHECK(d.accounts[0].id == "good");
    REQUIRE(d.skipped.size() == 1);
    CHECK(d.skipped[0].id == c.id);
    CHECK_THAT(d.skipped[0].reason, Catch::StartsWith(c.reason));
    CHECK(d.lockedUsernames == c.locked);
    CHECK(d.skipped[0].reason.find("hunter2") == std::string::npos);
    CHECK(d.skipped[0].reason.find("qjXMvbEw8oaL") == std::string::npos);
  }
}

TEST_CASE("document: the login user is configurable", "[document]") {
  DocumentOptions options;
  options.loginUser = "deploy";
  auto d = parseOk(doc("", account("a", "akeneo") + "," + account("b", "deploy"), ""), options);
  REQUIRE(d.accounts.size() == 1);
  CHECK(d.accounts[0].username == "akeneo");
  CHECK(skippedIds(d) == std::set<std::string>{"b"});
  CHECK(d.lockedUsernames.empty());
}

TEST_CASE("document: a bad key in an account skips only that key", "[document]") {
  auto d = parseOk(doc(
      "",
      account("sftp-imports", "u", R"(,"public_keys":[")" + kEd2 + R"(","ssh-ed25519 not-base64!!",7,")" + kEd + "\"]"),
      ""));
  REQUIRE(d.accounts.size() == 1);
  REQUIRE(d.accounts[0].publicKeys.size() == 2);
  CHECK(d.accounts[0].publicKeys[0].comment == "bob@example");
  CHECK(d.accounts[0].publicKeys[1].comment == "alice@example");
  CHECK(skippedIds(d) == std::set<std::string>{"sftp-imports.public_keys[1]", "sftp-imports.public_keys[2]"});
  CHECK_THAT(reasonFor(d, "sftp-imports.public_keys[1]"), Catch::Contains("not valid base64"));
  CHECK(d.lockedUsernames.empty());
}

TEST_CASE("document: account defaults", "[document]") {
  auto d = parseOk(doc("", R"({"id":"a","username":"u","password_hash":null,"folder":"x/y"})", ""));
  REQUIRE(d.accounts.size() == 1);
  CHECK(d.accounts[0].active);
  CHECK_FALSE(d.accounts[0].passwordHash.has_value());
  CHECK(d.accounts[0].publicKeys.empty());
  CHECK(d.accounts[0].folder == "x/y");
}

TEST_CASE("document: sources are skipped by value and made canonical", "[document]") {
  auto d = parseOk(doc(
      "", "",
      R"("10.0.0.0/8","not-a-cidr","10.0.0.1/8",5,"2001:0DB8:42::/48","10.0.0.0/8","1.2.3.4/33","::ffff:1.2.3.4/128")"));
  CHECK(d.allowedSources == std::vector<pim::Cidr>{{"10.0.0.0/8"}, {"2001:db8:42::/48"}});
  CHECK(skippedIds(d) == std::set<std::string>{"not-a-cidr", "10.0.0.1/8", "network.allowed_sources[3]", "1.2.3.4/33",
                                               "::ffff:1.2.3.4/128"});
  CHECK_THAT(reasonFor(d, "10.0.0.1/8"), Catch::Contains("host bits"));
  // 1024 sources are fine; an empty list is fine.
  std::string many;
  for (int i = 0; i < 1024; ++i)
    many += std::string(i ? "," : "") + "\"10.0." + std::to_string(i / 256) + "." + std::to_string(i % 256) + "/32\"";
  CHECK(parseOk(doc("", "", many)).allowedSources.size() == 1024);
  CHECK(parseOk(doc("", "", "")).allowedSources.empty());
}

TEST_CASE("document: unknown fields are ignored and listed", "[document]") {
  const std::string body = R"({"version":1,"revision":2,"instance":"i","generated_by":{"x":[1]},
    "ssh":{"keys":[)" + key("k", R"(,"color":"red")") +
                           R"(],"note":1},
    "sftp":{"accounts":[)" +
                           account("a", "u", R"(,"quota":5)") + R"(]},
    "network":{"allowed_sources":[],"weird\nname":true}})";
  auto d = parseOk(body);
  CHECK(d.skipped.empty());
  CHECK(std::set<std::string>(d.unknownFields.begin(), d.unknownFields.end()) ==
        std::set<std::string>{"generated_by", "ssh.note", "ssh.keys[0].color", "sftp.accounts[0].quota",
                              "network.weird\\x0aname"});
}

TEST_CASE("document: no message ever contains a password hash", "[document]") {
  const std::string secretish = "$6$rounds=1$SECRETSALT$" + std::string(86, 'Q');
  auto d = parseOk(doc("", R"({"id":"a","username":"u","password_hash":")" + secretish + R"(","folder":"."})", ""));
  REQUIRE(d.skipped.size() == 1);
  CHECK(d.skipped[0].reason.find("SECRETSALT") == std::string::npos);
  CHECK(d.skipped[0].reason.find("QQQQ") == std::string::npos);
}

// --- maskSecrets -----------------------------------------------------------------------------

TEST_CASE("document: maskSecrets hides hashes and keeps the rest", "[document][mask]") {
  const std::string shown = pim::maskSecrets(readFile(kExamples + "full.json"));
  CHECK(shown.find("$6$") == std::string::npos);
  CHECK(shown.find("exampleSalt") == std::string::npos);
  CHECK(shown.find("\"password_hash\": \"********\"") != std::string::npos);
  CHECK(shown.find("\"password_hash\": null") != std::string::npos);  // key-only stays visible
  CHECK(shown.find("k-alice") != std::string::npos);
  CHECK(shown.find("\"version\"") < shown.find("\"revision\""));  // member order kept
  CHECK(shown.find('\n') != std::string::npos);                   // pretty-printed

  const std::string other = pim::maskSecrets(R"({"a":[{"db_password":"p1"},{"api_token":"t1","x":"keep"}]})");
  CHECK(other.find("p1") == std::string::npos);
  CHECK(other.find("t1") == std::string::npos);
  CHECK(other.find("keep") != std::string::npos);

  // Nested values under a secret name are masked; types elsewhere are kept.
  const std::string nested = pim::maskSecrets(R"({"secrets":{"a":["s1",2,null]},"b":[true,1.5,{}],"c":"\u0001"})");
  CHECK(nested ==
        "{\n  \"secrets\": {\n    \"a\": [\n      \"********\",\n      \"********\",\n      null\n    ]\n  },\n"
        "  \"b\": [\n    true,\n    1.5,\n    {}\n  ],\n  \"c\": \"\\u0001\"\n}");

  const std::string broken = pim::maskSecrets(R"({"password_hash":"$6$leak$)");
  CHECK(broken == "\"(document not shown: it is not valid JSON)\"");  // still valid JSON
  CHECK(broken.find("leak") == std::string::npos);
  CHECK(pim::maskSecrets(std::string(1000, '[')).find("nesting") != std::string::npos);
}

TEST_CASE("document: a key's owner is only a label: absent, null and non-ASCII names are accepted", "[document]") {
  const std::string ed =
      "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF672WCNFtqcThBzVbXOfOSdud0k+tJpV0314p0yRK8S alice@example";
  const std::string body = R"({"version":1,"revision":1,"instance":"i","ssh":{"keys":[)"
                           R"({"id":"k-none","public_key":")" +
                           ed +
                           R"("},)"
                           R"({"id":"k-null","owner":null,"public_key":")" +
                           ed +
                           R"("},)"
                           R"({"id":"k-zoe","owner":"Zoë Müller","public_key":")" +
                           ed +
                           R"("}]},)"
                           R"("sftp":{"accounts":[]},"network":{"allowed_sources":[]}})";
  auto doc = pim::parseDocument(body, pim::DocumentOptions{});
  REQUIRE(doc.isOk());
  CHECK(doc->skipped.empty());
  REQUIRE(doc->keys.size() == 3);
  CHECK(doc->keys[0].owner.empty());
  CHECK(doc->keys[1].owner.empty());
  CHECK(doc->keys[2].owner == "Zoë Müller");
}

namespace {

std::string withSudo(const std::string& sudo, const std::string& accounts = "") {
  return "{"
         R"("version":1,"revision":3,"instance":"demo","ssh":{"keys":[]},"sftp":{"accounts":[)" +
         accounts + R"(]},"network":{"allowed_sources":[]},"sudo":)" + sudo + "}";
}

std::string taskJson(const std::string& id, const std::string& command, const std::string& extra = "") {
  return R"({"id":")" + id + R"(","command":)" + command + extra + "}";
}

std::map<std::string, std::string> skippedById(const AccessDocument& d) {
  std::map<std::string, std::string> out;
  for (const auto& s : d.skipped) out[s.id] = s.reason;
  return out;
}

}  // namespace

TEST_CASE("document: sudo is optional; absent or null means no task", "[document][sudo]") {
  CHECK(parseOk(doc("", "", "")).sudoTasks.empty());
  auto d = parseOk(withSudo("null"));
  CHECK(d.sudoTasks.empty());
  CHECK(d.unknownFields.empty());
  d = parseOk(withSudo(R"({"tasks":[]})"));
  CHECK(d.sudoTasks.empty());
}

TEST_CASE("document: a mistyped sudo section, too many or duplicate tasks reject the document", "[document][sudo]") {
  CHECK(rejectReason(withSudo("[]")) == "sudo: must be an object, got an array");
  CHECK(rejectReason(withSudo(R"("x")")).find("sudo: must be an object") == 0);
  CHECK(rejectReason(withSudo("{}")) == "sudo.tasks: missing");
  CHECK(rejectReason(withSudo(R"({"tasks":{}})")) == "sudo.tasks: must be an array, got an object");
  std::string many;
  for (int i = 0; i < 65; ++i) many += (i ? "," : "") + taskJson("t" + std::to_string(i), R"(["/usr/bin/id"])");
  CHECK(rejectReason(withSudo(R"({"tasks":[)" + many + "]}")) == "sudo.tasks: 65 entries, at most 64 allowed");
  many.clear();
  for (int i = 0; i < 64; ++i) many += (i ? "," : "") + taskJson("t" + std::to_string(i), R"(["/usr/bin/id"])");
  CHECK(parseOk(withSudo(R"({"tasks":[)" + many + "]}")).sudoTasks.size() == 64);
  CHECK(rejectReason(withSudo(R"({"tasks":[)" + taskJson("a", R"(["/usr/bin/id"])") + "," +
                              taskJson("a", R"(["/usr/bin/true"])") + "]}"))
            .find("sudo.tasks[1].id: duplicate 'a'") == 0);
}

TEST_CASE("document: sudo tasks, their defaults and their hostile entries", "[document][sudo]") {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {taskJson("relative", R"(["usr/bin/id"])"), "command[0]: not absolute"},
      {taskJson("bare-name", R"(["id"])"), "command[0]: not absolute"},
      {taskJson("dotdot", R"(["/usr/bin/../bin/sh"])"), "'.' or '..' component"},
      {taskJson("dot", R"(["/usr/./bin/id"])"), "'.' or '..' component"},
      {taskJson("double-slash", R"(["/usr//bin/id"])"), "empty path component"},
      {taskJson("dir", R"(["/usr/bin/"])"), "ends with '/'"},
      {taskJson("glob-path", R"(["/usr/bin/i*"])"), "[A-Za-z0-9._+-] components"},
      {taskJson("space-path", R"(["/usr/bin/my tool"])"), "[A-Za-z0-9._+-] components"},
      {taskJson("comma-path", R"(["/usr/bin/a,b"])"), "[A-Za-z0-9._+-] components"},
      {taskJson("empty", R"([])"), "command: empty"},
      {taskJson("not-array", R"("/usr/bin/id -u")"), "command: must be an array"},
      {taskJson("number", R"(["/usr/bin/id", 1])"), "command[1]: must be a string"},
      {taskJson("space-arg", R"(["/usr/bin/id", "a b"])"), "command[1]: contains white space"},
      {taskJson("tab-arg", R"(["/usr/bin/id", "a\tb"])"), "command[1]: contains white space"},
      {taskJson("newline-arg", R"(["/usr/bin/id", "a\nb"])"), "not printable ASCII"},
      {taskJson("empty-arg", R"(["/usr/bin/id", ""])"), "command[1]: empty"},
      {taskJson("quote-arg", R"(["/usr/bin/id", "\"\""])"), "cannot be escaped"},
      {taskJson("utf8-arg", R"(["/usr/bin/id", "caf\u00e9"])"), "not printable ASCII"},
      {taskJson("nul-arg", R"(["/usr/bin/id", "a\u0000b"])"), "not printable ASCII"},
      {taskJson("long-arg", R"(["/usr/bin/id", ")" + std::string(1025, 'a') + R"("])"), "longer than 1024 bytes"},
      {taskJson("run-as-login", R"(["/usr/bin/id"])", R"(,"run_as":"akeneo")"), "run_as: 'akeneo' is the login user"},
      {taskJson("run-as-upper", R"(["/usr/bin/id"])", R"(,"run_as":"ALL")"), "run_as: must match"},
      {taskJson("run-as-num", R"(["/usr/bin/id"])", R"(,"run_as":0)"), "run_as: must be a string"},
      {taskJson("run-as-list", R"(["/usr/bin/id"])", R"(,"run_as":"root,www-data")"), "run_as: must match"},
      {taskJson("active-str", R"(["/usr/bin/id"])", R"(,"active":"yes")"), "active: must be a boolean"},
      {R"({"id":"no-command"})", "command: missing"},
  };
  std::string tasks;
  for (const auto& [json, why] : bad) tasks += (tasks.empty() ? "" : ",") + json;
  std::string args = R"(["/usr/bin/id")";
  for (int i = 0; i < 65; ++i) args += R"(,"x")";
  tasks += "," + taskJson("too-many-args", args + "]");
  tasks += R"(,{"id":"bad id!","command":["/usr/bin/id"]},"not-an-object")";
  tasks += "," + taskJson("ok", R"(["/usr/bin/systemctl","restart","pim-worker@*.service","a=b,c:d#e\\f^g!h[i]j?"])");
  tasks += "," + taskJson("ok-bare", R"(["/usr/bin/whoami"])", R"(,"run_as":"www-data","active":false)");
  auto d = parseOk(withSudo(R"({"tasks":[)" + tasks + "]}"));
  const auto skipped = skippedById(d);
  for (const auto& [json, why] : bad) {
    const std::string id = json.substr(7, json.find('"', 7) - 7);
    INFO(id);
    REQUIRE(skipped.count(id) == 1);
    CHECK(skipped.at(id).find(why) != std::string::npos);
  }
  CHECK(skipped.at("too-many-args").find("more than 64 arguments") != std::string::npos);
  CHECK(skipped.count("sudo.tasks[" + std::to_string(bad.size() + 1) + "]") == 1);  // the bad id, by path
  CHECK(skipped.count("sudo.tasks[" + std::to_string(bad.size() + 2) + "]") == 1);  // not an object
  REQUIRE(d.sudoTasks.size() == 2);
  CHECK(d.sudoTasks[0].id == "ok");
  CHECK(d.sudoTasks[0].runAs == "root");
  CHECK(d.sudoTasks[0].active);
  CHECK(d.sudoTasks[0].command.back() == "a=b,c:d#e\\f^g!h[i]j?");
  CHECK(d.sudoTasks[1].command.size() == 1);
  CHECK(d.sudoTasks[1].runAs == "www-data");
  CHECK_FALSE(d.sudoTasks[1].active);
  CHECK(d.lockedUsernames.empty());
}

TEST_CASE("document: an account's access; an unknown value skips and locks the account", "[document][sftp]") {
  auto d = parseOk(doc(
      "",
      account("rw", "u1", R"(,"access":"read-write")") + "," + account("ro", "u2", R"(,"access":"read-only")") + "," +
          account("up", "u3", R"(,"access":"upload-only")") + "," + account("def", "u4") + "," +
          account("bad", "u5", R"(,"access":"write-only")") + "," + account("case", "u6", R"(,"access":"READ-ONLY")") +
          "," + account("null", "u7", R"(,"access":null)") + "," + account("list", "u8", R"(,"access":["read-only"])"),
      ""));
  REQUIRE(d.accounts.size() == 4);
  CHECK(d.accounts[0].access == pim::SftpAccess::kReadWrite);
  CHECK(d.accounts[1].access == pim::SftpAccess::kReadOnly);
  CHECK(d.accounts[2].access == pim::SftpAccess::kUploadOnly);
  CHECK(d.accounts[3].access == pim::SftpAccess::kReadWrite);
  const auto skipped = skippedById(d);
  CHECK(skipped.at("bad").find("access: must be read-write, read-only or upload-only, got 'write-only'") == 0);
  CHECK(skipped.at("case").find("access: must be") == 0);
  CHECK(skipped.at("null") == "access: must be a string, got null");
  CHECK(skipped.at("list") == "access: must be a string, got an array");
  CHECK(d.lockedUsernames == std::vector<std::string>{"u5", "u6", "u7", "u8"});
}

TEST_CASE("document: an entry's own allowed_sources narrow it, and a bad one skips it (fail closed)",
          "[document][sources]") {
  const std::string ok = R"(,"allowed_sources":["203.0.113.0/28","2001:db8::/32","203.0.113.0/28"])";
  AccessDocument d =
      parseOk(doc(key("k-own", ok) + "," + key("k-all"), account("s-own", "ownsftp", ok), R"("203.0.113.0/24")"));
  REQUIRE(d.keys.size() == 2);
  CHECK(d.keys[0].allowedSources == std::vector<std::string>{"2001:db8::/32", "203.0.113.0/28"});
  CHECK(d.keys[1].allowedSources.empty());
  REQUIRE(d.accounts.size() == 1);
  CHECK(d.accounts[0].allowedSources == std::vector<std::string>{"2001:db8::/32", "203.0.113.0/28"});
  CHECK(d.skipped.empty());
  CHECK(d.unknownFields.empty());
  // null is the document's list.
  CHECK(parseOk(doc(key("k-null", R"(,"allowed_sources":null)"), "", "")).keys.size() == 1);

  // Hostile or wrong values skip the entry; an account is kept locked.
  for (const std::string& bad :
       {std::string(R"(,"allowed_sources":[])"), std::string(R"(,"allowed_sources":"203.0.113.0/28")"),
        std::string(R"(,"allowed_sources":["203.0.113.1/28"])"), std::string(R"(,"allowed_sources":["x"])"),
        std::string(R"(,"allowed_sources":[5])"), std::string(R"(,"allowed_sources":["10.0.0.0/8\" ssh-rsa"])"),
        std::string(R"(,"allowed_sources":["10.0.0.0/8,*"])"), std::string(R"(,"allowed_sources":{"a":1})"),
        std::string(R"(,"allowed_sources":["fe80::/10%eth0"])")}) {
    INFO(bad);
    AccessDocument k = parseOk(doc(key("k-bad", bad), account("s-bad", "badsftp", bad), ""));
    CHECK(k.keys.empty());
    CHECK(k.accounts.empty());
    CHECK(k.lockedUsernames == std::vector<std::string>{"badsftp"});
    REQUIRE(k.skipped.size() == 2);
    CHECK(k.skipped[0].id == "k-bad");
    CHECK(k.skipped[0].reason.find("allowed_sources") != std::string::npos);
    CHECK(k.skipped[1].id == "s-bad");
  }
  std::string many = R"(,"allowed_sources":[)";
  for (int i = 0; i < 257; ++i) many += std::string(i ? "," : "") + "\"10.0." + std::to_string(i % 256) + ".0/24\"";
  many += "]";
  CHECK(parseOk(doc(key("k-many", many), "", "")).keys.empty());
}
