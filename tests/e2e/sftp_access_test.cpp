// Issue "SFTP accesses", end to end: the agent binary (`once`, no --root) creates the SFTP
// accounts, their chroots and bind mounts and the sshd drop-in; real sftp/ssh clients (sshpass
// for passwords) prove what each account can and cannot do. Also the source allow-list, for
// the login user and the SFTP accounts alike. Each case runs in its own namespace.

#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include <catch2/catch.hpp>

#include "tests/e2e/harness.h"

using namespace pim::e2e;

namespace {

/// True when `path` is a mount point (a target in /proc/self/mountinfo).
bool isMountPoint(const std::string& path) {
  std::ifstream mi("/proc/self/mountinfo");
  for (std::string line; std::getline(mi, line);) {
    std::istringstream f(line);
    std::string id, parent, dev, root, target;
    f >> id >> parent >> dev >> root >> target;
    if (target == path) return true;
  }
  return false;
}

/// The /etc/shadow password field of `user` ("" when the user is absent).
std::string shadowPassword(const std::string& user) {
  std::ifstream f("/etc/shadow");
  for (std::string line; std::getline(f, line);) {
    if (line.compare(0, user.size() + 1, user + ":") != 0) continue;
    const size_t a = user.size() + 1;
    return line.substr(a, line.find(':', a) - a);
  }
  return {};
}

bool userExists(const std::string& name) {
  std::ifstream f("/etc/passwd");
  for (std::string line; std::getline(f, line);) {
    if (line.compare(0, name.size() + 1, name + ":") == 0) return true;
  }
  return false;
}

void requireSftpOk(const CommandOutput& r, TestSshd& sshd, const std::string& what) {
  INFO(what << ": sftp exit " << r.exit << "\nstdout:\n"
            << r.out << "\nstderr:\n"
            << r.err << "\nsshd log:\n"
            << sshd.log());
  REQUIRE(r.exit == 0);
}

void checkRefused(const CommandOutput& r, const std::string& what) {
  INFO(what << ": exit " << r.exit << "\nstdout:\n" << r.out << "\nstderr:\n" << r.err);
  CHECK(r.exit != 0);
  CHECK(contains(r.err, "Permission denied"));
  CHECK_FALSE(contains(r.out, "Remote working directory"));
}

}  // namespace

