// The ssh_keys provider: the login user's keys file that the agent owns whole
// (<authorized_keys dir>/<user>), the upgrade clean-up of 0.1's SFTP key directory, and the
// home's own authorized_keys, which the agent only ever reads for `status`.
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
const std::string kDir = "/etc/pim-access-agent/authorized_keys";
const std::string kFile = kDir + "/akeneo";

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

const std::string kHeader =
    "# Managed by pim-access-agent: the SSH keys of akeneo from the access store.\n"
    "# Do not edit: this file is rewritten on every change. sshd reads no other file for akeneo.\n";

std::string file(const std::vector<std::string>& lines) {
  std::string s = kHeader;
  for (const auto& l : lines) s += l;
  return s;
}

std::string readGolden(const std::string& name) {
  std::ifstream in(std::string(PIM_SOURCE_DIR) + "/tests/golden/" + name, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

FileInfo rootDir() {
  FileInfo d;
  d.type = FileType::kDirectory;
  d.mode = 0755;
  d.nlink = 2;
  return d;
}

/// A current state: the directory as it should be, the file (when given) 0644 root:root.
SshKeysCurrent existing(const std::optional<std::string>& content) {
  SshKeysCurrent c;
  c.keysDir = rootDir();
  if (content) {
    c.keysFile.type = FileType::kRegular;
    c.keysFile.mode = 0644;
    c.keysFile.nlink = 1;
    c.keysFile.size = off_t(content->size());
    c.content = content;
  }
  return c;
}

SshKeysDesired desiredKeys(std::vector<SshKey> keys) { return SshKeysDesired{"akeneo", kDir, std::move(keys), kNow}; }

}  // namespace

TEST_CASE("renderKeysFile writes installable keys sorted by id, matching the golden file", "[ssh_keys]") {
  std::vector<SshKey> keys = {key("k-erin", kErin), key("k-alice-laptop", kAlice), key("k-bob", kBob, true, kNow + 1),
                              key("k-carol-old", kAlice, true, kNow), key("k-dave", kBob, false)};
  const std::string rendered = renderKeysFile("akeneo", keys, kNow);
  CHECK(rendered == readGolden("authorized_keys-akeneo.txt"));
  // The key's own comment and the owner never reach the file; no markers: the file is the agent's.
  CHECK(rendered.find(" laptop") == std::string::npos);
  CHECK(rendered.find("@example.com") == std::string::npos);
  CHECK(rendered.find("BEGIN") == std::string::npos);
}

TEST_CASE("renderKeysFile: expiry boundary, inactive keys, empty set", "[ssh_keys]") {
  SECTION("a key expiring exactly now is left out, one second later it is in") {
    std::vector<SshKey> keys = {key("k-a", kAlice, true, kNow)};
    CHECK(renderKeysFile("akeneo", keys, kNow) == file({}));
    CHECK(renderKeysFile("akeneo", keys, kNow - 1) == file({line("k-a", kAlice)}));
  }
  SECTION("inactive keys are not installed") {
    CHECK(renderKeysFile("akeneo", {key("k-a", kAlice, false)}, kNow) == file({}));
  }
  SECTION("no keys: the header alone") { CHECK(renderKeysFile("akeneo", {}, kNow) == kHeader); }
  SECTION("a key that is not a plain token (newline, options) is never rendered") {
    SshKey bad = key("k-bad", std::string(kAlice) + "\ncommand=\"sh\" ssh-ed25519 AAAA");
    SshKey badId = key("k bad", kBob);
    CHECK(renderKeysFile("akeneo", {bad, badId, key("k-ok", kErin)}, kNow) == file({line("k-ok", kErin)}));
  }
}

TEST_CASE("installedKeyIds lists the pim: ids of a keys file", "[ssh_keys]") {
  CHECK(installedKeyIds(file({line("k-a", kAlice), "# note\n", line("k-b", kBob)})) ==
        std::vector<std::string>{"k-a", "k-b"});
  CHECK(installedKeyIds(kHeader).empty());
  CHECK(installedKeyIds("ssh-rsa AAAA someone@else\n").empty());
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
  const auto want = desiredKeys({key("k-alice", kAlice), key("k-bob", kBob)});
  const std::string installed = file({line("k-alice", kAlice), line("k-bob", kBob)});

  SECTION("same keys in another order: nothing to do") {
    CHECK(planSshKeys(desiredKeys({key("k-bob", kBob), key("k-alice", kAlice)}), existing(installed)).empty());
    CHECK(planSshKeys(want, existing(installed)).empty());
  }
  SECTION("a key added and one removed: k-bob is revoked first, k-carol granted once sshd confines") {
    auto actions = planSshKeys(desiredKeys({key("k-alice", kAlice), key("k-carol", kErin)}), existing(installed));
    REQUIRE(actions.size() == 2);
    CHECK(actions[0].stage == Stage::kRevoke);
    CHECK(actions[0].payload == file({line("k-alice", kAlice)}));
    CHECK(actions[1].stage == Stage::kGrant);
    CHECK(actions[1].verb == Verb::kWrite);
    CHECK(actions[1].object == kFile);
    CHECK(actions[1].describe() == "ssh_keys: write " + kFile + " (+k-carol -k-bob; 2 keys)");
    CHECK(actions[1].payload == file({line("k-alice", kAlice), line("k-carol", kErin)}));
  }
  SECTION("a key only added: one grant") {
    auto actions = planSshKeys(desiredKeys({key("k-alice", kAlice), key("k-bob", kBob), key("k-carol", kErin)}),
                               existing(installed));
    REQUIRE(actions.size() == 1);
    CHECK(actions[0].stage == Stage::kGrant);
  }
  SECTION("a key that expires at now is removed: one revocation") {
    auto actions =
        planSshKeys(desiredKeys({key("k-alice", kAlice), key("k-bob", kBob, true, kNow)}), existing(installed));
    REQUIRE(actions.size() == 1);
    CHECK(actions[0].stage == Stage::kRevoke);
    CHECK_THAT(actions[0].detail, Catch::StartsWith("-k-bob; 1 key"));
  }
  SECTION("a key whose blob changed under the same id: the old one goes first") {
    auto actions = planSshKeys(desiredKeys({key("k-alice", kAlice), key("k-bob", kErin)}), existing(installed));
    REQUIRE(actions.size() == 2);
    CHECK(actions[0].payload == file({line("k-alice", kAlice)}));
    CHECK_THAT(actions[1].detail, Catch::StartsWith("~k-bob"));
  }
  SECTION("no directory and no file: one write (the directory comes with it)") {
    SshKeysCurrent c;
    auto actions = planSshKeys(want, c);
    REQUIRE(actions.size() == 1);
    CHECK(actions[0].verb == Verb::kWrite);
    CHECK(actions[0].stage == Stage::kGrant);
    CHECK_THAT(actions[0].detail, Catch::Contains("new file"));
    CHECK(actions[0].before == "missing");
    CHECK(planSshKeys(desiredKeys({}), c)[0].stage == Stage::kPrepare);  // the header alone grants nothing
  }
  SECTION("lines someone added by hand are taken out, with the revocations") {
    auto actions = planSshKeys(want, existing(installed + "ssh-ed25519 " + kErin + " added-by-hand\n"));
    REQUIRE(actions.size() == 1);
    CHECK(actions[0].stage == Stage::kRevoke);
    CHECK(actions[0].payload == installed);
    CHECK_THAT(actions[0].detail, Catch::StartsWith("rewrite"));
    // With a key added at the same time, the hand-made line still goes first.
    auto both = planSshKeys(desiredKeys({key("k-alice", kAlice), key("k-bob", kBob), key("k-carol", kErin)}),
                            existing(installed + "ssh-ed25519 " + kErin + " added-by-hand\n"));
    REQUIRE(both.size() == 2);
    CHECK(both[0].stage == Stage::kRevoke);
    CHECK(both[0].payload == installed);
    CHECK(both[1].stage == Stage::kGrant);
  }
  SECTION("mode and owner drift: fix the directory, write the file afresh") {
    SshKeysCurrent c = existing(installed);
    c.keysDir.mode = 0775;
    c.keysFile.mode = 0666;
    c.keysFile.uid = 1000;
    auto actions = planSshKeys(want, c);
    REQUIRE(actions.size() == 2);
    CHECK(actions[0].verb == Verb::kFixDir);
    CHECK(actions[0].stage == Stage::kRevoke);
    CHECK(actions[1].stage == Stage::kRevoke);
    CHECK_THAT(actions[0].detail, Catch::Contains("mode 0775 owner 0:0 -> 0755 root:root"));
    CHECK(actions[1].verb == Verb::kWrite);
    CHECK_THAT(actions[1].detail, Catch::Contains("mode 0666 -> 0644") && Catch::Contains("owner 1000:0 -> 0:0"));
  }
  SECTION("ten thousand changes are summarised, not listed") {
    auto many = desiredKeys({});
    for (int i = 0; i < 10000; ++i) many.keys.push_back(key("k-" + std::to_string(i), kAlice));
    auto actions = planSshKeys(many, existing(installed));
    REQUIRE(actions.size() == 2);
    CHECK(actions[1].detail == "+10000 -2 ~0 keys; 10000 keys");
  }
  SECTION("0.1's SFTP key files the agent owns go, then their directory when nothing else is in it") {
    SshKeysCurrent c = existing(installed);
    c.legacyFiles = {"/etc/pim-access-agent/sftp-keys/a", "/etc/pim-access-agent/sftp-keys/b"};
    c.legacyDir = rootDir();
    auto actions = planSshKeys(want, c);
    REQUIRE(actions.size() == 3);
    CHECK(actions[0].verb == Verb::kRemoveLegacy);
    CHECK(actions[0].stage == Stage::kRevoke);
    CHECK(actions[0].object == "/etc/pim-access-agent/sftp-keys/a");
    CHECK(actions[1].object == "/etc/pim-access-agent/sftp-keys/b");
    CHECK(actions[2].verb == Verb::kRemoveLegacyDir);
    CHECK(actions[2].object == "/etc/pim-access-agent/sftp-keys");
    c.legacyOthers = {"operator-notes"};
    auto kept = planSshKeys(want, c);
    REQUIRE(kept.size() == 2);
    CHECK(kept[1].verb == Verb::kRemoveLegacy);
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
  MemoryLedger ledger;
  SshKeysProvider provider{nullLogger(), &ledger};

  KeysSandbox() {
    sb.append("/etc/passwd", "akeneo:x:4242:4343::/home/akeneo:/bin/bash\n");
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
  bool planEmpty() {
    auto d = desired();
    auto actions = provider.plan(d, host);
    return actions.isOk() && actions->empty();
  }
  std::string keysPath() const { return sb.path(kFile); }
  std::vector<std::string> dirNames(const std::string& hostDir) const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(sb.path(hostDir))) names.push_back(e.path().filename());
    std::sort(names.begin(), names.end());
    return names;
  }
  /// A home .ssh as akeneo would make it.
  void userSshDir() const {
    fs::create_directories(sb.path("/home/akeneo/.ssh"));
    ::chown(sb.path("/home/akeneo/.ssh").c_str(), kUid, kGid);
    ::chmod(sb.path("/home/akeneo/.ssh").c_str(), 0700);
  }
};

struct stat statOf(const std::string& p) {
  struct stat st {};
  ::lstat(p.c_str(), &st);
  return st;
}

bool isRoot() { return pim::test::runsAsRoot("chown to another uid"); }

}  // namespace

