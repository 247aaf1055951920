#include "providers/host/accounts_tool.h"

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <set>

#include "providers/host/real_host.h"
#include "tests/support/etc_sandbox.h"
#include "tests/support/skip.h"

namespace fs = std::filesystem;
using namespace pim;

namespace {

/// Records the commands instead of running them.
class RecordingHost : public RealHost {
 public:
  explicit RecordingHost(std::string root) : RealHost(std::move(root), nullLogger()) {}
  Result<CommandResult> run(const std::vector<std::string>& argv, std::string_view input) override {
    calls.push_back(argv);
    inputs.emplace_back(input);
    CommandResult r;
    r.exitCode = exitCode;
    r.err = err;
    return r;
  }
  std::vector<std::vector<std::string>> calls;
  std::vector<std::string> inputs;
  int exitCode = 0;
  std::string err;
};

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

bool isRoot() { return pim::test::runsAsRoot("shadow tools"); }

}  // namespace

TEST_CASE("parseShadowEntry reads the password and expiry fields", "[accounts]") {
  const std::string text =
      "root:*:19000:0:99999:7:::\nsftp1:!$y$j9T$abc:20000:0:99999:7::1:\nsftp2:$6$x$y:20000::::::\n";
  auto e1 = parseShadowEntry(text, "sftp1");
  REQUIRE(e1);
  CHECK(e1->password == "!$y$j9T$abc");
  CHECK(e1->passwordLocked());
  REQUIRE(e1->expireDays);
  CHECK(*e1->expireDays == 1);
  CHECK(e1->accountExpired(1800000000));
  auto e2 = parseShadowEntry(text, "sftp2");
  REQUIRE(e2);
  CHECK_FALSE(e2->passwordLocked());
  CHECK_FALSE(e2->expireDays);
  CHECK_FALSE(e2->accountExpired(1800000000));
  CHECK_FALSE(parseShadowEntry(text, "nobody"));
  CHECK_FALSE(parseShadowEntry(text, "sftp"));
}

TEST_CASE("AccountsTool runs absolute tools with --prefix and keeps hashes out of argv", "[accounts]") {
  RecordingHost host("/tmp/some-root");
  AccountsTool tool(host);
  NewUser u;
  u.name = "sftp1";
  u.home = "/srv/pim-sftp/sftp1";
  u.primaryGroup = "pimtransfer";
  u.system = true;
  REQUIRE(tool.addUser(u).isOk());
  REQUIRE(tool.setPasswordHash("sftp1", "$y$j9T$salt$hash").isOk());
  REQUIRE(tool.lockAccount("sftp1").isOk());
  REQUIRE(tool.removeUser("sftp1").isOk());
  REQUIRE(host.calls.size() == 4);

  const auto& add = host.calls[0];
  CHECK(add[0] == "/usr/sbin/useradd");
  CHECK(add[1] == "--prefix");
  CHECK(add[2] == "/tmp/some-root");
  CHECK(contains(add, "--system"));
  CHECK(contains(add, "--no-create-home"));
  CHECK(contains(add, "--no-user-group"));
  CHECK(contains(add, "/usr/sbin/nologin"));
  CHECK(add.back() == "sftp1");

  const auto& pw = host.calls[1];
  CHECK(pw == std::vector<std::string>{"/usr/sbin/chpasswd", "--root", "/tmp/some-root", "--encrypted"});
  CHECK(host.inputs[1] == "sftp1:$y$j9T$salt$hash\n");
  for (const auto& call : host.calls) {
    for (const auto& arg : call) CHECK(arg.find("$y$") == std::string::npos);
  }
  CHECK(host.calls[2] == std::vector<std::string>{"/usr/sbin/usermod", "--prefix", "/tmp/some-root", "--lock",
                                                  "--expiredate", "1", "sftp1"});
  CHECK(host.calls[3] == std::vector<std::string>{"/usr/sbin/userdel", "--prefix", "/tmp/some-root", "sftp1"});

  RecordingHost real("");
  AccountsTool plain(real);
  REQUIRE(plain.addGroup("pimtransfer").isOk());
  CHECK(real.calls[0] == std::vector<std::string>{"/usr/sbin/groupadd", "--system", "pimtransfer"});
  REQUIRE(plain.setPasswordHash("u", "$6$a$b").isOk());
  CHECK(real.calls[1] == std::vector<std::string>{"/usr/sbin/chpasswd", "--encrypted"});
}

