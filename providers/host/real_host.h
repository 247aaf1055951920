#pragma once
// RealHost: the only implementation of Host that makes system calls. Every path is resolved
// below the root prefix one component at a time with O_NOFOLLOW, so a symbolic link planted by a
// user anywhere on the way (a home directory, ~/.ssh) is refused, never followed.

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <string>

#include "providers/core/log.h"
#include "providers/host/host.h"

namespace pim {

class RealHost : public Host {
 public:
  /// root: "" for the real system, or an existing directory that stands for "/".
  RealHost(std::string root, Logger log);
  ~RealHost() override;
  RealHost(const RealHost&) = delete;
  RealHost& operator=(const RealHost&) = delete;

  const std::string& root() const override { return root_; }
  std::string realPath(const std::string& hostPath) const override;

  Result<FileInfo> lstat(const std::string& path) override;
  Result<std::string> readFile(const std::string& path, size_t maxBytes) override;
  Status writeFileAtomic(const std::string& path, std::string_view data, const Ownership& own) override;
  Status makeDirectory(const std::string& path, const Ownership& own) override;
  Status makeDirectories(const std::string& path, const Ownership& own) override;
  Status setMode(const std::string& path, mode_t mode) override;
  Status setOwner(const std::string& path, uid_t uid, gid_t gid) override;
  Status removeFile(const std::string& path) override;
  Status removeDirectory(const std::string& path) override;
  Result<std::string> readLink(const std::string& path) override;
  Result<std::vector<std::string>> listDirectory(const std::string& path) override;
  Result<std::optional<UserInfo>> findUser(const std::string& name) override;
  Result<std::optional<GroupInfo>> findGroup(const std::string& name) override;
  Result<std::vector<MountInfo>> listMounts() override;
  Status bindMount(const std::string& source, const std::string& target) override;
  Status unmount(const std::string& target, bool lazy) override;
  Result<CommandResult> run(const std::vector<std::string>& argv, std::string_view input = {}) override;
  Result<bool> sshAnswers(const std::string& address, int port, std::chrono::milliseconds timeout) override;
  void keepReads(bool on) override;

  /// What the reads of the last keepReads(true) scope depended on, as host paths: the directory
  /// of every file read or stat'ed, every directory listed, and whether the mount table was read.
  /// A change to none of them (and no time passing an expiry) cannot change what they saw.
  struct ReadSet {
    /// directory -> the names in it that were read or stat'ed; "" for the directory listed whole.
    std::map<std::string, std::set<std::string>> directories;
    bool mounts = false;
    bool operator==(const ReadSet& o) const { return directories == o.directories && mounts == o.mounts; }
  };
  ReadSet readSet() const;

  /// Kills (SIGKILL, the whole process group) the command that run() waits for, if any, and makes
  /// every later run() fail at once: for a daemon that must stop within its deadline whatever runs
  /// (a slow `sshd -t`, `useradd`). Thread-safe.
  void abortCommands();

  /// Parses /proc/self/mountinfo text; mount points outside `root` are dropped and the prefix is
  /// removed from the others. Exposed for tests.
  static std::vector<MountInfo> parseMountInfo(const std::string& text, const std::string& root);

 private:
  void forgetReads();
  Result<int> rootFd();
  Result<std::string> readFileNow(const std::string& path, size_t maxBytes);

  std::string root_;
  Logger log_;
  std::atomic<pid_t> runningChild_{-1};  // the command run() waits for, or -1
  std::atomic<bool> aborted_{false};
  std::mutex rootMutex_;
  int rootFd_ = -1;  // the root prefix, opened on first use
  mutable std::mutex readsMutex_;
  bool keepReads_ = false;
  std::map<std::string, std::string> reads_;  // path -> content, while keepReads_
  ReadSet readSet_;                           // recorded while keepReads_
  void noteRead(const std::string& directory, const std::string& name, bool mounts = false);
};

}  // namespace pim
