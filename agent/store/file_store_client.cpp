#include "agent/store/file_store_client.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <strings.h>
#include <cerrno>

#include <algorithm>
#include <cstring>

namespace pim {
namespace {

constexpr int64_t kMaxSignatureFileBytes = 4096;

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

Result<std::string> readRegularFile(const std::string& path, int64_t maxBytes) {
  // O_NONBLOCK: opening a FIFO must not hang the agent; it is refused right after by fstat.
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (fd.get() < 0) {
    int err = errno;
    return Status::error(err == ENOENT ? ErrorCode::kNotFound : ErrorCode::kIo,
                         "open " + path + ": " + std::strerror(err), path);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return Status::error(ErrorCode::kIo, "stat " + path + ": " + std::strerror(errno), path);
  }
  if (!S_ISREG(st.st_mode)) return Status::error(ErrorCode::kUnsafe, "read " + path + ": not a regular file", path);
  if (st.st_size > maxBytes) {
    return Status::error(
        ErrorCode::kRejected,
        "read " + path + ": " + std::to_string(st.st_size) + " bytes, over the limit of " + std::to_string(maxBytes),
        path);
  }
  // The size may change while reading: the limit is enforced on what is read, not on st_size.
  std::string out;
  out.resize(static_cast<size_t>(st.st_size) + 1);
  size_t used = 0;
  for (;;) {
    if (used == out.size()) {
      if (static_cast<int64_t>(used) > maxBytes) break;
      size_t grown = std::min<size_t>(static_cast<size_t>(maxBytes) + 1, out.size() * 2 + 4096);
      out.resize(grown);
    }
    ssize_t n = ::read(fd.get(), &out[used], out.size() - used);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::error(ErrorCode::kIo, "read " + path + ": " + std::strerror(errno), path);
    }
    if (n == 0) break;
    used += static_cast<size_t>(n);
  }
  if (static_cast<int64_t>(used) > maxBytes) {
    return Status::error(ErrorCode::kRejected,
                         "read " + path + ": more than the limit of " + std::to_string(maxBytes) + " bytes", path);
  }
  out.resize(used);
  return out;
}

FileStoreClient::FileStoreClient(std::string path, std::shared_ptr<const SignatureVerifier> verifier, int64_t maxBytes,
                                 Logger log)
    : path_(std::move(path)), verifier_(std::move(verifier)), maxBytes_(maxBytes), log_(std::move(log)) {}

Result<std::string> FileStoreClient::parseFileUrl(const std::string& url) {
  const std::string scheme = "file://";
  auto invalid = [&](const std::string& why) {
    return Status::error(ErrorCode::kInvalid, "store source " + url + ": " + why);
  };
  if (url.size() < scheme.size() || strncasecmp(url.c_str(), scheme.c_str(), scheme.size()) != 0) {
    return invalid("not a file:// URL");
  }
  std::string rest = url.substr(scheme.size());
  const std::string localhost = "localhost";
  if (rest.compare(0, localhost.size(), localhost) == 0) rest = rest.substr(localhost.size());
  if (rest.empty() || rest[0] != '/') return invalid("expected file:///absolute/path");
  for (unsigned char c : rest) {
    if (c < 0x20 || c == 0x7f) return invalid("control character in path");
    if (c == '?' || c == '#') return invalid("query or fragment not supported in a file:// source");
    if (c == '%') return invalid("percent-escapes not supported in a file:// source");
  }
  return rest;
}

Result<FetchOutcome> FileStoreClient::fetch(const std::string& etag, int64_t /*waitSeconds*/) {
  if (cancelled_.load()) return Status::error(ErrorCode::kUnreachable, "read " + describe() + ": cancelled", path_);
  auto body = readRegularFile(path_, maxBytes_);
  if (!body) {
    Status s = body.status();
    ErrorCode code = s.code() == ErrorCode::kRejected ? ErrorCode::kRejected : ErrorCode::kUnreachable;
    return Status::error(code, "store " + describe() + ": " + s.message(), path_);
  }
  FetchOutcome out;
  out.etag = "sha256:" + sha256Hex(*body);
  if (!etag.empty() && etag == out.etag) {
    out.kind = FetchOutcome::Kind::kUnchanged;
    log_->debug("{}: unchanged ({})", describe(), out.etag);
    return out;
  }
  if (verifier_) {
    const std::string sigPath = path_ + ".sig";
    auto sig = readRegularFile(sigPath, kMaxSignatureFileBytes);
    if (!sig) {
      std::string why =
          sig.status().code() == ErrorCode::kNotFound ? "missing signature file " + sigPath : sig.status().message();
      return Status::error(ErrorCode::kRejected, "store " + describe() + ": " + why, sigPath);
    }
    Status v = verifier_->verify(*body, *sig, "store " + describe());
    if (!v) return Status::error(v.code(), v.message(), sigPath);
  }
  out.kind = FetchOutcome::Kind::kDocument;
  out.body = std::move(*body);
  log_->debug("{}: document of {} bytes ({})", describe(), out.body.size(), out.etag);
  return out;
}

void FileStoreClient::cancel() { cancelled_.store(true); }

std::string FileStoreClient::describe() const { return "file://" + path_; }

}  // namespace pim
