// The sshd drop-in: golden renderings, the settings a real sshd 9.2 derives from them (sshd -T),
// the Include expansion used for validation, and plan/apply against RealHost(tmpdir) with the
// real sshd -t (a rejected candidate is never installed).

#include "providers/sshd_dropin.h"

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "providers/host/real_host.h"
#include "providers/host/scratch_dir.h"
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
  in.loginKeysFile = "/home/akeneo/.ssh/authorized_keys";
  in.sftpUsers = {{"akeneosftp", true, true, false}};
  in.chrootBase = "/srv/pim-sftp";
  in.sftpKeysDir = "/etc/pim-access-agent/sftp-keys";
  in.allowedSources = {"127.0.0.0/8", "127.0.0.1/32", "203.0.113.0/24", "::1/128"};
  return in;
}

// full.json-like: a password account, a password+key account, an inactive one, a key-only one
// and a locked (skipped) entry; sources from the document plus an always_allow range.
DropinInput fullInput() {
  DropinInput in;
  in.loginUser = "akeneo";
  in.loginKeysFile = "/sandbox/home/akeneo/.ssh/authorized_keys";
  in.sftpUsers = {{"akeneosftp", true, true, false},
                  {"akeneosftp2", true, true, true},
                  {"akeneosftp3", false, false, false},
                  {"akeneosftp4", true, false, true},
                  {"brokensftp", false, false, false}};
  in.chrootBase = "/sandbox/srv/pim-sftp";
  in.sftpKeysDir = "/sandbox/etc/pim-access-agent/sftp-keys";
  in.allowedSources = {"10.9.0.0/16", "2001:db8:42::/48", "203.0.113.0/24", "::1/128"};
  return in;
}

