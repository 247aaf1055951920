#include "tests/e2e/harness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <Poco/JSON/Parser.h>

#include "providers/host/scratch_dir.h"
#include "providers/host/subprocess.h"

namespace pim::e2e {
namespace {

[[noreturn]] void fail(const std::string& what) { throw std::runtime_error(what + ": " + std::strerror(errno)); }

std::string tmpBase() {
  const char* t = std::getenv("TMPDIR");
  return (t != nullptr && *t == '/') ? std::string(t) : std::string("/tmp");
}

size_t countOccurrences(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1)) ++n;
  return n;
}

int freeLoopbackPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fail("socket");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    fail("bind 127.0.0.1:0");
  }
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

}  // namespace

bool inTestNamespace() {
  const char* flag = std::getenv("PIM_E2E_NAMESPACE");
  if (flag == nullptr || std::string(flag) != "1" || ::geteuid() != 0) return false;
  // Belt and braces: the variable alone must not let a test run useradd on the real /etc.
  std::ifstream mi("/proc/self/mountinfo");
  for (std::string line; std::getline(mi, line);) {
    std::istringstream f(line);
    std::string id, parent, dev, root, target;
    f >> id >> parent >> dev >> root >> target;
    if (target == "/etc") return true;
  }
  return false;
}

TempDir::TempDir(const std::string& prefix) {
  std::string templ = tmpBase() + "/" + prefix + "XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) fail("mkdtemp " + templ);
  path_ = buf.data();
  ::chmod(path_.c_str(), 0755);  // sshd and users must be able to walk into it
}

TempDir::~TempDir() { (void)pim::removeTree(path_); }

