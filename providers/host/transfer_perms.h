#pragma once
// Permission enforcement under the transfer root (spec agent.md, "Transfer tree"): every directory
// 02770, every regular file 0660 (0770 if it had any execute bit), group = the transfer group,
// owners untouched. Symbolic links are never followed nor changed, regular files with more than
// one hard link are left alone and reported, FIFOs, sockets and devices are left alone, and the
// walk never leaves the root's file system.
//
// PermEnforcer is the one place besides RealHost that makes file-system system calls itself: a
// race-free walk needs directory file descriptors (openat/fstatat relative to an fd opened with
// O_NOFOLLOW), which the path-based Host seam cannot offer.
//
// Why it stays in the tree: every entry is reached with openat/fstatat relative to its parent's
// fd, never through a path, so a directory swapped for a symlink is refused (ELOOP), not followed;
// a file is changed only through an fd whose fstat matches what fstatat saw (same device and
// inode, still a single hard link); deep trees are walked with an explicit stack and at most
// maxOpenDirs fds, a closed parent being reopened through ".." and accepted only with its recorded
// device and inode. What no fd-based walker (nor chmod -R) can rule out: a directory moved out of
// the tree by someone with write access to it while the walk is inside it is finished where it now
// is; its entries were in the tree a moment before, and symlinks and hard links are still refused.

#include <sys/stat.h>
#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "providers/core/log.h"

namespace pim {

/// What one or more passes did. Counters count entries; `reports` names the entries that need a
/// person (hard links, other file systems, errors) by path relative to the root, at most
/// kMaxReports of them (the counters stay exact).
struct PermStats {
  static constexpr size_t kMaxReports = 1000;

  uint64_t scanned = 0;           // entries examined (the root and directories included)
  uint64_t changed = 0;           // entries whose mode and/or group was changed
  uint64_t skippedHardlinks = 0;  // regular files with nlink > 1, left alone
  uint64_t skippedOther = 0;      // FIFOs, sockets, devices, other file systems
  uint64_t skippedSymlinks = 0;   // symbolic links (never followed, never changed)
  uint64_t errors = 0;            // failed system calls
  uint64_t reportsDropped = 0;    // reports beyond kMaxReports
  bool cancelled = false;         // the pass stopped early on request
  /// "hard link: a/b", "other file system: mnt", "error: a/b: chmod: Operation not permitted".
  std::vector<std::string> reports;

  /// Adds the counters of `other` and appends its reports (within kMaxReports).
  void add(const PermStats& other);
  /// Appends one report, or counts it in reportsDropped when the list is full.
  void report(std::string line);
};

/// Optional hooks for a walk.
struct WalkHooks {
  /// Called for every directory the walk enters (the start of the walk included), after the
  /// directory's own mode and group were fixed and before its entries are listed, with its path
  /// relative to the root ("" for the root) and an fd open on it (valid only during the call; do
  /// not close it). Returns whether to list and descend into the directory. Unset: always descend.
  std::function<bool(const std::string& relative, int dirFd)> onDirectory;
  /// When set and it becomes true, the walk stops at the next entry and marks the stats cancelled.
  const std::atomic<bool>* cancel = nullptr;
};

/// Brings the tree under one root to the transfer permissions. Not thread-safe: one call at a time
/// per instance (separate instances may run in parallel).
class PermEnforcer {
 public:
  static constexpr mode_t kDirectoryMode = 02770;
  static constexpr mode_t kFileMode = 0660;
  static constexpr mode_t kExecutableFileMode = 0770;
  static constexpr size_t kDefaultMaxOpenDirs = 64;

  /// `realRoot` is the path on the real file system (the caller passes
  /// host.realPath(settings.transferRoot)); its last component must not be a symlink. `gid` is the
  /// transfer group. `maxOpenDirs` caps the directory fds a walk keeps open (at least 1; deeper
  /// levels are reopened through ".." and checked by device and inode).
  PermEnforcer(std::string realRoot, gid_t gid, Logger log, size_t maxOpenDirs = kDefaultMaxOpenDirs);

  /// One full pass over the tree, the root directory included. Changes only entries that are
  /// wrong (fchown/fchmod on an fd opened without following symlinks). Never throws; failures
  /// are counted in `errors` and reported (a missing root is one error).
  PermStats fullPass(const WalkHooks& hooks = {});

  /// Fixes one entry given by its path relative to the root ("" or "." is the root itself) and,
  /// if it is a directory, its whole subtree (subject to hooks.onDirectory). The path is resolved
  /// component by component with O_NOFOLLOW from the root: a symlink anywhere on the way or a
  /// missing entry is not an error (nothing is done); ".." components are refused (one error).
  PermStats fixPath(const std::string& relative, const WalkHooks& hooks = {});