TEST_CASE("AccountsTool errors name the command and its stderr, never the hash", "[accounts]") {
  RecordingHost host("");
  host.exitCode = 1;
  host.err = "chpasswd: line 1: user 'ghost' does not exist\n";
  AccountsTool tool(host);
  Status s = tool.setPasswordHash("ghost", "$6$salt$secret");
  CHECK(s.code() == ErrorCode::kCommand);
  CHECK_THAT(s.message(), Catch::StartsWith("chpasswd --encrypted: exit 1: chpasswd: line 1: user 'ghost'"));
  CHECK(s.message().find("secret") == std::string::npos);

  // A hash that could smuggle a second chpasswd line is refused before anything runs.
  host.calls.clear();
  Status bad = tool.setPasswordHash("ghost", "$6$x\nroot:$6$y");
  CHECK(bad.code() == ErrorCode::kInvalid);
  CHECK(bad.message().find("$6$") == std::string::npos);
  CHECK(host.calls.empty());
  CHECK(tool.addUser(NewUser{"-o", "", false, "/bin/sh", "", {}, false}).code() == ErrorCode::kInvalid);
  CHECK(host.calls.empty());
}

TEST_CASE("AccountsTool against the real shadow tools in a --prefix sandbox", "[accounts][root]") {
  if (!isRoot()) return;
  test::EtcSandbox sb;
  RealHost host(sb.dir(), nullLogger());
  AccountsTool tool(host);

  REQUIRE(tool.addGroup("pimtransfer").isOk());
  Status dup = tool.addGroup("pimtransfer");
  CHECK(dup.code() == ErrorCode::kCommand);
  CHECK_THAT(dup.message(),
             Catch::Contains("groupadd --system pimtransfer: exit 9") && Catch::Contains("already exists"));

  NewUser u;
  u.name = "sftp1";
  u.home = "/srv/pim-sftp/sftp1";
  u.primaryGroup = "pimtransfer";
  u.system = true;
  REQUIRE(tool.addUser(u).isOk());
  auto info = host.findUser("sftp1");
  REQUIRE(info.isOk());
  REQUIRE(info->has_value());
  CHECK((*info)->shell == "/usr/sbin/nologin");
  CHECK((*info)->gid == (*host.findGroup("pimtransfer"))->gid);
  CHECK_FALSE(fs::exists(sb.path("/srv/pim-sftp/sftp1")));
  CHECK((*tool.shadow("sftp1"))->password == "!");

  REQUIRE(tool.setPasswordHash("sftp1", "$6$salt$hash").isOk());
  auto e = tool.shadow("sftp1");
  REQUIRE(e.isOk());
  CHECK((*e)->password == "$6$salt$hash");
  CHECK_FALSE((*e)->passwordLocked());

  REQUIRE(tool.lockAccount("sftp1").isOk());
  e = tool.shadow("sftp1");
  CHECK((*e)->password == "!$6$salt$hash");
  CHECK((*e)->expireDays == std::optional<int64_t>(1));
  CHECK((*e)->accountExpired(1800000000));

  REQUIRE(tool.unlockAccount("sftp1", std::string("$6$salt$other")).isOk());
  e = tool.shadow("sftp1");
  CHECK((*e)->password == "$6$salt$other");
  CHECK_FALSE((*e)->expireDays);

  REQUIRE(tool.lockAccount("sftp1").isOk());
  REQUIRE(tool.unlockAccount("sftp1", std::nullopt).isOk());
  e = tool.shadow("sftp1");
  CHECK((*e)->passwordLocked());
  CHECK_FALSE((*e)->accountExpired(1800000000));

  REQUIRE(tool.setShell("sftp1", "/bin/false").isOk());
  CHECK((*host.findUser("sftp1"))->shell == "/bin/false");

  NewUser h;
  h.name = "withhome";
  h.home = "/home/withhome";
  h.createHome = true;
  h.shell = "/bin/bash";
  h.supplementaryGroups = {"pimtransfer"};
  REQUIRE(tool.addUser(h).isOk());
  CHECK(fs::is_directory(sb.path("/home/withhome")));
  CHECK((*host.findGroup("pimtransfer"))->members == std::vector<std::string>{"withhome"});
  REQUIRE(tool.addToGroup("sftp1", "pimtransfer").isOk());
  CHECK((*host.findGroup("pimtransfer"))->members == std::vector<std::string>{"withhome", "sftp1"});

  REQUIRE(tool.removeUser("withhome").isOk());
  CHECK_FALSE(host.findUser("withhome")->has_value());
  CHECK(fs::is_directory(sb.path("/home/withhome")));  // never -r
  REQUIRE(tool.removeUser("sftp1").isOk());
  REQUIRE(tool.removeGroup("pimtransfer").isOk());
  CHECK_FALSE(host.findGroup("pimtransfer")->has_value());
}

