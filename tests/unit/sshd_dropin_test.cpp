// The sshd drop-in: golden renderings, the settings a real sshd 9.2 derives from them (sshd -T),
// the Include expansion used for validation, the probe matrix and the attribution of a value to
// the file that set it, and plan/apply against RealHost(tmpdir) with the real sshd -t and -T (a
// rejected or shadowed candidate is never installed; a reload after which sshd stops answering is
// undone).

#include "providers/sshd_dropin.h"

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "providers/host/real_host.h"
#include "providers/host/scratch_dir.h"
#include "tests/support/banner_listener.h"
#include "tests/support/skip.h"

namespace {

using pim::DropinInput;
using pim::SftpUserEntry;

constexpr const char* kSshd = "/usr/sbin/sshd";

std::string readText(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void writeText(const std::string& path, const std::string& text, mode_t mode = 0644) {
  {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f << text;
  }
  ::chmod(path.c_str(), mode);
}

void mkdirs(const std::string& path) {
  std::string cur;
  std::istringstream parts(path);
  for (std::string p; std::getline(parts, p, '/');) {
    if (p.empty()) continue;
    cur += "/" + p;
    ::mkdir(cur.c_str(), 0755);
  }
}

bool haveSshd() { return ::access(kSshd, X_OK) == 0 && ::access("/usr/bin/ssh-keygen", X_OK) == 0; }

// The real sshd needs root (host key and privilege separation directory) and the programs.
bool sshdRuns() {
  return pim::test::runsHere(haveSshd(), std::string(kSshd) + " or ssh-keygen not installed") &&
         pim::test::runsAsRoot("sshd -t and -T: host key and privilege separation directory");
}

// sshd -t and -T refuse to run without their privilege separation directory; systemd makes it
// when the service starts, so a test machine may not have it.
void ensurePrivsepDir() { ::mkdir("/run/sshd", 0755); }

DropinInput minimalInput() {
  DropinInput in;
  in.loginUser = "akeneo";
  in.sftpUsers = {{"akeneosftp", true, true, false}};
  in.chrootBase = "/srv/pim-sftp";
  in.authorizedKeysDir = "/etc/pim-access-agent/authorized_keys";
  in.documentSources = {"127.0.0.0/8", "203.0.113.0/24"};
  in.alwaysAllow = {"127.0.0.1/32", "::1/128"};
  return in;
}

// full.json-like: a password account, a password+key account, an inactive one, a key-only one,
// a locked (skipped) entry and a name the agent does not own; sources from the document plus an
// always_allow range; root by key from always_allow.
DropinInput fullInput() {
  DropinInput in;
  in.loginUser = "akeneo";
  in.sftpUsers = {{"akeneosftp", true, true, false},
                  {"akeneosftp2", true, true, true},
                  {"akeneosftp3", false, false, false},
                  {"akeneosftp4", true, false, true},
                  {"brokensftp", false, false, false}};
  in.deniedUsers = {"intruder"};
  in.chrootBase = "/sandbox/srv/pim-sftp";
  in.authorizedKeysDir = "/sandbox/etc/pim-access-agent/authorized_keys";
  in.documentSources = {"2001:db8:42::/48", "203.0.113.0/24"};
  in.alwaysAllow = {"10.9.0.0/16", "::1/128"};
  in.rootLogin = pim::RootLogin::kProhibitPassword;
  return in;
}

// Neither the document nor always_allow allows anything.
DropinInput noSourcesInput() {
  DropinInput in = minimalInput();
  in.documentSources.clear();
  in.alwaysAllow.clear();
  return in;
}

DropinInput noSftpInput() {
  DropinInput in = minimalInput();
  in.sftpUsers.clear();
  return in;
}

void checkGolden(const std::string& name, const std::string& actual) {
  const std::string path = std::string(PIM_SOURCE_DIR) + "/tests/golden/sshd-dropin-" + name + ".conf";
  const char* update = std::getenv("PIM_UPDATE_GOLDEN");
  if (update != nullptr && std::string(update) == "1") {
    writeText(path, actual);
    WARN("rewrote " << path);
  }
  INFO("golden file " << path << " (PIM_UPDATE_GOLDEN=1 rewrites it)");
  REQUIRE(readText(path) == actual);
}

// `sshd -T` output as keyword -> values (keywords that appear more than once keep every value).
using Effective = std::map<std::string, std::vector<std::string>>;

struct SshdSandbox {
  pim::ScratchDir dir{"pim-sshd-test."};
  std::string config;

  explicit SshdSandbox(const std::string& dropin) {
    REQUIRE(dir.valid());
    ensurePrivsepDir();
    REQUIRE(dir.writeFile("dropin.conf", dropin).isOk());
    pim::RealHost real("", pim::nullLogger());
    auto kg = real.run({"/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", dir.file("hostkey")});
    REQUIRE(kg.isOk());
    REQUIRE(kg->exitCode == 0);
    config = dir.file("sshd_config");
    REQUIRE(dir.writeFile("sshd_config", "Include " + dir.file("dropin.conf") + "\nHostKey " + dir.file("hostkey") +
                                             "\nUsePAM no\nPidFile none\n")
                .isOk());
  }

  Effective effective(const std::string& user, const std::string& addr) {
    pim::RealHost real("", pim::nullLogger());
    auto r = real.run(
        {kSshd, "-T", "-C", "user=" + user + ",addr=" + addr + ",host=x,laddr=127.0.0.1,lport=22", "-f", config});
    REQUIRE(r.isOk());
    INFO("sshd -T stderr: " << r->err);
    REQUIRE(r->exitCode == 0);
    Effective e;
    std::istringstream lines(r->out);
    for (std::string line; std::getline(lines, line);) {
      auto sp = line.find(' ');
      if (sp == std::string::npos) continue;
      e[line.substr(0, sp)].push_back(line.substr(sp + 1));
    }
    return e;
  }
};

std::string one(const Effective& e, const std::string& key) {
  auto it = e.find(key);
  return it == e.end() || it->second.empty() ? std::string("<absent>") : it->second.front();
}

bool denied(const Effective& e) {
  auto it = e.find("denyusers");
  if (it == e.end()) return false;
  for (const auto& v : it->second) {
    if (v == "*") return true;
  }
  return false;
}

}  // namespace

TEST_CASE("sshd drop-in: golden renderings", "[sshd]") {
  checkGolden("minimal", pim::renderDropin(minimalInput()));
  checkGolden("full", pim::renderDropin(fullInput()));
  checkGolden("no-sources", pim::renderDropin(noSourcesInput()));
  checkGolden("no-sftp", pim::renderDropin(noSftpInput()));
}

TEST_CASE("sshd drop-in: rendering is deterministic and shaped by role", "[sshd]") {
  const std::string a = pim::renderDropin(fullInput());
  REQUIRE(a == pim::renderDropin(fullInput()));
  // Order: the global root policy, source refusal for everyone, root, denied names, locked
  // accounts, login user, SFTP accounts.
  auto root = a.find("\nPermitRootLogin prohibit-password\n");
  auto src = a.find("\nMatch Address !10.9.0.0/16,!2001:db8:42::/48,!203.0.113.0/24,!::1/128,*\n\tDenyUsers *\n");
  auto rootBlock = a.find("\nMatch User root Address !10.9.0.0/16,!::1/128,*\n\tDenyUsers *\n");
  auto denied = a.find("\nMatch User intruder\n\tDenyUsers *\n\tPubkeyAuthentication no\n");
  auto locked = a.find("\nMatch User akeneosftp3,brokensftp\n\tDenyUsers *");
  auto login = a.find("\nMatch User akeneo\n");
  auto sftp = a.find("\nMatch User akeneosftp2\n");
  REQUIRE(root != std::string::npos);
  REQUIRE(src != std::string::npos);
  REQUIRE(rootBlock != std::string::npos);
  REQUIRE(denied != std::string::npos);
  REQUIRE(locked != std::string::npos);
  REQUIRE(login != std::string::npos);
  REQUIRE(sftp != std::string::npos);
  REQUIRE(root < a.find("\nMatch "));  // global: before any Match block
  REQUIRE(root < src);
  REQUIRE(src < rootBlock);
  REQUIRE(rootBlock < denied);
  REQUIRE(denied < locked);
  REQUIRE(locked < login);
  REQUIRE(login < sftp);
  REQUIRE(a.find("AuthenticationMethods publickey password\n") != std::string::npos);
  REQUIRE(a.find("Match User akeneosftp\n") != std::string::npos);   // password only
  REQUIRE(a.find("Match User akeneosftp4\n") != std::string::npos);  // key only
  // Every managed user's keys come from the agent's directory; no home is named.
  size_t keyFiles = 0;
  for (size_t at = a.find("AuthorizedKeysFile "); at != std::string::npos; at = a.find("AuthorizedKeysFile ", at + 1)) {
    CHECK(a.compare(at, 68, "AuthorizedKeysFile /sandbox/etc/pim-access-agent/authorized_keys/%u\n") == 0);
    ++keyFiles;
  }
  REQUIRE(keyFiles == 4);  // the login user and the three SFTP blocks
  // The header counts the document's sources and always_allow apart.
  REQUIRE(a.find("2 sources from the document + 2 always_allow") != std::string::npos);
  // No SFTP accounts: no SFTP block at all.
  const std::string b = pim::renderDropin(noSftpInput());
  REQUIRE(b.find("ChrootDirectory") == std::string::npos);
  REQUIRE(b.find("ForceCommand") == std::string::npos);
  REQUIRE(b.find("PermitRootLogin no\n") != std::string::npos);
  REQUIRE(b.find("Match User root") == std::string::npos);
  // An account with neither password nor key is locked, not given an empty method list.
  DropinInput c = minimalInput();
  c.sftpUsers = {{"nocreds", true, false, false}};
  const std::string rc = pim::renderDropin(c);
  REQUIRE(rc.find("Match User nocreds\n\tDenyUsers *") != std::string::npos);
  REQUIRE(rc.find("ChrootDirectory") == std::string::npos);
  // prohibit-password without any always_allow range: root is refused from everywhere.
  DropinInput d = minimalInput();
  d.rootLogin = pim::RootLogin::kProhibitPassword;
  d.alwaysAllow.clear();
  REQUIRE(pim::renderDropin(d).find("\nMatch User root\n\tDenyUsers *\n") != std::string::npos);
}

TEST_CASE("sshd drop-in: unsafe names, paths and sources are refused", "[sshd]") {
  REQUIRE(pim::checkDropinInput(fullInput()).isOk());
  auto bad = [](auto mutate) {
    DropinInput in = fullInput();
    mutate(in);
    return pim::checkDropinInput(in);
  };
  CHECK(bad([](DropinInput& in) { in.loginUser = "ake neo"; }).code() == pim::ErrorCode::kInvalid);
  CHECK(bad([](DropinInput& in) { in.loginUser = "*"; }).code() == pim::ErrorCode::kInvalid);
  CHECK(bad([](DropinInput& in) { in.loginUser = "root"; }).code() == pim::ErrorCode::kInvalid);
  CHECK(bad([](DropinInput& in) { in.sftpUsers[0].username = "a,b"; }).code() == pim::ErrorCode::kInvalid);
  CHECK(bad([](DropinInput& in) { in.sftpUsers[0].username = "akeneo"; }).code() == pim::ErrorCode::kInvalid);
  CHECK(bad([](DropinInput& in) { in.sftpUsers[0].username = "root"; }).code() == pim::ErrorCode::kInvalid);
  CHECK(bad([](DropinInput& in) { in.deniedUsers = {"akeneosftp"}; }).code() == pim::ErrorCode::kInvalid);
  CHECK(bad([](DropinInput& in) { in.deniedUsers = {"!x"}; }).code() == pim::ErrorCode::kInvalid);
  CHECK(bad([](DropinInput& in) { in.chrootBase = "/srv/my chroots"; }).code() == pim::ErrorCode::kInvalid);
  CHECK(bad([](DropinInput& in) { in.authorizedKeysDir = "/etc/keys/%h"; }).code() == pim::ErrorCode::kInvalid);
  CHECK(bad([](DropinInput& in) { in.authorizedKeysDir = "relative/keys"; }).code() == pim::ErrorCode::kInvalid);
  CHECK(bad([](DropinInput& in) { in.documentSources.push_back("10.0.0.0/8 *"); }).code() == pim::ErrorCode::kInvalid);
  CHECK(bad([](DropinInput& in) { in.documentSources.push_back("*"); }).code() == pim::ErrorCode::kInvalid);
  CHECK(bad([](DropinInput& in) { in.alwaysAllow.push_back("*"); }).code() == pim::ErrorCode::kInvalid);
}

TEST_CASE("sshd drop-in: input built from the document and the host", "[sshd]") {
  pim::ScratchDir root("pim-sshd-root.");
  REQUIRE(root.valid());
  pim::RealHost host(root.path(), pim::nullLogger());
  pim::AccessDocument doc;
  pim::SftpAccount a1;
  a1.username = "zeta";
  a1.passwordHash = "$6$x$y";
  pim::SftpAccount a2;
  a2.username = "alpha";
  a2.active = false;
  a2.publicKeys.push_back(pim::PublicKey{"ssh-ed25519", "AAAA", ""});
  doc.accounts = {a1, a2};
  doc.lockedUsernames = {"broken"};
  doc.allowedSources = {pim::Cidr{"203.0.113.0/24"}, pim::Cidr{"127.0.0.1/32"}};
  pim::HostSettings hs;  // always_allow 127.0.0.1/32, ::1/128
  pim::SshdSettings ss;
  ss.permitRootLogin = pim::RootLogin::kProhibitPassword;
  pim::Desired desired{doc, hs, ss, 0};

  auto in = pim::buildDropinInput(desired, host);
  REQUIRE(in.isOk());
  CHECK(in->authorizedKeysDir == root.path() + "/etc/pim-access-agent/authorized_keys");
  CHECK(in->chrootBase == root.path() + "/srv/pim-sftp");
  REQUIRE(in->sftpUsers.size() == 3);
  CHECK(in->sftpUsers[0] == SftpUserEntry{"alpha", false, false, true});
  CHECK(in->sftpUsers[1] == SftpUserEntry{"broken", false, false, false});
  CHECK(in->sftpUsers[2] == SftpUserEntry{"zeta", true, true, false});
  CHECK(in->deniedUsers.empty());
  CHECK(in->documentSources == std::vector<std::string>{"127.0.0.1/32", "203.0.113.0/24"});
  CHECK(in->alwaysAllow == std::vector<std::string>{"127.0.0.1/32", "::1/128"});
  CHECK(pim::allowedSources(*in) == std::vector<std::string>{"127.0.0.1/32", "203.0.113.0/24", "::1/128"});
  CHECK(in->rootLogin == pim::RootLogin::kProhibitPassword);
  CHECK(pim::summarizeDropin(*in) ==
        "login user akeneo; 3 sftp accounts (2 locked); 2 sources from the document + 2 always_allow; root login by "
        "key from always_allow");
}

TEST_CASE("sshd drop-in: effective settings with the real sshd (sshd -T)", "[sshd][sshd-real]") {
  if (!sshdRuns()) return;
  const DropinInput in = fullInput();
  SshdSandbox sb(pim::renderDropin(in));
  const std::string keysFile = in.authorizedKeysDir + "/%u";

  SECTION("login user from an allowed source: key only, keys from the agent's file, agent forwarding") {
    for (const char* addr : {"203.0.113.5", "2001:db8:42::7"}) {
      INFO("from " << addr);
      auto e = sb.effective("akeneo", addr);
      CHECK_FALSE(denied(e));
      CHECK(one(e, "passwordauthentication") == "no");
      CHECK(one(e, "kbdinteractiveauthentication") == "no");
      CHECK(one(e, "pubkeyauthentication") == "yes");
      CHECK(one(e, "authenticationmethods") == "publickey");
      CHECK(one(e, "allowagentforwarding") == "yes");
      CHECK(one(e, "hostbasedauthentication") == "no");
      CHECK(one(e, "gssapiauthentication") == "no");
      CHECK(one(e, "authorizedkeysfile") == keysFile);
      CHECK(one(e, "chrootdirectory") == "none");
      CHECK(one(e, "forcecommand") == "none");
    }
  }
  SECTION("every user from outside the allowed sources is refused, managed or not") {
    for (const char* user : {"akeneo", "akeneosftp", "akeneosftp2", "akeneosftp4", "root", "bob"}) {
      for (const char* addr : {"198.51.100.7", "2001:db8:dead::1", "127.0.0.1"}) {
        INFO(user << " from " << addr);
        CHECK(denied(sb.effective(user, addr)));
      }
    }
  }
  SECTION("an always_allow source is not refused") {
    CHECK_FALSE(denied(sb.effective("akeneo", "10.9.1.1")));
    CHECK_FALSE(denied(sb.effective("akeneosftp", "::1")));
    CHECK_FALSE(denied(sb.effective("bob", "10.9.1.1")));
  }
  SECTION("SFTP accounts: internal-sftp only, chrooted, no forwarding") {
    auto e = sb.effective("akeneosftp2", "203.0.113.9");
    CHECK_FALSE(denied(e));
    CHECK(one(e, "chrootdirectory") == in.chrootBase + "/%u");
    CHECK(one(e, "forcecommand") == "internal-sftp -d /transfer -u 0007");
    CHECK(one(e, "authorizedkeysfile") == keysFile);
    CHECK(one(e, "authenticationmethods") == "publickey password");
    CHECK(one(e, "passwordauthentication") == "yes");
    CHECK(one(e, "pubkeyauthentication") == "yes");
    CHECK(one(e, "kbdinteractiveauthentication") == "no");
    CHECK(one(e, "permittty") == "no");
    CHECK(one(e, "allowtcpforwarding") == "no");
    CHECK(one(e, "allowagentforwarding") == "no");
    CHECK(one(e, "allowstreamlocalforwarding") == "no");
    CHECK(one(e, "x11forwarding") == "no");
    CHECK(one(e, "permittunnel") == "no");
    CHECK(one(e, "disableforwarding") == "yes");
    CHECK(one(e, "permituserrc") == "no");

    auto pw = sb.effective("akeneosftp", "203.0.113.9");
    CHECK(one(pw, "authenticationmethods") == "password");
    CHECK(one(pw, "pubkeyauthentication") == "no");
    CHECK(one(pw, "passwordauthentication") == "yes");
    auto key = sb.effective("akeneosftp4", "203.0.113.9");
    CHECK(one(key, "authenticationmethods") == "publickey");
    CHECK(one(key, "pubkeyauthentication") == "yes");
    CHECK(one(key, "passwordauthentication") == "no");
    CHECK(one(key, "chrootdirectory") == in.chrootBase + "/%u");
  }
  SECTION("inactive and locked accounts, and names the agent does not own, are refused from everywhere") {
    for (const char* user : {"akeneosftp3", "brokensftp", "intruder"}) {
      for (const char* addr : {"203.0.113.9", "10.9.1.1", "::1", "198.51.100.7"}) {
        INFO(user << " from " << addr);
        auto e = sb.effective(user, addr);
        CHECK(denied(e));
        CHECK(one(e, "passwordauthentication") == "no");
        CHECK(one(e, "pubkeyauthentication") == "no");
      }
    }
  }
  SECTION("root: by key from always_allow only (prohibit-password)") {
    auto operatorRange = sb.effective("root", "10.9.1.1");
    CHECK_FALSE(denied(operatorRange));
    CHECK(one(operatorRange, "permitrootlogin") == "without-password");
    CHECK(denied(sb.effective("root", "203.0.113.9")));  // allowed for the document, not for root
    CHECK(denied(sb.effective("root", "198.51.100.7")));
  }
  SECTION("unmanaged users from an allowed source get none of the managed settings") {
    auto e = sb.effective("bob", "203.0.113.9");
    CHECK(e.count("denyusers") == 0);
    CHECK(one(e, "chrootdirectory") == "none");
    CHECK(one(e, "forcecommand") == "none");
    CHECK(one(e, "authenticationmethods") == "any");
    CHECK(one(e, "authorizedkeysfile") == ".ssh/authorized_keys .ssh/authorized_keys2");
  }
}

TEST_CASE("sshd drop-in: PermitRootLogin no by default, from everywhere", "[sshd][sshd-real]") {
  if (!sshdRuns()) return;
  SshdSandbox sb(pim::renderDropin(minimalInput()));
  for (const char* addr : {"127.0.0.1", "203.0.113.5", "198.51.100.7"}) {
    INFO("root from " << addr);
    CHECK(one(sb.effective("root", addr), "permitrootlogin") == "no");
  }
}

TEST_CASE("sshd drop-in: no allowed source at all refuses every user", "[sshd][sshd-real]") {
  if (!sshdRuns()) return;
  SshdSandbox sb(pim::renderDropin(noSourcesInput()));
  CHECK(denied(sb.effective("akeneo", "127.0.0.1")));
  CHECK(denied(sb.effective("akeneosftp", "203.0.113.5")));
  CHECK(denied(sb.effective("root", "127.0.0.1")));
  CHECK(denied(sb.effective("bob", "::1")));
}

TEST_CASE("sshd drop-in: 1024 allowed sources on one Match line", "[sshd][sshd-real]") {
  if (!sshdRuns()) return;
  DropinInput in = minimalInput();
  in.documentSources.clear();
  for (int i = 0; i < 1024; ++i) {
    in.documentSources.push_back("10." + std::to_string(i / 256) + "." + std::to_string(i % 256) + ".0/24");
  }
  in.documentSources.push_back("2001:db8:42::/48");
  SshdSandbox sb(pim::renderDropin(in));
  CHECK_FALSE(denied(sb.effective("akeneo", "10.3.255.7")));  // the last IPv4 range
  CHECK_FALSE(denied(sb.effective("akeneo", "2001:db8:42::1")));
  CHECK(denied(sb.effective("akeneo", "10.4.0.1")));
}

TEST_CASE("sshd drop-in: Include expansion for the validation copy", "[sshd]") {
  pim::ScratchDir root("pim-sshd-inc.");
  REQUIRE(root.valid());
  const std::string r = root.path();
  mkdirs(r + "/etc/ssh/sshd_config.d");
  writeText(r + "/etc/ssh/sshd_config.d/10-hardening.conf", "PermitRootLogin no\n");
  writeText(r + "/etc/ssh/sshd_config.d/90-local.conf", "X11Forwarding no\n");
  writeText(r + "/etc/ssh/sshd_config.d/README", "not a conf file\n");
  writeText(r + "/etc/ssh/sshd_config.d/.hidden.conf", "ignored by glob\n");
  pim::RealHost host(r, pim::nullLogger());
  const std::string dropin = "/etc/ssh/sshd_config.d/10-pim-access-agent.conf";
  const std::string cand = "/tmp/check/10-pim-access-agent.conf";
  const std::string debian =
      "# Debian's sshd_config\n"
      "Include /etc/ssh/sshd_config.d/*.conf\n"
      "KbdInteractiveAuthentication no\n"
      "UsePAM yes\n"
      "Subsystem\tsftp\t/usr/lib/openssh/sftp-server\n";

  SECTION("drop-in not installed yet: candidate inserted at its sorted position") {
    bool included = false;
    auto out = pim::expandIncludesForValidation(debian, dropin, cand, host, &included);
    REQUIRE(out.isOk());
    CHECK(included);
    const std::string expect =
        "# Debian's sshd_config\n"
        "# was: Include /etc/ssh/sshd_config.d/*.conf\n"
        "Include " +
        r +
        "/etc/ssh/sshd_config.d/10-hardening.conf\n"
        "Include " +
        cand +
        "\n"
        "Include " +
        r +
        "/etc/ssh/sshd_config.d/90-local.conf\n"
        "KbdInteractiveAuthentication no\n"
        "UsePAM yes\n"
        "Subsystem\tsftp\t/usr/lib/openssh/sftp-server\n";
    CHECK(*out == expect);
  }
  SECTION("installed drop-in replaced by the candidate, not included twice") {
    writeText(r + dropin, "# old\n");
    auto out = pim::expandIncludesForValidation(debian, dropin, cand, host);
    REQUIRE(out.isOk());
    CHECK(out->find(r + dropin) == std::string::npos);
    auto first = out->find("Include " + cand + "\n");
    REQUIRE(first != std::string::npos);
    CHECK(out->find("Include " + cand + "\n", first + 1) == std::string::npos);
    CHECK(out->find("10-hardening.conf") < first);
    CHECK(out->find("90-local.conf") > first);
  }
  SECTION("relative, root-prefixed, '=' and multi-argument Include lines") {
    const std::string cfg =
        "include=sshd_config.d/*.conf\n"
        "  Include " +
        r + "/etc/ssh/sshd_config.d/10-p*.conf /etc/ssh/extra.conf\n";
    bool included = false;
    auto out = pim::expandIncludesForValidation(cfg, dropin, cand, host, &included);
    REQUIRE(out.isOk());
    CHECK(included);
    const std::string expect =
        "# was: include=sshd_config.d/*.conf\n"
        "Include " +
        r +
        "/etc/ssh/sshd_config.d/10-hardening.conf\n"
        "Include " +
        cand +
        "\n"
        "Include " +
        r +
        "/etc/ssh/sshd_config.d/90-local.conf\n"
        "# was: Include " +
        r +
        "/etc/ssh/sshd_config.d/10-p*.conf /etc/ssh/extra.conf\n"
        "Include " +
        cand +
        "\n"
        "Include " +
        r + "/etc/ssh/extra.conf\n";
    CHECK(*out == expect);
  }
  SECTION("a main config that does not include the drop-in is reported") {
    bool included = true;
    auto out = pim::expandIncludesForValidation("Include /etc/ssh/other.d/*.conf\nUsePAM yes\n", dropin, cand, host,
                                                &included);
    REQUIRE(out.isOk());
    CHECK_FALSE(included);
    CHECK(out->find("Include " + r + "/etc/ssh/other.d/*.conf\n") != std::string::npos);
    CHECK(out->find(cand) == std::string::npos);
  }
  SECTION("wildcards in the directory part are refused") {
    auto out = pim::expandIncludesForValidation("Include /etc/ssh/*/*.conf\n", dropin, cand, host);
    REQUIRE_FALSE(out.isOk());
    CHECK(out.status().code() == pim::ErrorCode::kInvalid);
  }
  SECTION("an omitted file (the legacy drop-in) is left out, by a glob or named alone") {
    writeText(r + pim::kLegacyDropin, "# Managed by pim-access-agent (0.1)\n");
    auto out = pim::expandIncludesForValidation(debian + "Include /etc/ssh/sshd_config.d/5*.conf\n", dropin, cand, host,
                                                nullptr, {pim::kLegacyDropin});
    REQUIRE(out.isOk());
    CHECK(out->find("50-pim-access-agent.conf") == std::string::npos);
    CHECK(out->find("Include " + cand + "\n") != std::string::npos);
    auto kept = pim::expandIncludesForValidation(debian, dropin, cand, host);
    REQUIRE(kept.isOk());
    CHECK(kept->find(r + pim::kLegacyDropin) != std::string::npos);
  }
}

TEST_CASE("sshd probes: addresses inside and outside the allowed ranges", "[sshd][probes]") {
  CHECK(pim::addressInside("203.0.113.0/24") == "203.0.113.1");
  CHECK(pim::addressInside("127.0.0.1/32") == "127.0.0.1");
  CHECK(pim::addressInside("2001:db8:42::/48") == "2001:db8:42::1");
  CHECK(pim::addressInside("::1/128") == "::1");
  CHECK(pim::addressInside("10.0.0.0/31") == "10.0.0.0");
  CHECK_FALSE(pim::addressInside("bogus/8").has_value());
  CHECK(pim::addressInRanges("203.0.113.77", {"10.0.0.0/8", "203.0.113.0/24"}));
  CHECK_FALSE(pim::addressInRanges("203.0.114.1", {"203.0.113.0/24"}));
  CHECK(pim::addressInRanges("2001:db8:42:ffff::9", {"2001:db8:42::/48"}));
  CHECK_FALSE(pim::addressInRanges("::ffff:203.0.113.1", {"203.0.113.0/24"}));
  CHECK(pim::addressInRanges("198.51.100.1", {"0.0.0.0/0"}));

  auto a = pim::probeAddresses(fullInput());
  CHECK(a.allowed == "2001:db8:42::1");  // the document's first range
  CHECK(a.alwaysAllowed == "10.9.0.1");
  CHECK(a.refused == std::vector<std::string>{"192.0.2.1", "2001:db8:ffff::1"});
  DropinInput v4only = minimalInput();
  v4only.alwaysAllow = {"127.0.0.1/32"};
  CHECK(pim::probeAddresses(v4only).refused == std::vector<std::string>{"192.0.2.1"});  // no v6 range: no v6 probe
  DropinInput onlyOperators = minimalInput();
  onlyOperators.documentSources.clear();
  CHECK(pim::probeAddresses(onlyOperators).allowed == "127.0.0.1");  // always_allow when the document has none
  DropinInput everything = minimalInput();
  everything.documentSources = {"0.0.0.0/0", "192.0.2.0/24"};
  auto e = pim::probeAddresses(everything);
  CHECK(e.refused.size() == 1);
  CHECK(pim::addressInRanges(e.refused[0], {"::/0"}));
  DropinInput gaps = minimalInput();
  gaps.alwaysAllow.clear();
  gaps.documentSources = {"0.0.0.0/1", "128.0.0.0/2", "192.0.0.0/3", "224.0.0.0/4", "240.0.0.0/5"};
  auto g = pim::probeAddresses(gaps);
  REQUIRE(g.refused.size() == 1);
  CHECK(g.refused[0] == "248.0.0.0");  // found next to a range, not in the preferred list
}

TEST_CASE("sshd probes: the matrix, one account per block unless another file matches on users", "[sshd][probes]") {
  const DropinInput in = fullInput();
  auto addrs = pim::probeAddresses(in);
  auto count = [](const std::vector<pim::Probe>& probes, const std::string& user) {
    return std::count_if(probes.begin(), probes.end(), [&](const pim::Probe& p) { return p.user == user; });
  };
  auto perBlock = pim::probeMatrix(in, addrs, false);
  CHECK(count(perBlock, "akeneo") == 3);       // allowed + refused v4 + refused v6
  CHECK(count(perBlock, "akeneosftp2") == 3);  // password+key block
  CHECK(count(perBlock, "akeneosftp") == 3);   // password block
  CHECK(count(perBlock, "akeneosftp4") == 3);  // key block
  CHECK(count(perBlock, "akeneosftp3") == 3);  // the locked block's first
  CHECK(count(perBlock, "brokensftp") == 0);   // same block as akeneosftp3
  CHECK(count(perBlock, "intruder") == 3);
  CHECK(count(perBlock, "root") == 4);                    // allowed, always_allow, refused v4 and v6
  CHECK(count(perBlock, pim::kUnmanagedProbeUser) == 2);  // refused addresses only
  CHECK(perBlock.size() == 24);
  auto everyAccount = pim::probeMatrix(in, addrs, true);
  CHECK(count(everyAccount, "brokensftp") == 3);
  CHECK(everyAccount.size() == 27);
}

namespace {

pim::EffectiveConfig loginOk() {
  return pim::parseEffective(
      "authenticationmethods publickey\npasswordauthentication no\nkbdinteractiveauthentication no\n"
      "authorizedkeysfile /sandbox/etc/pim-access-agent/authorized_keys/%u\npermitrootlogin without-password\n");
}

}  // namespace

TEST_CASE("sshd probes: what must hold, per role", "[sshd][probes]") {
  const DropinInput in = fullInput();
  using pim::ProbeRole;
  auto check = [&](const std::string& user, const std::string& addr, ProbeRole role, const pim::EffectiveConfig& e) {
    std::vector<std::string> out;
    for (const auto& m : pim::checkProbe(pim::Probe{user, addr, role}, e, in)) out.push_back(pim::describeMismatch(m));
    return out;
  };
  CHECK(check("akeneo", "203.0.113.1", ProbeRole::kLoginUser, loginOk()).empty());
  auto shadowed = loginOk();
  shadowed["passwordauthentication"] = {"yes"};
  shadowed["authorizedkeysfile"] = {".ssh/authorized_keys .ssh/authorized_keys2"};
  CHECK(check("akeneo", "203.0.113.1", ProbeRole::kLoginUser, shadowed) ==
        std::vector<std::string>{"passwordauthentication yes for akeneo from 203.0.113.1 (want no)",
                                 "authorizedkeysfile .ssh/authorized_keys .ssh/authorized_keys2 for akeneo from "
                                 "203.0.113.1 (want /sandbox/etc/pim-access-agent/authorized_keys/%u)"});
  auto lockedOut = loginOk();
  lockedOut["denyusers"] = {"*"};
  CHECK(check("akeneo", "203.0.113.1", ProbeRole::kLoginUser, lockedOut) ==
        std::vector<std::string>{"denyusers * for akeneo from 203.0.113.1 (want not akeneo)"});
  // From a refused address only the refusal counts.
  CHECK(check("akeneo", "192.0.2.1", ProbeRole::kLoginUser, lockedOut).empty());
  CHECK(check("akeneo", "192.0.2.1", ProbeRole::kLoginUser, loginOk()) ==
        std::vector<std::string>{"denyusers (none) for akeneo from 192.0.2.1 (want *)"});
  CHECK(check("bob", "192.0.2.1", ProbeRole::kUnmanaged, pim::parseEffective("denyusers bob\n")).empty());

  const auto sftp = pim::parseEffective(
      "chrootdirectory /sandbox/srv/pim-sftp/%u\nforcecommand internal-sftp -d /transfer -u 0007\n"
      "authorizedkeysfile /sandbox/etc/pim-access-agent/authorized_keys/%u\nallowtcpforwarding no\n"
      "disableforwarding yes\nx11forwarding no\npermittty no\npermittunnel no\n");
  CHECK(check("akeneosftp", "203.0.113.1", ProbeRole::kSftpAccount, sftp).empty());
  auto loose = sftp;
  loose["forcecommand"] = {"none"};
  loose["allowtcpforwarding"] = {"yes"};
  CHECK(check("akeneosftp", "203.0.113.1", ProbeRole::kSftpAccount, loose).size() == 2);

  CHECK(check("intruder", "203.0.113.1", ProbeRole::kDenied, loginOk()).size() == 1);
  CHECK(check("akeneosftp3", "10.9.0.1", ProbeRole::kLocked, pim::parseEffective("denyusers *\n")).empty());

  // Root, prohibit-password: admitted by key from always_allow only.
  CHECK(check("root", "10.9.0.1", ProbeRole::kRoot, loginOk()).empty());
  CHECK(check("root", "203.0.113.1", ProbeRole::kRoot, loginOk()) ==
        std::vector<std::string>{"denyusers (none) for root from 203.0.113.1 (want *)"});
  auto rootYes = pim::parseEffective("permitrootlogin yes\n");
  CHECK(check("root", "10.9.0.1", ProbeRole::kRoot, rootYes).size() == 1);
  // Root, no: never, from anywhere.
  DropinInput strict = in;
  strict.rootLogin = pim::RootLogin::kNo;
  CHECK(pim::checkProbe(pim::Probe{"root", "10.9.0.1", ProbeRole::kRoot}, loginOk(), strict).size() == 1);
  CHECK(pim::checkProbe(pim::Probe{"root", "10.9.0.1", ProbeRole::kRoot}, pim::parseEffective("permitrootlogin no\n"),
                        strict)
            .empty());
}

TEST_CASE("sshd probes: Match criteria as a probe sees them, and who set a value", "[sshd][probes]") {
  using pim::matchSelects;
  CHECK(matchSelects("", "akeneo", "203.0.113.1", 22) == true);
  CHECK(matchSelects("Match all", "akeneo", "203.0.113.1", 22) == true);
  CHECK(matchSelects("Match User akeneo,bob", "akeneo", "203.0.113.1", 22) == true);
  CHECK(matchSelects("Match User ake*", "akeneo", "203.0.113.1", 22) == true);
  CHECK(matchSelects("Match User !akeneo,*", "akeneo", "203.0.113.1", 22) == false);
  CHECK(matchSelects("Match User bob", "akeneo", "203.0.113.1", 22) == false);
  CHECK(matchSelects("Match Address 203.0.113.0/24", "x", "203.0.113.1", 22) == true);
  CHECK(matchSelects("Match Address !203.0.113.0/24,*", "x", "203.0.113.1", 22) == false);
  CHECK(matchSelects("Match Address !203.0.113.0/24,*", "x", "192.0.2.1", 22) == true);
  CHECK(matchSelects("Match LocalPort 2222", "x", "192.0.2.1", 22) == false);
  CHECK(matchSelects("Match User akeneo Group admins", "akeneo", "192.0.2.1", 22) == std::nullopt);
  CHECK(matchSelects("Match User bob Group admins", "akeneo", "192.0.2.1", 22) == false);

  pim::ConfigWalk walk;
  walk.lines = {
      {"/etc/ssh/sshd_config", 3, "passwordauthentication", "yes", "", false},
      {"/etc/ssh/sshd_config.d/01-other.conf", 2, "passwordauthentication", "yes", "Match User bob", false},
      {"/etc/ssh/sshd_config.d/05-cloud.conf", 2, "passwordauthentication", "yes", "Match all", false},
      {"/etc/ssh/sshd_config.d/10-pim-access-agent.conf", 30, "passwordauthentication", "no", "Match User akeneo",
       true},
  };
  pim::Mismatch m{"passwordauthentication", "yes", "no", "akeneo", "203.0.113.1"};
  CHECK(pim::attribute(walk, m, 22) == "set by /etc/ssh/sshd_config.d/05-cloud.conf (Match all, line 2)");
  walk.lines.erase(walk.lines.begin() + 2);  // no Match block sets it: the global line
  CHECK(pim::attribute(walk, m, 22) == "set by /etc/ssh/sshd_config (global, line 3)");
  pim::Mismatch none{"denyusers", "(none)", "*", "akeneo", "192.0.2.1"};
  CHECK(pim::attribute(walk, none, 22) == "not set by any file: sshd's default");
  CHECK(pim::canonicalKeyword("ChallengeResponseAuthentication") == "kbdinteractiveauthentication");
}

TEST_CASE("sshd: the listen point to probe comes from sshd -T", "[sshd][probes]") {
  auto at = [](const std::string& text) { return pim::listenPointOf(pim::parseEffective(text)).describe(); };
  CHECK(at("port 22\nlistenaddress [::]:22\nlistenaddress 0.0.0.0:22\n") == "127.0.0.1:22");
  CHECK(at("port 2222\nlistenaddress 127.0.0.1:2222\n") == "127.0.0.1:2222");
  CHECK(at("port 22\nlistenaddress [::]:22\n") == "[::1]:22");
  CHECK(at("port 22\nlistenaddress 192.0.2.10:22 rdomain x\n") == "192.0.2.10:22");
  CHECK(at("") == "127.0.0.1:22");
}

TEST_CASE("sshd: the configuration is walked in sshd's order, the candidate in the drop-in's place", "[sshd]") {
  pim::ScratchDir root("pim-sshd-walk.");
  REQUIRE(root.valid());
  const std::string r = root.path();
  mkdirs(r + "/etc/ssh/sshd_config.d");
  mkdirs(r + "/etc/ssh/extra");
  writeText(r + "/etc/ssh/sshd_config.d/05-cloud.conf", "Match all\n  PasswordAuthentication yes\n");
  writeText(r + "/etc/ssh/sshd_config.d/90-local.conf", "Include " + r + "/etc/ssh/extra/*.conf\n");
  writeText(r + "/etc/ssh/extra/a.conf", "Match Group admins\nX11Forwarding yes\n");
  writeText(r + "/etc/ssh/sshd_config.d/10-pim-access-agent.conf", "# the live one: never read\nBogus yes\n");
  pim::RealHost host(r, pim::nullLogger());
  pim::SshdSettings ss;
  const std::string main =
      "PermitRootLogin yes\nInclude /etc/ssh/sshd_config.d/*.conf\nChallengeResponseAuthentication no\n";
  const std::string candidate = "PermitRootLogin no\nMatch User akeneo\n\tPasswordAuthentication no\n";
  auto walk = pim::walkConfiguration(main, ss, "/tmp/cand/10-pim-access-agent.conf", candidate, host);
  REQUIRE(walk.isOk());
  std::vector<std::string> seen;
  for (const auto& l : walk->lines) {
    seen.push_back(l.file + ":" + std::to_string(l.line) + " " + l.keyword + " " + l.value + " [" + l.match + "]" +
                   (l.ours ? " ours" : ""));
  }
  CHECK(seen ==
        std::vector<std::string>{
            r + "/etc/ssh/sshd_config:1 permitrootlogin yes []",
            r + "/etc/ssh/sshd_config.d/05-cloud.conf:2 passwordauthentication yes [Match all]",
            r + "/etc/ssh/sshd_config.d/10-pim-access-agent.conf:1 permitrootlogin no [] ours",
            r + "/etc/ssh/sshd_config.d/10-pim-access-agent.conf:3 passwordauthentication no [Match User akeneo] ours",
            r + "/etc/ssh/extra/a.conf:2 x11forwarding yes [Match Group admins]",
            r + "/etc/ssh/sshd_config:3 kbdinteractiveauthentication no []",
        });
  CHECK(walk->otherUserOrGroupMatch);  // a.conf matches on a group
}

namespace {

struct ProviderFixture {
  pim::ScratchDir root{"pim-sshd-prov."};
  pim::RealHost host{root.path(), pim::nullLogger()};
  pim::AccessDocument doc;
  pim::HostSettings hs;
  pim::SshdSettings ss;
  pim::SshdDropinProvider provider{pim::nullLogger()};
  pim::ScratchDir tools{"pim-sshd-tools."};

