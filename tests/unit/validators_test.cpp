#include "agent/document/validators.h"

#include <crypt.h>
#include <stdlib.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace {

using pim::checkCryptHash;
using pim::parseCidr;
using pim::parseFolder;
using pim::parsePublicKey;
using pim::parseRfc3339;

// --- helpers: base64, SSH wire encoding, real keys from ssh-keygen ---------------------------

std::string b64encode(const std::string& in) {
  static const char* k = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (uint32_t(uint8_t(in[i])) << 16) | (uint32_t(uint8_t(in[i + 1])) << 8) | uint8_t(in[i + 2]);
    out += k[v >> 18];
    out += k[(v >> 12) & 63];
    out += k[(v >> 6) & 63];
    out += k[v & 63];
  }
  if (in.size() - i == 1) {
    uint32_t v = uint32_t(uint8_t(in[i])) << 16;
    out += k[v >> 18];
    out += k[(v >> 12) & 63];
    out += "==";
  } else if (in.size() - i == 2) {
    uint32_t v = (uint32_t(uint8_t(in[i])) << 16) | (uint32_t(uint8_t(in[i + 1])) << 8);
    out += k[v >> 18];
    out += k[(v >> 12) & 63];
    out += k[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

std::string b64decode(const std::string& in) {
  static const std::string k = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  uint32_t v = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=') break;
    v = (v << 6) | uint32_t(k.find(c));
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += char((v >> bits) & 0xff);
    }
  }
  return out;
}

std::string wireString(const std::string& s) {
  std::string out;
  uint32_t n = uint32_t(s.size());
  out += char(n >> 24);
  out += char((n >> 16) & 0xff);
  out += char((n >> 8) & 0xff);
  out += char(n & 0xff);
  return out + s;
}

// Splits an SSH wire blob into its strings (the test builds hostile variants from real keys).
std::vector<std::string> wireFields(const std::string& blob) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos + 4 <= blob.size()) {
    uint32_t n = (uint32_t(uint8_t(blob[pos])) << 24) | (uint32_t(uint8_t(blob[pos + 1])) << 16) |
                 (uint32_t(uint8_t(blob[pos + 2])) << 8) | uint8_t(blob[pos + 3]);
    out.push_back(blob.substr(pos + 4, n));
    pos += 4 + n;
  }
  return out;
}

std::string join(const std::vector<std::string>& fields) {
  std::string out;
  for (const auto& f : fields) out += wireString(f);
  return out;
}

// A fresh public key line from ssh-keygen, cached per argument string.
std::string realKey(const std::string& args) {
  static std::map<std::string, std::string> cache;
  auto it = cache.find(args);
  if (it != cache.end()) return it->second;
  char dir[] = "/tmp/pim-keytest-XXXXXX";
  REQUIRE(mkdtemp(dir) != nullptr);
  const std::string file = std::string(dir) + "/k";
  const std::string cmd = "ssh-keygen -q " + args + " -N '' -C 'test key@host' -f " + file + " >/dev/null 2>&1";
  REQUIRE(std::system(cmd.c_str()) == 0);
  std::ifstream in(file + ".pub");
  std::string line;
  std::getline(in, line);
  std::remove(file.c_str());
  std::remove((file + ".pub").c_str());
  rmdir(dir);
  REQUIRE(!line.empty());
  cache[args] = line;
  return line;
}

std::string field(const std::string& line, int n) {
  std::istringstream in(line);
  std::string f;
  for (int i = 0; i <= n; ++i) in >> f;
  return f;
}

std::string reasonOf(const pim::Result<pim::PublicKey>& r) { return r ? std::string() : r.status().message(); }

}  // namespace

// --- ids and usernames -----------------------------------------------------------------------

TEST_CASE("validators: entry ids", "[validators]") {
  for (const std::string& ok : std::vector<std::string>{"k", "k-alice", "a.b_c-D9", std::string(64, 'x')}) {
    INFO(ok);
    CHECK(pim::checkEntryId(ok).isOk());
  }
  for (std::string bad : {std::string(), std::string(65, 'x'), std::string("k a"), std::string("k/a"),
                          std::string("k\xc3\xa9"), std::string("k\n"), std::string("k\0a", 3), std::string("k$")}) {
    INFO(bad);
    auto s = pim::checkEntryId(bad);
    CHECK_FALSE(s.isOk());
    CHECK(s.code() == pim::ErrorCode::kInvalid);
  }
}

