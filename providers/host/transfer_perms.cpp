#include "providers/host/transfer_perms.h"
#include "providers/core/text_fields.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <system_error>
#include <thread>
#include <utility>

namespace pim {
namespace {

constexpr int kDirOpenFlags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
// O_NONBLOCK: if a FIFO is swapped in between fstatat and open, opening it must not block;
// O_NOCTTY: a terminal swapped in must not become our controlling terminal. The fd is only used
// for fstat/fchown/fchmod, never read.
constexpr int kFileOpenFlags = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
constexpr size_t kMaxWarnedHardlinks = 10000;
constexpr uint64_t kCancelCheckEvery = 256;
// A walk that has met this many regular files has the rest checked and fixed by several threads
// (each change is a metadata write the kernel does at the caller's expense), in batches of up to
// kBatchFiles files of one directory, at most kQueuedPerThread batches waiting per thread.
constexpr size_t kParallelFiles = 512;
constexpr unsigned kMaxThreads = 4;
constexpr size_t kBatchFiles = 256;
// Changes logged one by one at info per call (full pass, fixPath, fixEntries); the rest at debug,
// with one info line saying how many were not listed: a pass over a tree restored with the wrong
// modes must not write a line per file to the journal.
constexpr uint64_t kChangesListed = 100;
constexpr size_t kQueuedPerThread = 2;

#ifndef SYS_fchmodat2
#define SYS_fchmodat2 452  // Linux 6.6, the same number on every architecture
#endif

// fchmodat2(2) with AT_SYMLINK_NOFOLLOW: changes the mode of a directory entry without
// following it if it is a symbolic link (EOPNOTSUPP then), in one system call.
int fchmodatNoFollow(int dirFd, const char* name, mode_t mode) {
  return static_cast<int>(::syscall(SYS_fchmodat2, dirFd, name, mode, AT_SYMLINK_NOFOLLOW));
}

// Whether fchmodat2 exists: asked once with a mode change of nothing that can exist (ENOENT
// when it does, ENOSYS when it does not; seccomp filters may answer EPERM).
bool kernelHasFchmodat2() {
  errno = 0;
  int rc = fchmodatNoFollow(AT_FDCWD, "/proc/self/pim-access-agent-probe-does-not-exist", 0);
  return rc == 0 || (errno != ENOSYS && errno != EPERM);
}

// fs.protected_hardlinks = 1: nobody can make a hard link to a file they do not own or cannot
// read and write. Unreadable counts as off.
bool hardlinksProtected() {
  std::ifstream in("/proc/sys/fs/protected_hardlinks");
  int value = 0;
  return static_cast<bool>(in >> value) && value == 1;
}

std::string join(const std::string& dir, const std::string& name) { return dir.empty() ? name : dir + "/" + name; }

// Splits a relative path into components, dropping empty and "." ones. False on ".." or an
// absolute path: callers only ever name entries below the root.
bool splitRelative(const std::string& relative, std::vector<std::string>& parts) {
  if (!relative.empty() && relative[0] == '/') return false;
  size_t start = 0;
  while (start <= relative.size()) {
    size_t end = relative.find('/', start);
    if (end == std::string::npos) end = relative.size();
    std::string part = relative.substr(start, end - start);
    if (part == "..") return false;
    if (!part.empty() && part != ".") parts.push_back(std::move(part));
    start = end + 1;
  }
  return true;
}

std::string joinAll(const std::vector<std::string>& parts, size_t count) {
  std::string out;
  for (size_t i = 0; i < count; ++i) out = join(out, parts[i]);
  return out;
}

}  // namespace

// ---- PermStats ----

void PermStats::add(const PermStats& other) {
  scanned += other.scanned;
  changed += other.changed;
  skippedHardlinks += other.skippedHardlinks;
  skippedOther += other.skippedOther;
  skippedSymlinks += other.skippedSymlinks;
  errors += other.errors;
  reportsDropped += other.reportsDropped;
  cancelled = cancelled || other.cancelled;
  for (const auto& line : other.reports) report(line);
}

void PermStats::report(std::string line) {
  if (reports.size() < kMaxReports) {
    reports.push_back(std::move(line));
  } else {
    ++reportsDropped;
  }
}

// ---- PermEnforcer ----

// Per-call context: the hooks, the stats being filled and the root's device.
struct PermEnforcer::Pass {
  const WalkHooks& hooks;
  PermStats& stats;
  dev_t dev = 0;
  uint64_t sinceCheck = 0;
  Workers* workers = nullptr;  // the walk's file workers, when it has them

