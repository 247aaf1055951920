#pragma once
// Ownership of one libuv handle (uv_timer_t, uv_signal_t, uv_poll_t, uv_fs_event_t, uv_async_t):
// the handle lives on the heap, is initialised by init(), and is closed exactly once by reset()
// or the destructor. uv_close() is asynchronous: libuv may still touch the handle until its close
// callback has run on the next turn of the loop, so the memory is freed in that callback, not
// here. The owner must therefore still run the loop after the last reset (uv_run until it returns)
// before uv_loop_close(), and reset every handle before the loop itself goes away.
//
// Loop thread only (init, reset, destruction); get() may be read from another thread while the
// owner does not reset it (uv_async_send).

#include <uv.h>

#include <memory>
#include <type_traits>
#include <utility>

namespace pim {

template <class T>
class UvHandle {
  static_assert(std::is_standard_layout<T>::value, "a libuv handle type");

 public:
  UvHandle() = default;
  /// Closes the handle held (see reset()).
  ~UvHandle() { reset(); }
  UvHandle(const UvHandle&) = delete;
  UvHandle& operator=(const UvHandle&) = delete;
  /// The moved-from UvHandle holds nothing (its handle is not closed).
  UvHandle(UvHandle&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
  /// Closes the handle held, then takes `other`'s.
  UvHandle& operator=(UvHandle&& other) noexcept {
    if (this != &other) {
      reset();
      handle_ = std::exchange(other.handle_, nullptr);
    }
    return *this;
  }

  /// Closes the handle held (if any), allocates a new one and initialises it on `loop` with
  /// `initFn(loop, handle, args...)` (uv_timer_init, uv_poll_init with a fd, ...); `data` goes to
  /// handle->data (the owner, for the callbacks). Returns libuv's result: 0, or a negative error,
  /// and then nothing is held (libuv initialises nothing before it fails: the memory is freed at
  /// once, nothing is closed).
  template <class InitFn, class... Args>
  int init(uv_loop_t* loop, void* data, InitFn initFn, Args&&... args) {
    reset();
    auto handle = std::make_unique<T>();  // zeroed
    const int rc = initFn(loop, handle.get(), std::forward<Args>(args)...);
    if (rc != 0) return rc;
    handle_ = handle.release();
    handle_->data = data;
    return 0;
  }

  /// Closes the handle held, if any: uv_close(), which stops it (a fd polled may be closed right
  /// after); its callbacks are no longer called (data is cleared as well); its memory is freed by
  /// the close callback when the loop runs. Idempotent: a handle is never closed twice.
  void reset() {
    T* handle = std::exchange(handle_, nullptr);
    if (handle == nullptr) return;
    handle->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(handle), &UvHandle::onClosed);
  }

  /// The handle, for the uv_*_start/stop calls; nullptr when none is held.
  T* get() const { return handle_; }
  explicit operator bool() const { return handle_ != nullptr; }

 private:
  static void onClosed(uv_handle_t* handle) { delete reinterpret_cast<T*>(handle); }

  T* handle_ = nullptr;
};

}  // namespace pim