TEST_CASE("ssh_keys apply writes the root-owned file, never the home; then a fresh plan is empty", "[ssh_keys][root]") {
  if (!isRoot()) return;
  KeysSandbox k;
  REQUIRE(k.reconcile().isOk());
  const auto dir = statOf(k.sb.path(kDir));
  CHECK(S_ISDIR(dir.st_mode));
  CHECK((dir.st_mode & 07777) == 0755);
  CHECK(dir.st_uid == 0);
  CHECK((statOf(k.sb.path("/etc/pim-access-agent")).st_mode & 07777) == 0755);
  const auto f = statOf(k.keysPath());
  CHECK((f.st_mode & 07777) == 0644);
  CHECK(f.st_uid == 0);
  CHECK(f.st_gid == 0);
  CHECK(k.sb.read(kFile) == file({line("k-alice", kAlice), line("k-bob", kBob)}));
  CHECK_FALSE(fs::exists(k.sb.path("/home/akeneo/.ssh")));
  CHECK(k.planEmpty());

  // Applying the same document again does not touch the file.
  REQUIRE(k.reconcile().isOk());
  const auto after = statOf(k.keysPath());
  CHECK(after.st_ino == f.st_ino);
  CHECK(after.st_mtim.tv_nsec == f.st_mtim.tv_nsec);
  CHECK(k.dirNames(kDir) == std::vector<std::string>{"akeneo"});
}