  bool cancelled() {
    if (!stats.cancelled && hooks.cancel && hooks.cancel->load(std::memory_order_relaxed)) {
      stats.cancelled = true;
    }
    return stats.cancelled;
  }
  bool cancelledSometimes() { return (++sinceCheck % kCancelCheckEvery) == 0 && cancelled(); }
};

// One directory on the explicit walk stack. Its fd may be closed to respect maxOpenDirs_; it is
// then reopened through ".." of its child, or from the start by names, and accepted only if
// device and inode are those recorded when it was first opened.
struct PermEnforcer::Frame {
  int fd = -1;
  dev_t dev = 0;
  ino_t ino = 0;
  std::string name;   // name in the parent frame
  size_t relLen = 0;  // length of the relative path of this directory
  std::vector<std::string> subdirs;
  size_t next = 0;
};

// The regular files of a walk, checked and fixed by worker threads while the walking thread lists
// the next directories, so that neither the listing nor a small directory leaves a CPU idle.
// Until the walk has met kParallelFiles files there are no threads (a new directory of a few files
// costs no thread start); then threads - 1 workers start, and the walking thread itself fixes a
// batch whenever kQueuedPerThread batches per thread are waiting (bounded memory and fds: each
// queued directory holds one duplicate of its fd). finish() waits until every batch is done and
// adds the workers' counts to the walk's.
class PermEnforcer::Workers {
 public:
  Workers(PermEnforcer& enforcer, Pass& pass, unsigned threads) : enforcer_(enforcer), pass_(pass), threads_(threads) {}
  ~Workers() { finish(); }
  Workers(const Workers&) = delete;
  Workers& operator=(const Workers&) = delete;

  // Regular files `names` of the directory dirFd (relative path rel): fixed now or queued.
  void submit(int dirFd, const std::string& rel, std::vector<std::string> names) {
    met_ += names.size();
    if (threads_ <= 1 || (helpers_.empty() && met_ < kParallelFiles)) {
      fixBatch(dirFd, rel, names, pass_);
      return;
    }
    if (helpers_.empty() && !startFailed_) start();
    const int dup = fcntl(dirFd, F_DUPFD_CLOEXEC, 0);
    if (dup < 0) {  // out of fds: this thread does it
      fixBatch(dirFd, rel, names, pass_);
      return;
    }
    auto dir = std::make_shared<Dir>(dup, rel);
    for (size_t from = 0; from < names.size(); from += kBatchFiles) {
      Batch batch{dir, {}};
      const size_t to = std::min(names.size(), from + kBatchFiles);
      batch.names.assign(std::make_move_iterator(names.begin() + static_cast<std::ptrdiff_t>(from)),
                         std::make_move_iterator(names.begin() + static_cast<std::ptrdiff_t>(to)));
      std::unique_lock<std::mutex> lock(mutex_);
      queue_.push_back(std::move(batch));
      lock.unlock();
      ready_.notify_one();
      while (helpOnce(kQueuedPerThread * threads_)) {
      }
    }
  }

  void finish() {
    while (helpOnce(0)) {
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      done_ = true;
    }
    ready_.notify_all();
    for (auto& h : helpers_) h.join();
    helpers_.clear();
    for (auto& s : stats_) pass_.stats.add(s);
    stats_.clear();
  }

