#include "agent/daemon/log_source.h"

#include <fcntl.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace pim {
namespace {

constexpr size_t kMaxLine = 8192;
constexpr size_t kMaxChunk = 1 << 20;

Status ioError(const std::string& what, int err) {
  return Status::error(ErrorCode::kIo, what + ": " + std::strerror(err < 0 ? -err : err));
}

class JournalSource : public LogSource {
 public:
  ~JournalSource() override {
    if (journal_ != nullptr) sd_journal_close(journal_);
  }

  Status open(const std::string& cursor, int64_t since) {
    int r = sd_journal_open(&journal_, SD_JOURNAL_LOCAL_ONLY | SD_JOURNAL_SYSTEM);
    if (r < 0) return ioError("open the journal", r);
    // sshd up to 9.7 logs as "sshd"; 9.8 and later as "sshd-session" for authentications. Any
    // local user can log with that identifier (logger -t sshd): only root's messages count
    // (_UID is set by journald, not by the sender; sshd's unprivileged child logs through its
    // root monitor). Matches of one field are ORed, of different fields ANDed.
    if ((r = sd_journal_add_match(journal_, "SYSLOG_IDENTIFIER=sshd", 0)) < 0 ||
        (r = sd_journal_add_match(journal_, "SYSLOG_IDENTIFIER=sshd-session", 0)) < 0 ||
        (r = sd_journal_add_match(journal_, "_UID=0", 0)) < 0) {
      return ioError("filter the journal", r);
    }
    bool positioned = false;
    if (!cursor.empty() && sd_journal_seek_cursor(journal_, cursor.c_str()) >= 0) {
      positioned = true;
      // The entry at the cursor was read before; when it is gone (vacuumed), the one the seek
      // landed on was not, and is read again.
      if (sd_journal_next(journal_) > 0 && sd_journal_test_cursor(journal_, cursor.c_str()) <= 0) {
        sd_journal_previous(journal_);
      }
    }
    if (!positioned) {
      r = sd_journal_seek_realtime_usec(journal_, uint64_t(std::max<int64_t>(since, 0)) * 1000000u);
      if (r < 0) return ioError("seek in the journal", r);
    }
    fd_ = sd_journal_get_fd(journal_);
    if (fd_ < 0) return ioError("watch the journal", fd_);
    cursor_ = cursor;
    return Status::ok();
  }

  int fd() const override { return fd_; }

  Result<std::vector<LogMessage>> read(size_t max) override {
    sd_journal_process(journal_);
    std::vector<LogMessage> out;
    while (out.size() < max) {
      int r = sd_journal_next(journal_);
      if (r < 0) return ioError("read the journal", r);
      if (r == 0) break;
      const void* data = nullptr;
      size_t len = 0;
      if (sd_journal_get_data(journal_, "MESSAGE", &data, &len) < 0) continue;
      LogMessage m;
      const char* text = static_cast<const char*>(data);
      m.text.assign(text + 8, std::min(len - 8, kMaxLine));  // "MESSAGE="
      uint64_t usec = 0;
      if (sd_journal_get_realtime_usec(journal_, &usec) >= 0) m.time = int64_t(usec / 1000000u);
      char* c = nullptr;
      if (sd_journal_get_cursor(journal_, &c) >= 0 && c != nullptr) {
        cursor_ = c;
        free(c);
      }
      out.push_back(std::move(m));
    }
    return out;
  }

  std::string cursor() const override { return cursor_; }
  std::string describe() const override { return "the journal (SYSLOG_IDENTIFIER=sshd, sshd-session; _UID=0)"; }

 private:
  sd_journal* journal_ = nullptr;
  int fd_ = -1;
  std::string cursor_;
};

class FileSource : public LogSource {
 public:
  FileSource(std::string path, const Clock& clock) : path_(std::move(path)), clock_(clock) {}
  ~FileSource() override {
    if (file_ >= 0) ::close(file_);
    if (inotify_ >= 0) ::close(inotify_);
  }