  /// Like fixPath for several entries of one directory (`relativeDir`, resolved once): each name
  /// is an entry of that directory, or "." for the directory itself (fixed without descending).
  /// Directories named are walked, subject to hooks.onDirectory.
  PermStats fixEntries(const std::string& relativeDir, const std::vector<std::string>& names,
                       const WalkHooks& hooks = {});

  /// How files are changed, for tests and benchmarks. By default, regular files are changed
  /// through their name with fchmodat2/fchownat (AT_SYMLINK_NOFOLLOW) when the kernel has
  /// fchmodat2 (Linux 6.6) and fs.protected_hardlinks is 1, otherwise through an fd opened with
  /// O_NOFOLLOW and checked against fstatat; and once a walk has met 512 regular files, its files
  /// are checked and fixed (in inode order, batches of up to 256 of one directory) by up to 4
  /// threads while the walking thread lists the next directories.
  /// `pathChanges` false forces the fd path; `threads` 1 keeps every pass on the caller's thread.
  void setMethod(bool pathChanges, unsigned threads);
  /// Whether regular files are changed through their name (see setMethod).
  bool pathChanges() const { return pathChanges_; }

  /// The mode an entry of this type and mode must have (02770, 0660 or 0770).
  static mode_t targetMode(mode_t stMode);
  /// The root given to the constructor (without trailing slashes).
  const std::string& realRoot() const { return realRoot_; }
  /// The transfer group.
  gid_t gid() const { return gid_; }

 private:
  struct Pass;
  struct Frame;
  class Workers;

  /// Walks the whole tree from the root (fullPass(), fixPath("")).
  void walkWholeTree(Pass& pass);
  int openRoot(struct stat& st, Pass& pass);
  int resolveDirectory(const std::string& relativeDir, struct stat& st, Pass& pass);
  void walk(int fd, const struct stat& st, std::string rel, Pass& pass);
  bool listDirectory(int fd, const std::string& rel, std::vector<std::string>& subdirs, Pass& pass);
  void fixFiles(int fd, const std::string& rel, const std::vector<std::string>& names,
                std::vector<std::string>& subdirs, Pass& pass);
  bool fixFileByName(int dirFd, const std::string& name, const struct stat& st, const std::string& rel, Pass& pass);
  void handleEntry(int dirFd, const std::string& dirRel, const std::string& name, Pass& pass);
  void fixNonDirectory(int dirFd, const std::string& name, const struct stat& st, const std::string& dirRel,
                       Pass& pass);
  /// What openDirectoryAt() found at a name.
  enum class DirAt { kOpened, kGone, kSymlink, kOtherDevice, kFailed };
  /// Opens directory `name` below `parentFd` without following a symbolic link and fstats it into
  /// `st`; `fd` is its descriptor when kOpened. A failure other than gone (ENOENT, ENOTDIR) or a
  /// symbolic link (ELOOP) is reported through fail() (kFailed); a directory on another device
  /// than the pass's is closed (kOtherDevice).
  DirAt openDirectoryAt(int parentFd, const std::string& name, const std::string& rel, struct stat& st, Pass& pass,
                        int& fd);
  int openSubdirectory(int parentFd, const std::string& name, const std::string& rel, struct stat& st, Pass& pass);
  void fixDirectory(int fd, const struct stat& st, const std::string& rel, Pass& pass);
  void fixFile(int dirFd, const std::string& name, const struct stat& st, const std::string& rel, Pass& pass);
  bool applyFix(int fd, const struct stat& st, const std::string& rel, Pass& pass);
  void noteChange(const std::string& rel, mode_t have, mode_t want, gid_t hadGid, Pass& pass);
  void noteUnlisted();
  void reportHardlink(const struct stat& st, const std::string& rel, Pass& pass);
  void fail(const std::string& op, const std::string& rel, int err, Pass& pass);
  std::string display(const std::string& rel) const;

  std::string realRoot_;
  gid_t gid_;
  Logger log_;
  size_t maxOpenDirs_;
  unsigned threads_;
  std::atomic<bool> pathChanges_;
  std::atomic<uint64_t> changesNoted_{0};  // changes of the current call (logged one by one up to a limit)
  std::mutex warnedMutex_;
  std::set<std::pair<dev_t, ino_t>> warnedHardlinks_;  // warn once per file, bounded
};

}  // namespace pim