 private:
  struct Dir {
    Dir(int f, std::string r) : fd(f), rel(std::move(r)) {}
    ~Dir() { close(fd); }
    Dir(const Dir&) = delete;
    Dir& operator=(const Dir&) = delete;
    int fd;
    std::string rel;
  };
  struct Batch {
    std::shared_ptr<Dir> dir;
    std::vector<std::string> names;
  };

  void start() {
    stats_.resize(threads_ - 1);  // before any thread: they hold references into it
    for (unsigned t = 0; t + 1 < threads_; ++t) {
      try {
        helpers_.emplace_back([this, t] { work(stats_[t]); });
      } catch (const std::system_error&) {
        startFailed_ = true;  // no thread to be had: the walking thread does the batches
        break;
      }
    }
  }

  // Fixes one queued batch in the walking thread if more than `keep` are waiting.
  bool helpOnce(size_t keep) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (queue_.size() <= keep) return false;
    Batch batch = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    fixBatch(batch.dir->fd, batch.dir->rel, batch.names, pass_);
    return true;
  }

  void work(PermStats& stats) {
    Pass pass{pass_.hooks, stats};
    pass.dev = pass_.dev;
    for (;;) {
      std::unique_lock<std::mutex> lock(mutex_);
      ready_.wait(lock, [this] { return done_ || !queue_.empty(); });
      if (queue_.empty()) return;
      Batch batch = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      fixBatch(batch.dir->fd, batch.dir->rel, batch.names, pass);
    }
  }

  void fixBatch(int dirFd, const std::string& rel, const std::vector<std::string>& names, Pass& pass) {
    if (pass.cancelled()) return;
    std::vector<std::string> becameDirectories;
    enforcer_.fixFiles(dirFd, rel, names, becameDirectories, pass);
    for (const auto& name : becameDirectories) {
      enforcer_.log_->debug("{}/{} became a directory during the pass: left to its events and the next pass",
                            enforcer_.realRoot_, join(rel, name));
    }
  }

  PermEnforcer& enforcer_;
  Pass& pass_;
  const unsigned threads_;
  size_t met_ = 0;
  bool startFailed_ = false;
  std::vector<std::thread> helpers_;
  std::vector<PermStats> stats_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<Batch> queue_;
  bool done_ = false;
};

PermEnforcer::PermEnforcer(std::string realRoot, gid_t gid, Logger log, size_t maxOpenDirs)
    : realRoot_(std::move(realRoot)),
      gid_(gid),
      log_(log ? std::move(log) : nullLogger()),
      maxOpenDirs_(maxOpenDirs == 0 ? 1 : maxOpenDirs),
      threads_(std::max(1u, std::min(kMaxThreads, std::thread::hardware_concurrency()))),
      pathChanges_(kernelHasFchmodat2() && hardlinksProtected()) {
  while (realRoot_.size() > 1 && realRoot_.back() == '/') realRoot_.pop_back();
}

void PermEnforcer::setMethod(bool pathChanges, unsigned threads) {
  pathChanges_ = pathChanges && kernelHasFchmodat2();
  threads_ = std::max(1u, threads);
}

mode_t PermEnforcer::targetMode(mode_t stMode) {
  if (S_ISDIR(stMode)) return kDirectoryMode;
  return (stMode & 0111) != 0 ? kExecutableFileMode : kFileMode;
}

PermStats PermEnforcer::fullPass(const WalkHooks& hooks) {
  PermStats stats;
  Pass pass{hooks, stats};
  walkWholeTree(pass);
  log_->info(
      "permission pass over {}: {} scanned, {} changed, {} hard links, {} symlinks, "
      "{} other skipped, {} errors{}",
      realRoot_, stats.scanned, stats.changed, stats.skippedHardlinks, stats.skippedSymlinks, stats.skippedOther,
      stats.errors, stats.cancelled ? " (cancelled)" : "");
  return stats;
}

PermStats PermEnforcer::fixPath(const std::string& relative, const WalkHooks& hooks) {
  std::vector<std::string> parts;
  if (!splitRelative(relative, parts)) {
    PermStats stats;
    Pass pass{hooks, stats};
    fail("resolve", relative, EINVAL, pass);
    return stats;
  }
  if (parts.empty()) {
    PermStats stats;
    Pass pass{hooks, stats};
    walkWholeTree(pass);
    return stats;
  }
  std::string name = parts.back();
  return fixEntries(joinAll(parts, parts.size() - 1), {name}, hooks);
}