DropinInput noSourcesInput() {
  DropinInput in = minimalInput();
  in.allowedSources.clear();
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
  // Order of the blocks: source refusal, locked accounts, login user, SFTP accounts.
  auto src = a.find(
      "Match User akeneo,akeneosftp,akeneosftp2,akeneosftp3,akeneosftp4,brokensftp Address "
      "!10.9.0.0/16,!2001:db8:42::/48,!203.0.113.0/24,!::1/128,*");
  auto locked = a.find("Match User akeneosftp3,brokensftp\n\tDenyUsers *");
  auto login = a.find("Match User akeneo\n");
  auto sftp = a.find("Match User akeneosftp2\n");
  REQUIRE(src != std::string::npos);
  REQUIRE(locked != std::string::npos);
  REQUIRE(login != std::string::npos);
  REQUIRE(sftp != std::string::npos);
  REQUIRE(src < locked);
  REQUIRE(locked < login);
  REQUIRE(login < sftp);
  REQUIRE(a.find("AuthenticationMethods publickey password\n") != std::string::npos);
  REQUIRE(a.find("Match User akeneosftp\n") != std::string::npos);   // password only
  REQUIRE(a.find("Match User akeneosftp4\n") != std::string::npos);  // key only
  // No SFTP accounts: no SFTP block at all.
  const std::string b = pim::renderDropin(noSftpInput());
  REQUIRE(b.find("ChrootDirectory") == std::string::npos);
  REQUIRE(b.find("ForceCommand") == std::string::npos);
  // An account with neither password nor key is locked, not given an empty method list.
  DropinInput c = minimalInput();
  c.sftpUsers = {{"nocreds", true, false, false}};
  const std::string rc = pim::renderDropin(c);
  REQUIRE(rc.find("Match User nocreds\n\tDenyUsers *") != std::string::npos);
  REQUIRE(rc.find("ChrootDirectory") == std::string::npos);
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
  CHECK(bad([](DropinInput& in) { in.sftpUsers[0].username = "a,b"; }).code() == pim::ErrorCode::kInvalid);
  CHECK(bad([](DropinInput& in) { in.sftpUsers[0].username = "akeneo"; }).code() == pim::ErrorCode::kInvalid);
  CHECK(bad([](DropinInput& in) { in.chrootBase = "/srv/my chroots"; }).code() == pim::ErrorCode::kInvalid);
  CHECK(bad([](DropinInput& in) { in.sftpKeysDir = "/etc/keys/%h"; }).code() == pim::ErrorCode::kInvalid);
  CHECK(bad([](DropinInput& in) { in.loginKeysFile = "relative/keys"; }).code() == pim::ErrorCode::kInvalid);
  CHECK(bad([](DropinInput& in) { in.allowedSources.push_back("10.0.0.0/8 *"); }).code() == pim::ErrorCode::kInvalid);
  CHECK(bad([](DropinInput& in) { in.allowedSources.push_back("*"); }).code() == pim::ErrorCode::kInvalid);
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
  pim::Desired desired{doc, hs, ss, 0};

  SECTION("login user missing: /home/<user>") {
    auto in = pim::buildDropinInput(desired, host);
    REQUIRE(in.isOk());
    CHECK(in->loginKeysFile == root.path() + "/home/akeneo/.ssh/authorized_keys");
    CHECK(in->chrootBase == root.path() + "/srv/pim-sftp");
    CHECK(in->sftpKeysDir == root.path() + "/etc/pim-access-agent/sftp-keys");
    REQUIRE(in->sftpUsers.size() == 3);
    CHECK(in->sftpUsers[0] == SftpUserEntry{"alpha", false, false, true});
    CHECK(in->sftpUsers[1] == SftpUserEntry{"broken", false, false, false});
    CHECK(in->sftpUsers[2] == SftpUserEntry{"zeta", true, true, false});
    CHECK(in->allowedSources == std::vector<std::string>{"127.0.0.1/32", "203.0.113.0/24", "::1/128"});
  }
  SECTION("login user's home from passwd") {
    mkdirs(root.path() + "/etc");
    writeText(root.path() + "/etc/passwd",
              "root:x:0:0:root:/root:/bin/bash\nakeneo:x:1000:1000::/var/lib/akeneo:/bin/bash\n");
    auto in = pim::buildDropinInput(desired, host);
    REQUIRE(in.isOk());
    CHECK(in->loginKeysFile == root.path() + "/var/lib/akeneo/.ssh/authorized_keys");
  }
}

TEST_CASE("sshd drop-in: effective settings with the real sshd (sshd -T)", "[sshd][sshd-real]") {
  if (!sshdRuns()) return;
  const DropinInput in = fullInput();
  SshdSandbox sb(pim::renderDropin(in));

  SECTION("login user from an allowed source: key only, agent forwarding") {
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
      CHECK(one(e, "authorizedkeysfile") == in.loginKeysFile);
      CHECK(one(e, "chrootdirectory") == "none");
      CHECK(one(e, "forcecommand") == "none");
    }
  }
  SECTION("managed users from outside the allowed sources are refused") {
    for (const char* user : {"akeneo", "akeneosftp", "akeneosftp2", "akeneosftp4"}) {
      for (const char* addr : {"198.51.100.7", "2001:db8:dead::1", "127.0.0.1"}) {
        INFO(user << " from " << addr);
        CHECK(denied(sb.effective(user, addr)));
      }
    }
  }
  SECTION("an always_allow source is not refused") {
    CHECK_FALSE(denied(sb.effective("akeneo", "10.9.1.1")));
    CHECK_FALSE(denied(sb.effective("akeneosftp", "::1")));
  }
  SECTION("SFTP accounts: internal-sftp only, chrooted, no forwarding") {
    auto e = sb.effective("akeneosftp2", "203.0.113.9");
    CHECK_FALSE(denied(e));
    CHECK(one(e, "chrootdirectory") == in.chrootBase + "/%u");
    CHECK(one(e, "forcecommand") == "internal-sftp -d /transfer -u 0007");
    CHECK(one(e, "authorizedkeysfile") == in.sftpKeysDir + "/%u");
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
  SECTION("inactive and locked accounts are refused from everywhere") {
    for (const char* user : {"akeneosftp3", "brokensftp"}) {
      for (const char* addr : {"203.0.113.9", "10.9.1.1", "::1", "198.51.100.7"}) {
        INFO(user << " from " << addr);
        auto e = sb.effective(user, addr);
        CHECK(denied(e));
        CHECK(one(e, "passwordauthentication") == "no");
        CHECK(one(e, "pubkeyauthentication") == "no");
      }
    }
  }
  SECTION("unmanaged users get none of the managed settings") {
    for (const char* user : {"root", "bob"}) {
      for (const char* addr : {"203.0.113.9", "198.51.100.7"}) {
        INFO(user << " from " << addr);
        auto e = sb.effective(user, addr);
        CHECK(e.count("denyusers") == 0);
        CHECK(one(e, "chrootdirectory") == "none");
        CHECK(one(e, "forcecommand") == "none");
        CHECK(one(e, "authenticationmethods") == "any");
        CHECK(one(e, "authorizedkeysfile") == ".ssh/authorized_keys .ssh/authorized_keys2");
      }
    }
  }
}

