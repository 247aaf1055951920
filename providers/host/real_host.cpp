#include "providers/host/real_host.h"
#include "providers/host/account_files.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <random>
#include <sstream>
#include "providers/core/paths.h"
#include "providers/core/text_fields.h"
#include "providers/host/subprocess.h"

namespace pim {
namespace {

std::string errnoText(int err) { return std::strerror(err); }

/// Owns a file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = o.fd_;
      o.fd_ = -1;
    }
    return *this;
  }
  ~Fd() { reset(); }
  int get() const { return fd_; }
  /// Gives up ownership without closing.
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  bool valid() const { return fd_ >= 0; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

Status ioError(const std::string& op, const std::string& path, int err) {
  return Status::error(ErrorCode::kIo, op + " " + path + ": " + errnoText(err), path);
}

Status unsafe(const std::string& op, const std::string& path, const std::string& why) {
  return Status::error(ErrorCode::kUnsafe, op + " " + path + ": " + why, path);
}

/// Splits "/a/b/c" into {"a","b","c"}; rejects relative paths, ".." and "." components.
Result<std::vector<std::string>> splitPath(const std::string& path) {
  if (path.empty() || path[0] != '/') {
    return Status::error(ErrorCode::kInvalid, "path " + path + ": not absolute", path);
  }
  std::vector<std::string> parts;
  std::stringstream ss(path);
  std::string part;
  while (std::getline(ss, part, '/')) {
    if (part.empty()) continue;
    if (part == "." || part == "..") {
      return Status::error(ErrorCode::kInvalid, "path " + path + ": '.' or '..' component", path);
    }
    parts.push_back(part);
  }
  return parts;
}

FileInfo toInfo(const struct stat& st) {
  FileInfo info;
  if (S_ISREG(st.st_mode)) {
    info.type = FileType::kRegular;
  } else if (S_ISDIR(st.st_mode)) {
    info.type = FileType::kDirectory;
  } else if (S_ISLNK(st.st_mode)) {
    info.type = FileType::kSymlink;
  } else {
    info.type = FileType::kOther;
  }
  info.mode = st.st_mode & 07777;
  info.uid = st.st_uid;
  info.gid = st.st_gid;
  info.nlink = st.st_nlink;
  info.size = st.st_size;
  info.mtimeNs = int64_t(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
  info.device = uint64_t(st.st_dev);
  info.inode = uint64_t(st.st_ino);
  return info;
}

/// An opened parent directory and the last component of a path.
struct Parent {
  Fd dir;
  std::string leaf;  // empty for "/"
};

/// Opens the root prefix itself. The prefix is the operator's choice and may be reached through
/// symlinks; everything below it is walked without following any.
Result<Fd> openRoot(const std::string& root) {
  const std::string p = root.empty() ? "/" : root;
  int fd = ::open(p.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ioError("open root", p, errno);
  return Fd(fd);
}

#ifndef SYS_openat2
#define SYS_openat2 437  // the same number on every architecture (Linux 5.6)
#endif

/// Opens the directory `parts[0..count)` below `fd` in one openat2 call that refuses every
/// symbolic link on the way (RESOLVE_NO_SYMLINKS) and any escape from `fd` (RESOLVE_BENEATH):
/// the same guarantee as one O_NOFOLLOW openat per component, in one system call instead of
/// `count`. -1 when it fails for any reason (the caller then walks component by component, which
/// also names the offending component); kernels before 5.6 are remembered and not asked again.
int openBeneath(int fd, const std::vector<std::string>& parts, size_t count) {
  static std::atomic<bool> unsupported{false};
  if (count < 2 || unsupported.load(std::memory_order_relaxed)) return -1;
  std::string relative;
  for (size_t i = 0; i < count; ++i) {
    if (i > 0) relative += '/';
    relative += parts[i];
  }
  struct open_how how {};
  how.flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
  how.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_BENEATH;
  long r = ::syscall(SYS_openat2, fd, relative.c_str(), &how, sizeof how);
  if (r >= 0) return static_cast<int>(r);
  if (errno == ENOSYS || errno == EPERM) unsupported.store(true, std::memory_order_relaxed);  // EPERM: seccomp
  return -1;
}

/// Walks every directory of `parts` from `from` (borrowed, not closed) with O_NOFOLLOW and returns
/// an fd of its own on the last one (a duplicate of `from` when `count` is 0). ENOENT is returned
/// as kNotFound.
Result<Fd> walk(int from, const std::vector<std::string>& parts, size_t count, const std::string& path) {
  if (count == 0) {
    int dup = ::fcntl(from, F_DUPFD_CLOEXEC, 0);
    if (dup < 0) return ioError("open", path, errno);
    return Fd(dup);
  }
  int whole = openBeneath(from, parts, count);
  if (whole >= 0) return Fd(whole);
  Fd fd;
  for (size_t i = 0; i < count; ++i) {
    const int at = i == 0 ? from : fd.get();
    int next = ::openat(at, parts[i].c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (next < 0) {
      int err = errno;
      if (err == ENOENT) return Status::error(ErrorCode::kNotFound, "open " + path + ": " + errnoText(err), path);
      if (err == ELOOP || err == ENOTDIR) {
        struct stat st;
        if (::fstatat(at, parts[i].c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) {
          return unsafe("open", path, "refusing to follow symbolic link at component '" + parts[i] + "'");
        }
        return unsafe("open", path, "component '" + parts[i] + "' is not a directory");
      }
      return ioError("open", path, err);
    }
    fd = Fd(next);
  }
  return fd;
}

/// `rootFd` is borrowed (RealHost keeps it open).
Result<Parent> openParent(Result<int> rootFd, const std::string& path) {
  if (!rootFd) return rootFd.status();
  auto parts = splitPath(path);
  if (!parts) return parts.status();
  Parent parent;
  if (parts->empty()) {
    auto dir = walk(*rootFd, *parts, 0, path);
    if (!dir) return dir.status();
    parent.dir = std::move(*dir);
    return parent;
  }
  auto dir = walk(*rootFd, *parts, parts->size() - 1, path);
  if (!dir) return dir.status();
  parent.dir = std::move(*dir);
  parent.leaf = parts->back();
  return parent;
}

Status writeAll(int fd, std::string_view data, const std::string& path) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ioError("write", path, errno);
    }
    off += size_t(n);
  }
  return Status::ok();
}

std::string randomSuffix() {
  static thread_local std::mt19937_64 rng(std::random_device{}() ^
                                          uint64_t(std::chrono::steady_clock::now().time_since_epoch().count()) ^
                                          uint64_t(::getpid()));
  static const char kChars[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::string s;
  for (int i = 0; i < 10; ++i) s += kChars[rng() % (sizeof(kChars) - 1)];
  return s;
}

// mountinfo escapes space, tab, newline and backslash as \ooo (three octal digits).
std::string unescapeMountPath(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      const char a = s[i + 1], b = s[i + 2], c = s[i + 3];
      if (a >= '0' && a <= '3' && b >= '0' && b <= '7' && c >= '0' && c <= '7') {
        out += char((a - '0') * 64 + (b - '0') * 8 + (c - '0'));
        i += 3;
        continue;
      }
    }
    out += s[i];
  }
  return out;
}

}  // namespace