PermStats PermEnforcer::fixEntries(const std::string& relativeDir, const std::vector<std::string>& names,
                                   const WalkHooks& hooks) {
  PermStats stats;
  Pass pass{hooks, stats};
  changesNoted_ = 0;
  std::vector<std::string> parts;
  if (!splitRelative(relativeDir, parts)) {
    fail("resolve", relativeDir, EINVAL, pass);
    return stats;
  }
  std::string dirRel = joinAll(parts, parts.size());
  struct stat st {};
  int fd = resolveDirectory(dirRel, st, pass);
  if (fd < 0) return stats;
  for (const auto& name : names) {
    if (pass.cancelled()) break;
    if (name.empty() || name == ".") {
      struct stat now {};
      if (fstat(fd, &now) != 0) {
        fail("stat", dirRel, errno, pass);
        continue;
      }
      ++stats.scanned;
      fixDirectory(fd, now, dirRel, pass);
      continue;
    }
    if (name == ".." || name.find('/') != std::string::npos) {
      fail("resolve", join(dirRel, name), EINVAL, pass);
      continue;
    }
    handleEntry(fd, dirRel, name, pass);
  }
  close(fd);
  noteUnlisted();
  return stats;
}

void PermEnforcer::walkWholeTree(Pass& pass) {
  struct stat st {};
  changesNoted_ = 0;
  int fd = openRoot(st, pass);
  if (fd >= 0) walk(fd, st, std::string(), pass);
  noteUnlisted();
}

int PermEnforcer::openRoot(struct stat& st, Pass& pass) {
  int fd = open(realRoot_.c_str(), kDirOpenFlags);
  if (fd < 0) {
    fail("open", std::string(), errno, pass);
    return -1;
  }
  if (fstat(fd, &st) != 0) {
    fail("stat", std::string(), errno, pass);
    close(fd);
    return -1;
  }
  pass.dev = st.st_dev;
  return fd;
}

int PermEnforcer::resolveDirectory(const std::string& relativeDir, struct stat& st, Pass& pass) {
  int fd = openRoot(st, pass);
  if (fd < 0) return -1;
  std::vector<std::string> parts;
  splitRelative(relativeDir, parts);  // already validated by the caller
  for (size_t i = 0; i < parts.size(); ++i) {
    int next = -1;
    const DirAt found = openDirectoryAt(fd, parts[i], joinAll(parts, i + 1), st, pass, next);
    close(fd);
    // Gone, replaced by a file, or a symlink: nothing to do below it (events will say more).
    if (found == DirAt::kOtherDevice) ++pass.stats.skippedOther;
    if (found != DirAt::kOpened) return -1;
    fd = next;
  }
  return fd;
}

