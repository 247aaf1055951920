#include "providers/sftp_accounts.h"

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <sstream>

#include "providers/host/accounts_tool.h"
#include "providers/host/real_host.h"
#include "tests/support/etc_sandbox.h"
#include "tests/support/skip.h"

namespace fs = std::filesystem;
using namespace pim;

namespace {

const std::string kHashA =
    "$6$saltA$7Mh9zJ0mJ2yq3oQ3Kp1vYl0rZr1YQ0wHf7tQJx8dQm0nW0q1c8gB9rC2lFhD4Qm5w6XyZ1a2b3c4d5e6f7g8h9.";
const std::string kHashB = "$y$j9T$saltsaltsaltsalt$abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123";
const PublicKey kBobKey{"ssh-ed25519", "AAAAC3NzaC1lZDI1NTE5AAAAIAg7v4H/R7qlLTp6jImLLe8EscgHgg++alEsXvikDhGK",
                        "bob@example"};
const PublicKey kCarolKey{"ssh-ed25519", "AAAAC3NzaC1lZDI1NTE5AAAAIPf/YX1AhEE0iNB/rVYkbnJI4fcm9tIHYyNY0xe3oxkK",
                          "carol"};
const std::string kKeysDir = "/etc/pim-access-agent/authorized_keys";

SftpAccount account(const std::string& id, const std::string& user, std::optional<std::string> hash, bool active = true,
                    std::vector<PublicKey> keys = {}) {
  SftpAccount a;
  a.id = id;
  a.username = user;
  a.passwordHash = std::move(hash);
  a.folder = ".";
  a.active = active;
  a.publicKeys = std::move(keys);
  return a;
}

std::vector<std::string> verbsAndObjects(const std::vector<Action>& actions) {
  std::vector<std::string> out;
  for (const auto& a : actions) out.push_back(std::string(verbName(a.verb)) + " " + a.object);
  return out;
}

/// Nothing a person reads may carry a hash.
void checkNoSecrets(const std::vector<Action>& actions) {
  for (const auto& a : actions) {
    for (const std::string& s : {a.describe(), a.before, a.after}) {
      CHECK(s.find("$6$") == std::string::npos);
      CHECK(s.find("$y$") == std::string::npos);
    }
  }
}

SftpAccountsDesired desiredOf(std::vector<SftpAccount> accounts, std::vector<std::string> locked = {}) {
  SftpAccountsDesired d;
  d.loginUser = "akeneo";
  d.transferGroup = "pimtransfer";
  d.sftpKeysDir = kKeysDir;
  d.accounts = std::move(accounts);
  d.lockedUsernames = std::move(locked);
  return d;
}

/// A current state where `name` is an owned account as the provider leaves it.
void addOwned(SftpAccountsCurrent& c, const std::string& name, const std::string& password,
              std::optional<int64_t> expire = std::nullopt) {
  c.users[name] = UserInfo{name, 990, 900, kSftpHome, kSftpShell};
  c.shadow[name] = ShadowEntry{name, password, expire};
  c.ownedUsers.insert(name);
}

SftpAccountsCurrent emptyHost() {
  SftpAccountsCurrent c;
  c.groupGid = 900;
  return c;
}

bool isRoot() { return pim::test::runsAsRoot("useradd --prefix, chown"); }

std::string lineOf(const std::string& text, const std::string& name) {
  std::stringstream ss(text);
  std::string line;
  while (std::getline(ss, line)) {
    if (line.compare(0, name.size() + 1, name + ":") == 0) return line;
  }
  return {};
}

}  // namespace

TEST_CASE("renderSftpKeys writes restricted, de-duplicated lines labelled by id", "[sftp_accounts]") {
  auto a = account("sftp-imports", "akeneosftp2", kHashA, true, {kBobKey, kCarolKey, kBobKey});
  const std::string text = renderSftpKeys(a);
  CHECK(text.find("restrict " + kBobKey.identity() + " pim:sftp-imports\n") != std::string::npos);
  CHECK(text.find("restrict " + kCarolKey.identity() + " pim:sftp-imports\n") != std::string::npos);
  CHECK(text.find(kBobKey.identity()) == text.rfind(kBobKey.identity()));
  CHECK(text.find("bob@example") == std::string::npos);
  a.active = false;
  CHECK(renderSftpKeys(a).empty());
  CHECK(renderSftpKeys(account("x", "x", kHashA)).empty());
  CHECK(sftpKeysPath(kKeysDir, "u1") == kKeysDir + "/u1");
}

