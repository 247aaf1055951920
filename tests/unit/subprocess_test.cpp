#include "providers/host/subprocess.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>

namespace fs = std::filesystem;
using pim::Redirect;
using pim::SpawnOptions;
using pim::Subprocess;
using std::chrono::milliseconds;
using std::chrono::seconds;

namespace {

std::chrono::steady_clock::time_point in(milliseconds d) { return std::chrono::steady_clock::now() + d; }

Subprocess start(const std::vector<std::string>& argv, const SpawnOptions& options = {}) {
  auto r = Subprocess::spawn(argv, options);
  INFO(r.status().message());
  REQUIRE(r.isOk());
  return std::move(*r);
}

struct TempDir {
  fs::path dir;
  TempDir() {
    char tmpl[] = "/tmp/pim-subprocess-XXXXXX";
    dir = ::mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(dir); }
  std::string file(const std::string& name) const { return (dir / name).string(); }
};

std::string readText(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

/// Whether pid is gone (or a zombie nobody reaps: it runs no more either way).
bool gone(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!std::getline(stat, text)) return true;
  const auto close = text.rfind(')');
  return close != std::string::npos && close + 2 < text.size() && text[close + 2] == 'Z';
}

bool eventually(const std::function<bool()>& condition, milliseconds timeout = seconds(5)) {
  const auto deadline = in(timeout);
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(milliseconds(10));
  }
  return true;
}

/// Blocks `blocked` in this thread and ignores `ignored` while it lives: what a daemon or a test
/// binary may have set before it runs a program.
class ParentSignals {
 public:
  ParentSignals(std::initializer_list<int> blocked, std::initializer_list<int> ignored) {
    sigset_t set;
    sigemptyset(&set);
    for (int s : blocked) sigaddset(&set, s);
    pthread_sigmask(SIG_BLOCK, &set, &oldMask_);
    for (int s : ignored) {
      struct sigaction ign {};
      ign.sa_handler = SIG_IGN;
      sigemptyset(&ign.sa_mask);
      struct sigaction old {};
      ::sigaction(s, &ign, &old);
      old_.emplace_back(s, old);
    }
  }
  ~ParentSignals() {
    for (auto& [s, old] : old_) ::sigaction(s, &old, nullptr);
    pthread_sigmask(SIG_SETMASK, &oldMask_, nullptr);
  }
  ParentSignals(const ParentSignals&) = delete;
  ParentSignals& operator=(const ParentSignals&) = delete;

 private:
  sigset_t oldMask_;
  std::vector<std::pair<int, struct sigaction>> old_;
};

}  // namespace

TEST_CASE("subprocess: exit code, stdout and stderr, input on stdin", "[subprocess]") {
  SpawnOptions o;
  o.in = Redirect::pipe();
  auto p = start({"/bin/sh", "-c", "cat; echo oops >&2; exit 3"}, o);
  CHECK(p.pid() > 0);
  CHECK(p.execError() == 0);
  auto out = p.communicate("through stdin\n", in(seconds(10)));
  CHECK_FALSE(out.timedOut);
  CHECK(out.out == "through stdin\n");
  CHECK(out.err == "oops\n");
  CHECK(p.wait() == 3);
  CHECK(p.wait() == 3);  // the same on later calls
  CHECK_FALSE(p.running());
  CHECK_FALSE(p.kill(SIGTERM));  // reaped: nothing to signal
}

TEST_CASE("subprocess: large input and output advance together", "[subprocess]") {
  SpawnOptions o;
  o.in = Redirect::pipe();
  std::string big(3 << 20, 'x');
  for (size_t i = 0; i < big.size(); i += 4096) big[i] = char('a' + (i / 4096) % 26);
  auto p = start({"/bin/cat"}, o);
  auto out = p.communicate(big, in(seconds(30)));
  CHECK(out.out == big);
  CHECK(p.wait() == 0);
}

TEST_CASE("subprocess: the capture is bounded and the child is never blocked by it", "[subprocess]") {
  auto p = start({"/usr/bin/head", "-c", "1000000", "/dev/zero"});
  auto out = p.communicate({}, in(seconds(10)), 1000);
  CHECK(out.out == std::string(1000, '\0'));
  CHECK(p.wait() == 0);
}

TEST_CASE("subprocess: a child that does not read its input costs the parent no SIGPIPE", "[subprocess]") {
  // SIGPIPE at its default in the parent: without the runner's guard the test program would die.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  struct sigaction old {};
  ::sigaction(SIGPIPE, &dfl, &old);
  SpawnOptions o;
  o.in = Redirect::pipe();
  auto p = start({"/bin/sh", "-c", "exec 0<&-; sleep 0.2"}, o);
  auto out = p.communicate(std::string(1 << 20, 'x'), in(seconds(10)));
  CHECK_FALSE(out.timedOut);
  CHECK(p.wait() == 0);
  ::sigaction(SIGPIPE, &old, nullptr);
}

TEST_CASE("subprocess: killed by a signal gives 128 + signal", "[subprocess]") {
  auto p = start({"/bin/sh", "-c", "kill -TERM $$; sleep 5"});
  (void)p.communicate({}, in(seconds(10)));
  CHECK(p.wait() == 128 + SIGTERM);
  CHECK(Subprocess::exitCodeOf(0x0300) == 3);
}