void PermEnforcer::walk(int fd, const struct stat& st, std::string rel, Pass& pass) {
  std::optional<Workers> workers;
  if (pass.workers == nullptr) {
    workers.emplace(*this, pass, threads_);
    pass.workers = &*workers;
  }
  struct Detach {
    Pass& pass;
    std::optional<Workers>& workers;
    ~Detach() {
      if (workers) {
        workers->finish();
        pass.workers = nullptr;
      }
    }
  } detach{pass, workers};
  std::vector<Frame> stack;
  size_t lowestOpen = 1;  // frames [1, lowestOpen) have their fd closed; frame 0 is always open

  // Fixes the directory, asks the hook, lists it; keeps it on the stack only if it has
  // subdirectories to visit. Takes ownership of dfd.
  auto enter = [&](int dfd, const struct stat& dst, const std::string& name) {
    ++pass.stats.scanned;
    fixDirectory(dfd, dst, rel, pass);
    std::vector<std::string> subdirs;
    bool descend = !pass.hooks.onDirectory || pass.hooks.onDirectory(rel, dfd);
    if (descend) listDirectory(dfd, rel, subdirs, pass);
    if (subdirs.empty() || pass.stats.cancelled) {
      close(dfd);
      return;
    }
    Frame frame;
    frame.fd = dfd;
    frame.dev = dst.st_dev;
    frame.ino = dst.st_ino;
    frame.name = name;
    frame.relLen = rel.size();
    frame.subdirs = std::move(subdirs);
    stack.push_back(std::move(frame));
    while (stack.size() - lowestOpen > maxOpenDirs_ && lowestOpen + 1 < stack.size()) {
      close(stack[lowestOpen].fd);
      stack[lowestOpen].fd = -1;
      ++lowestOpen;
    }
  };

  enter(fd, st, std::string());
  while (!stack.empty() && !pass.cancelled()) {
    Frame& top = stack.back();
    if (top.next < top.subdirs.size()) {
      std::string name = std::move(top.subdirs[top.next++]);
      std::string childRel = join(rel, name);
      struct stat cst {};
      int cfd = openSubdirectory(top.fd, name, childRel, cst, pass);
      if (cfd < 0) continue;
      rel = std::move(childRel);
      enter(cfd, cst, name);  // may push: `top` is invalid from here on
      rel.resize(stack.back().relLen);
      continue;
    }

    Frame done = std::move(stack.back());
    stack.pop_back();
    if (stack.empty()) {
      close(done.fd);
      break;
    }
    size_t parent = stack.size() - 1;
    if (stack[parent].fd < 0) {
      // The parent's fd was closed to bound open fds. ".." is right only if the child was not
      // moved meanwhile: accept it only with the recorded device and inode.
      int pfd = openat(done.fd, "..", kDirOpenFlags);
      struct stat pst {};
      if (pfd >= 0 && fstat(pfd, &pst) == 0 && pst.st_dev == stack[parent].dev && pst.st_ino == stack[parent].ino) {
        stack[parent].fd = pfd;
        lowestOpen = parent;
      } else {
        if (pfd >= 0) close(pfd);
        // Reopen by names from the start (always open), checking every level; what cannot be
        // reached the same way any more was moved and is left to the next pass or event.
        int cur = -1;
        size_t i = 1;
        for (; i <= parent; ++i) {
          int from = (i == 1) ? stack[0].fd : cur;
          int next = openat(from, stack[i].name.c_str(), kDirOpenFlags);
          struct stat nst {};
          bool same = next >= 0 && fstat(next, &nst) == 0 && nst.st_dev == stack[i].dev && nst.st_ino == stack[i].ino;
          if (!same) {
            if (next >= 0) close(next);
            break;
          }
          if (cur >= 0) close(cur);
          cur = next;
        }
        if (i <= parent) {
          log_->debug("walk: {} moved during the pass; left to the next pass",
                      display(std::string(rel, 0, stack[i].relLen)));
          stack.resize(i);
        }
        if (stack.size() > 1) {
          stack.back().fd = cur;
        } else if (cur >= 0) {
          close(cur);
        }
        lowestOpen = stack.size() > 1 ? stack.size() - 1 : 1;
      }
    }
    close(done.fd);
    rel.resize(stack.back().relLen);
  }
  for (auto& frame : stack) {
    if (frame.fd >= 0) close(frame.fd);
  }
}

// Regular files (and entries of unknown type) of one directory: checked with fstatat and fixed.
// Subdirectories found among them go to `subdirs`.
void PermEnforcer::fixFiles(int fd, const std::string& rel, const std::vector<std::string>& names,
                            std::vector<std::string>& subdirs, Pass& pass) {
  for (const auto& name : names) {
    if (pass.cancelledSometimes()) break;
    struct stat st {};
    if (fstatat(fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno != ENOENT) fail("stat", join(rel, name), errno, pass);
      continue;
    }
    if (S_ISDIR(st.st_mode)) {
      subdirs.push_back(name);
    } else {
      fixNonDirectory(fd, name, st, rel, pass);
    }
  }
}

