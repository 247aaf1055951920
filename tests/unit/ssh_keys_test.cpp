#include "providers/ssh_keys.h"

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "providers/host/real_host.h"
#include "tests/support/etc_sandbox.h"
#include "tests/support/skip.h"

namespace fs = std::filesystem;
using namespace pim;

namespace {

const char* kAlice = "AAAAC3NzaC1lZDI1NTE5AAAAID3VsOd8xVQ8SOwKm3VCfQ+Vy2O6qRe5eFSqyWsDd44X";
const char* kBob = "AAAAC3NzaC1lZDI1NTE5AAAAIC2XIHN0vl1NyZoFIZqpB/cSPYX46t8JuAiqhHIEnH85";
const char* kErin = "AAAAC3NzaC1lZDI1NTE5AAAAIIrttLSK67MerY4sEfU0bFs9uy08JHfu9Q9gzaTOM180";
constexpr int64_t kNow = 1800000000;

SshKey key(const std::string& id, const std::string& blob, bool active = true,
           std::optional<int64_t> expiresAt = std::nullopt) {
  SshKey k;
  k.id = id;
  k.owner = id + "@example.com";
  k.key = PublicKey{"ssh-ed25519", blob, "laptop"};
  k.active = active;
  k.expiresAt = expiresAt;
  return k;
}

std::string line(const std::string& id, const std::string& blob) { return "ssh-ed25519 " + blob + " pim:" + id + "\n"; }

std::string block(const std::vector<std::string>& lines) {
  std::string s = "# BEGIN pim-access-agent\n";
  for (const auto& l : lines) s += l;
  return s + "# END pim-access-agent\n";
}

std::string readGolden(const std::string& name) {
  std::ifstream in(std::string(PIM_SOURCE_DIR) + "/tests/golden/" + name, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// A current state with a safe existing .ssh and file owned by uid 1000.
SshKeysCurrent existing(const std::optional<std::string>& content) {
  SshKeysCurrent c;
  c.userExists = true;
  c.uid = 1000;
  c.gid = 1000;
  c.home = "/home/akeneo";
  c.sshDir.type = FileType::kDirectory;
  c.sshDir.mode = 0700;
  c.sshDir.uid = 1000;
  c.sshDir.gid = 1000;
  c.sshDir.nlink = 2;
  if (content) {
    c.keysFile.type = FileType::kRegular;
    c.keysFile.mode = 0600;
    c.keysFile.uid = 1000;
    c.keysFile.gid = 1000;
    c.keysFile.nlink = 1;
    c.keysFile.size = off_t(content->size());
    c.content = content;
  }
  return c;
}

}  // namespace

TEST_CASE("renderKeyBlock writes installable keys sorted by id, matching the golden file", "[ssh_keys]") {
  std::vector<SshKey> keys = {key("k-erin", kErin), key("k-alice-laptop", kAlice), key("k-bob", kBob, true, kNow + 1),
                              key("k-carol-old", kAlice, true, kNow), key("k-dave", kBob, false)};
  const std::string rendered = renderKeyBlock(keys, kNow);
  CHECK(rendered == readGolden("authorized_keys-block.txt"));
  // The key's own comment and the owner never reach the file.
  CHECK(rendered.find(" laptop") == std::string::npos);
  CHECK(rendered.find("@example.com") == std::string::npos);
}

TEST_CASE("renderKeyBlock: expiry boundary, inactive keys, empty set", "[ssh_keys]") {
  SECTION("a key expiring exactly now is left out, one second later it is in") {
    std::vector<SshKey> keys = {key("k-a", kAlice, true, kNow)};
    CHECK(renderKeyBlock(keys, kNow) == block({}));
    CHECK(renderKeyBlock(keys, kNow - 1) == block({line("k-a", kAlice)}));
  }
  SECTION("inactive keys are not installed") { CHECK(renderKeyBlock({key("k-a", kAlice, false)}, kNow) == block({})); }
  SECTION("no keys still gives an empty managed block") {
    CHECK(renderKeyBlock({}, kNow) == "# BEGIN pim-access-agent\n# END pim-access-agent\n");
  }
  SECTION("a key that is not a plain token (newline, options) is never rendered") {
    SshKey bad = key("k-bad", std::string(kAlice) + "\ncommand=\"sh\" ssh-ed25519 AAAA");
    SshKey badId = key("k bad", kBob);
    CHECK(renderKeyBlock({bad, badId, key("k-ok", kErin)}, kNow) == block({line("k-ok", kErin)}));
  }
}

TEST_CASE("mergeAuthorizedKeys keeps lines outside the block byte for byte", "[ssh_keys]") {
  const std::string b = block({line("k-a", kAlice)});
  SECTION("a file without a block gets it appended") {
    auto m = mergeAuthorizedKeys("ssh-rsa AAAAown me@home\n", b);
    REQUIRE(m.isOk());
    CHECK(*m == "ssh-rsa AAAAown me@home\n" + b);
  }
  SECTION("a missing trailing newline gets one before the appended block") {
    auto m = mergeAuthorizedKeys("ssh-rsa AAAAown me@home", b);
    REQUIRE(m.isOk());
    CHECK(*m == "ssh-rsa AAAAown me@home\n" + b);
  }
  SECTION("an empty file is just the block") { CHECK(*mergeAuthorizedKeys("", b) == b); }
  SECTION("CRLF lines and a last line without newline after the block are kept") {
    const std::string before = "# mine\r\nssh-rsa AAAA1 x@y\r\n\r\n";
    const std::string after = "ssh-ed25519 AAAA2 tail\r\nno-newline-at-end";
    const std::string old = before + block({line("k-old", kBob)}) + after;
    auto m = mergeAuthorizedKeys(old, b);
    REQUIRE(m.isOk());
    CHECK(*m == before + b + after);
    // Idempotent: merging again changes nothing.
    CHECK(*mergeAuthorizedKeys(*m, b) == *m);
  }
  SECTION("a block written with CRLF markers is recognised and replaced") {
    const std::string old =
        "x\n# BEGIN pim-access-agent\r\nssh-ed25519 AAAA pim:k-old\r\n# END pim-access-agent\r\ny\n";
    CHECK(*mergeAuthorizedKeys(old, b) == "x\n" + b + "y\n");
  }
  SECTION("a block in the middle is replaced in place") {
    const std::string old = "a\n" + block({line("k-old", kBob)}) + "b\n";
    CHECK(*mergeAuthorizedKeys(old, b) == "a\n" + b + "b\n");
  }
}

TEST_CASE("parseAuthorizedKeys refuses malformed blocks and names the line", "[ssh_keys]") {
  auto msg = [](const std::string& text) {
    auto p = parseAuthorizedKeys(text);
    REQUIRE_FALSE(p.isOk());
    CHECK(p.status().code() == ErrorCode::kInvalid);
    return p.status().message();
  };
  CHECK_THAT(msg("a\n# BEGIN pim-access-agent\nssh-ed25519 X pim:k\n"),
             Catch::Contains("line 2") && Catch::Contains("BEGIN marker without END"));
  CHECK_THAT(msg("# BEGIN pim-access-agent\n# BEGIN pim-access-agent\n# END pim-access-agent\n"),
             Catch::Contains("line 2") && Catch::Contains("second BEGIN"));
  CHECK_THAT(msg("a\nb\n# END pim-access-agent\n"),
             Catch::Contains("line 3") && Catch::Contains("END marker without BEGIN"));
  CHECK_THAT(msg(block({}) + "x\n" + block({})), Catch::Contains("line 4") && Catch::Contains("second managed block"));
  CHECK(mergeAuthorizedKeys("# BEGIN pim-access-agent\n", block({})).status().code() == ErrorCode::kInvalid);

  auto ok = parseAuthorizedKeys("a\n" + block({line("k-a", kAlice)}) + "b");
  REQUIRE(ok.isOk());
  CHECK(ok->hasBlock);
  CHECK(ok->before == "a\n");
  CHECK(ok->inner == line("k-a", kAlice));
  CHECK(ok->after == "b");
}

TEST_CASE("installedKeyIds lists the ids inside the block only", "[ssh_keys]") {
  const std::string text = "ssh-rsa AAAA pim:k-outside\n" + block({line("k-a", kAlice), "# note\n", line("k-b", kBob)});
  CHECK(installedKeyIds(text) == std::vector<std::string>{"k-a", "k-b"});
  CHECK(installedKeyIds("ssh-rsa AAAA pim:k-outside\n").empty());
  CHECK(installedKeyIds("# BEGIN pim-access-agent\nssh-ed25519 A pim:k-a\n").empty());
}

TEST_CASE("nextExpiry is the earliest future expiry among active keys", "[ssh_keys]") {
  AccessDocument doc;
  CHECK_FALSE(nextExpiry(doc, kNow).has_value());
  doc.keys = {key("a", kAlice, true, kNow), key("b", kBob, true, kNow + 500), key("c", kErin, false, kNow + 10),
              key("d", kAlice, true, kNow + 100), key("e", kBob)};
  REQUIRE(nextExpiry(doc, kNow).has_value());
  CHECK(*nextExpiry(doc, kNow) == kNow + 100);
  CHECK(*nextExpiry(doc, kNow + 100) == kNow + 500);
  CHECK_FALSE(nextExpiry(doc, kNow + 500).has_value());
}

TEST_CASE("planSshKeys table", "[ssh_keys]") {
  SshKeysDesired want{"akeneo", {key("k-alice", kAlice), key("k-bob", kBob)}, kNow};
  const std::string installed = "own line\n" + block({line("k-alice", kAlice), line("k-bob", kBob)});

  SECTION("same keys in another order: nothing to do") {
    SshKeysDesired reordered{"akeneo", {key("k-bob", kBob), key("k-alice", kAlice)}, kNow};
    CHECK(planSshKeys(reordered, existing(installed)).empty());
    CHECK(planSshKeys(want, existing(installed)).empty());
  }
  SECTION("a key added and one removed") {
    SshKeysDesired changed{"akeneo", {key("k-alice", kAlice), key("k-carol", kErin)}, kNow};
    auto actions = planSshKeys(changed, existing(installed));
    // k-bob is revoked with the revocations, k-carol granted once sshd confines the login user.
    REQUIRE(actions.size() == 2);
    CHECK(actions[0].stage == Stage::kRevoke);
    CHECK(actions[0].payload == block({line("k-alice", kAlice)}));
    CHECK(actions[1].stage == Stage::kGrant);
    CHECK(actions[1].verb == "write");
    CHECK(actions[1].object == "/home/akeneo/.ssh/authorized_keys");
    CHECK(actions[1].describe() == "ssh_keys: write /home/akeneo/.ssh/authorized_keys (+k-carol -k-bob; 2 keys)");
    CHECK(actions[1].payload == block({line("k-alice", kAlice), line("k-carol", kErin)}));
  }
  SECTION("a key that expires at now is removed") {
    SshKeysDesired expiring{"akeneo", {key("k-alice", kAlice), key("k-bob", kBob, true, kNow)}, kNow};
    auto actions = planSshKeys(expiring, existing(installed));
    REQUIRE(actions.size() == 1);
    CHECK_THAT(actions[0].detail, Catch::StartsWith("-k-bob; 1 key"));
  }
  SECTION("a key whose blob changed under the same id") {
    SshKeysDesired rotated{"akeneo", {key("k-alice", kAlice), key("k-bob", kErin)}, kNow};
    auto actions = planSshKeys(rotated, existing(installed));
    REQUIRE(actions.size() == 2);
    CHECK_THAT(actions[1].detail, Catch::StartsWith("~k-bob"));
  }
  SECTION("no .ssh and no file: create the directory, then write") {
    SshKeysCurrent c = existing(std::nullopt);
    c.sshDir = FileInfo{};
    auto actions = planSshKeys(want, c);
    REQUIRE(actions.size() == 2);
    CHECK(actions[0].verb == "create");
    CHECK(actions[0].object == "/home/akeneo/.ssh");
    CHECK(actions[1].verb == "write");
    CHECK_THAT(actions[1].detail, Catch::Contains("new file"));
  }
  SECTION("mode and owner drift: fix .ssh and rewrite the file") {
    SshKeysCurrent c = existing(installed);
    c.sshDir.mode = 0755;
    c.keysFile.mode = 0644;
    c.keysFile.uid = 0;
    auto actions = planSshKeys(want, c);
    REQUIRE(actions.size() == 2);
    CHECK(actions[0].verb == "fix");
    CHECK_THAT(actions[0].detail, Catch::Contains("mode 0755 -> 0700"));
    CHECK(actions[1].verb == "write");
    CHECK_THAT(actions[1].detail, Catch::Contains("mode 0644 -> 0600") && Catch::Contains("owner 0:1000 -> 1000:1000"));
  }
  SECTION("a file without a block gets one, even for an empty key set") {
    SshKeysDesired none{"akeneo", {}, kNow};
    auto actions = planSshKeys(none, existing("own line\n"));
    REQUIRE(actions.size() == 1);
    CHECK_THAT(actions[0].detail, Catch::Contains("add managed block"));
    CHECK(planSshKeys(none, existing("own line\n" + block({}))).empty());
  }
  SECTION("ten thousand changes are summarised, not listed") {
    SshKeysDesired many{"akeneo", {}, kNow};
    for (int i = 0; i < 10000; ++i) many.keys.push_back(key("k-" + std::to_string(i), kAlice));
    auto actions = planSshKeys(many, existing(installed));
    REQUIRE(actions.size() == 2);
    CHECK(actions[1].detail == "+10000 -2 ~0 keys; 10000 keys");
  }
}

// ---------------------------------------------------------------------------------------------
// apply() against RealHost on a sandbox (needs root for chown).

namespace {

constexpr uid_t kUid = 4242;
constexpr gid_t kGid = 4343;

struct KeysSandbox {
  test::EtcSandbox sb;
  HostSettings hostSettings;
  SshdSettings sshdSettings;
  AccessDocument doc;
  RealHost host{sb.dir(), nullLogger()};
  SshKeysProvider provider{nullLogger()};

  KeysSandbox() {
    sb.append("/etc/passwd", "akeneo:x:4242:4343::/home/akeneo:/bin/bash\nother:x:4545:4545::/home/other:/bin/sh\n");
    fs::create_directories(sb.path("/home/akeneo"));
    ::chown(sb.path("/home/akeneo").c_str(), kUid, kGid);
    doc.keys = {key("k-alice", kAlice), key("k-bob", kBob)};
  }
  Desired desired(int64_t now = kNow) { return Desired{doc, hostSettings, sshdSettings, now}; }
  /// plan + apply every action; returns the first failure.
  Status reconcile(int64_t now = kNow) {
    auto d = desired(now);
    auto actions = provider.plan(d, host);
    if (!actions) return actions.status();
    for (const auto& a : *actions) {
      if (Status s = provider.apply(a, d, host); !s) return s;
    }
    return Status::ok();
  }
  std::string keysPath() const { return sb.path("/home/akeneo/.ssh/authorized_keys"); }
  std::vector<std::string> sshDirNames() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(sb.path("/home/akeneo/.ssh"))) names.push_back(e.path().filename());
    std::sort(names.begin(), names.end());
    return names;
  }
};

struct stat statOf(const std::string& p) {
  struct stat st {};
  ::lstat(p.c_str(), &st);
  return st;
}

bool isRoot() { return pim::test::runsAsRoot("chown to another uid"); }

}  // namespace

