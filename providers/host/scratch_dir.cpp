#include "providers/host/scratch_dir.h"

#include <fcntl.h>
#include <ftw.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace pim {
namespace {

std::string errnoText(int err) { return std::strerror(err); }

// nftw gives no user pointer; the first failure is kept here per call (one thread at a time
// may remove a tree: callers are the reconcile loop and tests).
thread_local std::string tFirstFailure;

int removeEntry(const char* path, const struct stat*, int typeflag, struct FTW*) {
  int rc = (typeflag == FTW_DP) ? ::rmdir(path) : ::unlink(path);
  if (rc != 0 && errno != ENOENT && tFirstFailure.empty()) {
    tFirstFailure = std::string("remove ") + path + ": " + errnoText(errno);
  }
  return 0;  // keep going: remove as much as possible
}

}  // namespace

ScratchDir::ScratchDir(const std::string& prefix, const std::string& parent) {
  std::string templ = parent + "/" + prefix + "XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) {
    status_ = Status::error(ErrorCode::kIo, "mkdtemp " + templ + ": " + errnoText(errno), templ);
    return;
  }
  path_ = buf.data();
}

ScratchDir::~ScratchDir() {
  if (!path_.empty()) (void)removeTree(path_);
}

Status ScratchDir::writeFile(const std::string& name, std::string_view data) const {
  if (!valid()) return status_;
  const std::string p = file(name);
  int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return Status::error(ErrorCode::kIo, "create " + p + ": " + errnoText(errno), p);
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      return Status::error(ErrorCode::kIo, "write " + p + ": " + errnoText(err), p);
    }
    done += size_t(n);
  }
  if (::close(fd) != 0) return Status::error(ErrorCode::kIo, "close " + p + ": " + errnoText(errno), p);
  return Status::ok();
}

Status removeTree(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return Status::ok();
    return Status::error(ErrorCode::kIo, "lstat " + path + ": " + errnoText(errno), path);
  }
  tFirstFailure.clear();
  if (::nftw(path.c_str(), removeEntry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) != 0 && tFirstFailure.empty()) {
    tFirstFailure = "walk " + path + ": " + errnoText(errno);
  }
  if (!tFirstFailure.empty()) {
    std::string msg;
    msg.swap(tFirstFailure);
    return Status::error(ErrorCode::kIo, msg, path);
  }
  return Status::ok();
}

}  // namespace pim