bool PermEnforcer::listDirectory(int fd, const std::string& rel, std::vector<std::string>& subdirs, Pass& pass) {
  // closedir() closes the fd it was given: list through a duplicate, keep `fd` for openat.
  int dupFd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dupFd < 0) {
    fail("dup", rel, errno, pass);
    return false;
  }
  DIR* dir = fdopendir(dupFd);
  if (dir == nullptr) {
    fail("opendir", rel, errno, pass);
    close(dupFd);
    return false;
  }
  bool ok = true;
  std::vector<std::pair<ino_t, std::string>> regular;  // DT_REG: their mode needs a stat
  std::vector<std::string> unknown;                    // DT_UNKNOWN: their type needs a stat (they may be directories)
  for (;;) {
    errno = 0;
    struct dirent* ent = readdir(dir);
    if (ent == nullptr) {
      if (errno != 0) {
        fail("readdir", rel, errno, pass);
        ok = false;
      }
      break;
    }
    const char* name = ent->d_name;
    if (name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0'))) continue;
    if (pass.cancelledSometimes()) break;
    switch (ent->d_type) {
      case DT_DIR:
        subdirs.emplace_back(name);
        break;
      case DT_LNK:
        ++pass.stats.scanned;
        ++pass.stats.skippedSymlinks;
        break;
      case DT_FIFO:
      case DT_SOCK:
      case DT_CHR:
      case DT_BLK:
        ++pass.stats.scanned;
        ++pass.stats.skippedOther;
        break;
      case DT_REG:
        regular.emplace_back(ent->d_ino, name);
        break;
      default:
        unknown.emplace_back(name);
        break;
    }
  }
  closedir(dir);
  if (!pass.stats.cancelled) fixFiles(fd, rel, unknown, subdirs, pass);
  if (pass.stats.cancelled || regular.empty()) return ok;
  // In inode order, not the directory's (hash) order: consecutive inodes share the blocks of the
  // inode table that every stat and change reads and writes (about 8% faster on ext4 here).
  std::sort(regular.begin(), regular.end());
  std::vector<std::string> files;
  files.reserve(regular.size());
  for (auto& entry : regular) files.push_back(std::move(entry.second));
  if (pass.workers != nullptr) {
    pass.workers->submit(fd, rel, std::move(files));
  } else {
    fixFiles(fd, rel, files, subdirs, pass);
  }
  return ok;
}

void PermEnforcer::handleEntry(int dirFd, const std::string& dirRel, const std::string& name, Pass& pass) {
  std::string rel = join(dirRel, name);
  struct stat st {};
  if (fstatat(dirFd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno != ENOENT) fail("stat", rel, errno, pass);
    return;
  }
  if (S_ISDIR(st.st_mode)) {
    struct stat dst {};
    int fd = openSubdirectory(dirFd, name, rel, dst, pass);
    if (fd >= 0) walk(fd, dst, rel, pass);
    return;
  }
  fixNonDirectory(dirFd, name, st, dirRel, pass);
}

// An entry that fstatat found not to be a directory: a regular file is fixed, the rest counted.
void PermEnforcer::fixNonDirectory(int dirFd, const std::string& name, const struct stat& st, const std::string& dirRel,
                                   Pass& pass) {
  ++pass.stats.scanned;
  if (S_ISREG(st.st_mode)) {
    fixFile(dirFd, name, st, join(dirRel, name), pass);
  } else if (S_ISLNK(st.st_mode)) {
    ++pass.stats.skippedSymlinks;
  } else {
    ++pass.stats.skippedOther;
  }
}

