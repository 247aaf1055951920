#pragma once
// The one seam to the operating system. Every path given to a Host is a host path ("/etc/passwd");
// the implementation maps it below its root prefix. RealHost is the only code that makes these
// system calls; tests use RealHost(tmpdir) or a recording fake.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "providers/core/result.h"

namespace pim {

enum class FileType { kNone, kRegular, kDirectory, kSymlink, kOther };

/// What lstat says about a path; type kNone when it does not exist.
struct FileInfo {
  FileType type = FileType::kNone;
  mode_t mode = 0;  // permission bits including set-uid/set-gid/sticky (mode & 07777)
  uid_t uid = 0;
  gid_t gid = 0;
  nlink_t nlink = 0;
  off_t size = 0;
  int64_t mtimeNs = 0;
  // Identity of the object (st_dev, st_ino): a bind mount shows its source's pair at its target.
  uint64_t device = 0;
  uint64_t inode = 0;
  bool exists() const { return type != FileType::kNone; }
};

struct UserInfo {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
  std::string home;
  std::string shell;
};

struct GroupInfo {
  std::string name;
  gid_t gid = 0;
  std::vector<std::string> members;
};

/// One mount point below the host root; `target` is a host path (prefix removed).
struct MountInfo {
  std::string target;
  std::string root;     // the mounted subtree of its filesystem (mountinfo field 4)
  uint64_t device = 0;  // st_dev-style device number of the mounted filesystem
};

struct CommandResult {
  int exitCode = -1;
  std::string out;
  std::string err;
};

/// Ownership and mode for files and directories the agent writes.
struct Ownership {
  mode_t mode = 0600;
  uid_t uid = 0;
  gid_t gid = 0;
};

class Host {
 public:
  virtual ~Host() = default;

  /// While on, readFile (and the user and group lookups built on it) may answer from what was
  /// read since it was turned on; any change made through this Host forgets it all. For plans,
  /// which only read and read /etc/passwd and friends several times. Off by default; a Host may
  /// keep nothing.
  virtual void keepReads(bool on) { (void)on; }

  /// The root prefix ("" for the real system, "/tmp/sandbox" under --root).
  virtual const std::string& root() const = 0;
  /// Maps a host path to the path on the real file system (root prefix + path).
  virtual std::string realPath(const std::string& hostPath) const = 0;

  /// lstat without following the final symlink; intermediate directories are walked without
  /// following symlinks either (a symlink in the middle is reported as kUnsafe).
  /// A missing path is a FileInfo with type kNone, not an error.
  virtual Result<FileInfo> lstat(const std::string& path) = 0;
  /// Reads a regular file; refuses symlinks and anything larger than maxBytes.
  virtual Result<std::string> readFile(const std::string& path, size_t maxBytes) = 0;
  /// Writes a file atomically: unique temporary file in the same directory, fchmod/fchown,
  /// fsync, rename over the target, fsync of the directory. Refuses if the target or any
  /// directory on the way is a symlink. Leaves no temporary file behind on failure.
  virtual Status writeFileAtomic(const std::string& path, std::string_view data, const Ownership& own) = 0;
  /// Creates one directory (its parent must exist) with exactly this mode and owner;
  /// succeeds without change if a directory (not a symlink) is already there.
  virtual Status makeDirectory(const std::string& path, const Ownership& own) = 0;
  /// Creates missing directories along the path with `own` (existing ones are left alone).
  virtual Status makeDirectories(const std::string& path, const Ownership& own) = 0;
  /// chmod without following symlinks (refuses a symlink).
  virtual Status setMode(const std::string& path, mode_t mode) = 0;
  /// lchown-style: never follows a symlink.
  virtual Status setOwner(const std::string& path, uid_t uid, gid_t gid) = 0;
  /// Removes a file or symlink (not a directory); missing is success.
  virtual Status removeFile(const std::string& path) = 0;
  /// Removes an empty directory; missing is success.
  virtual Status removeDirectory(const std::string& path) = 0;
  /// The target of a symbolic link, as stored (absolute targets are host paths: the caller
  /// resolves them below the root). Directories on the way are walked without following
  /// symlinks, like lstat(). Errors: kInvalid when `path` is not a symbolic link, kNotFound when
  /// it does not exist, kUnsafe, kIo. This default, for fakes, refuses every link (kInvalid).
  virtual Result<std::string> readLink(const std::string& path) {
    return Status::error(ErrorCode::kInvalid, "readlink " + path + ": not supported by this host", path);
  }
  /// Names in a directory, sorted, without "." and "..".
  virtual Result<std::vector<std::string>> listDirectory(const std::string& path) = 0;

  /// Looks a user up in <root>/etc/passwd (not NSS: the agent manages local files only).
  virtual Result<std::optional<UserInfo>> findUser(const std::string& name) = 0;
  /// Looks a group up in <root>/etc/group.
  virtual Result<std::optional<GroupInfo>> findGroup(const std::string& name) = 0;

  /// Mount points at or below the root prefix, from /proc/self/mountinfo.
  virtual Result<std::vector<MountInfo>> listMounts() = 0;
  /// Bind-mounts source onto target (both host paths, both must be directories, no symlinks).
  virtual Status bindMount(const std::string& source, const std::string& target) = 0;
  /// Unmounts target; with lazy, detaches a busy mount (MNT_DETACH).
  virtual Status unmount(const std::string& target, bool lazy) = 0;

  /// Runs a program (argv[0] is a path, no shell) with `input` on its standard input.
  virtual Result<CommandResult> run(const std::vector<std::string>& argv, std::string_view input = {}) = 0;

  /// Whether an sshd answers on TCP `address`:`port` (the real network, never root-prefixed):
  /// connects without blocking and reads the first bytes the server sends, all within `timeout`.
  /// true when they begin with "SSH-" (the banner); false when the connection is refused, reset,
  /// closed, or silent until the time-out (a stopped sshd still completes the TCP handshake).
  /// Errors: kInvalid when `address` is not an IPv4/IPv6 literal or the port is out of range,
  /// kIo when no socket can be made. This default, for fakes, answers false: "nothing answers",
  /// so a caller that verifies a reload has nothing to verify.
  virtual Result<bool> sshAnswers(const std::string& address, int port, std::chrono::milliseconds timeout) {
    (void)address;
    (void)port;
    (void)timeout;
    return false;
  }
};

/// Keeps the reads of `host` for the lifetime of this object (Host::keepReads).
class KeptReads {
 public:
  explicit KeptReads(Host& host) : host_(host) { host_.keepReads(true); }
  ~KeptReads() { host_.keepReads(false); }
  KeptReads(const KeptReads&) = delete;
  KeptReads& operator=(const KeptReads&) = delete;

 private:
  Host& host_;
};

}  // namespace pim