TEST_CASE("parsePasswd reads every well-formed line", "[sftp_accounts]") {
  auto users = parsePasswd("root:x:0:0:root:/root:/bin/bash\nbroken:x\nu1:x:999:998::/transfer:/usr/sbin/nologin\n");
  REQUIRE(users.size() == 2);
  CHECK(users.at("u1").uid == 999);
  CHECK(users.at("u1").gid == 998);
  CHECK(users.at("u1").home == "/transfer");
  CHECK(users.at("u1").shell == "/usr/sbin/nologin");
}

TEST_CASE("planSftpAccounts table", "[sftp_accounts]") {
  SECTION("new accounts: created, then password, lock or keys") {
    auto d = desiredOf({account("a", "charlie", std::nullopt, false), account("b", "alpha", kHashA),
                        account("c", "bravo", std::nullopt, true, {kBobKey})});
    auto actions = planSftpAccounts(d, emptyHost());
    CHECK(verbsAndObjects(actions) == std::vector<std::string>{"create alpha", "set-password alpha", "create bravo",
                                                               "create charlie", "lock charlie",
                                                               "write-keys " + kKeysDir + "/bravo"});
    CHECK(actions[0].describe() ==
          "sftp_accounts: create alpha (system account, group pimtransfer, shell /usr/sbin/nologin, home /transfer (in "
          "the chroot))");
    CHECK(actions[1].payload == kHashA);
    CHECK(actions[5].payload == renderSftpKeys(d.accounts[2]));
    checkNoSecrets(actions);
  }
  SECTION("everything in place: nothing to do") {
    auto c = emptyHost();
    addOwned(c, "alpha", kHashA);
    addOwned(c, "bravo", "!");
    addOwned(c, "charlie", "!" + kHashA, 1);
    auto d = desiredOf({account("a", "alpha", kHashA), account("b", "bravo", std::nullopt, true, {kBobKey}),
                        account("c", "charlie", kHashA, false)});
    c.keysDir = FileInfo{FileType::kDirectory, 0755};
    c.keysFiles["bravo"] = SftpKeysFileState{FileInfo{FileType::kRegular, 0644}, renderSftpKeys(d.accounts[1])};
    CHECK(planSftpAccounts(d, c).empty());
  }
  SECTION("the store's hash changed: set again, never shown") {
    auto c = emptyHost();
    addOwned(c, "alpha", kHashA);
    auto actions = planSftpAccounts(desiredOf({account("a", "alpha", kHashB)}), c);
    // The old password is revoked with the revocations; the new one is a grant.
    REQUIRE(verbsAndObjects(actions) == std::vector<std::string>{"lock-password alpha", "set-password alpha"});
    CHECK(actions[0].stage == Stage::kRevoke);
    CHECK(actions[1].stage == Stage::kGrant);
    CHECK(actions[1].payload == kHashB);
    CHECK(actions[1].before == "another hash");
    checkNoSecrets(actions);
  }
  SECTION("a key-only entry with a usable password gets it locked") {
    auto c = emptyHost();
    addOwned(c, "alpha", kHashA);
    CHECK(verbsAndObjects(planSftpAccounts(desiredOf({account("a", "alpha", std::nullopt)}), c)) ==
          std::vector<std::string>{"lock-password alpha"});
  }
  SECTION("deactivated: locked for every method, keys removed") {
    auto c = emptyHost();
    addOwned(c, "alpha", kHashA);
    c.keysFiles["alpha"] = SftpKeysFileState{FileInfo{FileType::kRegular, 0644}, "x"};
    auto actions = planSftpAccounts(desiredOf({account("a", "alpha", kHashA, false, {kBobKey})}), c);
    CHECK(verbsAndObjects(actions) == std::vector<std::string>{"lock alpha", "remove-keys " + kKeysDir + "/alpha"});
  }
  SECTION("a locked password alone is not enough for an inactive entry: it must be expired too") {
    auto c = emptyHost();
    addOwned(c, "alpha", "!" + kHashA);
    CHECK(verbsAndObjects(planSftpAccounts(desiredOf({account("a", "alpha", kHashA, false)}), c)) ==
          std::vector<std::string>{"lock alpha"});
  }
  SECTION("reactivated: unlocked with the store's hash, or key-only") {
    auto c = emptyHost();
    addOwned(c, "alpha", "!" + kHashA, 1);
    addOwned(c, "bravo", "!", 1);
    auto actions = planSftpAccounts(desiredOf({account("a", "alpha", kHashA), account("b", "bravo", std::nullopt)}), c);
    REQUIRE(verbsAndObjects(actions) == std::vector<std::string>{"unlock alpha", "unlock bravo"});
    CHECK(actions[0].payload == kHashA);
    CHECK(actions[1].payload.empty());
    checkNoSecrets(actions);
  }
  SECTION("an existing user the agent did not create is refused and never touched") {
    auto c = emptyHost();
    c.users["alpha"] = UserInfo{"alpha", 1000, 1000, "/home/alpha", "/bin/bash"};
    c.shadow["alpha"] = ShadowEntry{"alpha", kHashB, std::nullopt};
    c.keysFiles["alpha"] = SftpKeysFileState{FileInfo{FileType::kRegular, 0600}, "x"};
    std::vector<SkippedEntry> skipped;
    auto actions = planSftpAccounts(
        desiredOf({account("sftp-a", "alpha", kHashA, false), account("b", "bravo", kHashA)}), c, &skipped);
    CHECK(verbsAndObjects(actions) == std::vector<std::string>{"create bravo", "set-password bravo"});
    REQUIRE(skipped.size() == 1);
    CHECK(skipped[0].id == "sftp-a");
    CHECK(skipped[0].reason == "user alpha exists and was not created by pim-access-agent");
  }
  SECTION("an unrecorded account with the agent's signature is adopted, not refused (a lost state database)") {
    auto c = emptyHost();
    addOwned(c, "alpha", kHashA);
    c.ownedUsers.clear();
    std::vector<SkippedEntry> skipped;
    auto actions = planSftpAccounts(desiredOf({account("a", "alpha", kHashB)}), c, &skipped);
    CHECK(skipped.empty());
    CHECK(verbsAndObjects(actions) ==
          std::vector<std::string>{"adopt alpha", "lock-password alpha", "set-password alpha"});
    CHECK(actions[0].stage == Stage::kRevoke);
    // Without the signature (another home, shell or group) it is someone else's.
    for (auto change : {+[](UserInfo& u) { u.home = "/home/alpha"; }, +[](UserInfo& u) { u.shell = "/bin/sh"; },
                        +[](UserInfo& u) { u.gid = 100; }}) {
      auto other = c;
      change(other.users["alpha"]);
      skipped.clear();
      CHECK(planSftpAccounts(desiredOf({account("a", "alpha", kHashB)}), other, &skipped).empty());
      CHECK(skipped.size() == 1);
    }
  }
  SECTION("stages: a new account is prepared (created and, inactive, locked) before its password is granted") {
    auto actions = planSftpAccounts(
        desiredOf({account("a", "alpha", kHashA), account("b", "bravo", kHashA, false, {kBobKey})}), emptyHost());
    REQUIRE(verbsAndObjects(actions) ==
            std::vector<std::string>{"create alpha", "set-password alpha", "create bravo", "lock bravo"});
    CHECK(actions[0].stage == Stage::kPrepare);
    CHECK(actions[1].stage == Stage::kGrant);
    CHECK(actions[2].stage == Stage::kPrepare);
    CHECK(actions[3].stage == Stage::kPrepare);  // after its creation, not with the revocations
    for (const auto& a : actions) CHECK(a.subject == a.object);
  }
  SECTION("a keys file that loses a key and gains one is written twice: the loss first") {
    auto c = emptyHost();
    addOwned(c, "alpha", kHashA);
    c.keysDir = FileInfo{FileType::kDirectory, 0755};
    c.keysFiles["alpha"] = SftpKeysFileState{FileInfo{FileType::kRegular, 0644},
                                             renderSftpKeys(account("a", "alpha", kHashA, true, {kBobKey}))};
    const auto wanted = account("a", "alpha", kHashA, true, {kCarolKey});
    auto actions = planSftpAccounts(desiredOf({wanted}), c);
    REQUIRE(verbsAndObjects(actions) ==
            std::vector<std::string>{"remove-keys " + kKeysDir + "/alpha", "write-keys " + kKeysDir + "/alpha"});
    CHECK(actions[0].stage == Stage::kRevoke);
    CHECK(actions[1].stage == Stage::kGrant);
    CHECK(actions[1].payload == renderSftpKeys(wanted));
    // Only losing keys is one revocation; only gaining them one grant.
    auto both = account("a", "alpha", kHashA, true, {kBobKey, kCarolKey});
    c.keysFiles["alpha"].content = renderSftpKeys(both);
    actions = planSftpAccounts(desiredOf({wanted}), c);
    REQUIRE(actions.size() == 1);
    CHECK(actions[0].stage == Stage::kRevoke);
    c.keysFiles["alpha"].content = renderSftpKeys(wanted);
    actions = planSftpAccounts(desiredOf({both}), c);
    REQUIRE(actions.size() == 1);
    CHECK(actions[0].stage == Stage::kGrant);
  }
  SECTION("a keys directory others can write is fixed with the revocations, keys or not") {
    auto c = emptyHost();
    c.keysDir = FileInfo{FileType::kDirectory, 0777};
    auto actions = planSftpAccounts(desiredOf({}), c);
    REQUIRE(verbsAndObjects(actions) == std::vector<std::string>{"fix-keys-dir " + kKeysDir});
    CHECK(actions[0].stage == Stage::kRevoke);
    CHECK(actions[0].subject.empty());
  }
  SECTION("reserved names are refused") {
    std::vector<SkippedEntry> skipped;
    CHECK(planSftpAccounts(desiredOf({account("r", "root", kHashA), account("l", "akeneo", kHashA)}), emptyHost(),
                           &skipped)
              .empty());
    CHECK(skipped.size() == 2);
  }
  SECTION("an entry that became invalid: locked, keys removed, never removed") {
    auto c = emptyHost();
    addOwned(c, "alpha", kHashA);
    c.keysFiles["alpha"] = SftpKeysFileState{FileInfo{FileType::kRegular, 0644}, "x"};
    auto actions = planSftpAccounts(desiredOf({}, {"alpha"}), c);
    CHECK(verbsAndObjects(actions) == std::vector<std::string>{"lock alpha", "remove-keys " + kKeysDir + "/alpha"});
    addOwned(c, "alpha", "!" + kHashA, 1);
    c.keysFiles.clear();
    CHECK(planSftpAccounts(desiredOf({}, {"alpha"}), c).empty());
  }
  SECTION("a locked username that the agent does not own is left alone") {
    auto c = emptyHost();
    c.users["alpha"] = UserInfo{"alpha", 1000, 1000, "/home/alpha", "/bin/bash"};
    c.shadow["alpha"] = ShadowEntry{"alpha", kHashB, std::nullopt};
    CHECK(planSftpAccounts(desiredOf({}, {"alpha"}), c).empty());
  }
  SECTION("owned accounts gone from the document are removed (keys first), vanished ones forgotten") {
    auto c = emptyHost();
    addOwned(c, "alpha", kHashA);
    c.keysFiles["alpha"] = SftpKeysFileState{FileInfo{FileType::kRegular, 0644}, "x"};
    c.ownedUsers.insert("ghost");
    auto actions = planSftpAccounts(desiredOf({}), c);
    CHECK(verbsAndObjects(actions) ==
          std::vector<std::string>{"remove-keys " + kKeysDir + "/alpha", "remove alpha", "forget ghost"});
  }
  SECTION("owned users that are not SFTP accounts (the login user, a former one) are never removed") {
    auto c = emptyHost();
    addOwned(c, "akeneo", "!");
    c.users["akeneo"].home = "/home/akeneo";
    addOwned(c, "oldlogin", "!");
    c.users["oldlogin"].home = "/home/oldlogin";
    addOwned(c, "gone", "!");
    c.users["gone"].home = "/transfer";
    CHECK(verbsAndObjects(planSftpAccounts(desiredOf({}), c)) == std::vector<std::string>{"remove gone"});
    c.users.erase("akeneo");
    CHECK(verbsAndObjects(planSftpAccounts(desiredOf({}), c)) == std::vector<std::string>{"remove gone"});
  }
  SECTION("shell and group drift on an owned account is corrected") {
    auto c = emptyHost();
    addOwned(c, "alpha", kHashA);
    c.users["alpha"].shell = "/bin/bash";
    c.users["alpha"].gid = 100;
    auto actions = planSftpAccounts(desiredOf({account("a", "alpha", kHashA)}), c);
    CHECK(verbsAndObjects(actions) == std::vector<std::string>{"set-shell alpha", "set-group alpha"});
    CHECK(actions[0].detail == "/bin/bash -> /usr/sbin/nologin");
  }
  SECTION("a keys file with the wrong mode or owner is rewritten, a wrong directory fixed") {
    auto c = emptyHost();
    addOwned(c, "alpha", kHashA);
    auto d = desiredOf({account("a", "alpha", kHashA, true, {kBobKey})});
    c.keysDir = FileInfo{FileType::kDirectory, 0775};
    c.keysFiles["alpha"] = SftpKeysFileState{FileInfo{FileType::kRegular, 0666}, renderSftpKeys(d.accounts[0])};
    CHECK(verbsAndObjects(planSftpAccounts(d, c)) ==
          std::vector<std::string>{"fix-keys-dir " + kKeysDir, "write-keys " + kKeysDir + "/alpha"});
  }
}

