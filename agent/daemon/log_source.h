#pragma once
// Where the defender (agent/daemon/defender.h) reads sshd's messages: the systemd journal
// (libsystemd's sd-journal: the messages with SYSLOG_IDENTIFIER sshd or sshd-session), or a log
// file (sshd -E FILE, syslog's auth.log) read from its end. Each is a file descriptor the
// daemon's loop polls (an idle host costs nothing) and a read() of what came since.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "providers/core/clock.h"
#include "providers/core/result.h"

namespace pim {

/// One message of sshd, and when it was logged (Unix seconds).
struct LogMessage {
  int64_t time = 0;
  std::string text;
};

class LogSource {
 public:
  virtual ~LogSource() = default;
  /// Readable when new messages may have come (poll for POLLIN).
  virtual int fd() const = 0;
  /// The messages since the last read (at most `max`; call again while it returns `max`), and
  /// acknowledges the descriptor's wake-up. Errors: kIo.
  virtual Result<std::vector<LogMessage>> read(size_t max) = 0;
  /// Where the next read() starts, to resume there after a restart ("" when unknown).
  virtual std::string cursor() const = 0;
  /// "the journal (sshd)", "/var/log/sshd.log".
  virtual std::string describe() const = 0;
};

/// The local journal's sshd messages, from `cursor` (a journal cursor kept from an earlier run)
/// or, without a usable one, from `sinceUnixSeconds`. Errors: kIo when the journal cannot be
/// opened.
Result<std::unique_ptr<LogSource>> openJournalSource(const std::string& cursor, int64_t sinceUnixSeconds);

/// The lines appended to `path` (a real path) from `cursor` ("file:<inode>:<offset>", kept from
/// an earlier run, for the same file) or from its end. A file replaced (rotated) or truncated is
/// read again from its start. A line has no time of its own: it gets `clock`'s when it is read
/// (`clock` must outlive the source). Errors: kIo when the file cannot be watched.
Result<std::unique_ptr<LogSource>> openFileSource(const std::string& path, const std::string& cursor,
                                                  const Clock& clock);

}  // namespace pim