TEST_CASE("validators: usernames", "[validators]") {
  for (const std::string& ok : std::vector<std::string>{"akeneosftp", "_x", "a-b_9", "a" + std::string(31, 'b')}) {
    INFO(ok);
    CHECK(pim::checkUsername(ok).isOk());
  }
  for (std::string bad : {std::string(), std::string("Root"), std::string("9a"), std::string("-a"),
                          "a" + std::string(32, 'b'), std::string("a.b"), std::string("a b"), std::string("a$"),
                          std::string("a\n"), std::string("\xc3\xa9t\xc3\xa9")}) {
    INFO(bad);
    CHECK_FALSE(pim::checkUsername(bad).isOk());
  }
}

// --- public keys -----------------------------------------------------------------------------

TEST_CASE("validators: real keys from ssh-keygen are accepted", "[validators][keys]") {
  for (std::string args : {"-t ed25519", "-t ecdsa -b 256", "-t ecdsa -b 384", "-t ecdsa -b 521", "-t rsa -b 2048"}) {
    INFO(args);
    const std::string line = realKey(args);
    auto k = parsePublicKey(line);
    REQUIRE(k.isOk());
    CHECK(k->type == field(line, 0));
    CHECK(k->base64 == field(line, 1));
    CHECK(k->comment == "test key@host");
    CHECK(k->identity() == field(line, 0) + " " + field(line, 1));
    // Without a comment too.
    CHECK(parsePublicKey(field(line, 0) + " " + field(line, 1)).isOk());
  }
}

TEST_CASE("validators: a 1024-bit RSA key is refused and says why", "[validators][keys]") {
  auto k = parsePublicKey(realKey("-t rsa -b 1024"));
  REQUIRE_FALSE(k.isOk());
  CHECK(k.status().message().find("1024 bits") != std::string::npos);
  CHECK(k.status().message().find("2048") != std::string::npos);
}

