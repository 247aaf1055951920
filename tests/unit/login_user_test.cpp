#include "providers/login_user.h"

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "providers/host/accounts_tool.h"
#include "providers/host/real_host.h"
#include "providers/ssh_keys.h"
#include "tests/support/etc_sandbox.h"
#include "tests/support/skip.h"

namespace fs = std::filesystem;
using namespace pim;

namespace {

std::vector<std::string> verbsAndObjects(const std::vector<Action>& actions) {
  std::vector<std::string> out;
  for (const auto& a : actions) out.push_back(std::string(verbName(a.verb)) + " " + a.object);
  return out;
}

LoginUserCurrent settled() {
  LoginUserCurrent c;
  c.groupExists = true;
  c.userExists = true;
  c.userOwned = true;
  c.userInGroup = true;
  c.passwordLocked = true;
  c.homeExists = true;
  c.home = "/home/akeneo";
  return c;
}

}  // namespace

TEST_CASE("planLoginUser table", "[login_user]") {
  const LoginUserDesired want{"akeneo", "pimtransfer"};

  SECTION("nothing there: create the group, then the user in it") {
    LoginUserCurrent c;
    c.home = "/home/akeneo";
    auto actions = planLoginUser(want, c);
    CHECK(verbsAndObjects(actions) == std::vector<std::string>{"create group pimtransfer", "create user akeneo"});
    CHECK(
        actions[1].describe() ==
        "login_user: create user akeneo (home /home/akeneo, shell /bin/bash, member of pimtransfer, password locked)");
  }
  SECTION("everything in place: nothing to do") { CHECK(planLoginUser(want, settled()).empty()); }
  SECTION("the user exists but is not in the group") {
    LoginUserCurrent c = settled();
    c.userInGroup = false;
    CHECK(verbsAndObjects(planLoginUser(want, c)) == std::vector<std::string>{"add user akeneo to group pimtransfer"});
  }
  SECTION("the group is missing for an existing user") {
    LoginUserCurrent c = settled();
    c.groupExists = false;
    c.userInGroup = false;
    CHECK(verbsAndObjects(planLoginUser(want, c)) ==
          std::vector<std::string>{"create group pimtransfer", "add user akeneo to group pimtransfer"});
  }
  SECTION("a password on the agent's own user is locked again") {
    LoginUserCurrent c = settled();
    c.passwordLocked = false;
    CHECK(verbsAndObjects(planLoginUser(want, c)) == std::vector<std::string>{"lock password of akeneo"});
  }
  SECTION("a password on a user the agent did not create is the operator's") {
    LoginUserCurrent c = settled();
    c.userOwned = false;
    c.passwordLocked = false;
    CHECK(planLoginUser(want, c).empty());
  }
  SECTION("a missing home is created") {
    LoginUserCurrent c = settled();
    c.homeExists = false;
    CHECK(verbsAndObjects(planLoginUser(want, c)) == std::vector<std::string>{"create /home/akeneo"});
  }
}

namespace {

bool isRoot() { return pim::test::runsAsRoot("useradd --prefix, chown"); }

struct UserSandbox {
  test::EtcSandbox sb;
  HostSettings hostSettings;
  SshdSettings sshdSettings;
  AccessDocument doc;
  MemoryLedger ledger;
  RealHost host{sb.dir(), nullLogger()};
  LoginUserProvider provider{nullLogger(), ledger};

  Desired desired() { return Desired{doc, hostSettings, sshdSettings, 1800000000}; }
  Status reconcile(Provider& p) {
    auto d = desired();
    auto actions = p.plan(d, host);
    if (!actions) return actions.status();
    for (const auto& a : *actions) {
      if (Status s = p.apply(a, d, host); !s) return s;
    }
    return Status::ok();
  }
};

}  // namespace

