#include "tests/unit/agent_process.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "agent/cli/cli_support.h"

namespace pim {
namespace agenttest {

namespace {

constexpr const char* kPasswordHash =
    "$6$exampleSalt1$pHYVlXEFLZqkut9Q5xM5jYWKUuC/qosvfRtZIM/gMgqEER6Maxx6bnVwImBJEfZtBXH1hbWoy.jhHPoyinVFG.";

std::string makeTempDir(const std::string& prefix) {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/" + prefix + "XXXXXX";
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) throw std::runtime_error("mkdtemp " + pattern + " failed");
  ::chmod(buf.data(), 0755);
  return buf.data();
}

std::string jsonString(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string replaceAll(std::string text, const std::string& from, const std::string& to) {
  if (from.empty()) return text;
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

}  // namespace

bool isRoot() { return ::geteuid() == 0; }

std::string agentBinary() { return PIM_AGENT_BINARY; }

// ---- ChildProcess ----

ChildProcess::ChildProcess(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                           std::string stdoutPath, std::string stderrPath)
    : stdoutPath_(std::move(stdoutPath)), stderrPath_(std::move(stderrPath)) {
  // Subprocess gives the child default dispositions and an empty mask whatever the test binary
  // set (SIGPIPE ignored by the store test server, say): it meets signals as in production.
  SpawnOptions options;
  options.out = Redirect::truncate(stdoutPath_);
  options.err = Redirect::truncate(stderrPath_);
  options.group = SpawnOptions::Group::kInherit;
  options.env = env;
  options.inheritEnvironment = true;
  options.searchPath = true;
  auto spawned = Subprocess::spawn(argv, options);
  if (!spawned) throw std::runtime_error("ChildProcess: " + spawned.status().message());
  process_.emplace(std::move(*spawned));
}

ChildProcess::~ChildProcess() = default;  // Subprocess: SIGKILL and reap when it still runs

pid_t ChildProcess::pid() const { return process_->pid(); }

void ChildProcess::signal(int signum) { process_->kill(signum); }

std::optional<int> ChildProcess::waitExit(std::chrono::milliseconds timeout) { return process_->waitFor(timeout); }

bool ChildProcess::running() { return process_->running(); }

std::string ChildProcess::out() const { return readText(stdoutPath_); }
std::string ChildProcess::err() const { return readText(stderrPath_); }

Outcome runProgram(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                   std::chrono::milliseconds timeout) {
  const std::string dir = makeTempDir("pim-run-");
  Outcome o;
  {
    ChildProcess child(argv, env, dir + "/out", dir + "/err");
    auto code = child.waitExit(timeout);
    if (!code) {
      child.signal(SIGKILL);
      code = child.waitExit(std::chrono::seconds(10));
    }
    o.exit = code ? *code : -1;
    o.out = child.out();
    o.err = child.err();
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return o;
}

bool waitUntil(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (condition()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

size_t occurrences(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

std::string readText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void writeTextAtomic(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out) throw std::runtime_error("write " + tmp + " failed");
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) throw std::runtime_error("rename " + tmp + " failed");
}

std::string publicKey(const std::string& name) {
  // The key files live until the test program exits.
  struct KeyDir {
    std::string path = makeTempDir("pim-keys-");
    ~KeyDir() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  };
  static std::mutex mutex;
  static std::map<std::string, std::string> cache;
  static const KeyDir keyDir;
  const std::string& dir = keyDir.path;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(name);
  if (it != cache.end()) return it->second;
  const std::string path = dir + "/" + name;
  ::unlink(path.c_str());
  ::unlink((path + ".pub").c_str());
  Outcome o = runProgram({"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", path});
  if (o.exit != 0) throw std::runtime_error("ssh-keygen failed: " + o.err);
  std::string line = readText(path + ".pub");
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
  cache[name] = line;
  return line;
}

std::string rfc3339(int64_t unixSeconds) { return pim::isoTime(unixSeconds); }

int64_t unixNow() { return int64_t(std::time(nullptr)); }

std::string makeDocument(int64_t revision, const std::vector<DocKey>& keys, const std::vector<DocAccount>& accounts,
                         const std::vector<std::string>& sources) {
  std::ostringstream o;
  o << "{\n  \"version\": 1,\n  \"revision\": " << revision << ",\n  \"instance\": \"test\",\n";
  o << "  \"ssh\": {\"keys\": [";
  for (size_t i = 0; i < keys.size(); ++i) {
    const auto& k = keys[i];
    o << (i ? ",\n" : "\n") << "    {\"id\": " << jsonString(k.id) << ", \"owner\": \"" << k.id
      << "@example.com\", \"public_key\": " << jsonString(k.publicKey)
      << ", \"active\": " << (k.active ? "true" : "false")
      << ", \"expires_at\": " << (k.expiresAt ? jsonString(rfc3339(*k.expiresAt)) : "null") << "}";
  }
  o << "]},\n  \"sftp\": {\"accounts\": [";
  for (size_t i = 0; i < accounts.size(); ++i) {
    const auto& a = accounts[i];
    o << (i ? ",\n" : "\n") << "    {\"id\": " << jsonString(a.id) << ", \"username\": " << jsonString(a.username)
      << ", \"password_hash\": " << (a.withPassword ? jsonString(kPasswordHash) : "null")
      << ", \"folder\": " << jsonString(a.folder) << ", \"active\": " << (a.active ? "true" : "false")
      << ", \"public_keys\": []}";
  }
  o << "]},\n  \"network\": {\"allowed_sources\": [";
  for (size_t i = 0; i < sources.size(); ++i) o << (i ? ", " : "") << jsonString(sources[i]);
  o << "]}\n}\n";
  return o.str();
}

// ---- AgentBox ----

AgentBox::AgentBox(std::map<std::string, std::string> settings) {
  dir_ = makeTempDir("pim-agent-test-");
  root_ = dir_ + "/root";
  config_ = dir_ + "/agent.ini";
  document_ = dir_ + "/access.json";
  std::filesystem::create_directories(root_);
  settings_ = {
      {"store.source", "file://" + document_}, {"store.poll_interval_s", "3600"}, {"sshd.reload_command", "/bin/true"}};
  for (const auto& [k, v] : settings) settings_[k] = v;
  writeConfig();
}

AgentBox::~AgentBox() {
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

void AgentBox::configure(const std::map<std::string, std::string>& settings) {
  for (const auto& [k, v] : settings) settings_[k] = v;
  writeConfig();
}

void AgentBox::writeConfig() const {
  std::map<std::string, std::vector<std::string>> sections;
  for (const auto& [key, value] : settings_) {
    const auto dot = key.find('.');
    sections[key.substr(0, dot)].push_back(key.substr(dot + 1) + " = " + value);
  }
  std::string text;
  for (const auto& [section, lines] : sections) {
    text += "[" + section + "]\n";
    for (const auto& l : lines) text += l + "\n";
  }
  writeTextAtomic(config_, text);
}

void AgentBox::setDocument(const std::string& json) const { writeTextAtomic(document_, json); }

Outcome AgentBox::run(const std::vector<std::string>& args, const std::vector<std::string>& env) const {
  std::vector<std::string> argv = {"unshare",  "-m",    "--propagation", "private", agentBinary(),
                                   "--config", config_, "--root",        root_};
  argv.insert(argv.end(), args.begin(), args.end());
  return runProgram(argv, env);
}

std::unique_ptr<ChildProcess> AgentBox::startDaemon(const std::vector<std::string>& env) const {
  const int n = ++daemons_;
  // unshare execs the agent: the child's pid is the daemon's.
  std::vector<std::string> argv = {"unshare",  "-m",    "--propagation", "private", agentBinary(),
                                   "--config", config_, "--root",        root_,     "run"};
  return std::make_unique<ChildProcess>(argv, env, dir_ + "/daemon-" + std::to_string(n) + ".out",
                                        dir_ + "/daemon-" + std::to_string(n) + ".err");
}

std::string AgentBox::authorizedKeysPath() const { return real("/etc/pim-access-agent/authorized_keys/akeneo"); }

std::string AgentBox::authorizedKeys() const { return readText(authorizedKeysPath()); }

std::string AgentBox::snapshot() const {
  std::ostringstream o;
  for (const char* f : {"/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow"}) {
    o << "== " << f << "\n" << readText(real(f));
  }
  const std::string dropin = real("/etc/ssh/sshd_config.d/10-pim-access-agent.conf");
  o << "== drop-in "
    << (std::filesystem::exists(dropin) ? "\n" + replaceAll(readText(dropin), root_, "<ROOT>") : "(none)\n");
  std::error_code ec;
  for (const char* d : {"/etc/pim-access-agent/authorized_keys", "/srv/pim-sftp"}) {
    o << "== " << d << "\n";
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(real(d), ec)) names.push_back(e.path().filename());
    std::sort(names.begin(), names.end());
    for (const auto& n : names) {
      o << n << "\n";
      if (std::string(d) == "/etc/pim-access-agent/authorized_keys") o << readText(real(std::string(d) + "/" + n));
    }
  }
  return o.str();
}

std::vector<AgentBox::Generation> AgentBox::history() const {
  Outcome o = run({"history", "--json"});
  std::vector<Generation> out;
  if (o.exit != 0) return out;
  Poco::JSON::Parser parser;
  auto arr = parser.parse(o.out).extract<Poco::JSON::Array::Ptr>();
  for (size_t i = 0; i < arr->size(); ++i) {
    auto g = arr->getObject(unsigned(i));
    Generation gen;
    gen.generation = g->getValue<int64_t>("generation");
    gen.outcome = g->getValue<std::string>("outcome");
    if (!g->isNull("revision")) gen.revision = g->getValue<int64_t>("revision");
    gen.changes = g->getValue<int64_t>("changes");
    out.push_back(gen);
  }
  return out;
}

std::string AgentBox::statusJson() const { return run({"status", "--json"}).out; }

std::string keysDocument(int64_t revision, const std::vector<std::string>& keyIds) {
  std::vector<DocKey> keys;
  for (const auto& id : keyIds) keys.push_back(docKey(id, "daemon-" + id));
  return makeDocument(revision, keys, {}, {"127.0.0.0/8"});
}

Poco::JSON::Object::Ptr parseObject(const std::string& json) {
  Poco::JSON::Parser parser;
  return parser.parse(json).extract<Poco::JSON::Object::Ptr>();
}

bool hasKey(const AgentBox& box, const std::string& id) {
  return box.authorizedKeys().find("pim:" + id + "\n") != std::string::npos;
}

void requireKey(const AgentBox& box, ChildProcess& daemon, const std::string& id, std::chrono::milliseconds deadline) {
  const bool ok = waitUntil([&] { return hasKey(box, id); }, deadline);
  INFO("daemon stderr:\n" << daemon.err());
  REQUIRE(ok);
}

}  // namespace agenttest

}  // namespace pim