TEST_CASE("validators: hostile public keys", "[validators][keys]") {
  const std::string ed = realKey("-t ed25519");
  const std::string ec256 = realKey("-t ecdsa -b 256");
  const std::string ec384 = realKey("-t ecdsa -b 384");
  const std::string rsa = realKey("-t rsa -b 2048");
  const std::string edB64 = field(ed, 1);
  const std::string ec256B64 = field(ec256, 1);
  const std::string ec384B64 = field(ec384, 1);
  const std::string edBlob = b64decode(edB64);
  auto edFields = wireFields(edBlob);
  auto ecFields = wireFields(b64decode(ec256B64));
  auto rsaFields = wireFields(b64decode(field(rsa, 1)));
  REQUIRE(edFields.size() == 2);
  REQUIRE(ecFields.size() == 3);
  REQUIRE(rsaFields.size() == 3);

  std::string offCurve = ecFields[2];
  offCurve[40] = char(offCurve[40] ^ 0x01);
  std::string compressed = std::string(1, '\x02') + ecFields[2].substr(1, 32);
  std::string negativeN = rsaFields[2];
  negativeN[0] = '\x00';
  negativeN[1] = char(negativeN[1] & 0x7f);  // now a non-minimal mpint
  // A 104-byte ECDSA blob ends in one '=': the character before it carries 2 padding bits.
  std::string flippedPad = ec256B64;
  REQUIRE(flippedPad.back() == '=');
  {
    const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char& c = flippedPad[flippedPad.size() - 2];
    c = alphabet[alphabet.find(c) ^ 1];
  }

  struct Case {
    std::string name;
    std::string text;
    std::string why;  // a part of the message
  };
  const std::vector<Case> cases = {
      {"empty", "", "empty"},
      {"type only", "ssh-ed25519", "missing key data"},
      {"not base64", "ssh-ed25519 not-base64!!", "not valid base64"},
      {"truncated base64 (one quantum)", "ssh-ed25519 " + edB64.substr(0, edB64.size() - 4), "truncated"},
      {"truncated base64 (one char)", "ssh-ed25519 " + edB64.substr(0, edB64.size() - 1), "not valid base64"},
      {"non-canonical padding bits", "ecdsa-sha2-nistp256 " + flippedPad, "non-zero padding bits"},
      {"padding in the middle", "ssh-ed25519 AAAA=AAA", "not valid base64"},
      {"wrong embedded type", "ssh-ed25519 " + ec256B64, "embedded key type ecdsa-sha2-nistp256"},
      {"type swap ecdsa 256/384", "ecdsa-sha2-nistp256 " + ec384B64, "does not match"},
      {"rsa label on ed25519", "ssh-rsa " + edB64, "does not match"},
      {"curve name swapped", "ecdsa-sha2-nistp384 " + b64encode(join({"ecdsa-sha2-nistp384", "nistp256", ecFields[2]})),
       "curve"},
      {"options prefix", "command=\"/bin/sh\" " + ed, "options"},
      {"restrict option", "restrict " + ed, "options"},
      {"from option", "from=\"10.0.0.0/8\",no-pty " + ed, "options"},
      {"leading space", " " + ed, "white space"},
      {"two spaces after type", "ssh-ed25519  " + edB64, "one space"},
      {"unknown type", "ssh-dss " + edB64, "unknown key type"},
      {"certificate type", "ssh-ed25519-cert-v01@openssh.com " + edB64, "unknown key type"},
      {"embedded NUL", "ssh-ed25519 " + edB64 + std::string(" a\0b", 4), "NUL"},
      {"newline at the end", ed + "\n", "newline"},
      {"newline then a second key", ed + "\n" + ed, "newline"},
      {"carriage return", ed + "\r", "newline"},
      {"escape char in comment", "ssh-ed25519 " + edB64 + " \x1b[31mred", "control character"},
      {"tab separator", "ssh-ed25519\t" + edB64, "control character"},
      {"DEL in comment", "ssh-ed25519 " + edB64 + " a\x7f", "control character"},
      {"unicode in comment", "ssh-ed25519 " + edB64 + " caf\xc3\xa9", "non-ASCII"},
      {"huge comment", "ssh-ed25519 " + edB64 + " " + std::string(1025, 'c'), "comment longer"},
      {"huge line", "ssh-ed25519 " + std::string(9000, 'A'), "longer than 8192"},
      {"trailing byte in blob", "ssh-ed25519 " + b64encode(edBlob + std::string(1, '\0')), "after the key"},
      {"trailing string in blob", "ssh-ed25519 " + b64encode(edBlob + wireString("x")), "after the key"},
      {"short ed25519 key", "ssh-ed25519 " + b64encode(join({"ssh-ed25519", edFields[1].substr(0, 31)})), "32 bytes"},
      {"ed25519 length overflow", "ssh-ed25519 " + b64encode(wireString("ssh-ed25519") + "\xff\xff\xff\xff"),
       "truncated"},
      {"ecdsa point off the curve", "ecdsa-sha2-nistp256 " + b64encode(join({ecFields[0], ecFields[1], offCurve})),
       "not on curve"},
      {"ecdsa compressed point", "ecdsa-sha2-nistp256 " + b64encode(join({ecFields[0], ecFields[1], compressed})),
       "wrong length"},
      {"rsa non-minimal mpint", "ssh-rsa " + b64encode(join({rsaFields[0], rsaFields[1], negativeN})), "minimal"},
      {"rsa negative modulus", "ssh-rsa " + b64encode(join({rsaFields[0], rsaFields[1], rsaFields[2].substr(1)})),
       "negative"},
      {"rsa even exponent", "ssh-rsa " + b64encode(join({rsaFields[0], std::string("\x01\x00", 2), rsaFields[2]})),
       "exponent"},
      {"rsa missing modulus", "ssh-rsa " + b64encode(join({rsaFields[0], rsaFields[1]})), "truncated"},
      {"empty blob type", "ssh-ed25519 " + b64encode(wireString("")), "does not match"},
      {"sk application not ssh:",
       "sk-ssh-ed25519@openssh.com " + b64encode(join({"sk-ssh-ed25519@openssh.com", edFields[1], "http://x"})),
       "application"},
      {"sk application missing",
       "sk-ssh-ed25519@openssh.com " + b64encode(join({"sk-ssh-ed25519@openssh.com", edFields[1]})), "truncated"},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    auto k = parsePublicKey(c.text);
    REQUIRE_FALSE(k.isOk());
    CHECK(k.status().code() == pim::ErrorCode::kInvalid);
    CHECK_THAT(k.status().message(), Catch::Contains(c.why));
    // The message never carries the key material.
    CHECK(k.status().message().find(edB64.substr(20, 16)) == std::string::npos);
  }
}

