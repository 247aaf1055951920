#pragma once
// Result types for reconcile code: an error code, a message that says operation, object and
// cause, and the path concerned. Exceptions are kept for start-up and programming errors.

#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace pim {

enum class ErrorCode {
  kOk = 0,
  kInvalid,      // bad input (document, config, argument)
  kNotFound,     // object missing where it must exist
  kUnsafe,       // refused for safety: symlink, hard link, foreign owner, path escape
  kIo,           // a system call failed
  kCommand,      // an external command failed
  kRejected,     // document rejected as a whole
  kUnreachable,  // store unreachable or refused the request
  kInternal,
};

/// Outcome of an operation that returns no value.
class [[nodiscard]] Status {
 public:
  Status() = default;
  static Status ok() { return Status(); }
  static Status error(ErrorCode code, std::string message, std::string path = {}) {
    Status s;
    s.code_ = code;
    s.message_ = std::move(message);
    s.path_ = std::move(path);
    return s;
  }
  bool isOk() const { return code_ == ErrorCode::kOk; }
  explicit operator bool() const { return isOk(); }
  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }
  const std::string& path() const { return path_; }
  /// The message for logs and people: the message already names operation and object.
  std::string toString() const { return isOk() ? std::string("ok") : message_; }

 private:
  ErrorCode code_ = ErrorCode::kOk;
  std::string message_;
  std::string path_;
};

/// A value or the Status that explains why there is none.
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}         // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {}  // NOLINT: implicit by design
  bool isOk() const { return std::holds_alternative<T>(v_); }
  explicit operator bool() const { return isOk(); }
  /// The value; calling it on an error is a programming error.
  T& value() { return std::get<T>(v_); }
  const T& value() const { return std::get<T>(v_); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() { return value(); }
  const T& operator*() const { return value(); }
  /// The error; Status::ok() when there is a value.
  Status status() const { return isOk() ? Status::ok() : std::get<Status>(v_); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace pim