TEST_CASE("e2e sftp: password login lands in /transfer, put and get work, the chroot shows only transfer",
          "[e2e][sftp]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  ManagedHost host;
  const std::string root = host.transferRoot();
  DocSpec doc;
  doc.allowedSources = {"203.0.113.0/24"};
  doc.accounts = {{"sftp-main", "akeneosftp", cryptHash("Main-pass-1"), ".", true, {}},
                  {"sftp-erp", "erpsftp", cryptHash("Erp-pass-2"), "imports/erp", true, {}}};
  host.apply(doc);
  REQUIRE(isMountPoint(host.chrootBase() + "/akeneosftp/transfer"));
  REQUIRE(isMountPoint(host.chrootBase() + "/erpsftp/transfer"));

  // put, then get it back under another name; pwd says where the session starts.
  writeFile(host.tmp().file("upload.csv"), "sku;name\n1;chair\n");
  auto session = host.sshd().sftpBatch("akeneosftp", Credential::withPassword("Main-pass-1"),
                                       "pwd\nput " + host.tmp().file("upload.csv") +
                                           " products.csv\nget products.csv " + host.tmp().file("back.csv") + "\n");
  requireSftpOk(session, host.sshd(), "akeneosftp put/get");
  CHECK(contains(session.out, "Remote working directory: /transfer\n"));
  CHECK(readFile(root + "/products.csv") == "sku;name\n1;chair\n");
  CHECK(readFile(host.tmp().file("back.csv")) == "sku;name\n1;chair\n");

  // The account confined to imports/erp: its uploads land there.
  writeFile(host.tmp().file("erp.csv"), "erp\n");
  auto erpPut = host.sshd().sftpBatch("erpsftp", Credential::withPassword("Erp-pass-2"),
                                      "pwd\nput " + host.tmp().file("erp.csv") + " erp.csv\n");
  requireSftpOk(erpPut, host.sshd(), "erpsftp put");
  CHECK(contains(erpPut.out, "Remote working directory: /transfer\n"));
  CHECK(readFile(root + "/imports/erp/erp.csv") == "erp\n");
  CHECK_FALSE(pathExists(root + "/erp.csv"));

  // Files outside imports/erp, readable by anyone: only the chroot keeps them from erpsftp.
  writeFile(root + "/secret.csv", "top secret\n", 0666);
  writeFile(root + "/imports/other.csv", "other\n", 0666);

  // `/` of the session holds only transfer, for both accounts, also after `cd ..`.
  for (const auto& [user, password] : {std::pair<std::string, std::string>{"akeneosftp", "Main-pass-1"},
                                       std::pair<std::string, std::string>{"erpsftp", "Erp-pass-2"}}) {
    auto listing = host.sshd().sftpBatch(user, Credential::withPassword(password), "ls -1 /\ncd ..\nls -1\n");
    requireSftpOk(listing, host.sshd(), user + " ls /");
    CHECK(sftpListing(listing.out) == std::vector<std::string>{"/transfer", "transfer"});
  }
  auto erpList = host.sshd().sftpBatch("erpsftp", Credential::withPassword("Erp-pass-2"), "ls -1 /transfer\n");
  requireSftpOk(erpList, host.sshd(), "erpsftp ls /transfer");
  CHECK(sftpListing(erpList.out) == std::vector<std::string>{"/transfer/erp.csv"});

  // No path reaches outside the folder: relative, via .., or absolute host paths.
  for (const std::string& path :
       {std::string("secret.csv"), std::string("../secret.csv"), std::string("/transfer/../secret.csv"),
        std::string("../../other.csv"), root + "/secret.csv", std::string("/etc/passwd")}) {
    const std::string local = host.tmp().file("stolen");
    auto steal =
        host.sshd().sftpBatch("erpsftp", Credential::withPassword("Erp-pass-2"), "get " + path + " " + local + "\n");
    INFO("erpsftp get " << path << ": exit " << steal.exit << "\nstderr: " << steal.err);
    CHECK(steal.exit != 0);
    CHECK(contains(steal.err, "not found"));
    CHECK_FALSE(pathExists(local));
  }
  // Control: the account on the transfer root reads the same file, so it is the chroot above.
  auto control = host.sshd().sftpBatch("akeneosftp", Credential::withPassword("Main-pass-1"),
                                       "get secret.csv " + host.tmp().file("secret-copy") + "\n");
  requireSftpOk(control, host.sshd(), "akeneosftp get secret.csv");
  CHECK(readFile(host.tmp().file("secret-copy")) == "top secret\n");
}