namespace {

struct AccountsSandbox {
  test::EtcSandbox sb;
  HostSettings hostSettings;
  SshdSettings sshdSettings;
  AccessDocument doc;
  MemoryLedger ledger;
  RealHost host{sb.dir(), nullLogger()};
  SftpAccountsProvider provider{nullLogger(), ledger};

  Desired desired() { return Desired{doc, hostSettings, sshdSettings, 1800000000}; }
  Result<std::vector<Action>> plan() {
    auto d = desired();
    return provider.plan(d, host);
  }
  Status reconcile() {
    auto d = desired();
    auto actions = provider.plan(d, host);
    if (!actions) return actions.status();
    for (const auto& a : *actions) {
      if (Status s = provider.apply(a, d, host); !s) return s;
    }
    return Status::ok();
  }
  std::optional<ShadowEntry> shadow(const std::string& user) {
    auto e = AccountsTool(host).shadow(user);
    return e ? *e : std::nullopt;
  }
};

}  // namespace

TEST_CASE("sftp_accounts against real useradd in a --prefix sandbox", "[sftp_accounts][root]") {
  if (!isRoot()) return;
  AccountsSandbox s;
  AccountsTool tool(s.host);
  REQUIRE(tool.addGroup("pimtransfer").isOk());
  // A user the agent did not create, whose name the document also uses.
  NewUser foreign;
  foreign.name = "legacysftp";
  foreign.home = "/home/legacysftp";
  foreign.shell = "/bin/bash";
  REQUIRE(tool.addUser(foreign).isOk());
  REQUIRE(tool.setPasswordHash("legacysftp", kHashB).isOk());
  const std::string passwdBefore = lineOf(s.sb.read("/etc/passwd"), "legacysftp");
  const std::string shadowBefore = lineOf(s.sb.read("/etc/shadow"), "legacysftp");
  REQUIRE_FALSE(passwdBefore.empty());

  s.doc.accounts = {account("sftp-main", "akeneosftp", kHashA),
                    account("sftp-keys", "keyonly", std::nullopt, true, {kBobKey}),
                    account("sftp-old", "oldsftp", kHashA, false), account("sftp-legacy", "legacysftp", kHashA)};
  REQUIRE(s.reconcile().isOk());

  SECTION("accounts, passwords, locks and keys as the document says") {
    auto user = s.host.findUser("akeneosftp");
    REQUIRE(user.isOk());
    REQUIRE(user->has_value());
    CHECK((*user)->shell == "/usr/sbin/nologin");
    CHECK((*user)->home == "/transfer");
    CHECK((*user)->gid == (*s.host.findGroup("pimtransfer"))->gid);
    CHECK((*user)->uid < 1000);  // system range
    CHECK_FALSE(fs::exists(s.sb.path("/transfer")));
    CHECK(s.ledger.owns(OwnedKind::kUser, "akeneosftp"));

    CHECK(s.shadow("akeneosftp")->password == kHashA);
    CHECK_FALSE(s.shadow("akeneosftp")->expireDays);
    CHECK(s.shadow("keyonly")->password == "!");
    auto old = s.shadow("oldsftp");
    REQUIRE(old);
    CHECK(old->password.rfind("!", 0) == 0);
    REQUIRE(old->expireDays);
    CHECK(*old->expireDays == 1);

    const std::string keys = s.sb.read(kKeysDir + "/keyonly");
    CHECK(keys == renderSftpKeys(s.doc.accounts[1]));
    struct stat st {};
    REQUIRE(::lstat(s.sb.path(kKeysDir + "/keyonly").c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0644);
    CHECK(st.st_uid == 0);
    REQUIRE(::lstat(s.sb.path(kKeysDir).c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0755);
    CHECK(st.st_uid == 0);
    CHECK_FALSE(fs::exists(s.sb.path(kKeysDir + "/akeneosftp")));

    // The user the agent did not create: refused, reported, byte-identical.
    CHECK(lineOf(s.sb.read("/etc/passwd"), "legacysftp") == passwdBefore);
    CHECK(lineOf(s.sb.read("/etc/shadow"), "legacysftp") == shadowBefore);
    CHECK_FALSE(s.ledger.owns(OwnedKind::kUser, "legacysftp"));
    REQUIRE(s.provider.skipped().size() == 1);
    CHECK(s.provider.skipped()[0].id == "sftp-legacy");

    auto again = s.plan();
    REQUIRE(again.isOk());
    CHECK(again->empty());
  }

  SECTION("hash change, reactivation, deactivation, invalid entry and removal") {
    const std::string transferFile = s.sb.path("/data/transfer/pim/report.csv");
    s.sb.write("/data/transfer/pim/report.csv", "kept\n");
    const uid_t removedUid = (*s.host.findUser("akeneosftp"))->uid;
    REQUIRE(::chown(transferFile.c_str(), removedUid, 0) == 0);

    s.doc.accounts = {account("sftp-keys", "keyonly", kHashB, false, {kBobKey}),
                      account("sftp-old", "oldsftp", kHashB, true), account("sftp-legacy", "legacysftp", kHashA)};
    s.doc.accounts.push_back(account("sftp-new", "newsftp", kHashA));
    REQUIRE(s.reconcile().isOk());
    // akeneosftp gone from the document: removed, its files stay.
    CHECK_FALSE(s.host.findUser("akeneosftp")->has_value());
    CHECK_FALSE(s.ledger.owns(OwnedKind::kUser, "akeneosftp"));
    CHECK(s.sb.read("/data/transfer/pim/report.csv") == "kept\n");
    // keyonly deactivated: locked, expired, no keys file.
    CHECK(s.shadow("keyonly")->password.rfind("!", 0) == 0);
    CHECK(s.shadow("keyonly")->expireDays == std::optional<int64_t>(1));
    CHECK_FALSE(fs::exists(s.sb.path(kKeysDir + "/keyonly")));
    // oldsftp reactivated with a new hash.
    CHECK(s.shadow("oldsftp")->password == kHashB);
    CHECK_FALSE(s.shadow("oldsftp")->expireDays);
    CHECK(s.shadow("newsftp")->password == kHashA);
    CHECK(s.plan()->empty());

    // newsftp's entry becomes invalid: locked, not removed.
    s.doc.accounts.pop_back();
    s.doc.lockedUsernames = {"newsftp"};
    REQUIRE(s.reconcile().isOk());
    REQUIRE(s.host.findUser("newsftp")->has_value());
    CHECK(s.shadow("newsftp")->password == "!" + kHashA);
    CHECK(s.shadow("newsftp")->expireDays == std::optional<int64_t>(1));
    CHECK(s.plan()->empty());

    // Drift on an owned account is corrected.
    REQUIRE(tool.setShell("oldsftp", "/bin/bash").isOk());
    auto drift = s.plan();
    REQUIRE(drift.isOk());
    CHECK(verbsAndObjects(*drift) == std::vector<std::string>{"set-shell oldsftp"});
    REQUIRE(s.reconcile().isOk());
    CHECK((*s.host.findUser("oldsftp"))->shell == "/usr/sbin/nologin");

    CHECK(lineOf(s.sb.read("/etc/passwd"), "legacysftp") == passwdBefore);
    CHECK(lineOf(s.sb.read("/etc/shadow"), "legacysftp") == shadowBefore);
  }
}

namespace {

/// The real host, with the programs it runs counted.
class CountingHost : public RealHost {
 public:
  using RealHost::RealHost;
  Result<CommandResult> run(const std::vector<std::string>& argv, std::string_view input) override {
    ++runs[argv.empty() ? "" : argv[0].substr(argv[0].rfind('/') + 1)];
    return RealHost::run(argv, input);
  }
  std::map<std::string, int> runs;
};

}  // namespace

TEST_CASE("sftp_accounts: a batch of new accounts is recorded first, made in one run, granted together",
          "[sftp_accounts][root]") {
  if (!isRoot()) return;
  test::EtcSandbox sb;
  struct {
    CountingHost host;
    MemoryLedger ledger;
    SftpAccountsProvider provider;
    HostSettings hostSettings;
    SshdSettings sshdSettings;
    AccessDocument doc;
    Desired desired() { return Desired{doc, hostSettings, sshdSettings, 1800000000}; }
    Result<std::vector<Action>> plan() {
      auto d = desired();
      return provider.plan(d, host);
    }
    std::optional<ShadowEntry> shadow(const std::string& user) {
      auto e = AccountsTool(host).shadow(user);
      return e ? *e : std::nullopt;
    }
  } s{CountingHost(sb.dir(), nullLogger()), {}, SftpAccountsProvider(nullLogger(), s.ledger), {}, {}, {}};
  AccountsTool tool(s.host);
  for (int i = 0; i < 5; ++i) {
    s.doc.accounts.push_back(account("sftp-" + std::to_string(i), "batch" + std::to_string(i), kHashA, true,
                                     i == 0 ? std::vector<PublicKey>{kBobKey} : std::vector<PublicKey>{}));
  }
  auto byStage = [&](Stage stage) {
    auto all = s.plan();
    REQUIRE(all.isOk());
    std::vector<Action> out;
    for (const auto& a : *all) {
      if (a.stage == stage) out.push_back(a);
    }
    return out;
  };
  auto d = s.desired();

  // Without the transfer group nothing can be made: every account says why, and none stays
  // recorded as the agent's (the intents are taken back).
  auto prepare = byStage(Stage::kPrepare);
  REQUIRE(prepare.size() == 5);
  auto failed = s.provider.applyAll(prepare, d, s.host);
  for (const auto& st : failed) CHECK_THAT(st.message(), Catch::Contains("group pimtransfer does not exist"));
  CHECK(s.ledger.owned(OwnedKind::kUser).empty());

  REQUIRE(tool.addGroup("pimtransfer").isOk());
  prepare = byStage(Stage::kPrepare);
  s.host.runs.clear();
  auto made = s.provider.applyAll(prepare, d, s.host);
  for (const auto& st : made) CHECK(st.isOk());
  CHECK(s.host.runs["systemd-sysusers"] == 1);  // one run for the five, no useradd
  CHECK(s.host.runs["useradd"] == 0);
  CHECK(s.ledger.owned(OwnedKind::kUser).size() == 5);
  CHECK(s.shadow("batch3")->passwordLocked());  // made locked: no grant before its stage

  auto grant = byStage(Stage::kGrant);
  REQUIRE(grant.size() == 6);  // five passwords, one keys file
  s.host.runs.clear();
  auto granted = s.provider.applyAll(grant, d, s.host);
  for (const auto& st : granted) CHECK(st.isOk());
  CHECK(s.host.runs["chpasswd"] == 1);
  for (int i = 0; i < 5; ++i) CHECK(s.shadow("batch" + std::to_string(i))->password == kHashA);
  CHECK(s.ledger.owns(OwnedKind::kFile, kKeysDir + "/batch0"));
  auto again = s.plan();
  REQUIRE(again.isOk());
  CHECK(again->empty());
}
