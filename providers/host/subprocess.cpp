#include "providers/host/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <thread>
#include <utility>

extern char** environ;

namespace pim {
namespace {

Status spawnError(const std::string& op, const std::string& program, int err) {
  return Status::error(ErrorCode::kIo, op + " " + program + ": " + std::strerror(err), program);
}

void closeFd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

/// Descriptors of the parent that only the child needs (pipe ends, opened files), closed once
/// posix_spawn returned, whatever it returned.
class ChildSide {
 public:
  ChildSide() = default;
  ChildSide(const ChildSide&) = delete;
  ChildSide& operator=(const ChildSide&) = delete;
  ~ChildSide() {
    for (int& fd : fds_) closeFd(fd);
  }
  /// Keeps `fd`, moved to 3 or above first: a source below 3 could be one of the standard streams
  /// that an earlier dup2 in the child has already replaced (a parent started without stdin
  /// gets 0 from pipe2). Returns the number to duplicate, or -1 with errno set.
  int keep(int fd) {
    if (fd < 0) return -1;
    if (fd < 3) {
      const int moved = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
      const int err = errno;
      ::close(fd);
      errno = err;
      fd = moved;
      if (fd < 0) return -1;
    }
    fds_.push_back(fd);
    return fd;
  }

 private:
  std::vector<int> fds_;
};

/// The file actions and attributes of one posix_spawn call, destroyed with the object.
struct SpawnSetup {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  SpawnSetup() {
    posix_spawn_file_actions_init(&actions);
    posix_spawnattr_init(&attr);
  }
  SpawnSetup(const SpawnSetup&) = delete;
  SpawnSetup& operator=(const SpawnSetup&) = delete;
  ~SpawnSetup() {
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
  }
};

/// The parent's environment with `extra` ("NAME=value") replacing entries of the same name.
std::vector<std::string> mergedEnvironment(const std::vector<std::string>& extra) {
  std::vector<std::string> out;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string entry(*e);
    const std::string name = entry.substr(0, entry.find('='));
    const bool replaced = std::any_of(extra.begin(), extra.end(), [&](const std::string& x) {
      return x.size() > name.size() && x.compare(0, name.size(), name) == 0 && x[name.size()] == '=';
    });
    if (!replaced) out.push_back(entry);
  }
  out.insert(out.end(), extra.begin(), extra.end());
  return out;
}

std::vector<char*> pointers(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (auto& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

/// write() that never raises SIGPIPE in the caller when the reader has gone (EPIPE instead),
/// whatever the process does with SIGPIPE: the signal is blocked in this thread around the
/// write, and the one the write raised is taken back.
ssize_t writeWithoutSigpipe(int fd, const char* data, size_t size) {
  sigset_t pipeOnly;
  sigset_t old;
  sigemptyset(&pipeOnly);
  sigaddset(&pipeOnly, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipeOnly, &old);
  sigset_t pending;
  sigemptyset(&pending);
  sigpending(&pending);
  const bool wasPending = sigismember(&pending, SIGPIPE) == 1;
  const ssize_t n = ::write(fd, data, size);
  const int err = errno;
  if (n < 0 && err == EPIPE && !wasPending) {
    const timespec zero{0, 0};
    while (sigtimedwait(&pipeOnly, nullptr, &zero) < 0 && errno == EINTR) {
    }
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  errno = err;
  return n;
}

}  // namespace

Result<Subprocess> Subprocess::spawn(const std::vector<std::string>& argv, const SpawnOptions& options) {
  if (argv.empty() || argv[0].empty()) return Status::error(ErrorCode::kInvalid, "spawn: empty command");
  const std::string& program = argv[0];
  Subprocess child;
  ChildSide childSide;
  SpawnSetup setup;
  // Standard streams in order 0, 1, 2: a 2>&1 duplicates the stdout set up just before.
  const Redirect* redirects[3] = {&options.in, &options.out, &options.err};
  int* parentEnds[3] = {&child.in_, &child.out_, &child.err_};
  for (int target = 0; target < 3; ++target) {
    const Redirect& r = *redirects[target];
    int source = -1;
    switch (r.kind) {
      case Redirect::Kind::kInherit:
        continue;
      case Redirect::Kind::kStdout:
        if (target != 2)
          return Status::error(ErrorCode::kInvalid, "spawn " + program + ": only stderr can go to stdout");
        source = 1;
        break;
      case Redirect::Kind::kPipe: {
        int ends[2];
        if (::pipe2(ends, O_CLOEXEC) != 0) return spawnError("pipe for", program, errno);
        // stdin: the child reads ends[0]; stdout, stderr: the child writes ends[1].
        *parentEnds[target] = target == 0 ? ends[1] : ends[0];
        source = childSide.keep(target == 0 ? ends[0] : ends[1]);
        if (source < 0) return spawnError("pipe for", program, errno);
        break;
      }
      case Redirect::Kind::kNull:
        source = childSide.keep(::open("/dev/null", (target == 0 ? O_RDONLY : O_WRONLY) | O_CLOEXEC));
        if (source < 0) return spawnError("open /dev/null for", program, errno);
        break;
      case Redirect::Kind::kTruncate:
      case Redirect::Kind::kAppend: {
        if (target == 0)
          return Status::error(ErrorCode::kInvalid, "spawn " + program + ": stdin cannot be an output file");
        const int mode = r.kind == Redirect::Kind::kAppend ? O_APPEND : O_TRUNC;
        source = childSide.keep(::open(r.path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | mode, 0600));
        if (source < 0) return spawnError("open " + r.path + " for", program, errno);
        break;
      }
      case Redirect::Kind::kFd:
        source = childSide.keep(::fcntl(r.fd, F_DUPFD_CLOEXEC, 3));
        if (source < 0) return spawnError("duplicate descriptor " + std::to_string(r.fd) + " for", program, errno);
        break;
    }
    if (int rc = posix_spawn_file_actions_adddup2(&setup.actions, source, target); rc != 0) {
      return spawnError("spawn", program, rc);
    }
  }

  // Nothing else of the parent's: a descriptor someone opened without O_CLOEXEC stays here.
  if (int rc = posix_spawn_file_actions_addclosefrom_np(&setup.actions, 3); rc != 0) {
    return spawnError("spawn", program, rc);
  }

  // The child meets signals as a fresh process: empty mask, every disposition the default.
  short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
  if (options.group == SpawnOptions::Group::kOwnGroup) flags |= POSIX_SPAWN_SETPGROUP;  // group id = its pid
  if (options.group == SpawnOptions::Group::kNewSession) flags |= POSIX_SPAWN_SETSID;
  sigset_t none;
  sigset_t all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&setup.attr, &none);
  posix_spawnattr_setsigdefault(&setup.attr, &all);
  posix_spawnattr_setpgroup(&setup.attr, 0);
  posix_spawnattr_setflags(&setup.attr, flags);

  std::vector<std::string> args(argv);
  std::vector<std::string> env = options.inheritEnvironment ? mergedEnvironment(options.env) : options.env;
  std::vector<char*> argp = pointers(args);
  std::vector<char*> envp = pointers(env);
  pid_t pid = -1;
  const int rc = options.searchPath
                     ? posix_spawnp(&pid, program.c_str(), &setup.actions, &setup.attr, argp.data(), envp.data())
                     : posix_spawn(&pid, program.c_str(), &setup.actions, &setup.attr, argp.data(), envp.data());
  if (rc == EAGAIN) return spawnError("spawn", program, rc);  // no process could be made
  if (rc != 0) {
    // glibc runs the child until exec with the parent waiting (CLONE_VFORK) and reports a failed
    // exec, or a failed step before it, as this error, the child already reaped.
    child.closeStreams();
    child.execError_ = rc;
    child.exitCode_ = 127;
    return Result<Subprocess>(std::move(child));
  }
  child.pid_ = pid;
  child.ownGroup_ = options.group != SpawnOptions::Group::kInherit;
  return Result<Subprocess>(std::move(child));
}

Subprocess::Subprocess(Subprocess&& other) noexcept { *this = std::move(other); }

Subprocess& Subprocess::operator=(Subprocess&& other) noexcept {
  if (this != &other) {
    release();
    pid_ = std::exchange(other.pid_, -1);
    ownGroup_ = other.ownGroup_;
    execError_ = other.execError_;
    exitCode_ = std::exchange(other.exitCode_, std::nullopt);
    in_ = std::exchange(other.in_, -1);
    out_ = std::exchange(other.out_, -1);
    err_ = std::exchange(other.err_, -1);
  }
  return *this;
}

Subprocess::~Subprocess() { release(); }

void Subprocess::release() {
  closeStreams();
  if (pid_ > 0 && !exitCode_) {
    kill(SIGKILL);
    (void)wait();
  }
  pid_ = -1;
  exitCode_.reset();
}

void Subprocess::closeStreams() {
  closeFd(in_);
  closeFd(out_);
  closeFd(err_);
}

Subprocess::Output Subprocess::communicate(std::string_view input, std::chrono::steady_clock::time_point deadline,
                                           size_t maxCapture) {
  Output result;
  if (in_ >= 0) {
    ::fcntl(in_, F_SETFL, ::fcntl(in_, F_GETFL) | O_NONBLOCK);
    if (input.empty()) closeFd(in_);
  }
  // With stdout and stderr not pipes, the input alone decides when this ends.
  const bool reads = out_ >= 0 || err_ >= 0;
  size_t written = 0;
  while (out_ >= 0 || err_ >= 0 || (!reads && in_ >= 0)) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) {
      result.timedOut = true;
      break;
    }
    std::vector<pollfd> fds;
    if (in_ >= 0) fds.push_back({in_, POLLOUT, 0});
    if (out_ >= 0) fds.push_back({out_, POLLIN, 0});
    if (err_ >= 0) fds.push_back({err_, POLLIN, 0});
    const int r = ::poll(fds.data(), fds.size(), int(std::min<int64_t>(left, INT_MAX)));
    if (r < 0 && errno != EINTR) break;
    for (const auto& p : fds) {
      if (p.revents == 0) continue;
      if (p.fd == in_) {
        const ssize_t n = writeWithoutSigpipe(in_, input.data() + written, input.size() - written);
        if (n > 0) written += size_t(n);
        if ((n < 0 && errno != EAGAIN && errno != EINTR) || written >= input.size()) closeFd(in_);
        continue;
      }
      int& fd = p.fd == out_ ? out_ : err_;
      std::string& sink = p.fd == out_ ? result.out : result.err;
      char buf[65536];
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n > 0) {
        sink.append(buf, std::min(size_t(n), maxCapture - std::min(maxCapture, sink.size())));
      } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        closeFd(fd);
      }
    }
  }
  closeStreams();
  return result;
}