TEST_CASE("AccountsTool: many system accounts in one systemd-sysusers run, many hashes in one chpasswd",
          "[accounts][root]") {
  if (!isRoot()) return;
  test::EtcSandbox sb;
  RealHost host(sb.dir(), nullLogger());
  AccountsTool tool(host);
  auto batch = [](std::vector<std::string> names) {
    std::vector<NewUser> users;
    for (auto& n : names) users.push_back(NewUser{n, "/transfer", false, "/usr/sbin/nologin", "pimtransfer", {}, true});
    return users;
  };
  // Without its group, nothing is made, and every account says why.
  auto missing = tool.addSystemUsers(batch({"a1", "a2"}));
  REQUIRE(missing.size() == 2);
  for (const auto& s : missing) CHECK_THAT(s.message(), Catch::Contains("group pimtransfer does not exist"));
  CHECK_FALSE(host.findUser("a1")->has_value());

  REQUIRE(tool.addGroup("pimtransfer").isOk());
  const gid_t gid = (*host.findGroup("pimtransfer"))->gid;
  // A user made by useradd holds the top of the range: the batch goes below it.
  NewUser first{"top", "/transfer", false, "/usr/sbin/nologin", "pimtransfer", {}, true};
  REQUIRE(tool.addUser(first).isOk());
  const uid_t topUid = (*host.findUser("top"))->uid;
  std::vector<std::string> names;
  for (int i = 0; i < 50; ++i) names.push_back("b" + std::to_string(i));
  auto made = tool.addSystemUsers(batch(names));
  std::set<uid_t> uids;
  for (size_t i = 0; i < names.size(); ++i) {
    INFO(names[i]);
    CHECK(made[i].isOk());
    auto u = host.findUser(names[i]);
    REQUIRE(u->has_value());
    CHECK((*u)->home == "/transfer");
    CHECK((*u)->shell == "/usr/sbin/nologin");
    CHECK((*u)->gid == gid);
    CHECK((*u)->uid >= 100);
    CHECK((*u)->uid <= 999);
    CHECK((*u)->uid != topUid);
    uids.insert((*u)->uid);
    CHECK((*tool.shadow(names[i]))->passwordLocked());
    CHECK((*tool.shadow(names[i]))->password == "!");  // as useradd leaves it, not sysusers' "!*"
  }
  CHECK(uids.size() == names.size());
  CHECK_FALSE(fs::exists(sb.path("/transfer")));  // a home is never created

  // Hashes: one chpasswd for all; with one bad entry, the others are still stored and the bad
  // one is named.
  auto set = tool.setPasswordHashes({{"b0", "$6$s$one"}, {"b1", "$6$s$two"}});
  CHECK((set[0].isOk() && set[1].isOk()));
  CHECK((*tool.shadow("b1"))->password == "$6$s$two");
  set = tool.setPasswordHashes({{"b2", "$6$s$three"}, {"ghost", "$6$s$x"}, {"b3", "$6$s$four"}});
  CHECK(set[0].isOk());
  CHECK_FALSE(set[1].isOk());
  CHECK(set[2].isOk());
  CHECK((*tool.shadow("b3"))->password == "$6$s$four");
  CHECK(set[1].message().find("$6$") == std::string::npos);  // never the hash
}