PermEnforcer::DirAt PermEnforcer::openDirectoryAt(int parentFd, const std::string& name, const std::string& rel,
                                                  struct stat& st, Pass& pass, int& fd) {
  fd = openat(parentFd, name.c_str(), kDirOpenFlags);
  if (fd < 0) {
    const int err = errno;
    if (err == ELOOP) return DirAt::kSymlink;
    if (err == ENOENT || err == ENOTDIR) return DirAt::kGone;
    fail("open", rel, err, pass);
    return DirAt::kFailed;
  }
  if (fstat(fd, &st) != 0) {
    fail("stat", rel, errno, pass);
    close(fd);
    fd = -1;
    return DirAt::kFailed;
  }
  if (st.st_dev != pass.dev) {
    close(fd);
    fd = -1;
    return DirAt::kOtherDevice;
  }
  return DirAt::kOpened;
}

int PermEnforcer::openSubdirectory(int parentFd, const std::string& name, const std::string& rel, struct stat& st,
                                   Pass& pass) {
  int fd = -1;
  switch (openDirectoryAt(parentFd, name, rel, st, pass, fd)) {
    case DirAt::kOpened:
      return fd;
    case DirAt::kSymlink:  // swapped for a symlink since it was listed: never followed
      ++pass.stats.scanned;
      ++pass.stats.skippedSymlinks;
      break;
    case DirAt::kOtherDevice:
      // A mount point: another file system is not ours to change.
      ++pass.stats.scanned;
      ++pass.stats.skippedOther;
      pass.stats.report("other file system: " + display(rel));
      log_->warn("skip {}/{}: another file system is mounted there", realRoot_, rel);
      break;
    case DirAt::kGone:
    case DirAt::kFailed:
      break;
  }
  return -1;
}

void PermEnforcer::fixDirectory(int fd, const struct stat& st, const std::string& rel, Pass& pass) {
  if (st.st_gid == gid_ && (st.st_mode & 07777) == kDirectoryMode) return;
  applyFix(fd, st, rel, pass);
}

void PermEnforcer::fixFile(int dirFd, const std::string& name, const struct stat& st, const std::string& rel,
                           Pass& pass) {
  if (st.st_nlink > 1) {
    reportHardlink(st, rel, pass);
    return;
  }
  if (st.st_gid == gid_ && (st.st_mode & 07777) == targetMode(st.st_mode)) return;
  if (pathChanges_ && fixFileByName(dirFd, name, st, rel, pass)) return;
  int fd = openat(dirFd, name.c_str(), kFileOpenFlags);
  if (fd < 0) {
    int err = errno;
    if (err == ELOOP) {
      ++pass.stats.skippedSymlinks;
    } else if (err != ENOENT) {
      fail("open", rel, err, pass);
    }
    return;
  }
  // Change only what fstatat saw: the same regular file, still with a single name.
  struct stat now {};
  if (fstat(fd, &now) != 0) {
    fail("stat", rel, errno, pass);
  } else if (!S_ISREG(now.st_mode) || now.st_dev != st.st_dev || now.st_ino != st.st_ino) {
    log_->debug("skip {}/{}: replaced while being checked", realRoot_, rel);
  } else if (now.st_nlink > 1) {
    reportHardlink(now, rel, pass);
  } else {
    applyFix(fd, now, rel, pass);
  }
  close(fd);
}

// The mode and group of a regular file changed through its name in the directory fd, without an
// fd of its own: fchmodat2 and fchownat, both with AT_SYMLINK_NOFOLLOW, so neither follows a
// symbolic link swapped in since fstatat (the mode change fails with EOPNOTSUPP on a link and
// comes first, so a link swapped in before it is left alone; one swapped in between the two calls
// may have its own group set, its target never). What this gives up compared with the fd path:
// the entry is not checked to still be the file fstatat saw. A swap to another file of
// the same directory, or to a hard link, stays inside the tree and is fixed by events; a hard
// link to a file outside the tree can only be made, with fs.protected_hardlinks = 1 (required
// for this path), by someone who owns that file or can read and write it, who gains nothing by
// having it made group-readable and -writable for the transfer group. Returns false when the
// kernel turns out not to have fchmodat2 (the caller then uses the fd path).
bool PermEnforcer::fixFileByName(int dirFd, const std::string& name, const struct stat& st, const std::string& rel,
                                 Pass& pass) {
  const mode_t want = targetMode(st.st_mode);
  const mode_t have = st.st_mode & 07777;
  bool changed = false;
  if (have != want) {
    if (fchmodatNoFollow(dirFd, name.c_str(), want) != 0) {
      const int err = errno;
      if (err == ENOSYS) {
        pathChanges_ = false;
        return false;
      }
      if (err == EOPNOTSUPP) {
        ++pass.stats.skippedSymlinks;  // replaced by a symbolic link since fstatat
      } else if (err != ENOENT) {
        fail("chmod", rel, err, pass);
      }
      return true;
    }
    changed = true;
  }
  if (st.st_gid != gid_) {
    if (fchownat(dirFd, name.c_str(), static_cast<uid_t>(-1), gid_, AT_SYMLINK_NOFOLLOW) != 0) {
      const int err = errno;
      if (err != ENOENT) fail("chown", rel, err, pass);
      if (changed) ++pass.stats.changed;
      return true;
    }
    changed = true;
  }
  if (changed) noteChange(rel, have, want, st.st_gid, pass);
  return true;
}

