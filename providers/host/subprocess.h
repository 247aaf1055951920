#pragma once
// Subprocess: the one runner of external programs, on posix_spawn. RealHost::run() runs every
// command of the agent through it, and the test harnesses start sshd, ssh, etcd and the agent
// itself with it. Whatever the parent set, a child starts with an empty signal mask and every
// signal at its default disposition (SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGCHLD...), so it meets
// signals as in production. It gets the three standard streams and no other descriptor of the
// parent (the runner's own are O_CLOEXEC, and the child closes every other one above 2 before
// exec, even one opened without O_CLOEXEC).

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "providers/core/result.h"

namespace pim {

/// Where one standard stream of the child goes.
struct Redirect {
  enum class Kind {
    kInherit,   // the parent's own stream
    kPipe,      // a pipe to the parent: Subprocess::communicate() writes or reads it
    kNull,      // /dev/null
    kTruncate,  // `path`, created (0600) or truncated
    kAppend,    // `path`, created (0600) or appended to
    kFd,        // a duplicate of the parent's descriptor `fd`
    kStdout,    // stderr only: the same open file as stdout (2>&1)
  };
  Kind kind = Kind::kInherit;
  std::string path;
  int fd = -1;

  static Redirect inherit() { return {Kind::kInherit, {}, -1}; }
  static Redirect pipe() { return {Kind::kPipe, {}, -1}; }
  static Redirect null() { return {Kind::kNull, {}, -1}; }
  static Redirect truncate(std::string path) { return {Kind::kTruncate, std::move(path), -1}; }
  static Redirect append(std::string path) { return {Kind::kAppend, std::move(path), -1}; }
  static Redirect descriptor(int fd) { return {Kind::kFd, {}, fd}; }
  static Redirect toStdout() { return {Kind::kStdout, {}, -1}; }
};

struct SpawnOptions {
  Redirect in = Redirect::null();
  Redirect out = Redirect::pipe();
  Redirect err = Redirect::pipe();
  /// The child's process group. kOwnGroup: a group of its own (kill() reaches it and everything
  /// it started); kNewSession: a session of its own (also no controlling terminal, so ssh never
  /// prompts); kInherit: the parent's group (kill() reaches the child alone).
  enum class Group { kInherit, kOwnGroup, kNewSession };
  Group group = Group::kOwnGroup;
  /// "NAME=value" entries. Without inheritEnvironment they are the whole environment; with it
  /// they replace or extend the parent's environment.
  std::vector<std::string> env;
  bool inheritEnvironment = false;
  /// Look argv[0] up in the parent's PATH when it has no '/' (posix_spawnp); else it is the
  /// program's path as given.
  bool searchPath = false;
};

/// A started child process; it is killed (SIGKILL, to its group when it has one) and reaped when
/// the object goes away while it still runs. Movable, not copyable. Not thread-safe: one thread
/// drives it (another may kill the pid it published, as RealHost::abortCommands() does).
class Subprocess {
 public:
  /// What communicate() collected.
  struct Output {
    std::string out;
    std::string err;
    bool timedOut = false;  // the deadline passed before stdout and stderr were closed
  };

  /// Starts argv (argv[0] the program) with `options`. A program that cannot be executed (missing,
  /// not executable, a bad interpreter) is no error: the object then stands for a child that
  /// exited with 127 at once, and execError() says why (posix_spawn reports the exec failure
  /// itself, where a fork-based runner saw exit code 127). Errors: kInvalid for an empty argv or
  /// a bad redirection, kIo when a pipe or a redirection's file cannot be opened, or no process
  /// can be made (EAGAIN: the process limit).
  static Result<Subprocess> spawn(const std::vector<std::string>& argv, const SpawnOptions& options);

  Subprocess(Subprocess&& other) noexcept;
  Subprocess& operator=(Subprocess&& other) noexcept;
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;
  ~Subprocess();

  /// The child's pid (also its process group id with kOwnGroup or kNewSession); -1 when the
  /// program could not be executed.
  pid_t pid() const { return pid_; }
  /// The errno of a failed exec (ENOENT, EACCES, ENOEXEC...); 0 when the program runs.
  int execError() const { return execError_; }

  /// Writes `input` to the child's stdin pipe (without blocking: input and output advance
  /// together, then stdin is closed; at once when `input` is empty) and reads its stdout and
  /// stderr pipes until both are closed or `deadline` passes, keeping at most `maxCapture`
  /// bytes of each (the rest is read and dropped, so the child never blocks on a full pipe).
  /// Streams that are not pipes are skipped. A child that stops reading its stdin ends the
  /// writing (EPIPE, without a SIGPIPE for the caller). Does not wait for the exit and kills
  /// nothing: on time-out the caller decides (kill(), then wait()). Call it once.
  Output communicate(std::string_view input, std::chrono::steady_clock::time_point deadline,
                     size_t maxCapture = kDefaultMaxCapture);

  /// Waits for the exit and returns the exit code: 0-255, or 128 + the signal that killed it;
  /// 127 when the program could not be executed. The same value on later calls.
  int wait();
  /// Like wait() for at most `timeout`; nullopt when the child still runs then.
  std::optional<int> waitFor(std::chrono::milliseconds timeout);
  /// Whether the child runs (not reaped; a child that exited is reaped here).
  bool running();
  /// Sends `signal` to the child's process group (kOwnGroup, kNewSession) or to the child
  /// (kInherit); nothing once it was reaped. Returns whether a signal was sent.
  bool kill(int signal);

  /// The exit code for a waitpid() status: WEXITSTATUS, or 128 + WTERMSIG.
  static int exitCodeOf(int waitStatus);

  static constexpr size_t kDefaultMaxCapture = size_t{16} << 20;

 private:
  Subprocess() = default;
  void closeStreams();
  void release();

  pid_t pid_ = -1;
  bool ownGroup_ = false;
  int execError_ = 0;
  std::optional<int> exitCode_;
  int in_ = -1;  // the parent's ends of the pipes, or -1
  int out_ = -1;
  int err_ = -1;
};

}  // namespace pim