TEST_CASE("subprocess: a program that cannot be executed is exit code 127 with the reason", "[subprocess]") {
  TempDir d;
  const std::string notExecutable = d.file("script");
  std::ofstream(notExecutable) << "#!/bin/sh\nexit 0\n";
  ::chmod(notExecutable.c_str(), 0644);
  for (const auto& [program, err] : std::vector<std::pair<std::string, int>>{
           {"/no/such/binary", ENOENT}, {notExecutable, EACCES}, {d.dir.string(), EACCES}}) {
    INFO(program);
    auto r = Subprocess::spawn({program, "arg"}, SpawnOptions{});
    REQUIRE(r.isOk());
    CHECK(r->execError() == err);
    CHECK(r->pid() == -1);
    CHECK_FALSE(r->running());
    auto out = r->communicate("ignored", in(seconds(1)));
    CHECK(out.out.empty());
    CHECK(out.err.empty());
    CHECK(r->wait() == 127);
    CHECK(r->waitFor(milliseconds(0)) == 127);
  }
  // Without a path search a bare name is a path relative to the working directory.
  auto bare = Subprocess::spawn({"true"}, SpawnOptions{});
  REQUIRE(bare.isOk());
  CHECK(bare->execError() == ENOENT);
  SpawnOptions search;
  search.searchPath = true;
  search.env = {"PATH=/nowhere"};  // the search uses the parent's PATH, not the child's
  auto found = Subprocess::spawn({"true"}, search);
  REQUIRE(found.isOk());
  CHECK(found->execError() == 0);
  CHECK(found->wait() == 0);
  CHECK(Subprocess::spawn({}, SpawnOptions{}).status().code() == pim::ErrorCode::kInvalid);
}

TEST_CASE("subprocess: kill() reaches the whole process group", "[subprocess]") {
  TempDir d;
  SpawnOptions o;
  o.out = Redirect::null();
  o.err = Redirect::null();
  // The shell starts a grandchild (in its group) and waits for it.
  auto p = start({"/bin/sh", "-c", "sleep 300 & echo $! > " + d.file("pid") + "; wait"}, o);
  REQUIRE(eventually([&] { return readText(d.file("pid")).find('\n') != std::string::npos; }));
  const pid_t grandchild = std::stoi(readText(d.file("pid")));
  CHECK(::getpgid(p.pid()) == p.pid());
  CHECK(::getpgid(grandchild) == p.pid());
  CHECK(p.kill(SIGKILL));
  CHECK(p.wait() == 128 + SIGKILL);
  CHECK(eventually([&] { return gone(grandchild); }));
}

TEST_CASE("subprocess: own group, new session or the parent's group", "[subprocess]") {
  SpawnOptions o;
  o.out = Redirect::null();
  o.err = Redirect::null();
  o.group = SpawnOptions::Group::kOwnGroup;
  auto own = start({"/bin/sleep", "30"}, o);
  CHECK(::getpgid(own.pid()) == own.pid());
  CHECK(::getsid(own.pid()) == ::getsid(0));
  o.group = SpawnOptions::Group::kNewSession;
  auto session = start({"/bin/sleep", "30"}, o);
  CHECK(::getsid(session.pid()) == session.pid());
  CHECK(::getpgid(session.pid()) == session.pid());
  o.group = SpawnOptions::Group::kInherit;
  auto same = start({"/bin/sleep", "30"}, o);
  CHECK(::getpgid(same.pid()) == ::getpgrp());
  CHECK(same.kill(SIGTERM));  // the child alone, not this process's group
  CHECK(same.wait() == 128 + SIGTERM);
  CHECK(own.running());
  // The others are killed (SIGKILL) and reaped as they go away.
}

TEST_CASE("subprocess: the child has an empty signal mask and default dispositions", "[subprocess]") {
  // What the parent set must not reach the child: a blocked SIGTERM would make it immune to a
  // stop, an ignored SIGPIPE would change how it fails on a closed pipe.
  ParentSignals parent({SIGTERM, SIGHUP, SIGUSR1}, {SIGPIPE, SIGINT, SIGHUP});
  auto status = start({"/bin/grep", "-E", "^Sig(Blk|Ign):", "/proc/self/status"});
  auto out = status.communicate({}, in(seconds(10)));
  CHECK(status.wait() == 0);
  INFO(out.out);
  REQUIRE(out.out.rfind("SigBlk:\t0000000000000000\nSigIgn:\t", 0) == 0);
  // glibc's posix_spawn leaves its two internal signals (32 and 33, below SIGRTMIN) ignored in
  // every child it starts; no program can use them through glibc anyway.
  const uint64_t ignored = std::stoull(out.out.substr(out.out.rfind('\t') + 1), nullptr, 16);
  CHECK((ignored & ~((uint64_t{1} << 31) | (uint64_t{1} << 32))) == 0);
  CHECK((ignored & (uint64_t{1} << (SIGPIPE - 1))) == 0);

  SpawnOptions o;
  o.out = Redirect::null();
  auto sleeper = start({"/bin/sleep", "30"}, o);
  REQUIRE(sleeper.kill(SIGTERM));
  CHECK(sleeper.waitFor(seconds(10)) == 128 + SIGTERM);
}

