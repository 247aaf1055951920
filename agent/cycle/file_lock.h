#pragma once
// An advisory lock (flock) on a file, so that two processes never reconcile at once: the daemon
// holds the daemon lock for its lifetime and every cycle (daemon, `once`, `rollback`) holds the
// cycle lock while it changes the host.

#include <atomic>
#include <string>

#include "providers/core/result.h"

namespace pim {

class FileLock {
 public:
  FileLock() = default;
  FileLock(FileLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  FileLock& operator=(FileLock&& other) noexcept;
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;
  ~FileLock();

  /// Takes an exclusive lock on `realPath` (created 0600 if missing, never through a symlink),
  /// waiting up to `waitMs` milliseconds (0: do not wait), checking every 20 ms. `abandon`
  /// (optional) ends the wait early when it becomes true (a daemon that stops).
  /// Errors: kUnsafe (symlink), kIo, and kInvalid "held by another process" when the wait ran
  /// out or was abandoned.
  static Result<FileLock> acquire(const std::string& realPath, int waitMs, const std::atomic<bool>* abandon = nullptr);
  /// Whether this object holds a lock.
  bool held() const { return fd_ >= 0; }
  /// Drops the lock (closes the file); idempotent.
  void release();

 private:
  explicit FileLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

}  // namespace pim