  ProviderFixture() {
    pim::SftpAccount a;
    a.username = "akeneosftp";
    a.passwordHash = "$6$x$y";
    doc.accounts = {a};
    doc.allowedSources = {pim::Cidr{"203.0.113.0/24"}};
    ss.reloadCommand = "/bin/true";
    ensurePrivsepDir();
  }
  pim::Desired desired() { return pim::Desired{doc, hs, ss, 0}; }
  std::string real(const std::string& p) const { return root.path() + p; }
  std::string script(const std::string& name, const std::string& body) {
    const std::string p = tools.file(name);
    writeText(p, "#!/bin/sh\n" + body, 0755);
    return p;
  }
  std::vector<pim::Action> plan() {
    auto d = desired();
    auto r = provider.plan(d, host);
    REQUIRE(r.isOk());
    return *r;
  }
};

}  // namespace

TEST_CASE("sshd provider: plan, apply with sshd -t, then a fresh plan is empty", "[sshd][sshd-real]") {
  if (!sshdRuns()) return;
  ProviderFixture f;
  const std::string reloadLog = f.tools.file("reload.log");
  f.ss.reloadCommand = f.script("reload", "echo \"$@\" >> " + reloadLog + "\n") + " ssh now";

  auto actions = f.plan();
  REQUIRE(actions.size() == 1);
  const auto& a = actions[0];
  CHECK(a.provider == "sshd");
  CHECK(a.verb == pim::Verb::kWrite);
  CHECK(a.object == f.ss.dropin);
  CHECK(a.detail == "login user akeneo; 1 sftp account; 1 source from the document + 2 always_allow; root login no");
  CHECK(a.before == "absent");
  CHECK(a.describe().find("Match") == std::string::npos);  // the text stays in the payload
  CHECK(a.payload.find("ChrootDirectory " + f.real("/srv/pim-sftp") + "/%u") != std::string::npos);

  auto d = f.desired();
  REQUIRE(f.provider.apply(a, d, f.host).isOk());
  CHECK(f.provider.lastReloadFailure().empty());
  CHECK(readText(f.real(f.ss.dropin)) == a.payload);
  struct stat st;
  REQUIRE(::lstat(f.real(f.ss.dropin).c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0644);
  CHECK(st.st_uid == 0);
  REQUIRE(::lstat(f.real("/etc/ssh/sshd_config.d").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0755);
  CHECK(readText(reloadLog) == "ssh now\n");  // split on spaces, no shell
  CHECK(f.plan().empty());
  // The probes ran against the real sshd -T: the whole matrix, one account per block.
  CHECK(f.provider.lastProbes().size() == 12);

  SECTION("a changed document plans one write; mode drift alone plans one write too") {
    f.doc.allowedSources.push_back(pim::Cidr{"198.51.100.0/24"});
    auto again = f.plan();
    REQUIRE(again.size() == 1);
    CHECK(again[0].detail ==
          "login user akeneo; 1 sftp account; 2 sources from the document + 2 always_allow; root login no");
    CHECK(again[0].before == std::to_string(a.payload.size()) + " bytes");
    f.doc.allowedSources.pop_back();
    REQUIRE(f.plan().empty());
    ::chmod(f.real(f.ss.dropin).c_str(), 0666);
    auto drift = f.plan();
    REQUIRE(drift.size() == 1);
    CHECK(drift[0].detail.find("mode/owner") != std::string::npos);
  }
  SECTION("a failed reload is reported, not an apply failure") {
    f.doc.allowedSources.push_back(pim::Cidr{"198.51.100.0/24"});
    f.ss.reloadCommand = f.script("failreload", "echo 'ssh.service not loaded' >&2; exit 1\n");
    auto again = f.plan();
    REQUIRE(again.size() == 1);
    auto d2 = f.desired();
    REQUIRE(f.provider.apply(again[0], d2, f.host).isOk());
    CHECK(f.provider.lastReloadFailure().find("ssh.service not loaded") != std::string::npos);
    CHECK(readText(f.real(f.ss.dropin)) == again[0].payload);
  }
  SECTION("a bare program name in reload_command is found") {
    f.ss.reloadCommand = "true";
    REQUIRE(f.provider.reload(f.ss, f.host).isOk());
    f.ss.reloadCommand = "pim-no-such-reloader";
    CHECK(f.provider.reload(f.ss, f.host).code() == pim::ErrorCode::kCommand);
  }
}

TEST_CASE("sshd provider: a candidate sshd -t rejects is not installed", "[sshd][sshd-real]") {
  if (!sshdRuns()) return;
  ProviderFixture f;
  const std::string reloadLog = f.tools.file("reload.log");
  f.ss.reloadCommand = f.script("reload", "echo reloaded >> " + reloadLog + "\n");
  mkdirs(f.real("/etc/ssh/sshd_config.d"));
  const std::string old = "# the previous drop-in\nMatch User akeneo\n\tPasswordAuthentication no\n";
  writeText(f.real(f.ss.dropin), old);
  auto actions = f.plan();
  REQUIRE(actions.size() == 1);

  SECTION("the real sshd rejects a bad candidate (minimal main config)") {
    pim::Action bad = actions[0];
    bad.payload += "Match User akeneosftp\n\tSubsystem sftp internal-sftp\n";  // not allowed in Match
    auto d = f.desired();
    auto s = f.provider.apply(bad, d, f.host);
    REQUIRE_FALSE(s.isOk());
    CHECK(s.code() == pim::ErrorCode::kCommand);
    CHECK(s.message().rfind("sshd -t rejected the candidate drop-in: ", 0) == 0);
    CHECK(s.message().find("Subsystem") != std::string::npos);
  }
  SECTION("a failing sshd binary (wrapper script) rejects the candidate") {
    f.ss.binary = f.script("sshd", "echo \"/x line 3: Bad configuration option: Bogus\" >&2; exit 255\n");
    auto d = f.desired();
    auto s = f.provider.apply(actions[0], d, f.host);
    REQUIRE_FALSE(s.isOk());
    CHECK(s.message() == "sshd -t rejected the candidate drop-in: /x line 3: Bad configuration option: Bogus");
  }
  SECTION("the host's main config takes part in the check") {
    // Debian-style main config below the root: the good candidate passes with it...
    writeText(f.real("/etc/ssh/sshd_config"),
              "Include /etc/ssh/sshd_config.d/*.conf\nKbdInteractiveAuthentication no\nUsePAM yes\n"
              "Subsystem sftp /usr/lib/openssh/sftp-server\n");
    auto d = f.desired();
    REQUIRE(f.provider.validate(actions[0].payload, f.ss, f.host).isOk());
    // ...and a main-config error is caught, which the minimal config would not see.
    writeText(f.real("/etc/ssh/sshd_config"), "Include /etc/ssh/sshd_config.d/*.conf\nNoSuchKeyword yes\n");
    auto s = f.provider.apply(actions[0], d, f.host);
    REQUIRE_FALSE(s.isOk());
    CHECK(s.message().find("NoSuchKeyword") != std::string::npos);
  }
  // Whatever rejected it: the old drop-in is byte-identical and sshd was not reloaded.
  CHECK(readText(f.real(f.ss.dropin)) == old);
  CHECK(::access(reloadLog.c_str(), F_OK) != 0);
}

TEST_CASE("sshd provider: no scratch files are left in /tmp", "[sshd][sshd-real]") {
  if (!sshdRuns()) return;
  ProviderFixture f;
  auto countScratch = [] {
    pim::RealHost real("", pim::nullLogger());
    auto names = real.listDirectory("/tmp");
    REQUIRE(names.isOk());
    return std::count_if(names->begin(), names->end(),
                         [](const std::string& n) { return n.rfind("pim-sshd-check.", 0) == 0; });
  };
  const auto before = countScratch();
  auto actions = f.plan();
  REQUIRE(actions.size() == 1);
  REQUIRE(f.provider.validate(actions[0].payload, f.ss, f.host).isOk());
  REQUIRE_FALSE(f.provider.validate("Bogus yes\n", f.ss, f.host).isOk());
  CHECK(countScratch() == before);
}

TEST_CASE("sshd provider: creates sshd's missing privilege separation directory", "[sshd][sshd-real]") {
  if (!sshdRuns()) return;
  ProviderFixture f;
  const std::string privsep = f.tools.file("privsep");
  // Behaves like sshd -t on a machine where sshd never ran: refuses until the directory exists.
  f.ss.binary = f.script("sshd", "if [ -d " + privsep + " ]; then exit 0; fi\n" +
                                     "echo 'Missing privilege separation directory: " + privsep + "' >&2\nexit 255\n");
  auto actions = f.plan();
  REQUIRE(actions.size() == 1);
  REQUIRE(f.provider.validate(actions[0].payload, f.ss, f.host).isOk());
  struct stat st;
  REQUIRE(::lstat(privsep.c_str(), &st) == 0);
  CHECK(S_ISDIR(st.st_mode));
  CHECK((st.st_mode & 07777) == 0755);
}

TEST_CASE("sshd: an existing host account the agent did not create gets a deny-all block", "[sshd]") {
  char tmpl[] = "/tmp/pim-dropin-foreign-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  std::filesystem::create_directories(dir + "/etc");
  {
    std::ofstream passwd(dir + "/etc/passwd");
    passwd << "root:x:0:0:root:/root:/bin/bash\nintruder:x:1500:1500::/home/intruder:/bin/bash\n"
           << "akeneosftp:x:990:990::/transfer:/usr/sbin/nologin\n";
  }
  pim::RealHost host(dir, pim::nullLogger());
  pim::AccessDocument doc;
  doc.revision = 1;
  for (const char* name : {"intruder", "akeneosftp"}) {
    pim::SftpAccount a;
    a.id = std::string("id-") + name;
    a.username = name;
    a.passwordHash = "$6$salt$hash";
    a.folder = ".";
    doc.accounts.push_back(a);
  }
  pim::HostSettings hs;
  pim::SshdSettings ss;
  pim::Desired desired{doc, hs, ss, 0};
  pim::MemoryLedger ledger;
  REQUIRE(ledger.recordCreated(pim::OwnedKind::kUser, "akeneosftp").isOk());

  auto filtered = pim::buildDropinInput(desired, host, &ledger);
  REQUIRE(filtered.isOk());
  REQUIRE(filtered->sftpUsers.size() == 1);
  CHECK(filtered->sftpUsers[0].username == "akeneosftp");
  CHECK(filtered->deniedUsers == std::vector<std::string>{"intruder"});
  const std::string text = pim::renderDropin(*filtered);
  CHECK(text.find("Match User intruder\n\tDenyUsers *\n\tPubkeyAuthentication no\n") != std::string::npos);
  CHECK(text.find("ChrootDirectory") < text.find("Match User akeneosftp\n") + 100);
  CHECK(text.find("Match User akeneosftp\n") != std::string::npos);
  CHECK(pim::summarizeDropin(*filtered).find("1 denied name") != std::string::npos);

  // Without ownership information (plan of a fresh host), nothing is filtered.
  auto unfiltered = pim::buildDropinInput(desired, host, nullptr);
  REQUIRE(unfiltered.isOk());
  CHECK(unfiltered->sftpUsers.size() == 2);
  CHECK(unfiltered->deniedUsers.empty());
  std::filesystem::remove_all(dir);
}

namespace {

/// A provider fixture whose root holds a Debian-like main config, so that the host's other
/// drop-ins and the listen port take part.
struct HostConfigFixture : ProviderFixture {
  std::string reloadLog;
  explicit HostConfigFixture(int port = 22) {
    mkdirs(real("/etc/ssh/sshd_config.d"));
    writeText(real("/etc/ssh/sshd_config"),
              "Include /etc/ssh/sshd_config.d/*.conf\nPort " + std::to_string(port) +
                  "\nListenAddress 127.0.0.1\nKbdInteractiveAuthentication no\nUsePAM yes\n"
                  "Subsystem sftp /usr/lib/openssh/sftp-server\n");
    reloadLog = tools.file("reload.log");
    ss.reloadCommand = script("reload", "echo reloaded >> " + reloadLog + "\n");
  }
  size_t reloads() const {
    const std::string log = readText(reloadLog);
    return size_t(std::count(log.begin(), log.end(), '\n'));
  }
  pim::Status applyPlanned() {
    auto actions = plan();
    REQUIRE(actions.size() == 1);
    auto d = desired();
    return provider.apply(actions[0], d, host);
  }
};

}  // namespace

TEST_CASE("sshd provider: an earlier drop-in that shadows ours is caught and nothing is installed",
          "[sshd][sshd-real][probes]") {
  if (!sshdRuns()) return;
  HostConfigFixture f;
  const std::string old = "# the previous drop-in\n";
  writeText(f.real(f.ss.dropin), old);
  std::string keyword, file;
  SECTION("Match all + PasswordAuthentication yes turns passwords back on for akeneo") {
    writeText(f.real("/etc/ssh/sshd_config.d/05-cloud.conf"), "Match all\n\tPasswordAuthentication yes\n");
    keyword = "passwordauthentication yes for akeneo from 203.0.113.1 (want no): set by " +
              f.real("/etc/ssh/sshd_config.d/05-cloud.conf") + " (Match all, line 2)";
  }
  SECTION("a global PermitRootLogin yes before ours") {
    writeText(f.real("/etc/ssh/sshd_config.d/05-cloud.conf"), "PermitRootLogin yes\n");
    keyword = "permitrootlogin yes for root from 203.0.113.1 (want no): set by " +
              f.real("/etc/ssh/sshd_config.d/05-cloud.conf") + " (global, line 1)";
  }
  SECTION("forwarding back on for everyone") {
    writeText(f.real("/etc/ssh/sshd_config.d/01-x.conf"), "Match Address *\n  AllowTcpForwarding yes\n");
    keyword = "allowtcpforwarding yes for akeneosftp from 203.0.113.1 (want no): set by " +
              f.real("/etc/ssh/sshd_config.d/01-x.conf") + " (Match Address *, line 2)";
  }
  SECTION("an AuthorizedKeysFile in the home for akeneo") {
    writeText(f.real("/etc/ssh/sshd_config.d/05-keys.conf"),
              "Match User akeneo\n  AuthorizedKeysFile .ssh/authorized_keys\n");
    keyword = "authorizedkeysfile .ssh/authorized_keys for akeneo from 203.0.113.1 (want " +
              f.real("/etc/pim-access-agent/authorized_keys") + "/%u): set by " +
              f.real("/etc/ssh/sshd_config.d/05-keys.conf") + " (Match User akeneo, line 2)";
  }
  auto s = f.applyPlanned();
  INFO(s.message());
  REQUIRE_FALSE(s.isOk());
  CHECK(s.code() == pim::ErrorCode::kCommand);
  CHECK_THAT(s.message(), Catch::StartsWith("sshd -T: the candidate drop-in would grant more than the document: "));
  CHECK_THAT(s.message(), Catch::Contains(keyword));
  CHECK_THAT(s.message(), Catch::EndsWith("; nothing installed"));
  CHECK(readText(f.real(f.ss.dropin)) == old);
  CHECK(f.reloads() == 0);
}

TEST_CASE("sshd provider: another file matching on User makes every account probed", "[sshd][sshd-real][probes]") {
  if (!sshdRuns()) return;
  HostConfigFixture f;
  for (const char* name : {"sftpb", "sftpc"}) {
    pim::SftpAccount a;
    a.username = name;
    a.passwordHash = "$6$x$y";
    f.doc.accounts.push_back(a);
  }
  REQUIRE(f.applyPlanned().isOk());
  const size_t perBlock = f.provider.lastProbes().size();
  // One account of the block gets an exception that the others do not have.
  writeText(f.real("/etc/ssh/sshd_config.d/05-one.conf"), "Match User sftpc\n\tX11Forwarding yes\n");
  f.doc.allowedSources.push_back(pim::Cidr{"198.51.100.0/24"});
  auto s = f.applyPlanned();
  INFO(s.message());
  CHECK(f.provider.lastProbes().size() == perBlock + 6);  // sftpb and sftpc, from three addresses
  REQUIRE_FALSE(s.isOk());
  CHECK_THAT(s.message(), Catch::Contains("x11forwarding yes for sftpc from 198.51.100.1 (want no)") ||
                              Catch::Contains("x11forwarding yes for sftpc from 203.0.113.1 (want no)"));
}

TEST_CASE("sshd provider: the legacy drop-in goes in the same apply, validated without it", "[sshd][sshd-real]") {
  if (!sshdRuns()) return;
  HostConfigFixture f;
  // 0.1's file, which sshd -t would reject if it were part of the check.
  writeText(f.real(pim::kLegacyDropin), "# Managed by pim-access-agent. Do not edit\nBogusKeyword yes\n");
  writeText(f.real("/etc/ssh/sshd_config.d/50-cloud-init.conf"), "PasswordAuthentication yes\n");
  auto actions = f.plan();
  REQUIRE(actions.size() == 1);
  CHECK_THAT(actions[0].detail, Catch::Contains("removes the drop-in of agent 0.1"));
  auto d = f.desired();
  REQUIRE(f.provider.apply(actions[0], d, f.host).isOk());
  CHECK_FALSE(std::filesystem::exists(f.real(pim::kLegacyDropin)));
  CHECK(std::filesystem::exists(f.real("/etc/ssh/sshd_config.d/10-pim-access-agent.conf")));
  CHECK(std::filesystem::exists(f.real("/etc/ssh/sshd_config.d/50-cloud-init.conf")));
  CHECK(f.reloads() == 1);
  CHECK(f.plan().empty());

  SECTION("a 50- file without the agent's header is someone else's and stays") {
    writeText(f.real(pim::kLegacyDropin), "# local settings\nX11Forwarding no\n");
    CHECK(f.plan().empty());
  }
}

TEST_CASE("sshd provider: a reload after which sshd stops answering is undone", "[sshd][sshd-real][reload]") {
  if (!sshdRuns()) return;
  pim::test::BannerListener sshd;
  REQUIRE(sshd.port() > 0);
  HostConfigFixture f(sshd.port());
  f.provider.setAnswerTimeout(std::chrono::milliseconds(600));
  const std::string flag = f.tools.file("sshd-down");
  sshd.stopWhenExists(flag);

  SECTION("sshd answers throughout: installed") {
    REQUIRE(f.applyPlanned().isOk());
    CHECK(f.reloads() == 1);
    CHECK(sshd.accepted() >= 2);  // before and after the reload
  }
  SECTION("the reload takes sshd down: the previous drop-in comes back, sshd is reloaded again") {
    const std::string old = "# the previous drop-in\nMatch User akeneo\n\tPasswordAuthentication no\n";
    writeText(f.real(f.ss.dropin), old);
    f.ss.reloadCommand = f.script("reload-down", "echo reloaded >> " + f.reloadLog + "\ntouch " + flag + "\n");
    auto s = f.applyPlanned();
    REQUIRE_FALSE(s.isOk());
    CHECK(s.message() == "sshd stopped answering on 127.0.0.1:" + std::to_string(sshd.port()) +
                             " after the reload: previous drop-in restored");
    CHECK(readText(f.real(f.ss.dropin)) == old);
    CHECK(f.reloads() == 2);
    CHECK(f.provider.lastReloadFailure().empty());
  }
  SECTION("no drop-in before: the new one is removed again") {
    f.ss.reloadCommand = f.script("reload-down", "touch " + flag + "\n");
    REQUIRE_FALSE(f.applyPlanned().isOk());
    CHECK_FALSE(std::filesystem::exists(f.real(f.ss.dropin)));
  }
  SECTION("a failed reload command while sshd still answers: installed, the failure reported") {
    f.ss.reloadCommand = f.script("reload-fails", "echo 'ssh.service not loaded' >&2; exit 1\n");
    REQUIRE(f.applyPlanned().isOk());
    CHECK_THAT(f.provider.lastReloadFailure(), Catch::Contains("ssh.service not loaded"));
    CHECK(std::filesystem::exists(f.real(f.ss.dropin)));
  }
  SECTION("reloadAndVerify: a pending reload, checked the same way, nothing restored") {
    REQUIRE(f.applyPlanned().isOk());
    const std::string installed = readText(f.real(f.ss.dropin));
    REQUIRE(f.provider.reloadAndVerify(f.ss, f.host).isOk());
    f.ss.reloadCommand = f.script("reload-down", "touch " + flag + "\n");
    auto s = f.provider.reloadAndVerify(f.ss, f.host);
    REQUIRE_FALSE(s.isOk());
    CHECK(s.message() == "sshd stopped answering on 127.0.0.1:" + std::to_string(sshd.port()) + " after the reload");
    CHECK(readText(f.real(f.ss.dropin)) == installed);
  }
}

TEST_CASE("sshd provider: an sshd that did not answer before the reload is not a failure",
          "[sshd][sshd-real][reload]") {
  if (!sshdRuns()) return;
  int port = 0;
  {
    pim::test::BannerListener gone;  // a port that nothing listens on any more
    port = gone.port();
  }
  HostConfigFixture f(port);
  REQUIRE(f.applyPlanned().isOk());
  CHECK(f.reloads() == 1);
  CHECK(f.provider.reloadAndVerify(f.ss, f.host).isOk());
}

namespace {

// Password accounts of every access, and a key-only read-only one: one block per credential kind
// and access.
DropinInput accessInput() {
  DropinInput in = minimalInput();
  in.sftpUsers = {{"feed", true, true, false, pim::SftpAccess::kReadOnly},
                  {"drop", true, true, false, pim::SftpAccess::kUploadOnly},
                  {"drop2", true, true, false, pim::SftpAccess::kUploadOnly},
                  {"rw", true, true, false, pim::SftpAccess::kReadWrite},
                  {"feedkey", true, false, true, pim::SftpAccess::kReadOnly},
                  {"lockedro", false, true, false, pim::SftpAccess::kReadOnly}};
  std::sort(in.sftpUsers.begin(), in.sftpUsers.end(),
            [](const auto& a, const auto& b) { return a.username < b.username; });
  return in;
}

}  // namespace

TEST_CASE("sshd drop-in: an account's access is its ForceCommand, one block per kind and access", "[sshd][access]") {
  CHECK(pim::sftpForceCommand(pim::SftpAccess::kReadWrite) == "internal-sftp -d /transfer -u 0007");
  CHECK(pim::sftpForceCommand(pim::SftpAccess::kReadOnly) == "internal-sftp -d /transfer -u 0007 -R");
  CHECK(pim::sftpForceCommand(pim::SftpAccess::kUploadOnly) ==
        "internal-sftp -d /transfer -u 0007 -p open,close,write,mkdir,realpath,fsync,limits");
  const DropinInput in = accessInput();
  checkGolden("access", pim::renderDropin(in));
  CHECK(pim::summarizeDropin(in).find("6 sftp accounts (1 locked, 2 read-only, 2 upload-only)") != std::string::npos);

  // The probes: one account per block (password rw, ro, up; key ro), each checked for its own
  // command.
  auto probes = pim::probeMatrix(in, pim::probeAddresses(in), false);
  std::set<std::string> sftpUsers;
  for (const auto& p : probes) {
    if (p.role == pim::ProbeRole::kSftpAccount) sftpUsers.insert(p.user);
  }
  CHECK(sftpUsers == std::set<std::string>{"drop", "feed", "feedkey", "rw"});
  auto effective = [](const std::string& force) {
    return pim::parseEffective("chrootdirectory /srv/pim-sftp/%u\nforcecommand " + force +
                               "\nauthorizedkeysfile /etc/pim-access-agent/authorized_keys/%u\nallowtcpforwarding no\n"
                               "disableforwarding yes\nx11forwarding no\npermittty no\npermittunnel no\n");
  };
  auto mismatches = [&](const std::string& user, const std::string& force) {
    std::vector<std::string> out;
    for (const auto& m : pim::checkProbe({user, "203.0.113.1", pim::ProbeRole::kSftpAccount}, effective(force), in)) {
      out.push_back(pim::describeMismatch(m));
    }
    return out;
  };
  CHECK(mismatches("feed", "internal-sftp -d /transfer -u 0007 -R").empty());
  CHECK(mismatches("drop", pim::sftpForceCommand(pim::SftpAccess::kUploadOnly)).empty());
  CHECK(mismatches("rw", "internal-sftp -d /transfer -u 0007").empty());
  // Another file's ForceCommand (or an older drop-in) that gives a read-only account more.
  CHECK(mismatches("feed", "internal-sftp -d /transfer -u 0007") ==
        std::vector<std::string>{"forcecommand internal-sftp -d /transfer -u 0007 for feed from 203.0.113.1 (want "
                                 "internal-sftp -d /transfer -u 0007 -R)"});
  CHECK(mismatches("drop", "internal-sftp -d /transfer -u 0007 -R").size() == 1);
}

TEST_CASE("sshd drop-in: sshd -T shows each account's ForceCommand", "[sshd][sshd-real][access]") {
  if (!sshdRuns()) return;
  const DropinInput in = accessInput();
  SshdSandbox sb(pim::renderDropin(in));
  for (const auto& u : in.sftpUsers) {
    if (!u.active) continue;
    INFO(u.username);
    auto e = sb.effective(u.username, "203.0.113.9");
    CHECK_FALSE(denied(e));
    CHECK(one(e, "forcecommand") == pim::sftpForceCommand(u.access));
    CHECK(one(e, "chrootdirectory") == in.chrootBase + "/%u");
  }
  CHECK(denied(sb.effective("lockedro", "203.0.113.9")));
}

TEST_CASE("sshd drop-in: an account's own allowed_sources: its own block, checked by the probes",
          "[sshd][sources][probes]") {
  DropinInput in = minimalInput();
  in.sftpUsers = {{"ownsftp", true, true, false, pim::SftpAccess::kReadWrite, {"203.0.113.16/28", "2001:db8::/32"}},
                  {"anysftp", true, true, false, pim::SftpAccess::kReadWrite, {}}};
  REQUIRE(pim::checkDropinInput(in).isOk());
  const std::string text = pim::renderDropin(in);
  CHECK(text.find("Match User ownsftp Address !203.0.113.16/28,!2001:db8::/32,*\n\tDenyUsers *\n") !=
        std::string::npos);
  CHECK(text.find("Match User anysftp Address") == std::string::npos);
  CHECK(pim::summarizeDropin(in).find("1 account with its own sources") != std::string::npos);

  // The probes: from inside its list, and from the document's list outside its own.
  auto probes = pim::probeMatrix(in, pim::probeAddresses(in), false);
  std::set<std::string> from;
  for (const auto& p : probes) {
    if (p.user == "ownsftp") from.insert(p.address);
  }
  CHECK(from.count("203.0.113.17") == 1);
  CHECK(from.count("127.0.0.1") == 1);
  pim::Probe outside{"ownsftp", "127.0.0.1", pim::ProbeRole::kSftpAccount};
  pim::EffectiveConfig notDenied{{"chrootdirectory", {"/srv/pim-sftp/%u"}}};
  auto mismatches = pim::checkProbe(outside, notDenied, in);
  REQUIRE_FALSE(mismatches.empty());
  CHECK(mismatches[0].keyword == "denyusers");

  // A source that is not a CIDR never reaches the file.
  DropinInput bad = in;
  bad.sftpUsers[0].sources = {"203.0.113.0/28,*"};
  CHECK_FALSE(pim::checkDropinInput(bad).isOk());

  if (!sshdRuns()) return;
  SshdSandbox sb(text);
  CHECK_FALSE(denied(sb.effective("ownsftp", "203.0.113.17")));
  CHECK(denied(sb.effective("ownsftp", "2001:db8::5")));  // its own list, not the document's
  CHECK(denied(sb.effective("ownsftp", "203.0.113.5")));  // the document's list, not its own
  CHECK(denied(sb.effective("ownsftp", "127.0.0.1")));
  CHECK_FALSE(denied(sb.effective("anysftp", "203.0.113.5")));
}