TEST_CASE("AccountsTool: removing many accounts at once leaves the files one userdel each leaves", "[accounts][root]") {
  if (!isRoot()) return;
  // Two identical sandboxes: accounts, a supplementary group and gshadow lists naming some.
  test::EtcSandbox loop, batch;
  std::vector<std::string> names;
  for (int i = 0; i < 6; ++i) names.push_back("r" + std::to_string(i));
  for (test::EtcSandbox* sb : {&loop, &batch}) {
    RealHost host(sb->dir(), nullLogger());
    AccountsTool tool(host);
    REQUIRE(tool.addGroup("pimtransfer").isOk());
    REQUIRE(tool.addGroup("extra").isOk());
    for (const auto& n : names) {
      REQUIRE(tool.addUser(NewUser{n, "/transfer", false, "/usr/sbin/nologin", "pimtransfer", {}, true}).isOk());
    }
    REQUIRE(tool.addUser(NewUser{"keep", "/transfer", false, "/usr/sbin/nologin", "pimtransfer", {}, true}).isOk());
    for (const char* member : {"r1", "keep", "r4"}) REQUIRE(tool.addToGroup(member, "extra").isOk());
    REQUIRE(tool.setPasswordHash("r2", "$6$salt$hash").isOk());
    // gshadow administrators, as gpasswd -A writes them.
    std::string gshadow = sb->read("/etc/gshadow");
    const size_t at = gshadow.find("extra:!::");
    REQUIRE(at != std::string::npos);
    gshadow.replace(at, 9, "extra:!:r1,keep,r4:");
    sb->write("/etc/gshadow", gshadow, 0640);
  }
  REQUIRE(loop.read("/etc/group") == batch.read("/etc/group"));
  RealHost loopHost(loop.dir(), nullLogger());
  AccountsTool loopTool(loopHost);
  std::vector<std::string> removed = {"r0", "r1", "r2", "r4", "r5"};  // r3 and keep stay
  for (const auto& n : removed) REQUIRE(loopTool.removeUser(n).isOk());

  RealHost batchHost(batch.dir(), nullLogger());
  AccountsTool batchTool(batchHost);
  auto out = batchTool.removeUsers(removed);
  for (size_t i = 0; i < out.size(); ++i) {
    INFO(removed[i] << ": " << out[i].message());
    CHECK(out[i].isOk());
  }
  for (const char* f : {"/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow"}) {
    INFO(f << "\nuserdel each:\n" << loop.read(f) << "\nat once:\n" << batch.read(f));
    CHECK(loop.read(f) == batch.read(f));
    struct stat a {
    }, b{};
    REQUIRE(::stat(loop.path(f).c_str(), &a) == 0);
    REQUIRE(::stat(batch.path(f).c_str(), &b) == 0);
    CHECK((a.st_mode & 07777) == (b.st_mode & 07777));
  }
  CHECK(batch.read("/etc/group").find("extra:x:") != std::string::npos);
  CHECK(batch.read("/etc/gshadow").find("extra:!:keep:keep") != std::string::npos);
  // No lock is left behind.
  for (const char* f : {"/etc/passwd.lock", "/etc/shadow.lock", "/etc/group.lock", "/etc/gshadow.lock"}) {
    CHECK_FALSE(fs::exists(batch.path(f)));
  }

  // Per name: absent, a name only userdel handles (its own group), and a lock held by a live
  // process waits, then gives up... not here: a stale lock (dead pid) is taken over.
  REQUIRE(batchTool.addGroup("r3").isOk());
  batch.write("/etc/passwd.lock", "999999999", 0600);
  out = batchTool.removeUsers({"ghost", "r3"});
  CHECK(out[0].code() == ErrorCode::kNotFound);
  CHECK(out[1].code() == ErrorCode::kInvalid);
  CHECK(batchHost.findUser("r3")->has_value());
  CHECK_FALSE(fs::exists(batch.path("/etc/passwd.lock")));
}