TEST_CASE("ssh_keys apply creates .ssh and the file, then a fresh plan is empty", "[ssh_keys][root]") {
  if (!isRoot()) return;
  KeysSandbox k;
  REQUIRE(k.reconcile().isOk());
  const auto dir = statOf(k.sb.path("/home/akeneo/.ssh"));
  CHECK(S_ISDIR(dir.st_mode));
  CHECK((dir.st_mode & 07777) == 0700);
  CHECK(dir.st_uid == kUid);
  CHECK(dir.st_gid == kGid);
  const auto file = statOf(k.keysPath());
  CHECK((file.st_mode & 07777) == 0600);
  CHECK(file.st_uid == kUid);
  CHECK(file.st_gid == kGid);
  CHECK(k.sb.read("/home/akeneo/.ssh/authorized_keys") == block({line("k-alice", kAlice), line("k-bob", kBob)}));

  auto d = k.desired();
  auto again = k.provider.plan(d, k.host);
  REQUIRE(again.isOk());
  CHECK(again->empty());

  // Applying the same document again does not touch the file.
  REQUIRE(k.reconcile().isOk());
  const auto after = statOf(k.keysPath());
  CHECK(after.st_ino == file.st_ino);
  CHECK(after.st_mtim.tv_sec == file.st_mtim.tv_sec);
  CHECK(after.st_mtim.tv_nsec == file.st_mtim.tv_nsec);
  CHECK(k.sshDirNames() == std::vector<std::string>{"authorized_keys"});
}