TEST_CASE("login_user creates the group and a key-only user with a home", "[login_user][root]") {
  if (!isRoot()) return;
  UserSandbox u;
  REQUIRE(u.reconcile(u.provider).isOk());

  auto user = u.host.findUser("akeneo");
  REQUIRE(user.isOk());
  REQUIRE(user->has_value());
  CHECK((*user)->home == "/home/akeneo");
  CHECK((*user)->shell == "/bin/bash");
  auto group = u.host.findGroup("pimtransfer");
  REQUIRE(group.isOk());
  REQUIRE(group->has_value());
  CHECK((*group)->members == std::vector<std::string>{"akeneo"});
  auto own = u.host.findGroup("akeneo");
  REQUIRE(own.isOk());
  REQUIRE(own->has_value());
  CHECK((*own)->gid == (*user)->gid);

  AccountsTool tool(u.host);
  auto shadow = tool.shadow("akeneo");
  REQUIRE(shadow.isOk());
  REQUIRE(shadow->has_value());
  CHECK((*shadow)->password == "!");

  struct stat st {};
  REQUIRE(::lstat(u.sb.path("/home/akeneo").c_str(), &st) == 0);
  CHECK(S_ISDIR(st.st_mode));
  CHECK(st.st_uid == (*user)->uid);
  CHECK(u.ledger.owns(OwnedKind::kUser, "akeneo"));
  CHECK(u.ledger.owns(OwnedKind::kGroup, "pimtransfer"));

  auto d = u.desired();
  auto again = u.provider.plan(d, u.host);
  REQUIRE(again.isOk());
  CHECK(again->empty());
  // The real /etc was never touched.
  CHECK(u.sb.read("/etc/passwd").find("akeneo:x:") != std::string::npos);
}

TEST_CASE("login_user then ssh_keys: the keys land in the agent's file, not the home; both plans are empty",
          "[login_user][ssh_keys][root]") {
  if (!isRoot()) return;
  UserSandbox u;
  SshKey k;
  k.id = "k-alice";
  k.key = PublicKey{"ssh-ed25519", "AAAAC3NzaC1lZDI1NTE5AAAAID3VsOd8xVQ8SOwKm3VCfQ+Vy2O6qRe5eFSqyWsDd44X", ""};
  u.doc.keys = {k};
  SshKeysProvider keys(nullLogger());
  REQUIRE(u.reconcile(u.provider).isOk());
  REQUIRE(u.reconcile(keys).isOk());
  CHECK(installedKeyIds(u.sb.read("/etc/pim-access-agent/authorized_keys/akeneo")) ==
        std::vector<std::string>{"k-alice"});
  CHECK_FALSE(fs::exists(u.sb.path("/home/akeneo/.ssh")));
  auto d = u.desired();
  CHECK(u.provider.plan(d, u.host)->empty());
  CHECK(keys.plan(d, u.host)->empty());
}

TEST_CASE("login_user manages an existing user's group membership only", "[login_user][root]") {
  if (!isRoot()) return;
  UserSandbox u;
  u.sb.append("/etc/passwd", "akeneo:x:1500:1500::/home/akeneo:/bin/zsh\n");
  u.sb.append("/etc/group", "akeneo:x:1500:\npimtransfer:x:990:\n");
  u.sb.append("/etc/shadow", "akeneo:$6$salt$operatorhash:19000:0:99999:7:::\n");
  u.sb.append("/etc/gshadow", "akeneo:!::\npimtransfer:!::\n");
  fs::create_directories(u.sb.path("/home/akeneo"));

  auto d = u.desired();
  auto actions = u.provider.plan(d, u.host);
  REQUIRE(actions.isOk());
  CHECK(verbsAndObjects(*actions) == std::vector<std::string>{"add user akeneo to group pimtransfer"});
  REQUIRE(u.reconcile(u.provider).isOk());

  auto group = u.host.findGroup("pimtransfer");
  REQUIRE(group.isOk());
  CHECK((*group)->members == std::vector<std::string>{"akeneo"});
  AccountsTool tool(u.host);
  CHECK((*tool.shadow("akeneo"))->password == "$6$salt$operatorhash");
  CHECK((*u.host.findUser("akeneo"))->shell == "/bin/zsh");
  CHECK_FALSE(u.ledger.owns(OwnedKind::kUser, "akeneo"));
  CHECK_FALSE(u.ledger.owns(OwnedKind::kGroup, "pimtransfer"));
  CHECK(u.provider.plan(d, u.host)->empty());
}

TEST_CASE("login_user locks a password set on the user it created", "[login_user][root]") {
  if (!isRoot()) return;
  UserSandbox u;
  REQUIRE(u.reconcile(u.provider).isOk());
  AccountsTool tool(u.host);
  REQUIRE(tool.setPasswordHash("akeneo", "$6$salt$somebodyelse").isOk());
  auto d = u.desired();
  auto actions = u.provider.plan(d, u.host);
  REQUIRE(actions.isOk());
  CHECK(verbsAndObjects(*actions) == std::vector<std::string>{"lock password of akeneo"});
  CHECK(actions->at(0).describe().find("somebodyelse") == std::string::npos);
  REQUIRE(u.reconcile(u.provider).isOk());
  CHECK((*tool.shadow("akeneo"))->passwordLocked());
}