TEST_CASE("validators: security keys and sample keys are accepted", "[validators][keys]") {
  const std::string ed = realKey("-t ed25519");
  const std::string ec256 = realKey("-t ecdsa -b 256");
  auto edFields = wireFields(b64decode(field(ed, 1)));
  auto ecFields = wireFields(b64decode(field(ec256, 1)));
  const std::string skEd =
      "sk-ssh-ed25519@openssh.com " + b64encode(join({"sk-ssh-ed25519@openssh.com", edFields[1], "ssh:"})) + " yubi";
  const std::string skEc =
      "sk-ecdsa-sha2-nistp256@openssh.com " +
      b64encode(join({"sk-ecdsa-sha2-nistp256@openssh.com", "nistp256", ecFields[2], "ssh:login"}));
  for (const auto& text : {skEd, skEc}) {
    INFO(text);
    auto k = parsePublicKey(text);
    CHECK(reasonOf(k) == "");
  }
  auto k = parsePublicKey(
      "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF672WCNFtqcThBzVbXOfOSdud0k+tJpV0314p0yRK8S alice  with spaces ");
  REQUIRE(k.isOk());
  CHECK(k->comment == "alice  with spaces ");
  CHECK(parsePublicKey("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF672WCNFtqcThBzVbXOfOSdud0k+tJpV0314p0yRK8S " +
                       std::string(1024, 'c'))
            .isOk());
}

// --- crypt(3) hashes -------------------------------------------------------------------------

namespace {

// libxcrypt (which the agent links for crypt_checksalt) makes real hashes of every method.
struct Libcrypt {
  // A hash of `password` with a fresh salt of `prefix`, or "" when libcrypt refuses.
  std::string hash(const char* prefix, unsigned long count, const std::string& password) {
    const char* setting = crypt_gensalt(prefix, count, nullptr, 0);
    if (!setting) return {};
    std::string s(setting);
    const char* h = crypt(password.c_str(), s.c_str());
    if (!h || h[0] == '*') return {};
    return h;
  }
  // True when libcrypt computes a hash from `setting` (the hash it would compare).
  bool accepts(const std::string& setting) {
    const char* h = crypt("x", setting.c_str());
    return h && h[0] != '*';
  }
};

}  // namespace

TEST_CASE("validators: crypt hashes made by libxcrypt are accepted", "[validators][crypt]") {
  Libcrypt lib;
  struct Method {
    const char* prefix;
    unsigned long count;
    int n;
  };
  for (const Method& m : {Method{"$6$", 0, 40}, Method{"$6$", 1000, 5}, Method{"$2b$", 4, 40}, Method{"$y$", 1, 20},
                          Method{"$y$", 0, 3}}) {
    for (int i = 0; i < m.n; ++i) {
      const std::string h = lib.hash(m.prefix, m.count, "pw" + std::to_string(i));
      INFO(m.prefix << " count " << m.count);
      REQUIRE(!h.empty());
      INFO(h);
      CHECK(crypt_checksalt(h.c_str()) == CRYPT_SALT_OK);
      CHECK(checkCryptHash(h).isOk());
    }
  }
}

TEST_CASE("validators: a well-formed hash of a method libxcrypt deems legacy stays accepted", "[validators][crypt]") {
  // sha256crypt: libxcrypt makes and verifies it, crypt_checksalt calls the method legacy; the
  // contract lists $5$, so it is accepted (an account that logs in today keeps doing so).
  Libcrypt lib;
  for (unsigned long rounds : {0ul, 5000ul, 12345ul}) {
    const std::string h = lib.hash("$5$", rounds, "pw" + std::to_string(rounds));
    INFO(h);
    REQUIRE(!h.empty());
    REQUIRE(lib.accepts(h));
    REQUIRE(crypt_checksalt(h.c_str()) == CRYPT_SALT_METHOD_LEGACY);
    CHECK(checkCryptHash(h).isOk());
  }
  // A malformed one gets the precise message of the shape check.
  CHECK_THAT(checkCryptHash("$5$saltstring$tooshort").message(), Catch::Contains("malformed $5$ (sha256crypt) hash"));
}