TEST_CASE("subprocess: waitFor() and a communicate() deadline", "[subprocess]") {
  auto p = start({"/bin/sleep", "30"});
  const auto before = std::chrono::steady_clock::now();
  auto out = p.communicate({}, in(milliseconds(200)));
  CHECK(out.timedOut);
  CHECK(std::chrono::steady_clock::now() - before < seconds(5));
  CHECK(p.waitFor(milliseconds(50)) == std::nullopt);
  CHECK(p.running());
  CHECK(p.kill(SIGKILL));
  CHECK(p.waitFor(seconds(10)) == 128 + SIGKILL);
}

TEST_CASE("subprocess: files, /dev/null, 2>&1 and an inherited descriptor", "[subprocess]") {
  TempDir d;
  const std::string log = d.file("log");
  std::ofstream(log) << "before\n";
  SpawnOptions o;
  o.out = Redirect::append(log);
  o.err = Redirect::toStdout();
  auto a = start({"/bin/sh", "-c", "echo out; echo err >&2"}, o);
  CHECK(a.wait() == 0);
  CHECK(readText(log) == "before\nout\nerr\n");

  o.out = Redirect::truncate(log);
  o.err = Redirect::truncate(d.file("err"));
  auto t = start({"/bin/sh", "-c", "echo new; echo bad >&2; cat"}, o);  // stdin: /dev/null
  CHECK(t.wait() == 0);
  CHECK(readText(log) == "new\n");
  CHECK(readText(d.file("err")) == "bad\n");
  struct stat st {};
  REQUIRE(::stat(d.file("err").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);

  const int fd = ::open(d.file("fd").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  REQUIRE(fd >= 0);
  o.out = Redirect::descriptor(fd);
  o.err = Redirect::null();
  auto f = start({"/bin/echo", "via fd"}, o);
  CHECK(f.wait() == 0);
  ::close(fd);
  CHECK(readText(d.file("fd")) == "via fd\n");

  o.out = Redirect::truncate(d.dir.string() + "/missing/out");
  auto missing = Subprocess::spawn({"/bin/true"}, o);
  REQUIRE_FALSE(missing.isOk());
  CHECK(missing.status().code() == pim::ErrorCode::kIo);
  CHECK_THAT(missing.status().message(), Catch::Contains("/missing/out"));
  o.out = Redirect::toStdout();
  CHECK(Subprocess::spawn({"/bin/true"}, o).status().code() == pim::ErrorCode::kInvalid);
}

TEST_CASE("subprocess: no descriptor of the parent leaks into the child", "[subprocess]") {
  // Opened without O_CLOEXEC, as a careless library might.
  const int devNull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  REQUIRE(devNull >= 0);
  const int fd = ::fcntl(devNull, F_DUPFD, 50);
  ::close(devNull);
  REQUIRE(fd >= 50);
  REQUIRE((::fcntl(fd, F_GETFD) & FD_CLOEXEC) == 0);
  auto p = start({"/usr/bin/test", "-e", "/proc/self/fd/" + std::to_string(fd)});
  CHECK(p.wait() == 1);
  ::close(fd);
}

TEST_CASE("subprocess: the environment is the given one, or the parent's with changes", "[subprocess]") {
  SpawnOptions o;
  o.env = {"A=1", "PATH=/bin"};
  auto only = start({"/usr/bin/env"}, o);
  CHECK(only.communicate({}, in(seconds(10))).out == "A=1\nPATH=/bin\n");
  CHECK(only.wait() == 0);

  ::setenv("PIM_SUBPROCESS_TEST", "parent", 1);
  o.env = {"PIM_SUBPROCESS_TEST=child", "PIM_SUBPROCESS_EXTRA=x"};
  o.inheritEnvironment = true;
  auto merged = start({"/usr/bin/env"}, o);
  const std::string env = merged.communicate({}, in(seconds(10))).out;
  ::unsetenv("PIM_SUBPROCESS_TEST");
  CHECK(merged.wait() == 0);
  CHECK_THAT(env, Catch::Contains("\nPIM_SUBPROCESS_TEST=child\n"));
  CHECK_THAT(env, !Catch::Contains("PIM_SUBPROCESS_TEST=parent"));
  CHECK_THAT(env, Catch::Contains("PIM_SUBPROCESS_EXTRA=x\n"));
  CHECK_THAT(env, Catch::Contains("PATH="));
}

TEST_CASE("subprocess: a moved Subprocess keeps the child; destruction kills and reaps it", "[subprocess]") {
  pid_t pid = -1;
  {
    auto p = start({"/bin/sleep", "30"});
    pid = p.pid();
    Subprocess moved = std::move(p);
    CHECK(moved.pid() == pid);
    CHECK(p.pid() == -1);  // NOLINT: what a moved-from object says
    CHECK(moved.running());
  }
  // Reaped by the destructor: no such child any more.
  CHECK(::kill(pid, 0) != 0);
}