bool PermEnforcer::applyFix(int fd, const struct stat& st, const std::string& rel, Pass& pass) {
  mode_t want = targetMode(st.st_mode);
  mode_t have = st.st_mode & 07777;
  bool changed = false;
  // Group first: chown clears set-uid/set-gid on files, and the chmod below sets the final mode.
  if (st.st_gid != gid_) {
    if (fchown(fd, static_cast<uid_t>(-1), gid_) != 0) {
      fail("chown", rel, errno, pass);
      return false;
    }
    changed = true;
  }
  if (have != want) {
    if (fchmod(fd, want) != 0) {
      fail("chmod", rel, errno, pass);
      if (changed) ++pass.stats.changed;
      return false;
    }
    changed = true;
  }
  if (changed) noteChange(rel, have, want, st.st_gid, pass);
  return true;
}

void PermEnforcer::noteChange(const std::string& rel, mode_t have, mode_t want, gid_t hadGid, Pass& pass) {
  ++pass.stats.changed;
  const auto level = changesNoted_.fetch_add(1, std::memory_order_relaxed) < kChangesListed ? spdlog::level::info
                                                                                            : spdlog::level::debug;
  if (!log_->should_log(level)) return;  // the modes would be formatted even for a null sink
  log_->log(level, "set {}/{}: mode {} -> {}, group {} -> {}", realRoot_, rel, octalMode(have), octalMode(want), hadGid,
            gid_);
}

void PermEnforcer::noteUnlisted() {
  const uint64_t noted = changesNoted_.load(std::memory_order_relaxed);
  if (noted > kChangesListed) {
    log_->info("{}: {} more changes not listed (--log-level debug lists every one)", realRoot_, noted - kChangesListed);
  }
}

void PermEnforcer::reportHardlink(const struct stat& st, const std::string& rel, Pass& pass) {
  ++pass.stats.skippedHardlinks;
  pass.stats.report("hard link: " + display(rel));
  bool first;
  {
    std::lock_guard<std::mutex> lock(warnedMutex_);
    first = warnedHardlinks_.size() < kMaxWarnedHardlinks && warnedHardlinks_.emplace(st.st_dev, st.st_ino).second;
  }
  if (first) {
    log_->warn(
        "skip {}/{}: regular file with {} hard links (its other names may be outside "
        "the transfer tree)",
        realRoot_, rel, static_cast<uint64_t>(st.st_nlink));
  } else {
    log_->debug("skip {}/{}: hard link", realRoot_, rel);
  }
}

void PermEnforcer::fail(const std::string& op, const std::string& rel, int err, Pass& pass) {
  ++pass.stats.errors;
  pass.stats.report("error: " + display(rel) + ": " + op + ": " + std::strerror(err));
  log_->error("{} {}{}{}: {}", op, realRoot_, rel.empty() ? "" : "/", rel, std::strerror(err));
}

std::string PermEnforcer::display(const std::string& rel) const { return rel.empty() ? std::string(".") : rel; }

}  // namespace pim