TEST_CASE("ssh_keys removes a key at its expiry and a line added by hand", "[ssh_keys][root]") {
  if (!isRoot()) return;
  KeysSandbox k;
  k.doc.keys[1].expiresAt = kNow + 60;
  REQUIRE(k.reconcile().isOk());
  k.sb.append(kFile, std::string("ssh-ed25519 ") + kErin + " slipped-in\n");
  REQUIRE(k.reconcile(kNow + 60).isOk());
  CHECK(k.sb.read(kFile) == file({line("k-alice", kAlice)}));
  CHECK(installedKeyIds(k.sb.read(kFile)) == std::vector<std::string>{"k-alice"});
}

TEST_CASE("ssh_keys corrects mode and owner drift by writing afresh", "[ssh_keys][root]") {
  if (!isRoot()) return;
  KeysSandbox k;
  REQUIRE(k.reconcile().isOk());
  ::chmod(k.sb.path(kDir).c_str(), 0777);
  ::chmod(k.keysPath().c_str(), 0666);
  ::chown(k.keysPath().c_str(), kUid, kGid);
  auto d = k.desired();
  auto actions = k.provider.plan(d, k.host);
  REQUIRE(actions.isOk());
  CHECK(actions->size() == 2);
  REQUIRE(k.reconcile().isOk());
  CHECK((statOf(k.sb.path(kDir)).st_mode & 07777) == 0755);
  CHECK((statOf(k.keysPath()).st_mode & 07777) == 0644);
  CHECK(statOf(k.keysPath()).st_uid == 0);
  CHECK(k.planEmpty());
}

