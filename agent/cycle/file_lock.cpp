#include "agent/cycle/file_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

namespace pim {

FileLock& FileLock::operator=(FileLock&& other) noexcept {
  if (this != &other) {
    release();
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

FileLock::~FileLock() { release(); }

void FileLock::release() {
  if (fd_ >= 0) ::close(fd_);  // closing drops the flock
  fd_ = -1;
}

Result<FileLock> FileLock::acquire(const std::string& realPath, int waitMs, const std::atomic<bool>* abandon) {
  int fd = ::open(realPath.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    int err = errno;
    if (err == ELOOP)
      return Status::error(ErrorCode::kUnsafe, "lock " + realPath + ": refusing a symbolic link", realPath);
    return Status::error(ErrorCode::kIo, "lock " + realPath + ": " + std::strerror(err), realPath);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(waitMs);
  while (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK && errno != EINTR) {
      int err = errno;
      ::close(fd);
      return Status::error(ErrorCode::kIo, "lock " + realPath + ": " + std::strerror(err), realPath);
    }
    if (std::chrono::steady_clock::now() >= deadline || (abandon != nullptr && abandon->load())) {
      ::close(fd);
      return Status::error(ErrorCode::kInvalid, "lock " + realPath + ": held by another process", realPath);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return FileLock(fd);
}

}  // namespace pim