TEST_CASE("ssh_keys keeps the user's own lines and removes a key at its expiry", "[ssh_keys][root]") {
  if (!isRoot()) return;
  KeysSandbox k;
  const std::string own = "# my own\r\nssh-rsa AAAAB3own me@home\r\nno-newline";
  k.sb.write("/home/akeneo/.ssh/authorized_keys", own, 0600);
  ::chown(k.sb.path("/home/akeneo/.ssh").c_str(), kUid, kGid);
  ::chmod(k.sb.path("/home/akeneo/.ssh").c_str(), 0700);
  ::chown(k.keysPath().c_str(), kUid, kGid);
  k.doc.keys[1].expiresAt = kNow + 60;

  REQUIRE(k.reconcile().isOk());
  CHECK(k.sb.read("/home/akeneo/.ssh/authorized_keys") ==
        own + "\n" + block({line("k-alice", kAlice), line("k-bob", kBob)}));
  REQUIRE(k.reconcile(kNow + 60).isOk());
  CHECK(k.sb.read("/home/akeneo/.ssh/authorized_keys") == own + "\n" + block({line("k-alice", kAlice)}));
  CHECK(installedKeyIds(k.sb.read("/home/akeneo/.ssh/authorized_keys")) == std::vector<std::string>{"k-alice"});
}