TEST_CASE("ssh_keys: whatever akeneo does to its own ~/.ssh changes nothing and fails nothing",
          "[ssh_keys][root][security]") {
  if (!isRoot()) return;
  KeysSandbox k;
  const std::string planted = std::string("ssh-ed25519 ") + kErin + " mine\n";
  SECTION("a symlinked .ssh") {
    k.sb.write("/etc/target/keep", "root file\n", 0600);
    fs::create_directory_symlink(k.sb.path("/etc/target"), k.sb.path("/home/akeneo/.ssh"));
  }
  SECTION("a FIFO authorized_keys") {
    k.userSshDir();
    REQUIRE(::mkfifo(k.sb.path("/home/akeneo/.ssh/authorized_keys").c_str(), 0600) == 0);
  }
  SECTION("0.1's block with a second END marker, and a key of its own") {
    k.userSshDir();
    k.sb.write("/home/akeneo/.ssh/authorized_keys",
               planted + "# BEGIN pim-access-agent\nssh-ed25519 " + kBob +
                   " pim:k-old\n# END pim-access-agent\n# END pim-access-agent\n",
               0600);
  }
  SECTION("a hard link to a root file") {
    k.userSshDir();
    k.sb.write("/etc/precious", "root:secret\n", 0600);
    fs::create_hard_link(k.sb.path("/etc/precious"), k.sb.path("/home/akeneo/.ssh/authorized_keys"));
  }
  const std::string homeFile = k.sb.path("/home/akeneo/.ssh/authorized_keys");
  const bool regular =
      fs::is_regular_file(fs::symlink_status(homeFile)) && !fs::is_symlink(k.sb.path("/home/akeneo/.ssh"));
  const auto homeBefore = regular ? k.sb.read("/home/akeneo/.ssh/authorized_keys") : std::string();
  REQUIRE(k.reconcile().isOk());
  CHECK(k.sb.read(kFile) == file({line("k-alice", kAlice), line("k-bob", kBob)}));
  k.doc.keys = {key("k-erin", kErin)};
  REQUIRE(k.reconcile().isOk());
  CHECK(k.sb.read(kFile) == file({line("k-erin", kErin)}));
  CHECK(k.planEmpty());
  if (fs::is_symlink(k.sb.path("/home/akeneo/.ssh"))) {
    CHECK(k.dirNames("/etc/target") == std::vector<std::string>{"keep"});
  } else if (regular) {
    CHECK(k.sb.read("/home/akeneo/.ssh/authorized_keys") == homeBefore);
  } else {
    CHECK(fs::is_fifo(fs::symlink_status(homeFile)));
  }
  CHECK(k.sb.read("/etc/precious") == (fs::exists(k.sb.path("/etc/precious")) ? "root:secret\n" : ""));
}