TEST_CASE("e2e sftp: no shell, no TTY, no forwarding, no wrong password; a key logs in", "[e2e][sftp]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  ManagedHost host;
  KeyPair accountKey = generateKey(host.tmp().path(), "ed25519", "account");
  KeyPair loginKey = generateKey(host.tmp().path(), "ed25519", "login");
  const std::string port = std::to_string(host.sshd().port());
  DocSpec doc;
  doc.allowedSources = {"203.0.113.0/24"};
  doc.keys = {{"k-login", loginKey.publicLine, true, ""}};
  doc.accounts = {{"sftp-main", "akeneosftp", cryptHash("Main-pass-1"), ".", true, {accountKey.publicLine}}};
  host.apply(doc);

  // The account's key logs in over sftp, as does its password.
  auto byKey = host.sshd().sftpBatch("akeneosftp", Credential::key(accountKey), "pwd\n");
  requireSftpOk(byKey, host.sshd(), "akeneosftp by key");
  CHECK(contains(byKey.out, "Remote working directory: /transfer\n"));
  requireSftpOk(host.sshd().sftpBatch("akeneosftp", Credential::withPassword("Main-pass-1"), "pwd\n"), host.sshd(),
                "akeneosftp by password");

  // A wrong password is refused.
  checkRefused(host.sshd().sftpBatch("akeneosftp", Credential::withPassword("Main-pass-2"), "pwd\n"), "wrong password");

  // A command runs internal-sftp, never a shell (control: akeneo's command runs).
  for (const Credential& cred : {Credential::key(accountKey), Credential::withPassword("Main-pass-1")}) {
    auto shell = host.sshd().sshRun("akeneosftp", cred, "id; echo shell-ran");
    INFO("ssh akeneosftp id: exit " << shell.exit << "\nstdout: " << shell.out << "\nstderr: " << shell.err);
    CHECK_FALSE(contains(shell.out, "uid="));
    CHECK_FALSE(contains(shell.out, "shell-ran"));
  }
  auto loginShell = host.sshd().sshRun("akeneo", Credential::key(loginKey), "id; echo shell-ran");
  CHECK(contains(loginShell.out, "shell-ran"));

  // No TTY and no forwarding, by password (the drop-in's Match block alone decides) and by key
  // (whose line also carries `restrict`).
  for (const Credential& cred : {Credential::withPassword("Main-pass-1"), Credential::key(accountKey)}) {
    const std::string how = cred.keyPath.empty() ? "by password" : "by key";
    auto tty = host.sshd().sshRun("akeneosftp", cred, "tty", {"-tt"});
    INFO("ssh -tt akeneosftp " << how << ": exit " << tty.exit << "\nstdout: " << tty.out << "\nstderr: " << tty.err);
    CHECK(contains(tty.err, "PTY allocation request failed"));
    CHECK_FALSE(contains(tty.out, "/dev/pts"));

    // -W opens the same direct-tcpip channel as a connection through -L.
    auto direct = host.sshd().sshRun("akeneosftp", cred, "", {"-W", "127.0.0.1:" + port});
    INFO("ssh -W akeneosftp " << how << ": exit " << direct.exit << "\nstdout: " << direct.out
                              << "\nstderr: " << direct.err);
    CHECK(direct.exit == 255);
    CHECK(contains(direct.err, "stdio forwarding failed"));
    CHECK_FALSE(contains(direct.out, "SSH-2.0-"));

    auto remote = host.sshd().sshRun("akeneosftp", cred, "",
                                     {"-N", "-R", "0:127.0.0.1:" + port, "-o", "ExitOnForwardFailure=yes"});
    INFO("ssh -R akeneosftp " << how << ": exit " << remote.exit << "\nstderr: " << remote.err);
    CHECK(remote.exit == 255);
    CHECK(contains(remote.err, "remote port forwarding failed"));
  }
  CHECK(contains(host.sshd().log(), "refused local port forward"));

  // Controls: the login user gets a TTY and reaches sshd's banner through -W on the same sshd.
  auto loginTty = host.sshd().sshRun("akeneo", Credential::key(loginKey), "tty", {"-tt"});
  CHECK_FALSE(contains(loginTty.err, "PTY allocation request failed"));
  CHECK(contains(loginTty.out, "/dev/pts/"));
  auto loginDirect = host.sshd().sshRun("akeneo", Credential::key(loginKey), "", {"-W", "127.0.0.1:" + port});
  INFO("ssh -W as akeneo: exit " << loginDirect.exit << "\nstderr: " << loginDirect.err);
  CHECK(contains(loginDirect.out, "SSH-2.0-OpenSSH"));
}

TEST_CASE("e2e sftp: an inactive account is locked for every method; a removed one keeps its files", "[e2e][sftp]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  ManagedHost host;
  KeyPair key = generateKey(host.tmp().path(), "ed25519", "partner");
  const std::string root = host.transferRoot();
  DocSpec doc;
  doc.allowedSources = {"203.0.113.0/24"};
  doc.accounts = {{"sftp-partner", "partnersftp", cryptHash("Partner-pass-1"), "partner", true, {key.publicLine}},
                  {"sftp-leaving", "leavingsftp", cryptHash("Leaving-pass-2"), "leaving", true, {}}};
  host.apply(doc);

  // Revision 1: both log in; the leaving account uploads a file.
  requireSftpOk(host.sshd().sftpBatch("partnersftp", Credential::withPassword("Partner-pass-1"), "pwd\n"), host.sshd(),
                "partnersftp by password");
  requireSftpOk(host.sshd().sftpBatch("partnersftp", Credential::key(key), "pwd\n"), host.sshd(), "partnersftp by key");
  writeFile(host.tmp().file("report.csv"), "quarterly\n");
  requireSftpOk(host.sshd().sftpBatch("leavingsftp", Credential::withPassword("Leaving-pass-2"),
                                      "put " + host.tmp().file("report.csv") + " report.csv\n"),
                host.sshd(), "leavingsftp put");
  REQUIRE(readFile(root + "/leaving/report.csv") == "quarterly\n");

  // Revision 2: partnersftp deactivated, leavingsftp removed from the document.
  doc.revision = 2;
  doc.accounts = {{"sftp-partner", "partnersftp", cryptHash("Partner-pass-1"), "partner", false, {key.publicLine}}};
  host.apply(doc);

  checkRefused(host.sshd().sftpBatch("partnersftp", Credential::withPassword("Partner-pass-1"), "pwd\n"),
               "inactive account by password");
  checkRefused(host.sshd().sftpBatch("partnersftp", Credential::key(key), "pwd\n"), "inactive account by key");
  CHECK(contains(host.sshd().log(), "User partnersftp from 127.0.0.1 not allowed because listed in DenyUsers"));
  // The inactive account still exists, locked, and keeps its chroot.
  CHECK(userExists("partnersftp"));
  CHECK(shadowPassword("partnersftp").substr(0, 1) == "!");

  checkRefused(host.sshd().sftpBatch("leavingsftp", Credential::withPassword("Leaving-pass-2"), "pwd\n"),
               "removed account");
  CHECK_FALSE(userExists("leavingsftp"));
  CHECK_FALSE(pathExists(host.chrootBase() + "/leavingsftp"));
  CHECK_FALSE(isMountPoint(host.chrootBase() + "/leavingsftp/transfer"));
  // Its files under the transfer root stay.
  CHECK(readFile(root + "/leaving/report.csv") == "quarterly\n");
}