RealHost::RealHost(std::string root, Logger log) : root_(std::move(root)), log_(std::move(log)) {
  while (root_.size() > 1 && root_.back() == '/') root_.pop_back();
  if (root_ == "/") root_.clear();
}

RealHost::~RealHost() {
  if (rootFd_ >= 0) ::close(rootFd_);
}

// The root prefix, opened once (on first use, so that it may be created after the RealHost):
// every path below it is then one openat2 from this fd instead of an open of the prefix too.
Result<int> RealHost::rootFd() {
  std::lock_guard<std::mutex> lock(rootMutex_);
  if (rootFd_ < 0) {
    auto fd = openRoot(root_);
    if (!fd) return fd.status();
    rootFd_ = fd->release();
  }
  return rootFd_;
}

std::string RealHost::realPath(const std::string& hostPath) const {
  if (root_.empty()) return hostPath;
  if (hostPath == "/") return root_;
  return root_ + hostPath;
}

Result<FileInfo> RealHost::lstat(const std::string& path) {
  noteRead(parentOf(path), baseName(path));
  auto parent = openParent(rootFd(), path);
  if (!parent) {
    if (parent.status().code() == ErrorCode::kNotFound) return FileInfo{};
    return parent.status();
  }
  struct stat st;
  if (parent->leaf.empty()) {
    if (::fstat(parent->dir.get(), &st) != 0) return ioError("stat", path, errno);
    return toInfo(st);
  }
  if (::fstatat(parent->dir.get(), parent->leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return FileInfo{};
    return ioError("stat", path, errno);
  }
  return toInfo(st);
}

Result<std::string> RealHost::readLink(const std::string& path) {
  noteRead(parentOf(path), baseName(path));
  auto parent = openParent(rootFd(), path);
  if (!parent) return parent.status();
  if (parent->leaf.empty()) return Status::error(ErrorCode::kInvalid, "readlink /: not a symbolic link", path);
  std::string target(4096, '\0');
  const ssize_t n = ::readlinkat(parent->dir.get(), parent->leaf.c_str(), target.data(), target.size());
  if (n < 0) {
    if (errno == ENOENT) return Status::error(ErrorCode::kNotFound, "readlink " + path + ": " + errnoText(errno), path);
    if (errno == EINVAL) return Status::error(ErrorCode::kInvalid, "readlink " + path + ": not a symbolic link", path);
    return ioError("readlink", path, errno);
  }
  if (size_t(n) >= target.size()) return ioError("readlink", path, ENAMETOOLONG);
  target.resize(size_t(n));
  return target;
}

void RealHost::keepReads(bool on) {
  std::lock_guard<std::mutex> lock(readsMutex_);
  keepReads_ = on;
  reads_.clear();
  if (on) readSet_ = ReadSet{};
}

RealHost::ReadSet RealHost::readSet() const {
  std::lock_guard<std::mutex> lock(readsMutex_);
  return readSet_;
}

void RealHost::noteRead(const std::string& directory, const std::string& name, bool mounts) {
  std::lock_guard<std::mutex> lock(readsMutex_);
  if (!keepReads_) return;
  if (!directory.empty()) readSet_.directories[directory].insert(name);
  if (mounts) readSet_.mounts = true;
}

void RealHost::forgetReads() {
  std::lock_guard<std::mutex> lock(readsMutex_);
  reads_.clear();
}

Result<std::string> RealHost::readFile(const std::string& path, size_t maxBytes) {
  noteRead(parentOf(path), baseName(path));
  {
    std::lock_guard<std::mutex> lock(readsMutex_);
    if (keepReads_) {
      auto it = reads_.find(path);
      if (it != reads_.end() && it->second.size() <= maxBytes) return it->second;
    }
  }
  auto data = readFileNow(path, maxBytes);
  if (data) {
    std::lock_guard<std::mutex> lock(readsMutex_);
    if (keepReads_) reads_[path] = *data;
  }
  return data;
}

Result<std::string> RealHost::readFileNow(const std::string& path, size_t maxBytes) {
  auto parent = openParent(rootFd(), path);
  if (!parent) return parent.status();
  if (parent->leaf.empty()) return unsafe("read", path, "is a directory");
  int raw =
      ::openat(parent->dir.get(), parent->leaf.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (raw < 0) {
    int err = errno;
    if (err == ELOOP) return unsafe("read", path, "refusing to follow a symbolic link");
    if (err == ENOENT) return Status::error(ErrorCode::kNotFound, "read " + path + ": " + errnoText(err), path);
    return ioError("read", path, err);
  }
  Fd fd(raw);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ioError("stat", path, errno);
  if (!S_ISREG(st.st_mode)) return unsafe("read", path, "not a regular file");
  std::string data;
  char buf[65536];
  while (true) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ioError("read", path, errno);
    }
    if (n == 0) break;
    data.append(buf, size_t(n));
    if (data.size() > maxBytes) {
      return Status::error(ErrorCode::kInvalid, "read " + path + ": larger than " + std::to_string(maxBytes) + " bytes",
                           path);
    }
  }
  return data;
}