TEST_CASE("ssh_keys refuses a keys file or directory that is not what it should be", "[ssh_keys][root][security]") {
  if (!isRoot()) return;
  KeysSandbox k;
  auto d = k.desired();
  SECTION("the file is a symlink") {
    k.sb.write("/etc/precious", "root:secret\n", 0600);
    fs::create_directories(k.sb.path(kDir));
    fs::create_symlink(k.sb.path("/etc/precious"), k.keysPath());
    auto plan = k.provider.plan(d, k.host);
    REQUIRE_FALSE(plan.isOk());
    CHECK(plan.status().code() == ErrorCode::kUnsafe);
    CHECK(k.sb.read("/etc/precious") == "root:secret\n");
  }
  SECTION("the directory is a symlink") {
    fs::create_directories(k.sb.path("/etc/elsewhere"));
    fs::create_directories(k.sb.path("/etc/pim-access-agent"));
    fs::create_directory_symlink(k.sb.path("/etc/elsewhere"), k.sb.path(kDir));
    auto plan = k.provider.plan(d, k.host);
    REQUIRE_FALSE(plan.isOk());
    CHECK(plan.status().code() == ErrorCode::kUnsafe);
    Action write{"ssh_keys", Verb::kWrite, kFile,         "", renderKeysFile("akeneo", k.doc.keys, kNow),
                 "",         "",           Stage::kGrant, ""};
    CHECK_FALSE(k.provider.apply(write, d, k.host).isOk());
    CHECK(k.dirNames("/etc/elsewhere").empty());
  }
}

TEST_CASE("ssh_keys: on upgrade, 0.1's SFTP key files the agent owns are removed with their directory",
          "[ssh_keys][root]") {
  if (!isRoot()) return;
  KeysSandbox k;
  const std::string legacy = kLegacySftpKeysDir;
  k.sb.write(legacy + "/acme", "restrict ssh-ed25519 AAAA pim:sftp-acme\n", 0644);
  k.sb.write(legacy + "/beta", "restrict ssh-ed25519 AAAA pim:sftp-beta\n", 0644);
  ::chmod(k.sb.path(legacy).c_str(), 0755);
  REQUIRE(k.ledger.recordCreated(OwnedKind::kFile, legacy + "/acme").isOk());
  REQUIRE(k.ledger.recordCreated(OwnedKind::kFile, legacy + "/beta").isOk());
  REQUIRE(k.ledger.recordCreated(OwnedKind::kFile, legacy + "/gone").isOk());  // removed by hand meanwhile
  REQUIRE(k.ledger.recordCreated(OwnedKind::kFile, "/srv/pim-sftp/acme").isOk());

  SECTION("nothing else in the directory: all gone") {
    REQUIRE(k.reconcile().isOk());
    CHECK_FALSE(fs::exists(k.sb.path(legacy)));
    CHECK(k.ledger.owned(OwnedKind::kFile) == std::vector<std::string>{"/srv/pim-sftp/acme"});
    CHECK(k.planEmpty());
  }
  SECTION("a file the agent did not write keeps the directory") {
    k.sb.write(legacy + "/operator", "mine\n", 0644);
    REQUIRE(k.reconcile().isOk());
    CHECK(k.dirNames(legacy) == std::vector<std::string>{"operator"});
    CHECK(k.planEmpty());
  }
}