TEST_CASE("sshd drop-in: empty allowed sources refuse every managed user", "[sshd][sshd-real]") {
  if (!sshdRuns()) return;
  SshdSandbox sb(pim::renderDropin(noSourcesInput()));
  CHECK(denied(sb.effective("akeneo", "127.0.0.1")));
  CHECK(denied(sb.effective("akeneosftp", "203.0.113.5")));
  CHECK_FALSE(denied(sb.effective("root", "127.0.0.1")));
}

TEST_CASE("sshd drop-in: 1024 allowed sources on one Match line", "[sshd][sshd-real]") {
  if (!sshdRuns()) return;
  DropinInput in = minimalInput();
  in.allowedSources.clear();
  for (int i = 0; i < 1024; ++i) {
    in.allowedSources.push_back("10." + std::to_string(i / 256) + "." + std::to_string(i % 256) + ".0/24");
  }
  in.allowedSources.push_back("2001:db8:42::/48");
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
  const std::string dropin = "/etc/ssh/sshd_config.d/50-pim-access-agent.conf";
  const std::string cand = "/tmp/check/50-pim-access-agent.conf";
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
        r + "/etc/ssh/sshd_config.d/5*.conf /etc/ssh/extra.conf\n";
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
        "/etc/ssh/sshd_config.d/5*.conf /etc/ssh/extra.conf\n"
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
  CHECK(a.verb == "write");
  CHECK(a.object == f.ss.dropin);
  CHECK(a.detail == "login user akeneo; 1 sftp account; 3 allowed sources");
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

  SECTION("a changed document plans one write; mode drift alone plans one write too") {
    f.doc.allowedSources.push_back(pim::Cidr{"198.51.100.0/24"});
    auto again = f.plan();
    REQUIRE(again.size() == 1);
    CHECK(again[0].detail == "login user akeneo; 1 sftp account; 4 allowed sources");
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

TEST_CASE("sshd: an existing host account the agent did not create gets no SFTP block", "[sshd]") {
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
  REQUIRE(ledger.recordCreated("user", "akeneosftp").isOk());

  auto filtered = pim::buildDropinInput(desired, host, &ledger);
  REQUIRE(filtered.isOk());
  REQUIRE(filtered->sftpUsers.size() == 1);
  CHECK(filtered->sftpUsers[0].username == "akeneosftp");
  const std::string text = pim::renderDropin(*filtered);
  CHECK(text.find("intruder") == std::string::npos);
  CHECK(text.find("Match User akeneosftp") != std::string::npos);

  // Without ownership information (plan of a fresh host), nothing is filtered.
  auto unfiltered = pim::buildDropinInput(desired, host, nullptr);
  REQUIRE(unfiltered.isOk());
  CHECK(unfiltered->sftpUsers.size() == 2);
  std::filesystem::remove_all(dir);
}