int Subprocess::exitCodeOf(int waitStatus) {
  if (WIFEXITED(waitStatus)) return WEXITSTATUS(waitStatus);
  if (WIFSIGNALED(waitStatus)) return 128 + WTERMSIG(waitStatus);
  return -1;
}

int Subprocess::wait() {
  if (exitCode_) return *exitCode_;
  if (pid_ <= 0) return -1;
  int status = 0;
  pid_t r;
  while ((r = ::waitpid(pid_, &status, 0)) < 0 && errno == EINTR) {
  }
  exitCode_ = r == pid_ ? exitCodeOf(status) : -1;  // -1: reaped elsewhere (SIGCHLD ignored)
  return *exitCode_;
}

std::optional<int> Subprocess::waitFor(std::chrono::milliseconds timeout) {
  if (exitCode_) return exitCode_;
  if (pid_ <= 0) return -1;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      exitCode_ = exitCodeOf(status);
      return exitCode_;
    }
    if (r < 0 && errno != EINTR) {
      exitCode_ = -1;
      return exitCode_;
    }
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return std::nullopt;
    std::this_thread::sleep_for(
        std::min<std::chrono::steady_clock::duration>(deadline - now, std::chrono::milliseconds(5)));
  }
}

bool Subprocess::running() { return pid_ > 0 && !waitFor(std::chrono::milliseconds(0)); }

bool Subprocess::kill(int signal) {
  if (pid_ <= 0 || exitCode_) return false;
  return ::kill(ownGroup_ ? -pid_ : pid_, signal) == 0;
}

}  // namespace pim