TEST_CASE("inspectHomeKeys counts key lines and never fails or blocks", "[ssh_keys][root]") {
  if (!isRoot()) return;
  KeysSandbox k;
  SECTION("no file") {
    auto r = inspectHomeKeys(k.host, "akeneo");
    CHECK(r.path == "/home/akeneo/.ssh/authorized_keys");
    CHECK_FALSE(r.exists);
    CHECK(r.unreadable.empty());
  }
  SECTION("key lines, comments and blank lines") {
    k.userSshDir();
    k.sb.write("/home/akeneo/.ssh/authorized_keys",
               "# mine\nssh-ed25519 AAAA a\n\n  \nrestrict ssh-rsa BBBB b\r\n# BEGIN pim-access-agent\n", 0600);
    auto r = inspectHomeKeys(k.host, "akeneo");
    CHECK(r.exists);
    CHECK(r.keyLines == 2);
    CHECK(r.unreadable.empty());
  }
  SECTION("a FIFO") {
    k.userSshDir();
    REQUIRE(::mkfifo(k.sb.path("/home/akeneo/.ssh/authorized_keys").c_str(), 0600) == 0);
    auto r = inspectHomeKeys(k.host, "akeneo");
    CHECK(r.exists);
    CHECK_THAT(r.unreadable, Catch::Contains("not a regular file"));
  }
  SECTION("a symlinked .ssh") {
    fs::create_directory_symlink("/etc", k.sb.path("/home/akeneo/.ssh"));
    auto r = inspectHomeKeys(k.host, "akeneo");
    CHECK(r.exists);
    CHECK_FALSE(r.unreadable.empty());
  }
}

TEST_CASE("renderKeysFile writes a key's own allowed_sources as from=, and only CIDRs", "[ssh_keys][sources]") {
  SshKey alice = key("k-alice", kAlice);
  alice.allowedSources = {"198.51.100.0/24", "2001:db8::/32"};
  SshKey bob = key("k-bob", kBob);
  const std::string text = renderKeysFile("akeneo", {alice, bob}, kNow);
  CHECK(text == file({"from=\"198.51.100.0/24,2001:db8::/32\" ssh-ed25519 " + std::string(kAlice) + " pim:k-alice\n",
                      line("k-bob", kBob)}));
  CHECK(installedKeyIds(text) == std::vector<std::string>{"k-alice", "k-bob"});
  // Last line of defence: a source that is not a plain CIDR never reaches the file.
  for (const char* bad : {"198.51.100.0/24\" command=\"sh", "1.2.3.4/8,*", "*", "10.0.0.0/8 x", ""}) {
    SshKey k = key("k-evil", kErin);
    k.allowedSources = {bad};
    INFO(bad);
    CHECK(renderKeysFile("akeneo", {k}, kNow) == file({}));
  }
}

TEST_CASE("planSshKeys: narrowing a key's sources is revoked before the new line is granted", "[ssh_keys][sources]") {
  SshKey wide = key("k-alice", kAlice);
  SshKey narrow = wide;
  narrow.allowedSources = {"198.51.100.7/32"};
  auto actions = planSshKeys(desiredKeys({narrow}), existing(renderKeysFile("akeneo", {wide}, kNow)));
  REQUIRE(actions.size() == 2);
  CHECK(actions[0].stage == Stage::kRevoke);
  CHECK(actions[0].payload == file({}));
  CHECK(actions[1].stage == Stage::kGrant);
  CHECK(actions[1].payload == renderKeysFile("akeneo", {narrow}, kNow));
}