TEST_CASE("validators: bad crypt hashes are refused without echoing them", "[validators][crypt]") {
  const std::string sha512 =
      "$6$exampleSalt1$pHYVlXEFLZqkut9Q5xM5jYWKUuC/qosvfRtZIM/gMgqEER6Maxx6bnVwImBJEfZtBXH1hbWoy.jhHPoyinVFG.";
  REQUIRE(checkCryptHash(sha512).isOk());
  const std::string digest512 = sha512.substr(sha512.rfind('$') + 1);
  const std::string yes = "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7";
  REQUIRE(checkCryptHash(yes).isOk());
  const std::string bcrypt = "$2b$04$abcdefghijklmnopqrstuu5s2v8.iXieOjg/.AySBTTZIIVFJeBui";
  REQUIRE(bcrypt.size() == 60);
  REQUIRE(checkCryptHash(bcrypt).isOk());
  const std::vector<std::string> bad = {
      "",
      "hunter2",
      "!",
      "*",
      "!" + sha512,
      "$1$saltsalt$qjXMvbEw8oaL.CzflDugX/",
      "abJnggxhB/yWI",  // DES
      "$2a$04$abcdefghijklmnopqrstuu5s2v8.iXieOjg/.AySBTTZIIVFJeBui",
      "$2y$04$abcdefghijklmnopqrstuu5s2v8.iXieOjg/.AySBTTZIIVFJeBui",
      "$2b$03$abcdefghijklmnopqrstuu5s2v8.iXieOjg/.AySBTTZIIVFJeBui",
      "$2b$32$abcdefghijklmnopqrstuu5s2v8.iXieOjg/.AySBTTZIIVFJeBui",
      "$2b$4$abcdefghijklmnopqrstuuu5s2v8.iXieOjg/.AySBTTZIIVFJeBui",
      "$2b$04$abcdefghijklmnopqrstuv5s2v8.iXieOjg/.AySBTTZIIVFJeBui",  // salt not canonical
      "$2b$04$abcdefghijklmnopqrstuu5s2v8.iXieOjg/.AySBTTZIIVFJeBuj",  // digest not canonical
      "$2b$04$abcdefghijklmnopqrstuu5s2v8.iXieOjg/.AySBTTZIIVFJeBu",
      "$6$" + digest512,
      "$6$$" + digest512,
      "$6$exampleSalt1exampleSalt1$" + digest512,
      "$6$bad!salt$" + digest512,
      "$6$exampleSalt1$" + digest512.substr(1),
      "$6$exampleSalt1$" + digest512 + "x",
      "$6$exampleSalt1$" + digest512.substr(0, 85) + "2",  // last character carries 2 bits only
      "$6$rounds=999$exampleSalt1$" + digest512,
      "$6$rounds=01000$exampleSalt1$" + digest512,
      "$6$rounds=1000000000$exampleSalt1$" + digest512,
      "$6$rounds=$exampleSalt1$" + digest512,
      "$6$rounds=1e4$exampleSalt1$" + digest512,
      "$6$exampleSalt1$" + digest512 + "\n",
      "$6$exampleSalt1$" + digest512.substr(0, 40) + ":" + digest512.substr(41),
      "$5$saltstring$" + digest512,
      "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ",
      "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQz",  // not canonical
      "$y$j9T$$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7",
      "$y$j9T$F$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7",
      "$y$$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7",
      "$y$jzT$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7",  // N = 2^63
      "$y$j9z$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7",
      "$y$jLT$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7",  // 64 GiB
      "$y$j9T!$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7",
      "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7$",
      "$7$CU..../....2KdGqhhLUP3iq8xDG5QcTA/$kX0rSrJvZU0YhJ9HrV4PDt3SGBlNTBT6QE7AVMcEJx4",
      "$gy$j9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7",
      std::string(600, '$'),
  };
  for (const auto& h : bad) {
    INFO(h);
    auto s = checkCryptHash(h);
    CHECK_FALSE(s.isOk());
    CHECK(s.code() == pim::ErrorCode::kInvalid);
    // Never echo the hash or any of its long fields.
    if (!h.empty()) CHECK(s.message().find(h) == std::string::npos);
    size_t last = h.rfind('$');
    if (last != std::string::npos && h.size() - last > 8) {
      CHECK(s.message().find(h.substr(last + 1, 8)) == std::string::npos);
    }
  }
  CHECK(checkCryptHash("hunter2").message() == "not a supported crypt(3) hash ($y$, $6$, $5$, $2b$)");
  CHECK_THAT(checkCryptHash("$y$jLT$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7").message(),
             Catch::Contains("1 GiB"));
}