TEST_CASE("e2e sftp: a password changed in the store takes effect after the next once", "[e2e][sftp]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  ManagedHost host;
  DocSpec doc;
  doc.allowedSources = {"203.0.113.0/24"};
  doc.accounts = {{"sftp-main", "akeneosftp", cryptHash("Old-pass-1"), ".", true, {}}};
  host.apply(doc);
  requireSftpOk(host.sshd().sftpBatch("akeneosftp", Credential::withPassword("Old-pass-1"), "pwd\n"), host.sshd(),
                "old password, revision 1");
  checkRefused(host.sshd().sftpBatch("akeneosftp", Credential::withPassword("New-pass-2"), "pwd\n"),
               "new password before the change");

  doc.revision = 2;
  doc.accounts[0].passwordHash = cryptHash("New-pass-2");
  host.apply(doc);
  checkRefused(host.sshd().sftpBatch("akeneosftp", Credential::withPassword("Old-pass-1"), "pwd\n"),
               "old password after the change");
  requireSftpOk(host.sshd().sftpBatch("akeneosftp", Credential::withPassword("New-pass-2"), "pwd\n"), host.sshd(),
                "new password, revision 2");
}

TEST_CASE("e2e access: a source outside allowed_sources and always_allow is refused for ssh and sftp",
          "[e2e][sftp][ssh]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  ManagedHost host;  // always_allow = 127.0.0.1/32
  KeyPair loginKey = generateKey(host.tmp().path(), "ed25519", "login");
  KeyPair accountKey = generateKey(host.tmp().path(), "ed25519", "account");
  DocSpec doc;
  doc.allowedSources = {"203.0.113.0/24", "2001:db8:42::/48"};
  doc.keys = {{"k-login", loginKey.publicLine, true, ""}};
  doc.accounts = {{"sftp-main", "akeneosftp", cryptHash("Main-pass-1"), ".", true, {accountKey.publicLine}}};
  host.apply(doc);

  auto loginFrom = [&](const std::string& addr) {
    return host.sshd().sshRun("akeneo", Credential::key(loginKey), "id -un", {}, addr);
  };
  auto sftpFrom = [&](const Credential& cred, const std::string& addr) {
    return host.sshd().sftpBatch("akeneosftp", cred, "pwd\n", addr);
  };

  // 127.0.0.1 (always_allow) gets in; 127.0.0.2 (in neither list) does not, for any method.
  auto inside = loginFrom("127.0.0.1");
  CHECK(inside.exit == 0);
  CHECK(trim(inside.out) == "akeneo");
  auto outside = loginFrom("127.0.0.2");
  INFO("akeneo from 127.0.0.2: exit " << outside.exit << "\nstderr: " << outside.err);
  CHECK(outside.exit == 255);
  CHECK(contains(outside.err, "Permission denied"));
  CHECK_FALSE(contains(outside.out, "akeneo"));
  requireSftpOk(sftpFrom(Credential::withPassword("Main-pass-1"), "127.0.0.1"), host.sshd(), "sftp password from .1");
  requireSftpOk(sftpFrom(Credential::key(accountKey), "127.0.0.1"), host.sshd(), "sftp key from .1");
  checkRefused(sftpFrom(Credential::withPassword("Main-pass-1"), "127.0.0.2"), "sftp password from .2");
  checkRefused(sftpFrom(Credential::key(accountKey), "127.0.0.2"), "sftp key from .2");
  const std::string log = host.sshd().log();
  CHECK(contains(log, "User akeneo from 127.0.0.2 not allowed because listed in DenyUsers"));
  CHECK(contains(log, "User akeneosftp from 127.0.0.2 not allowed because listed in DenyUsers"));

  // Control: the store adds 127.0.0.2 and the same clients get in from there.
  doc.revision = 2;
  doc.allowedSources.push_back("127.0.0.2/32");
  host.apply(doc);
  auto widened = loginFrom("127.0.0.2");
  INFO("akeneo from 127.0.0.2 once allowed: stderr " << widened.err);
  CHECK(widened.exit == 0);
  CHECK(trim(widened.out) == "akeneo");
  requireSftpOk(sftpFrom(Credential::withPassword("Main-pass-1"), "127.0.0.2"), host.sshd(), "sftp from .2, allowed");

  // An empty list leaves only the operator's always_allow.
  doc.revision = 3;
  doc.allowedSources.clear();
  host.apply(doc);
  CHECK(loginFrom("127.0.0.1").exit == 0);
  CHECK(loginFrom("127.0.0.2").exit == 255);
  requireSftpOk(sftpFrom(Credential::key(accountKey), "127.0.0.1"), host.sshd(), "sftp from .1, empty list");
  checkRefused(sftpFrom(Credential::key(accountKey), "127.0.0.2"), "sftp from .2, empty list");
}