TEST_CASE("ssh_keys corrects mode and owner drift", "[ssh_keys][root]") {
  if (!isRoot()) return;
  KeysSandbox k;
  REQUIRE(k.reconcile().isOk());
  ::chmod(k.sb.path("/home/akeneo/.ssh").c_str(), 0755);
  ::chmod(k.keysPath().c_str(), 0644);
  ::chown(k.keysPath().c_str(), 0, 0);
  auto d = k.desired();
  auto actions = k.provider.plan(d, k.host);
  REQUIRE(actions.isOk());
  CHECK(actions->size() == 2);
  REQUIRE(k.reconcile().isOk());
  CHECK((statOf(k.sb.path("/home/akeneo/.ssh")).st_mode & 07777) == 0700);
  CHECK((statOf(k.keysPath()).st_mode & 07777) == 0600);
  CHECK(statOf(k.keysPath()).st_uid == kUid);
  auto again = k.provider.plan(d, k.host);
  REQUIRE(again.isOk());
  CHECK(again->empty());
}

TEST_CASE("ssh_keys refuses a symlinked .ssh and leaves its target untouched", "[ssh_keys][root][security]") {
  if (!isRoot()) return;
  KeysSandbox k;
  k.sb.write("/etc/target/keep", "root file\n", 0600);
  fs::create_directory_symlink(k.sb.path("/etc/target"), k.sb.path("/home/akeneo/.ssh"));
  auto d = k.desired();
  auto plan = k.provider.plan(d, k.host);
  REQUIRE_FALSE(plan.isOk());
  CHECK(plan.status().code() == ErrorCode::kUnsafe);
  CHECK_THAT(plan.status().message(), Catch::Contains(".ssh"));
  // apply() of a write planned before the swap refuses too.
  Action write{
      "ssh_keys",    "write", "/home/akeneo/.ssh/authorized_keys", "", renderKeyBlock(k.doc.keys, kNow), "", "",
      Stage::kGrant, ""};
  CHECK(k.provider.apply(write, d, k.host).code() == ErrorCode::kUnsafe);
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(k.sb.path("/etc/target"))) names.push_back(e.path().filename());
  CHECK(names == std::vector<std::string>{"keep"});
  CHECK(statOf(k.sb.path("/etc/target")).st_uid == 0);
  CHECK((statOf(k.sb.path("/etc/target")).st_mode & 07777) != 0700);
}