TEST_CASE("validators: crypt hashes agree with libxcrypt on refusals", "[validators][crypt]") {
  Libcrypt lib;
  // Settings libxcrypt itself refuses must be refused here too (their digest is irrelevant).
  const std::string digest512(86, '.');
  for (const std::string& h :
       {"$6$rounds=999$salt$" + digest512, "$6$rounds=0$salt$" + digest512, "$6$rounds=01000$salt$" + digest512,
        std::string("$2b$03$abcdefghijklmnopqrstuu"), std::string("$y$j9T$abc$"), std::string("$y$jzT$abcd$")}) {
    INFO(h);
    CHECK_FALSE(lib.accepts(h));
    CHECK_FALSE(checkCryptHash(h).isOk());
  }
}

// --- folders ---------------------------------------------------------------------------------

TEST_CASE("validators: folders", "[validators][folder]") {
  for (const auto& [in, out] :
       std::vector<std::pair<std::string, std::string>>{{".", "."},
                                                        {"a", "a"},
                                                        {"imports/erp", "imports/erp"},
                                                        {"a b/c-d_e.f", "a b/c-d_e.f"},
                                                        {"...", "..."},
                                                        {"a..b", "a..b"},
                                                        {std::string(255, 'x'), std::string(255, 'x')}}) {
    INFO(in);
    auto f = parseFolder(in);
    REQUIRE(f.isOk());
    CHECK(*f == out);
  }
  struct Case {
    std::string in;
    std::string why;
  };
  for (const Case& c : std::vector<Case>{{"", "empty"},
                                         {"..", "'..' is not allowed"},
                                         {"../etc", "'..' is not allowed"},
                                         {"../../etc", "'..' is not allowed"},
                                         {"a/../b", "'..' is not allowed"},
                                         {"a/..", "'..' is not allowed"},
                                         {"./a", "'.'"},
                                         {"a/.", "'.'"},
                                         {"a/./b", "'.'"},
                                         {"/a", "leading '/'"},
                                         {"/", "leading '/'"},
                                         {"a/", "trailing '/'"},
                                         {"a//b", "empty path component"},
                                         {"a\nb", "control character"},
                                         {std::string("a\0b", 3), "control character"},
                                         {"a\tb", "control character"},
                                         {"caf\xc3\xa9", "non-ASCII"},
                                         {"a\\..\\b", "backslash"},
                                         {std::string(256, 'x'), "255"},
                                         {std::string(4097, 'a'), "4096"}}) {
    INFO(c.in);
    auto f = parseFolder(c.in);
    REQUIRE_FALSE(f.isOk());
    CHECK_THAT(f.status().message(), Catch::Contains(c.why));
  }
}

// --- CIDRs -----------------------------------------------------------------------------------

TEST_CASE("validators: CIDRs are canonical", "[validators][cidr]") {
  for (const auto& [in, out] :
       std::vector<std::pair<std::string, std::string>>{{"203.0.113.0/24", "203.0.113.0/24"},
                                                        {"127.0.0.0/8", "127.0.0.0/8"},
                                                        {"0.0.0.0/0", "0.0.0.0/0"},
                                                        {"10.1.2.3/32", "10.1.2.3/32"},
                                                        {"2001:db8:42::/48", "2001:db8:42::/48"},
                                                        {"2001:0DB8:0042:0000::/48", "2001:db8:42::/48"},
                                                        {"::/0", "::/0"},
                                                        {"::1/128", "::1/128"},
                                                        {"fe80::/10", "fe80::/10"}}) {
    INFO(in);
    auto c = parseCidr(in);
    REQUIRE(c.isOk());
    CHECK(c->text == out);
  }
}