Status RealHost::writeFileAtomic(const std::string& path, std::string_view data, const Ownership& own) {
  forgetReads();
  auto parent = openParent(rootFd(), path);
  if (!parent) return parent.status();
  if (parent->leaf.empty()) return unsafe("write", path, "is a directory");
  const int dir = parent->dir.get();
  struct stat st;
  if (::fstatat(dir, parent->leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
    if (S_ISLNK(st.st_mode)) return unsafe("write", path, "refusing to replace a symbolic link");
    if (!S_ISREG(st.st_mode)) return unsafe("write", path, "not a regular file");
  } else if (errno != ENOENT) {
    return ioError("stat", path, errno);
  }
  std::string tmp;
  Fd fd;
  for (int attempt = 0; attempt < 16 && !fd.valid(); ++attempt) {
    tmp = "." + parent->leaf.substr(0, 200) + ".pim-" + randomSuffix();
    int raw = ::openat(dir, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (raw >= 0) {
      fd = Fd(raw);
    } else if (errno != EEXIST) {
      return ioError("create temporary file for", path, errno);
    }
  }
  if (!fd.valid()) return ioError("create temporary file for", path, EEXIST);
  auto fail = [&](Status s) {
    ::unlinkat(dir, tmp.c_str(), 0);
    return s;
  };
  Status w = writeAll(fd.get(), data, path);
  if (!w) return fail(w);
  if (::fchown(fd.get(), own.uid, own.gid) != 0) return fail(ioError("chown", path, errno));
  if (::fchmod(fd.get(), own.mode) != 0) return fail(ioError("chmod", path, errno));
  if (::fsync(fd.get()) != 0) return fail(ioError("fsync", path, errno));
  fd.reset();
  if (::renameat(dir, tmp.c_str(), dir, parent->leaf.c_str()) != 0) return fail(ioError("rename over", path, errno));
  ::fsync(dir);
  return Status::ok();
}

Status RealHost::makeDirectory(const std::string& path, const Ownership& own) {
  forgetReads();
  auto parent = openParent(rootFd(), path);
  if (!parent) return parent.status();
  if (parent->leaf.empty()) return Status::ok();
  const int dir = parent->dir.get();
  const char* leaf = parent->leaf.c_str();
  if (::mkdirat(dir, leaf, 0700) != 0) {
    if (errno != EEXIST) return ioError("mkdir", path, errno);
    struct stat st;
    if (::fstatat(dir, leaf, &st, AT_SYMLINK_NOFOLLOW) != 0) return ioError("stat", path, errno);
    if (S_ISLNK(st.st_mode)) return unsafe("mkdir", path, "a symbolic link is in the way");
    if (!S_ISDIR(st.st_mode)) return unsafe("mkdir", path, "a non-directory is in the way");
    return Status::ok();
  }
  int raw = ::openat(dir, leaf, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (raw < 0) return ioError("open", path, errno);
  Fd fd(raw);
  if (::fchown(fd.get(), own.uid, own.gid) != 0) return ioError("chown", path, errno);
  if (::fchmod(fd.get(), own.mode) != 0) return ioError("chmod", path, errno);
  return Status::ok();
}

Status RealHost::makeDirectories(const std::string& path, const Ownership& own) {
  forgetReads();
  auto parts = splitPath(path);
  if (!parts) return parts.status();
  std::string cur;
  for (const auto& part : *parts) {
    cur += "/" + part;
    Status s = makeDirectory(cur, own);
    if (!s) return s;
  }
  return Status::ok();
}

Status RealHost::setMode(const std::string& path, mode_t mode) {
  forgetReads();
  auto parent = openParent(rootFd(), path);
  if (!parent) return parent.status();
  if (parent->leaf.empty()) {
    if (::fchmod(parent->dir.get(), mode) != 0) return ioError("chmod", path, errno);
    return Status::ok();
  }
  // glibc implements AT_SYMLINK_NOFOLLOW through an O_PATH descriptor: a symlink swapped in
  // after any check is refused (EOPNOTSUPP) instead of followed.
  if (::fchmodat(parent->dir.get(), parent->leaf.c_str(), mode, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == EOPNOTSUPP) return unsafe("chmod", path, "refusing to change a symbolic link");
    return ioError("chmod", path, errno);
  }
  return Status::ok();
}

Status RealHost::setOwner(const std::string& path, uid_t uid, gid_t gid) {
  forgetReads();
  auto parent = openParent(rootFd(), path);
  if (!parent) return parent.status();
  if (parent->leaf.empty()) {
    if (::fchown(parent->dir.get(), uid, gid) != 0) return ioError("chown", path, errno);
    return Status::ok();
  }
  struct stat st;
  if (::fstatat(parent->dir.get(), parent->leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
    return ioError("stat", path, errno);
  if (S_ISLNK(st.st_mode)) return unsafe("chown", path, "refusing to change a symbolic link");
  if (::fchownat(parent->dir.get(), parent->leaf.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW) != 0) {
    return ioError("chown", path, errno);
  }
  return Status::ok();
}

Status RealHost::removeFile(const std::string& path) {
  forgetReads();
  auto parent = openParent(rootFd(), path);
  if (!parent) return parent.status().code() == ErrorCode::kNotFound ? Status::ok() : parent.status();
  if (parent->leaf.empty()) return unsafe("remove", path, "is the root");
  if (::unlinkat(parent->dir.get(), parent->leaf.c_str(), 0) != 0 && errno != ENOENT)
    return ioError("remove", path, errno);
  return Status::ok();
}

Status RealHost::removeDirectory(const std::string& path) {
  forgetReads();
  auto parent = openParent(rootFd(), path);
  if (!parent) return parent.status().code() == ErrorCode::kNotFound ? Status::ok() : parent.status();
  if (parent->leaf.empty()) return unsafe("rmdir", path, "is the root");
  if (::unlinkat(parent->dir.get(), parent->leaf.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
    return ioError("rmdir", path, errno);
  }
  return Status::ok();
}

Result<std::vector<std::string>> RealHost::listDirectory(const std::string& path) {
  noteRead(path, std::string());
  auto parent = openParent(rootFd(), path);
  if (!parent) return parent.status();
  Fd dirFd;
  if (parent->leaf.empty()) {
    dirFd = std::move(parent->dir);
  } else {
    int raw = ::openat(parent->dir.get(), parent->leaf.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (raw < 0) {
      if (errno == ELOOP) return unsafe("list", path, "refusing to follow a symbolic link");
      if (errno == ENOENT) return Status::error(ErrorCode::kNotFound, "list " + path + ": " + errnoText(errno), path);
      return ioError("list", path, errno);
    }
    dirFd = Fd(raw);
  }
  DIR* d = ::fdopendir(dirFd.get());
  if (d == nullptr) return ioError("list", path, errno);
  dirFd.release();  // closedir() closes it from here on
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

Result<std::optional<UserInfo>> RealHost::findUser(const std::string& name) {
  auto text = readFile("/etc/passwd", 64 << 20);
  if (!text) {
    if (text.status().code() == ErrorCode::kNotFound) return std::optional<UserInfo>();
    return text.status();
  }
  return findPasswdEntry(*text, name);
}

Result<std::optional<GroupInfo>> RealHost::findGroup(const std::string& name) {
  auto text = readFile("/etc/group", 64 << 20);
  if (!text) {
    if (text.status().code() == ErrorCode::kNotFound) return std::optional<GroupInfo>();
    return text.status();
  }
  return findGroupEntry(*text, name);
}

std::vector<MountInfo> RealHost::parseMountInfo(const std::string& text, const std::string& root) {
  std::vector<MountInfo> mounts;
  std::stringstream ss(text);
  std::string line;
  while (std::getline(ss, line)) {
    auto f = splitFields(line, ' ');
    if (f.size() < 5) continue;
    std::string target = unescapeMountPath(f[4]);
    std::string hostPath;
    if (root.empty()) {
      hostPath = target;
    } else if (target == root) {
      hostPath = "/";
    } else if (target.size() > root.size() && target.compare(0, root.size(), root) == 0 && target[root.size()] == '/') {
      hostPath = target.substr(root.size());
    } else {
      continue;
    }
    MountInfo m;
    m.target = hostPath;
    m.root = unescapeMountPath(f[3]);
    auto colon = f[2].find(':');
    if (colon != std::string::npos) {
      unsigned long major = std::strtoul(f[2].substr(0, colon).c_str(), nullptr, 10);
      unsigned long minor = std::strtoul(f[2].substr(colon + 1).c_str(), nullptr, 10);
      m.device = makedev(major, minor);
    }
    mounts.push_back(m);
  }
  return mounts;
}

Result<std::vector<MountInfo>> RealHost::listMounts() {
  noteRead(std::string(), std::string(), true);
  int raw = ::open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
  if (raw < 0) return ioError("read", "/proc/self/mountinfo", errno);
  Fd fd(raw);
  std::string text;
  char buf[65536];
  ssize_t n;
  while ((n = ::read(fd.get(), buf, sizeof buf)) > 0) text.append(buf, size_t(n));
  if (n < 0) return ioError("read", "/proc/self/mountinfo", errno);
  return parseMountInfo(text, root_);
}

namespace {

/// Opens a directory below the root as O_PATH without following symlinks, for mount(2) through
/// /proc/self/fd, so that nothing can be swapped in between the check and the mount.
Result<Fd> openDirectoryPath(Result<int> rootFd, const std::string& path) {
  auto parent = openParent(std::move(rootFd), path);
  if (!parent) return parent.status();
  if (parent->leaf.empty()) return std::move(parent->dir);
  int raw = ::openat(parent->dir.get(), parent->leaf.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (raw < 0) {
    if (errno == ELOOP || errno == ENOTDIR) return unsafe("mount", path, "not a directory (or a symbolic link)");
    return ioError("open", path, errno);
  }
  return Fd(raw);
}

}  // namespace

Status RealHost::bindMount(const std::string& source, const std::string& target) {
  forgetReads();
  auto src = openDirectoryPath(rootFd(), source);
  if (!src) return src.status();
  auto dst = openDirectoryPath(rootFd(), target);
  if (!dst) return dst.status();
  const std::string srcProc = "/proc/self/fd/" + std::to_string(src->get());
  const std::string dstProc = "/proc/self/fd/" + std::to_string(dst->get());
  if (::mount(srcProc.c_str(), dstProc.c_str(), nullptr, MS_BIND, nullptr) != 0) {
    return ioError("bind mount " + source + " on", target, errno);
  }
  // No set-uid programs or device nodes through the chroot view of the tree.
  const std::string real = realPath(target);
  if (::mount(nullptr, real.c_str(), nullptr, MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV, nullptr) != 0) {
    log_->warn("remount {} nosuid,nodev: {}", target, errnoText(errno));
  }
  return Status::ok();
}

Status RealHost::unmount(const std::string& target, bool lazy) {
  forgetReads();
  const std::string real = realPath(target);
  int flags = UMOUNT_NOFOLLOW | (lazy ? MNT_DETACH : 0);
  if (::umount2(real.c_str(), flags) != 0) {
    if (errno == EBUSY) {
      return Status::error(ErrorCode::kIo, "unmount " + target + ": " + errnoText(EBUSY), target);
    }
    if (errno == EINVAL) return Status::ok();  // not a mount point (any more)
    return ioError("unmount", target, errno);
  }
  return Status::ok();
}

void RealHost::abortCommands() {
  aborted_.store(true);
  const pid_t pid = runningChild_.load();
  if (pid > 0) ::kill(-pid, SIGKILL);
}

Result<CommandResult> RealHost::run(const std::vector<std::string>& argv, std::string_view input) {
  forgetReads();
  if (argv.empty()) return Status::error(ErrorCode::kInvalid, "run: empty command");
  if (aborted_.load()) return Status::error(ErrorCode::kCommand, "run " + argv[0] + ": the agent is stopping");
  SpawnOptions options;
  options.in = Redirect::pipe();
  options.env = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"};
  options.group = SpawnOptions::Group::kOwnGroup;  // abortCommands() kills it with what it started
  auto spawned = Subprocess::spawn(argv, options);
  if (!spawned) return spawned.status();
  Subprocess child = std::move(*spawned);
  runningChild_.store(child.pid());
  // abortCommands() may have run between the check above and the store: it saw no pid to kill.
  if (aborted_.load()) child.kill(SIGKILL);
  Subprocess::Output output =
      child.communicate(input, std::chrono::steady_clock::now() + std::chrono::minutes(5), size_t{16} << 20);
  if (output.timedOut) child.kill(SIGKILL);
  CommandResult result;
  result.exitCode = child.wait();
  runningChild_.store(-1);
  result.out = std::move(output.out);
  result.err = std::move(output.err);
  if (result.exitCode == 127 && result.out.empty() && result.err.empty()) {
    result.err = "cannot execute " + argv[0];
  }
  return result;
}

Result<bool> RealHost::sshAnswers(const std::string& address, int port, std::chrono::milliseconds timeout) {
  if (port <= 0 || port > 65535) {
    return Status::error(ErrorCode::kInvalid, "probe sshd: port " + std::to_string(port) + " out of range");
  }
  sockaddr_storage sa{};
  socklen_t saLen = 0;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&sa);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&sa);
  if (::inet_pton(AF_INET, address.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(uint16_t(port));
    saLen = sizeof *v4;
  } else if (::inet_pton(AF_INET6, address.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(uint16_t(port));
    saLen = sizeof *v6;
  } else {
    return Status::error(ErrorCode::kInvalid, "probe sshd: '" + address + "' is not an IP address");
  }
  const std::string where = address.find(':') == std::string::npos ? address + ":" + std::to_string(port)
                                                                   : "[" + address + "]:" + std::to_string(port);
  Fd sock(::socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!sock.valid()) return ioError("socket for", where, errno);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  // Waits for `events` until the deadline; false on time-out.
  auto waitFor = [&](short events) -> bool {
    for (;;) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd p{sock.get(), events, 0};
      const int r = ::poll(&p, 1, int(left.count()));
      if (r > 0) return true;
      if (r < 0 && errno != EINTR) return false;
    }
  };
  if (::connect(sock.get(), reinterpret_cast<sockaddr*>(&sa), saLen) != 0) {
    if (errno != EINPROGRESS) return false;  // refused, unreachable: nothing answers there
    if (!waitFor(POLLOUT)) return false;
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(sock.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) return false;
  }
  // The server speaks first: "SSH-2.0-OpenSSH_9.2p1 ...\r\n". A stopped or hung sshd has its
  // connection accepted by the kernel but never sends it.
  std::string banner;
  while (banner.size() < 4) {
    if (!waitFor(POLLIN)) return false;
    char buf[64];
    const ssize_t n = ::recv(sock.get(), buf, sizeof buf, 0);
    if (n > 0) {
      banner.append(buf, size_t(n));
    } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
      return false;
    }
  }
  return banner.compare(0, 4, "SSH-") == 0;
}

}  // namespace pim