TEST_CASE("ssh_keys refuses unsafe authorized_keys files and writes nothing", "[ssh_keys][root][security]") {
  if (!isRoot()) return;
  KeysSandbox k;
  fs::create_directories(k.sb.path("/home/akeneo/.ssh"));
  ::chown(k.sb.path("/home/akeneo/.ssh").c_str(), kUid, kGid);
  ::chmod(k.sb.path("/home/akeneo/.ssh").c_str(), 0700);
  auto d = k.desired();
  Action write{
      "ssh_keys",    "write", "/home/akeneo/.ssh/authorized_keys", "", renderKeyBlock(k.doc.keys, kNow), "", "",
      Stage::kGrant, ""};

  SECTION("a hard link to another file") {
    k.sb.write("/etc/precious", "root:secret\n", 0600);
    fs::create_hard_link(k.sb.path("/etc/precious"), k.keysPath());
    auto plan = k.provider.plan(d, k.host);
    REQUIRE_FALSE(plan.isOk());
    CHECK(plan.status().code() == ErrorCode::kUnsafe);
    CHECK_THAT(plan.status().message(), Catch::Contains("hard link"));
    CHECK(k.provider.apply(write, d, k.host).code() == ErrorCode::kUnsafe);
    CHECK(k.sb.read("/etc/precious") == "root:secret\n");
    CHECK(statOf(k.sb.path("/etc/precious")).st_uid == 0);
    CHECK(statOf(k.keysPath()).st_nlink == 2);
  }
  SECTION("a file owned by another user") {
    k.sb.write("/home/akeneo/.ssh/authorized_keys", "ssh-rsa AAAA planted\n", 0600);
    ::chown(k.keysPath().c_str(), 4545, 4545);
    auto plan = k.provider.plan(d, k.host);
    REQUIRE_FALSE(plan.isOk());
    CHECK(plan.status().code() == ErrorCode::kUnsafe);
    CHECK_THAT(plan.status().message(), Catch::Contains("uid 4545"));
    CHECK(k.provider.apply(write, d, k.host).code() == ErrorCode::kUnsafe);
    CHECK(k.sb.read("/home/akeneo/.ssh/authorized_keys") == "ssh-rsa AAAA planted\n");
  }
  SECTION("a FIFO is refused without blocking") {
    REQUIRE(::mkfifo(k.keysPath().c_str(), 0600) == 0);
    auto plan = k.provider.plan(d, k.host);
    REQUIRE_FALSE(plan.isOk());
    CHECK(plan.status().code() == ErrorCode::kUnsafe);
    CHECK_THAT(plan.status().message(), Catch::Contains("not a regular file"));
    CHECK(k.provider.apply(write, d, k.host).code() == ErrorCode::kUnsafe);
    CHECK(S_ISFIFO(statOf(k.keysPath()).st_mode));
  }
  SECTION("a symlink to a root file") {
    k.sb.write("/etc/precious", "root:secret\n", 0600);
    fs::create_symlink(k.sb.path("/etc/precious"), k.keysPath());
    auto plan = k.provider.plan(d, k.host);
    REQUIRE_FALSE(plan.isOk());
    CHECK(plan.status().code() == ErrorCode::kUnsafe);
    CHECK(k.provider.apply(write, d, k.host).code() == ErrorCode::kUnsafe);
    CHECK(k.sb.read("/etc/precious") == "root:secret\n");
    CHECK(fs::is_symlink(k.keysPath()));
  }
  SECTION("a .ssh owned by another user") {
    ::chown(k.sb.path("/home/akeneo/.ssh").c_str(), 4545, 4545);
    auto plan = k.provider.plan(d, k.host);
    REQUIRE_FALSE(plan.isOk());
    CHECK(plan.status().code() == ErrorCode::kUnsafe);
    CHECK(k.provider.apply(write, d, k.host).code() == ErrorCode::kUnsafe);
    CHECK(statOf(k.sb.path("/home/akeneo/.ssh")).st_uid == 4545);
  }
  // Whatever was refused, no temporary file was left next to it.
  for (const auto& name : k.sshDirNames()) CHECK(name == "authorized_keys");
}

TEST_CASE("ssh_keys refuses a malformed managed block and leaves the file alone", "[ssh_keys][root]") {
  if (!isRoot()) return;
  KeysSandbox k;
  const std::string broken = "ssh-rsa AAAA mine\n# BEGIN pim-access-agent\nssh-ed25519 AAAA pim:k-x\n";
  k.sb.write("/home/akeneo/.ssh/authorized_keys", broken, 0600);
  ::chown(k.sb.path("/home/akeneo/.ssh").c_str(), kUid, kGid);
  ::chown(k.keysPath().c_str(), kUid, kGid);
  auto d = k.desired();
  auto plan = k.provider.plan(d, k.host);
  REQUIRE_FALSE(plan.isOk());
  CHECK(plan.status().code() == ErrorCode::kInvalid);
  CHECK_THAT(plan.status().message(), Catch::Contains("line 2"));
  CHECK(k.sb.read("/home/akeneo/.ssh/authorized_keys") == broken);
  CHECK(k.sshDirNames() == std::vector<std::string>{"authorized_keys"});
}