TEST_CASE("validators: hostile CIDRs", "[validators][cidr]") {
  struct Case {
    std::string in;
    std::string why;
  };
  for (const Case& c : std::vector<Case>{{"10.0.0.1/8", "host bits set (did you mean 10.0.0.0/8?)"},
                                         {"2001:db8:42::1/48", "host bits set (did you mean 2001:db8:42::/48?)"},
                                         {"1.2.3.4/33", "0-32"},
                                         {"::/129", "0-128"},
                                         {"1.2.3.4/-1", "prefix"},
                                         {"1.2.3.4/+8", "prefix"},
                                         {"1.2.3.4/", "prefix"},
                                         {"1.2.3.4/032", "prefix"},
                                         {"1.2.3.4/1000", "prefix"},
                                         {"1.2.3.4", "no /prefix"},
                                         {"/24", "not a valid IPv4"},
                                         {"", "empty"},
                                         {"not-a-cidr", "no /prefix"},
                                         {"010.0.0.1/32", "IPv4"},
                                         {"1.2.3/24", "IPv4"},
                                         {"256.0.0.0/8", "IPv4"},
                                         {"1.2.3.4/24/8", "prefix"},
                                         {" 1.2.3.4/32", "unexpected character"},
                                         {"1.2.3.4/32 ", "prefix"},
                                         {"1.2.3.4 /32", "unexpected character"},
                                         {"1.2.3.0/24\n", "prefix"},
                                         {"fe80::1%eth0/128", "unexpected character"},
                                         {"::ffff:1.2.3.4/128", "IPv4-mapped"},
                                         {"::ffff:0:0/96", "IPv4-mapped"},
                                         {"2001:db8::g/64", "unexpected character"},
                                         {"2001:db8:::/64", "IPv6"},
                                         {"\xef\xbc\x91.2.3.4/32", "unexpected character"},
                                         {std::string(100, '1'), "too long"}}) {
    INFO(c.in);
    auto r = parseCidr(c.in);
    REQUIRE_FALSE(r.isOk());
    CHECK_THAT(r.status().message(), Catch::Contains(c.why));
  }
}

// --- RFC 3339 --------------------------------------------------------------------------------

TEST_CASE("validators: RFC 3339 UTC times", "[validators][time]") {
  for (const auto& [in, out] :
       std::vector<std::pair<std::string, int64_t>>{{"1970-01-01T00:00:00Z", 0},
                                                    {"2027-01-31T00:00:00Z", 1801353600},
                                                    {"2000-02-29T12:34:56Z", 951827696},
                                                    {"2024-02-29T23:59:59+00:00", 1709251199},
                                                    {"2024-02-29T23:59:59.999999999Z", 1709251199},
                                                    {"2024-02-29T23:59:59.5+00:00", 1709251199},
                                                    {"1969-12-31T23:59:59Z", -1},
                                                    {"2099-01-01T00:00:00Z", 4070908800},
                                                    {"9999-12-31T23:59:59Z", 253402300799},
                                                    {"0000-01-01T00:00:00Z", -62167219200}}) {
    INFO(in);
    auto t = parseRfc3339(in);
    REQUIRE(t.isOk());
    CHECK(*t == out);
  }
  for (const std::string& bad : std::vector<std::string>{"",
                                                         "2024-01-01",
                                                         "2024-01-01T00:00:00",
                                                         "2024-01-01T00:00:00+01:00",
                                                         "2024-01-01T00:00:00-00:00",
                                                         "2024-01-01t00:00:00Z",
                                                         "2024-01-01T00:00:00z",
                                                         "2024-01-01 00:00:00Z",
                                                         "2024-13-01T00:00:00Z",
                                                         "2024-00-01T00:00:00Z",
                                                         "2024-01-00T00:00:00Z",
                                                         "2024-01-32T00:00:00Z",
                                                         "2023-02-29T00:00:00Z",
                                                         "1900-02-29T00:00:00Z",
                                                         "2024-04-31T00:00:00Z",
                                                         "2024-01-01T24:00:00Z",
                                                         "2024-01-01T23:60:00Z",
                                                         "2016-12-31T23:59:60Z",
                                                         "2024-01-01T00:00:00.Z",
                                                         "2024-01-01T00:00:00.1234567890Z",
                                                         "2024-1-01T00:00:00Z",
                                                         "+2024-01-01T00:00:00Z",
                                                         "2024-01-01T00:00:00Z ",
                                                         " 2024-01-01T00:00:00Z",
                                                         "2024-01-01T00:00:00Z\n",
                                                         "2024-01-01T00:00:00ZZ",
                                                         "tomorrow",
                                                         "12345-01-01T00:00:00Z",
                                                         "2024-01-01T0a:00:00Z",
                                                         "2024-01-01T00:00:00.-1Z"}) {
    INFO(bad);
    CHECK_FALSE(parseRfc3339(bad).isOk());
  }
}

TEST_CASE("validators: printableForMessage escapes and cuts", "[validators]") {
  CHECK(pim::printableForMessage("abc") == "abc");
  CHECK(pim::printableForMessage(std::string("a\nb\0", 4)) == "a\\x0ab\\x00");
  CHECK(pim::printableForMessage(std::string(100, 'x'), 10) == std::string(10, 'x') + "...");
}