TEST_CASE("e2e sftp: accounts removed together go at once; one with an open session is locked, removed later",
          "[e2e][sftp]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  ManagedHost host;
  DocSpec doc;
  doc.allowedSources = {"203.0.113.0/24"};
  doc.accounts = {{"sftp-g1", "gone1sftp", cryptHash("Gone-pass-1"), "g1", true, {}},
                  {"sftp-g2", "gone2sftp", cryptHash("Gone-pass-2"), "g2", true, {}},
                  {"sftp-busy", "busysftp", cryptHash("Busy-pass-3"), "busy", true, {}},
                  {"sftp-stay", "staysftp", cryptHash("Stay-pass-4"), "stay", true, {}}};
  host.apply(doc);
  requireSftpOk(host.sshd().sftpBatch("gone1sftp", Credential::withPassword("Gone-pass-1"), "pwd\n"), host.sshd(),
                "gone1sftp");
  // An open session of busysftp: sftp waits for commands on a pipe that `sleep` holds open; on
  // the server, its internal-sftp process runs as busysftp.
  const std::string session =
      "sleep 600 | SSHPASS=Busy-pass-3 sshpass -e sftp -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
      "-o PubkeyAuthentication=no -P " +
      std::to_string(host.sshd().port()) + " busysftp@127.0.0.1";
  auto open = std::make_unique<Background>(std::vector<std::string>{"sh", "-c", session}, host.tmp().file("open.log"));
  REQUIRE(eventually([] { return runCommand({"pgrep", "-u", "busysftp"}).exit == 0; }));

  doc.revision = 2;
  doc.accounts = {{"sftp-stay", "staysftp", cryptHash("Stay-pass-4"), "stay", true, {}}};
  CommandOutput r = host.apply(doc);
  INFO("once:\n" << r.out << r.err);
  CHECK_FALSE(userExists("gone1sftp"));
  CHECK_FALSE(userExists("gone2sftp"));
  CHECK(userExists("staysftp"));
  CHECK_FALSE(contains(readFile("/etc/shadow"), "gone1sftp:"));
  // The one in session: locked for every method now, its removal retried.
  REQUIRE(userExists("busysftp"));
  CHECK(shadowPassword("busysftp").substr(0, 1) == "!");
  CHECK(contains(r.out + r.err, "busysftp still runs processes"));
  checkRefused(host.sshd().sftpBatch("busysftp", Credential::withPassword("Busy-pass-3"), "pwd\n"),
               "locked account in removal");
  requireSftpOk(host.sshd().sftpBatch("staysftp", Credential::withPassword("Stay-pass-4"), "pwd\n"), host.sshd(),
                "staysftp after the removals");

  // The session ends: the next cycle removes it.
  open.reset();
  REQUIRE(eventually([] { return runCommand({"pgrep", "-u", "busysftp"}).exit != 0; }));
  doc.revision = 3;
  host.apply(doc);
  CHECK_FALSE(userExists("busysftp"));
  CHECK(userExists("staysftp"));
}