  Status open(const std::string& cursor) {
    inotify_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (inotify_ < 0) return ioError("inotify for " + path_, errno);
    // The directory: a file created, replaced (rotation) or written.
    const std::string dir = path_.substr(0, path_.rfind('/') == 0 ? 1 : path_.rfind('/'));
    if (::inotify_add_watch(inotify_, dir.c_str(), IN_MODIFY | IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE) < 0) {
      return ioError("watch " + dir, errno);
    }
    reopen();
    struct stat st {};
    if (file_ >= 0 && ::fstat(file_, &st) == 0) {
      unsigned long long inode = 0, offset = 0;
      if (std::sscanf(cursor.c_str(), "file:%llu:%llu", &inode, &offset) == 2 && inode == st.st_ino &&
          off_t(offset) <= st.st_size) {
        offset_ = off_t(offset);
      } else {
        offset_ = st.st_size;  // no usable cursor: what is there was logged before
      }
    }
    return Status::ok();
  }

  int fd() const override { return inotify_; }

  Result<std::vector<LogMessage>> read(size_t max) override {
    char events[4096];
    while (::read(inotify_, events, sizeof events) > 0) {
    }
    struct stat byName {
    }, opened{};
    const bool named = ::stat(path_.c_str(), &byName) == 0;
    if (file_ < 0 || (named && ::fstat(file_, &opened) == 0 && opened.st_ino != byName.st_ino)) {
      // Rotated (or created since): the new file from its start.
      reopen();
      offset_ = 0;
      partial_.clear();
    }
    std::vector<LogMessage> out;
    if (file_ < 0) return out;
    if (::fstat(file_, &opened) == 0 && opened.st_size < offset_) {
      offset_ = 0;  // truncated
      partial_.clear();
    }
    const int64_t now = clock_.nowSeconds();
    std::string chunk(64 * 1024, '\0');
    size_t total = 0;
    while (out.size() < max && total < kMaxChunk) {
      const ssize_t n = ::pread(file_, chunk.data(), chunk.size(), offset_);
      if (n < 0) return ioError("read " + path_, errno);
      if (n == 0) break;
      offset_ += n;
      total += size_t(n);
      partial_.append(chunk.data(), size_t(n));
      size_t start = 0;
      for (size_t nl; (nl = partial_.find('\n', start)) != std::string::npos; start = nl + 1) {
        std::string line = partial_.substr(start, std::min(nl - start, kMaxLine));
        if (!line.empty() && line.back() == '\r') line.pop_back();
        out.push_back(LogMessage{now, std::move(line)});
      }
      partial_.erase(0, start);
      if (partial_.size() > kMaxLine) partial_.clear();  // a line without end: dropped
    }
    return out;
  }

  std::string cursor() const override {
    struct stat st {};
    if (file_ < 0 || ::fstat(file_, &st) != 0) return {};
    return "file:" + std::to_string(st.st_ino) + ":" + std::to_string(offset_ - off_t(partial_.size()));
  }
  std::string describe() const override { return path_; }

 private:
  void reopen() {
    if (file_ >= 0) ::close(file_);
    file_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  }

  std::string path_;
  const Clock& clock_;
  int inotify_ = -1;
  int file_ = -1;
  off_t offset_ = 0;
  std::string partial_;
};

}  // namespace

Result<std::unique_ptr<LogSource>> openJournalSource(const std::string& cursor, int64_t sinceUnixSeconds) {
  auto s = std::make_unique<JournalSource>();
  if (Status st = s->open(cursor, sinceUnixSeconds); !st) return st;
  return std::unique_ptr<LogSource>(std::move(s));
}

Result<std::unique_ptr<LogSource>> openFileSource(const std::string& path, const std::string& cursor,
                                                  const Clock& clock) {
  auto s = std::make_unique<FileSource>(path, clock);
  if (Status st = s->open(cursor); !st) return st;
  return std::unique_ptr<LogSource>(std::move(s));
}

}  // namespace pim