CommandOutput runCommand(const std::vector<std::string>& argv, const std::string& input,
                         std::chrono::milliseconds timeout, const std::vector<std::string>& env) {
  CommandOutput result;
  if (argv.empty()) return result;
  SpawnOptions options;
  options.in = Redirect::pipe();
  options.group = SpawnOptions::Group::kNewSession;
  options.env = env;
  options.inheritEnvironment = true;
  options.searchPath = true;
  auto spawned = Subprocess::spawn(argv, options);
  if (!spawned) throw std::runtime_error(spawned.status().message());
  Subprocess child = std::move(*spawned);
  if (child.execError() != 0) {
    result.exit = 127;
    result.err = "exec " + argv[0] + ": " + std::strerror(child.execError()) + "\n";
    return result;
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  Subprocess::Output output = child.communicate(input, deadline);
  result.out = std::move(output.out);
  result.err = std::move(output.err);
  // The output is complete; a process that keeps running past the deadline is killed.
  std::optional<int> code;
  if (!output.timedOut) {
    code = child.waitFor(std::chrono::duration_cast<std::chrono::milliseconds>(
        std::max(deadline - std::chrono::steady_clock::now(), std::chrono::steady_clock::duration::zero())));
  }
  if (!code) {
    result.timedOut = true;
    child.kill(SIGKILL);
    code = child.wait();
  }
  result.exit = *code;
  return result;
}

CommandOutput mustRun(const std::vector<std::string>& argv, const std::string& input) {
  CommandOutput r = runCommand(argv, input);
  INFO("command: " << argv[0] << " ... exit " << r.exit << "\nstdout: " << r.out << "\nstderr: " << r.err);
  REQUIRE(r.exit == 0);
  return r;
}

KeyPair generateKey(const std::string& dir, const std::string& type, const std::string& name) {
  KeyPair k;
  k.privateKey = dir + "/" + name;
  k.publicKey = k.privateKey + ".pub";
  std::vector<std::string> argv{"ssh-keygen", "-q", "-t", type, "-N", "", "-C", name + "@e2e", "-f", k.privateKey};
  if (type == "rsa") {
    argv.insert(argv.begin() + 4, {"-b", "3072"});
  }
  CommandOutput r = runCommand(argv);
  if (r.exit != 0) throw std::runtime_error("ssh-keygen -t " + type + ": " + r.err);
  k.publicLine = trim(readFile(k.publicKey));
  return k;
}

void writeFile(const std::string& path, const std::string& content, mode_t mode, uid_t uid, gid_t gid) {
  {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    if (!f) fail("open " + path);
    f << content;
    if (!f) fail("write " + path);
  }
  if (::chown(path.c_str(), uid, gid) != 0) fail("chown " + path);
  if (::chmod(path.c_str(), mode) != 0) fail("chmod " + path);
}

std::string readFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("open " + path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void makeDirs(const std::string& path, mode_t mode) {
  std::string cur;
  std::istringstream parts(path);
  for (std::string p; std::getline(parts, p, '/');) {
    if (p.empty()) continue;
    cur += "/" + p;
    if (::mkdir(cur.c_str(), mode) == 0) {
      ::chmod(cur.c_str(), mode);  // not subject to the umask
    } else if (errno != EEXIST) {
      fail("mkdir " + cur);
    }
  }
}

LocalUser lookupUser(const std::string& name) {
  // Read /etc/passwd directly: the private copy, without NSS caches.
  std::ifstream f("/etc/passwd");
  for (std::string line; std::getline(f, line);) {
    std::vector<std::string> field;
    std::istringstream ss(line);
    for (std::string x; std::getline(ss, x, ':');) field.push_back(x);
    if (field.size() >= 6 && field[0] == name) {
      return LocalUser{name, uid_t(std::stoul(field[2])), gid_t(std::stoul(field[3])), field[5]};
    }
  }
  FAIL("user " << name << " not found in /etc/passwd");
  return {};
}

LocalUser createUser(const std::string& name, const std::vector<std::string>& extraArgs) {
  std::vector<std::string> argv{"useradd", "-m", "-s", "/bin/bash"};
  argv.insert(argv.end(), extraArgs.begin(), extraArgs.end());
  argv.push_back(name);
  mustRun(argv);
  return lookupUser(name);
}

void setPassword(const std::string& user, const std::string& password) {
  mustRun({"chpasswd"}, user + ":" + password + "\n");
}

void writeAuthorizedKeys(const LocalUser& user, const std::vector<std::string>& publicLines) {
  const std::string ssh = user.home + "/.ssh";
  if (::mkdir(ssh.c_str(), 0700) != 0 && errno != EEXIST) fail("mkdir " + ssh);
  if (::chown(ssh.c_str(), user.uid, user.gid) != 0) fail("chown " + ssh);
  ::chmod(ssh.c_str(), 0700);
  std::string text;
  for (const auto& l : publicLines) text += l + "\n";
  writeFile(ssh + "/authorized_keys", text, 0600, user.uid, user.gid);
}

TestSshd::TestSshd(Options options) : options_(std::move(options)) {
  const std::string hostKey = dir_.file("ssh_host_ed25519_key");
  mustRun({"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostKey});
  port_ = freeLoopbackPort();
  config_ = dir_.file("sshd_config");
  logPath_ = dir_.file("sshd.log");
  std::ostringstream cfg;
  cfg << "# e2e test sshd (Debian-like main config)\n";
  if (!options_.include.empty()) cfg << "Include " << options_.include << "\n";
  cfg << "Port " << port_ << "\n"
      << "ListenAddress 127.0.0.1\n";
  for (const auto& a : options_.listenAddresses) cfg << "ListenAddress " << a << "\n";
  cfg << "HostKey " << hostKey << "\n"
      << "PidFile " << dir_.file("sshd.pid") << "\n"
      << "UsePAM " << (options_.usePam ? "yes" : "no") << "\n"
      << "KbdInteractiveAuthentication no\n"
      << "X11Forwarding yes\n"
      << "PrintMotd no\n"
      << "AcceptEnv LANG LC_*\n"
      << "Subsystem sftp /usr/lib/openssh/sftp-server\n"
      << "LogLevel VERBOSE\n"
      << "LoginGraceTime 30\n";
  for (const auto& l : options_.extraConfig) cfg << l << "\n";
  writeFile(config_, cfg.str(), 0644);
  writeFile(logPath_, "", 0600);

  SpawnOptions spawn;
  // setpriv sets sshd's parent-death signal and execs it (same pid): never outlive the test
  // process.
  spawn.out = Redirect::append(logPath_);
  spawn.err = Redirect::toStdout();
  spawn.group = SpawnOptions::Group::kInherit;
  spawn.inheritEnvironment = true;
  auto spawned = Subprocess::spawn(
      {"/usr/bin/setpriv", "--pdeathsig", "TERM", "--", "/usr/sbin/sshd", "-D", "-f", config_, "-E", logPath_}, spawn);
  if (!spawned) throw std::runtime_error("start sshd: " + spawned.status().message());
  sshd_.emplace(std::move(*spawned));
  if (!waitForStart(0, std::chrono::seconds(15))) {
    // Stopped (and reaped) before its log is shown.
    sshd_.reset();
    INFO("sshd log:\n" << log());
    FAIL("sshd did not start listening on 127.0.0.1:" << port_);
  }
}

TestSshd::~TestSshd() {
  if (!sshd_) return;
  sshd_->kill(SIGTERM);
  (void)sshd_->waitFor(std::chrono::seconds(5));  // else SIGKILL as the Subprocess goes away
}

std::string TestSshd::log() const {
  try {
    return readFile(logPath_);
  } catch (const std::exception&) {
    return {};
  }
}

size_t TestSshd::starts() const { return countOccurrences(log(), "Server listening on 127.0.0.1 port"); }

std::string TestSshd::reloadCommand() const { return "/bin/kill -HUP " + std::to_string(pid()); }

bool TestSshd::waitForStart(size_t previous, std::chrono::milliseconds timeout) const {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (starts() > previous) return true;
    if (!sshd_->running()) return false;  // sshd died
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

void TestSshd::reload() {
  const size_t before = starts();
  REQUIRE(sshd_->kill(SIGHUP));
  bool ok = waitForStart(before);
  INFO("sshd log:\n" << log());
  REQUIRE(ok);
}

CommandOutput TestSshd::effective(const std::string& user, const std::string& addr) const {
  return runCommand({"/usr/sbin/sshd", "-T", "-C",
                     "user=" + user + ",addr=" + addr + ",host=e2e,laddr=127.0.0.1,lport=" + std::to_string(port_),
                     "-f", config_});
}

std::vector<std::string> TestSshd::clientOptions(const Credential& cred, const std::vector<std::string>& extraOpts,
                                                 const std::string& bindAddr) const {
  std::vector<std::string> o(extraOpts);
  const std::vector<std::string> common{
      "-F", "/dev/null",
      "-o", "StrictHostKeyChecking=no",
      "-o", "UserKnownHostsFile=/dev/null",
      "-o", "GlobalKnownHostsFile=/dev/null",
      "-o", "LogLevel=ERROR",
      "-o", "ConnectTimeout=10",
      "-o", "IdentityAgent=none",
      "-o", "BindAddress=" + bindAddr,
  };
  o.insert(o.end(), common.begin(), common.end());
  if (!cred.keyPath.empty()) {
    o.insert(o.end(),
             {"-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "PasswordAuthentication=no", "-o",
              "KbdInteractiveAuthentication=no", "-o", "PreferredAuthentications=publickey", "-i", cred.keyPath});
  } else {
    // sshpass answers the password prompt; BatchMode must stay off for it to appear.
    o.insert(o.end(), {"-o", "BatchMode=no", "-o", "PubkeyAuthentication=no", "-o", "IdentitiesOnly=yes", "-o",
                       "PreferredAuthentications=password,keyboard-interactive", "-o", "NumberOfPasswordPrompts=1"});
  }
  return o;
}

CommandOutput TestSshd::withCredential(std::vector<std::string> argv, const Credential& cred,
                                       const std::string& input) const {
  if (!cred.keyPath.empty()) return runCommand(argv, input);
  argv.insert(argv.begin(), {"sshpass", "-e"});
  return runCommand(argv, input, std::chrono::seconds(60), {"SSHPASS=" + cred.password});
}

CommandOutput TestSshd::sshRun(const std::string& user, const Credential& cred, const std::string& command,
                               const std::vector<std::string>& extraOpts, const std::string& bindAddr) const {
  std::vector<std::string> argv{"ssh"};
  auto o = clientOptions(cred, extraOpts, bindAddr);
  argv.insert(argv.end(), o.begin(), o.end());
  argv.insert(argv.end(), {"-p", std::to_string(port_), "-l", user, "127.0.0.1", "--", command});
  return withCredential(argv, cred, {});
}

CommandOutput TestSshd::sftpBatch(const std::string& user, const Credential& cred, const std::string& batch,
                                  const std::string& bindAddr, const std::vector<std::string>& extraOpts) const {
  std::vector<std::string> argv{"sftp"};
  auto o = clientOptions(cred, extraOpts, bindAddr);  // before -b: sftp's own BatchMode=yes comes last
  argv.insert(argv.end(), o.begin(), o.end());
  argv.insert(argv.end(), {"-P", std::to_string(port_), "-b", "-", user + "@127.0.0.1"});
  return withCredential(argv, cred, batch);
}

CommandOutput TestSshd::sshOver(const NetPath& path, const std::string& user, const Credential& cred,
                                const std::string& command, const std::vector<std::string>& extraOpts) const {
  std::vector<std::string> argv{"ssh"};
  auto o = clientOptions(cred, extraOpts, path.from);
  argv.insert(argv.end(), o.begin(), o.end());
  argv.insert(argv.end(), {"-p", std::to_string(port_), "-l", user, path.to, "--", command});
  if (!cred.keyPath.empty()) {
    argv.insert(argv.begin(), path.via.begin(), path.via.end());
    return runCommand(argv);
  }
  argv.insert(argv.begin(), {"sshpass", "-e"});
  argv.insert(argv.begin(), path.via.begin(), path.via.end());
  return runCommand(argv, {}, std::chrono::seconds(60), {"SSHPASS=" + cred.password});
}

CommandOutput TestSshd::sftpOver(const NetPath& path, const std::string& user, const Credential& cred,
                                 const std::string& batch) const {
  std::vector<std::string> argv{"sftp"};
  auto o = clientOptions(cred, {}, path.from);
  argv.insert(argv.end(), o.begin(), o.end());
  const std::string host = path.to.find(':') == std::string::npos ? path.to : "[" + path.to + "]";
  argv.insert(argv.end(), {"-P", std::to_string(port_), "-b", "-", user + "@" + host});
  if (!cred.keyPath.empty()) {
    argv.insert(argv.begin(), path.via.begin(), path.via.end());
    return runCommand(argv, batch);
  }
  argv.insert(argv.begin(), {"sshpass", "-e"});
  argv.insert(argv.begin(), path.via.begin(), path.via.end());
  return runCommand(argv, batch, std::chrono::seconds(60), {"SSHPASS=" + cred.password});
}

namespace {
constexpr const char* kClientNs = "pimclient";
}  // namespace

AgentDaemon::AgentDaemon(const std::string& config, const std::string& log) : log_(log) {
  SpawnOptions options;
  options.in = Redirect::inherit();
  options.out = Redirect::append(log);
  options.err = Redirect::toStdout();
  options.group = SpawnOptions::Group::kInherit;
  options.inheritEnvironment = true;
  auto spawned = Subprocess::spawn({agentBinary(), "--config", config, "run"}, options);
  REQUIRE(spawned.isOk());
  REQUIRE(spawned->execError() == 0);
  process_.emplace(std::move(*spawned));
}

AgentDaemon::~AgentDaemon() {
  process_->kill(SIGTERM);
  (void)process_->waitFor(std::chrono::seconds(2));  // else SIGKILL as the Subprocess goes away
}

Background::Background(const std::vector<std::string>& argv, const std::string& log) {
  // setpriv sets the parent-death signal and execs the command: never outlive the test process.
  std::vector<std::string> command{"setpriv", "--pdeathsig", "TERM", "--"};
  command.insert(command.end(), argv.begin(), argv.end());
  SpawnOptions options;
  options.out = Redirect::append(log);
  options.err = Redirect::toStdout();
  options.group = SpawnOptions::Group::kOwnGroup;
  options.inheritEnvironment = true;
  options.searchPath = true;
  auto spawned = Subprocess::spawn(command, options);
  REQUIRE(spawned.isOk());
  process_.emplace(std::move(*spawned));
}

Background::~Background() {
  process_->kill(SIGTERM);                           // the whole group
  (void)process_->waitFor(std::chrono::seconds(2));  // else SIGKILL as the Subprocess goes away
}

bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return condition();
}

ClientNetwork::ClientNetwork(const std::vector<std::string>& clientAddresses) {
  const std::vector<std::string> inClient{"ip", "netns", "exec", kClientNs};
  auto client = [&](std::vector<std::string> argv) {
    argv.insert(argv.begin(), inClient.begin(), inClient.end());
    mustRun(argv);
  };
  mustRun({"ip", "netns", "add", kClientNs});
  mustRun({"ip", "link", "add", "pimsrv", "type", "veth", "peer", "name", "pimcli"});
  mustRun({"ip", "link", "set", "pimcli", "netns", kClientNs});
  mustRun({"ip", "addr", "add", std::string(kServer4) + "/24", "dev", "pimsrv"});
  mustRun({"ip", "addr", "add", std::string(kServer6) + "/64", "dev", "pimsrv", "nodad"});
  mustRun({"ip", "link", "set", "pimsrv", "up"});
  client({"ip", "link", "set", "lo", "up"});
  for (const auto& a : clientAddresses) {
    if (a.find(':') == std::string::npos) {
      client({"ip", "addr", "add", a + "/24", "dev", "pimcli"});
    } else {
      client({"ip", "addr", "add", a + "/64", "dev", "pimcli", "nodad"});
    }
  }
  client({"ip", "link", "set", "pimcli", "up"});
  // The link carries packets once both ends are up (the carrier comes a moment later).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!contains(runCommand({"ip", "link", "show", "pimsrv"}).out, "LOWER_UP")) {
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

ClientNetwork::~ClientNetwork() {
  runCommand({"ip", "link", "del", "pimsrv"});
  runCommand({"ip", "netns", "del", kClientNs});
}

NetPath ClientNetwork::from(const std::string& address) const {
  return NetPath{
      {"ip", "netns", "exec", kClientNs}, address, address.find(':') == std::string::npos ? kServer4 : kServer6};
}

std::string agentBinary() {
  // PIM_E2E_AGENT runs the scenarios against another build of the agent (an installed package,
  // or a deliberately broken copy to check that the scenarios notice).
  const char* other = std::getenv("PIM_E2E_AGENT");
  return (other != nullptr && *other != '\0') ? std::string(other) : std::string(PIM_AGENT_BINARY);
}
std::string sourceDir() { return PIM_SOURCE_DIR; }

CommandOutput runAgent(const std::string& config, const std::vector<std::string>& args,
                       std::chrono::milliseconds timeout) {
  std::vector<std::string> argv{agentBinary(), "--config", config};
  argv.insert(argv.end(), args.begin(), args.end());
  return runCommand(argv, {}, timeout);
}

AgentSandbox::AgentSandbox(std::map<std::string, std::string> settings) {
  document_ = dir_.file("access.json");
  settings_ = {
      {"store.source", "file://" + document_},
      {"state.db", dir_.file("state.db")},
      {"host.transfer_root", "/srv/transfer/pim"},
      {"sshd.reload_command", "/bin/true"},
  };
  for (auto& [k, v] : settings) settings_[k] = v;
  std::map<std::string, std::string> sections;
  for (const auto& [k, v] : settings_) {
    auto dot = k.find('.');
    REQUIRE(dot != std::string::npos);
    sections[k.substr(0, dot)] += k.substr(dot + 1) + " = " + v + "\n";
  }
  std::string ini = "; written by the e2e harness (AgentSandbox)\n";
  for (const auto& [section, body] : sections) ini += "[" + section + "]\n" + body;
  config_ = dir_.file("agent.ini");
  writeFile(config_, ini, 0600);
}

void AgentSandbox::setDocument(const std::string& json) const {
  const std::string tmp = document_ + ".new";
  writeFile(tmp, json, 0644);
  if (::rename(tmp.c_str(), document_.c_str()) != 0) fail("rename " + tmp);
}

std::string AgentSandbox::setting(const std::string& key) const {
  auto it = settings_.find(key);
  return it == settings_.end() ? std::string() : it->second;
}

CommandOutput AgentSandbox::run(const std::vector<std::string>& args) const { return runAgent(config_, args); }

namespace {

std::string jsonString(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += char(c);
        }
    }
  }
  return out + "\"";
}

std::string jsonOrNull(const std::string& s) { return s.empty() ? std::string("null") : jsonString(s); }

std::string jsonStrings(const std::vector<std::string>& items) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + jsonString(items[i]);
  return out + "]";
}

std::string readIfExists(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return {};
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

std::string renderDocument(const DocSpec& spec) {
  std::ostringstream o;
  o << "{\n  \"version\": 1,\n  \"revision\": " << spec.revision << ",\n  \"instance\": " << jsonString(spec.instance)
    << ",\n  \"ssh\": {\"keys\": [";
  for (size_t i = 0; i < spec.keys.size(); ++i) {
    const DocKey& k = spec.keys[i];
    o << (i ? "," : "") << "\n    {\"id\": " << jsonString(k.id) << ", \"owner\": " << jsonString(k.id + "@example.com")
      << ", \"public_key\": " << jsonString(k.publicKey) << ", \"active\": " << (k.active ? "true" : "false")
      << ", \"expires_at\": " << jsonOrNull(k.expiresAt);
    if (!k.allowedSources.empty()) o << ", \"allowed_sources\": " << jsonStrings(k.allowedSources);
    o << "}";
  }
  o << "\n  ]},\n  \"sftp\": {\"accounts\": [";
  for (size_t i = 0; i < spec.accounts.size(); ++i) {
    const DocAccount& a = spec.accounts[i];
    o << (i ? "," : "") << "\n    {\"id\": " << jsonString(a.id) << ", \"username\": " << jsonString(a.username)
      << ", \"password_hash\": " << jsonOrNull(a.passwordHash) << ", \"folder\": " << jsonString(a.folder)
      << ", \"active\": " << (a.active ? "true" : "false") << ", \"public_keys\": " << jsonStrings(a.publicKeys);
    if (auto it = spec.access.find(a.id); it != spec.access.end()) o << ", \"access\": " << jsonString(it->second);
    if (!a.allowedSources.empty()) o << ", \"allowed_sources\": " << jsonStrings(a.allowedSources);
    o << "}";
  }
  o << "\n  ]},\n  \"network\": {\"allowed_sources\": " << jsonStrings(spec.allowedSources) << "}";
  if (!spec.tasks.empty()) {
    o << ",\n  \"sudo\": {\"tasks\": [";
    for (size_t i = 0; i < spec.tasks.size(); ++i) {
      const DocTask& t = spec.tasks[i];
      o << (i ? "," : "") << "\n    {\"id\": " << jsonString(t.id) << ", \"command\": " << jsonStrings(t.command);
      if (!t.runAs.empty()) o << ", \"run_as\": " << jsonString(t.runAs);
      o << ", \"active\": " << (t.active ? "true" : "false") << "}";
    }
    o << "\n  ]}";
  }
  o << "\n}\n";
  return o.str();
}

ManagedHost::ManagedHost(std::map<std::string, std::string> settings, std::vector<std::string> sshdListen)
    : sshd_(TestSshd::Options{"/etc/ssh/sshd_config.d/*.conf", {}, true, std::move(sshdListen)}) {
  std::map<std::string, std::string> all{
      {"state.db", "/srv/pim-access-agent/state.db"}, {"host.transfer_root", "/srv/transfer/pim"},
      {"host.chroot_base", "/srv/pim-sftp"},          {"host.always_allow", "127.0.0.1/32"},
      {"sshd.main_config", sshd_.configPath()},       {"sshd.dropin", kDropin},
      {"sshd.reload_command", sshd_.reloadCommand()}, {"defender.log_file", sshd_.logPath()},
  };
  for (auto& [k, v] : settings) all[k] = v;
  agent_ = std::make_unique<AgentSandbox>(all);
}

CommandOutput ManagedHost::run(const std::vector<std::string>& args) {
  const std::string before = readIfExists(kDropin);
  const size_t starts = sshd_.starts();
  CommandOutput r = agent_->run(args);
  INFO("agent " << args.front() << " exit " << r.exit << "\nstdout:\n" << r.out << "\nstderr:\n" << r.err);
  if (readIfExists(kDropin) != before) {
    const bool restarted = sshd_.waitForStart(starts);
    INFO("sshd log:\n" << sshd_.log());
    REQUIRE(restarted);  // the drop-in changed: the agent must have reloaded sshd
  }
  // Whatever triggered it, every SIGHUP sshd received is followed by a new listen before a
  // client connects (a connection in between would meet a closed port).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (;;) {
    const std::string log = sshd_.log();
    const size_t hups = countOccurrences(log, "Received SIGHUP; restarting.");
    if (countOccurrences(log, "Server listening on 127.0.0.1 port") >= hups + 1) break;
    INFO("sshd log:\n" << log);
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return r;
}

CommandOutput ManagedHost::apply(const DocSpec& spec) {
  agent_->setDocument(renderDocument(spec));
  CommandOutput r = run({"once"});
  INFO("once (revision " << spec.revision << ") stdout:\n" << r.out << "\nstderr:\n" << r.err);
  REQUIRE(r.exit == 0);
  return r;
}

Poco::JSON::Object::Ptr ManagedHost::status() {
  CommandOutput r = agent_->run({"status", "--json"});
  INFO("status --json: exit " << r.exit << "\nstdout:\n" << r.out << "\nstderr:\n" << r.err);
  REQUIRE(r.exit == 0);
  Poco::JSON::Object::Ptr o;
  REQUIRE_NOTHROW(o = Poco::JSON::Parser().parse(r.out).extract<Poco::JSON::Object::Ptr>());
  REQUIRE(o);
  return o;
}

Poco::JSON::Array::Ptr ManagedHost::history() {
  CommandOutput r = agent_->run({"history", "--json"});
  INFO("history --json: exit " << r.exit << "\nstdout:\n" << r.out << "\nstderr:\n" << r.err);
  REQUIRE(r.exit == 0);
  Poco::JSON::Array::Ptr a;
  REQUIRE_NOTHROW(a = Poco::JSON::Parser().parse(r.out).extract<Poco::JSON::Array::Ptr>());
  REQUIRE(a);
  return a;
}

bool eventually(const std::function<bool()>& condition, int seconds) {
  return eventually(condition, std::chrono::seconds(seconds));
}

CommandOutput runAs(const std::string& user, const std::vector<std::string>& argv, std::chrono::milliseconds timeout) {
  std::vector<std::string> all{"runuser", "-u", user, "--"};
  all.insert(all.end(), argv.begin(), argv.end());
  return runCommand(all, "", timeout);
}

SshAgent::SshAgent(const std::string& socket) : socket_(socket) {
  CommandOutput r = mustRun({"ssh-agent", "-s", "-a", socket_});
  // "SSH_AGENT_PID=1234; export SSH_AGENT_PID;"
  const std::string tag = "SSH_AGENT_PID=";
  auto pos = r.out.find(tag);
  REQUIRE(pos != std::string::npos);
  pid_ = pid_t(std::stol(r.out.substr(pos + tag.size())));
}

SshAgent::~SshAgent() {
  if (pid_ > 0) ::kill(pid_, SIGTERM);
}

void SshAgent::add(const KeyPair& key) const {
  CommandOutput r = runCommand({"ssh-add", key.privateKey}, {}, std::chrono::seconds(30), {"SSH_AUTH_SOCK=" + socket_});
  INFO("ssh-add: " << r.err);
  REQUIRE(r.exit == 0);
}

std::vector<std::string> sftpListing(const std::string& out) {
  std::vector<std::string> lines;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) {
    line = trim(line);
    if (line.empty() || line.rfind("sftp>", 0) == 0) continue;
    lines.push_back(line);
  }
  return lines;
}

FileStamp stampOf(const std::string& path) {
  struct stat st {};
  const int rc = ::lstat(path.c_str(), &st);
  INFO("lstat " << path << ": " << (rc == 0 ? "ok" : std::strerror(errno)));
  REQUIRE(rc == 0);
  return FileStamp{st.st_ino, int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
}

bool pathExists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

std::string cryptHash(const std::string& password) {
  CommandOutput r = mustRun({"openssl", "passwd", "-6", "-stdin"}, password + "\n");
  return trim(r.out);
}

std::string replaceAll(std::string text, const std::string& from, const std::string& to) {
  if (from.empty()) return text;
  for (size_t pos = text.find(from); pos != std::string::npos; pos = text.find(from, pos + to.size())) {
    text.replace(pos, from.size(), to);
  }
  return text;
}

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return {};
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

}  // namespace pim::e2e
