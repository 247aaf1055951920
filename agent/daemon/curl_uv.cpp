#include "agent/daemon/curl_uv.h"

#include <string>
#include <vector>

namespace pim {

// One transfer handed to the loop; lives on the stack of the run() that waits for it.
struct CurlUvDriver::Job {
  CURL* easy = nullptr;
  // Under mutex_.
  bool taken = false;   // the loop picked it up
  bool cancel = false;  // wake() asked for its end
  bool done = false;    // `end` is set; the loop no longer touches the job
  TransferEnd end;
  // Loop thread only.
  bool inMulti = false;
};

// The uv_poll_t of one socket libcurl wants watched (curl_multi_assign'ed to it).
struct CurlUvDriver::SocketWatch {
  uv_poll_t poll{};
  curl_socket_t fd = CURL_SOCKET_BAD;
  CurlUvDriver* driver = nullptr;
};

void CurlUvDriver::closeWatch(SocketWatch* watch) {
  watches_.erase(watch);
  uv_close(reinterpret_cast<uv_handle_t*>(&watch->poll),
           [](uv_handle_t* h) { delete static_cast<SocketWatch*>(h->data); });
}

namespace {

template <typename Handle>
void closeAndDelete(Handle* handle) {
  uv_close(reinterpret_cast<uv_handle_t*>(handle), [](uv_handle_t* h) { delete reinterpret_cast<Handle*>(h); });
}

}  // namespace

CurlUvDriver::CurlUvDriver(uv_loop_t* loop, Logger log) : loop_(loop), log_(std::move(log)) {}

CurlUvDriver::~CurlUvDriver() { close(); }

Result<std::shared_ptr<CurlUvDriver>> CurlUvDriver::create(uv_loop_t* loop, Logger log) {
  std::shared_ptr<CurlUvDriver> d(new CurlUvDriver(loop, std::move(log)));
  d->multi_ = newCloexecMultiHandle();
  if (d->multi_ == nullptr) return Status::error(ErrorCode::kInternal, "store: libcurl cannot make a multi handle");
  bool ok = curl_multi_setopt(d->multi_, CURLMOPT_SOCKETFUNCTION, onSocket) == CURLM_OK &&
            curl_multi_setopt(d->multi_, CURLMOPT_SOCKETDATA, d.get()) == CURLM_OK &&
            curl_multi_setopt(d->multi_, CURLMOPT_TIMERFUNCTION, onTimerChange) == CURLM_OK &&
            curl_multi_setopt(d->multi_, CURLMOPT_TIMERDATA, d.get()) == CURLM_OK;
  if (!ok) return Status::error(ErrorCode::kInternal, "store: libcurl refuses the multi handle's callbacks");
  auto* async = new uv_async_t{};
  if (uv_async_init(loop, async, onAsync) != 0) {
    delete async;
    return Status::error(ErrorCode::kInternal, "store: libuv cannot make the transfer driver's async handle");
  }
  d->async_ = async;
  auto* timer = new uv_timer_t{};
  uv_timer_init(loop, timer);  // cannot fail
  d->timer_ = timer;
  for (uv_handle_t* h : {reinterpret_cast<uv_handle_t*>(async), reinterpret_cast<uv_handle_t*>(timer)}) {
    h->data = d.get();
    // The loop ends when the daemon's own handles are closed: the driver never holds it (a
    // transfer in progress is the worker's, whose work request keeps the loop running).
    uv_unref(h);
  }
  return d;
}

TransferEnd CurlUvDriver::run(CURL* easy, const std::atomic<bool>& cancelled) {
  Job job;
  job.easy = easy;
  std::unique_lock<std::mutex> lock(mutex_);
  if (closed_ || cancelled.load()) {
    job.end.result = CURLE_ABORTED_BY_CALLBACK;
    if (closed_) job.end.error = "the daemon's event loop is closed";
    return job.end;
  }
  jobs_[easy] = &job;
  uv_async_send(async_);
  done_.wait(lock, [&] { return job.done; });
  return job.end;
}

void CurlUvDriver::wake(CURL* easy) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (closed_) return;
  auto it = jobs_.find(easy);
  if (it == jobs_.end()) return;
  it->second->cancel = true;
  uv_async_send(async_);
}

void CurlUvDriver::onAsync(uv_async_t* handle) { static_cast<CurlUvDriver*>(handle->data)->serviceQueue(); }

void CurlUvDriver::serviceQueue() {
  std::vector<Job*> added, cancelled;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [easy, job] : jobs_) {
      if (job->cancel) {
        cancelled.push_back(job);
      } else if (!job->taken) {
        job->taken = true;
        added.push_back(job);
      }
    }
  }
  // Removing a transfer closes its connection; a name look-up in progress is left to libcurl's
  // resolver thread (CURLOPT_QUICK_EXIT).
  for (Job* job : cancelled) finish(job, CURLE_ABORTED_BY_CALLBACK, CURL_SOCKET_BAD, "");
  for (Job* job : added) {
    // libcurl asks for a time-out of 0 (onTimerChange): the transfer starts at the next turn.
    if (curl_multi_add_handle(multi_, job->easy) != CURLM_OK) {
      finish(job, CURLE_OUT_OF_MEMORY, CURL_SOCKET_BAD, "libcurl: cannot add the transfer");
      continue;
    }
    job->inMulti = true;
  }
}

int CurlUvDriver::onSocket(CURL* /*easy*/, curl_socket_t s, int what, void* userp, void* socketp) {
  auto* self = static_cast<CurlUvDriver*>(userp);
  self->socketCallbacks_.fetch_add(1);
  auto* watch = static_cast<SocketWatch*>(socketp);
  if (what == CURL_POLL_REMOVE) {
    // libcurl says so before it closes the socket: the poll is stopped while the descriptor is
    // still the one it watched.
    if (watch != nullptr) {
      self->closeWatch(watch);
      if (self->multi_ != nullptr) curl_multi_assign(self->multi_, s, nullptr);
    }
    return 0;
  }
  if (watch == nullptr) {
    watch = new SocketWatch;
    watch->fd = s;
    watch->driver = self;
    if (uv_poll_init_socket(self->loop_, &watch->poll, s) != 0) {
      delete watch;
      self->log_->error("store: libuv cannot watch socket {}", s);
      return -1;
    }
    watch->poll.data = watch;
    uv_unref(reinterpret_cast<uv_handle_t*>(&watch->poll));
    self->watches_.insert(watch);
    curl_multi_assign(self->multi_, s, watch);
  }
  int events = 0;
  if ((what & CURL_POLL_IN) != 0) events |= UV_READABLE;
  if ((what & CURL_POLL_OUT) != 0) events |= UV_WRITABLE;
  uv_poll_start(&watch->poll, events, onPoll);
  return 0;
}

void CurlUvDriver::onPoll(uv_poll_t* handle, int status, int events) {
  auto* watch = static_cast<SocketWatch*>(handle->data);
  int flags = 0;
  if (status < 0) {
    flags = CURL_CSELECT_ERR;
  } else {
    if ((events & UV_READABLE) != 0) flags |= CURL_CSELECT_IN;
    if ((events & UV_WRITABLE) != 0) flags |= CURL_CSELECT_OUT;
  }
  // The watch may be closed during the call (CURL_POLL_REMOVE): nothing of it is used after.
  watch->driver->socketAction(watch->fd, flags);
}

int CurlUvDriver::onTimerChange(CURLM* /*multi*/, long timeoutMs, void* userp) {
  auto* self = static_cast<CurlUvDriver*>(userp);
  if (self->timer_ == nullptr) return 0;
  // libcurl's time-out is run from the loop, never from inside this callback (libcurl forbids
  // calling curl_multi_socket_action here); 0 means "at the next turn".
  if (timeoutMs < 0) {
    uv_timer_stop(self->timer_);
  } else {
    uv_timer_start(self->timer_, onTimeout, static_cast<uint64_t>(timeoutMs), 0);
  }
  return 0;
}

void CurlUvDriver::onTimeout(uv_timer_t* handle) {
  static_cast<CurlUvDriver*>(handle->data)->socketAction(CURL_SOCKET_TIMEOUT, 0);
}

void CurlUvDriver::socketAction(curl_socket_t s, int flags) {
  if (multi_ == nullptr) return;
  socketActions_.fetch_add(1);
  int running = 0;
  const CURLMcode mc = curl_multi_socket_action(multi_, s, flags, &running);
  if (mc != CURLM_OK) {
    // The multi handle is broken: every transfer in it fails (the poll driver does the same).
    const std::string error = std::string("libcurl: ") + curl_multi_strerror(mc);
    std::vector<Job*> inMulti;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (auto& [easy, job] : jobs_) {
        if (job->inMulti) inMulti.push_back(job);
      }
    }
    for (Job* job : inMulti) finish(job, CURLE_RECV_ERROR, CURL_SOCKET_BAD, error);
    return;
  }
  collectDone();
}

void CurlUvDriver::collectDone() {
  int left = 0;
  while (CURLMsg* msg = curl_multi_info_read(multi_, &left)) {
    if (msg->msg != CURLMSG_DONE) continue;
    CURL* easy = msg->easy_handle;
    const CURLcode result = msg->data.result;  // msg is gone once the handle is removed
    Job* job = nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = jobs_.find(easy);
      if (it != jobs_.end()) job = it->second;
    }
    if (job == nullptr) {
      curl_multi_remove_handle(multi_, easy);
      continue;
    }
    // The connection libcurl kept for the next transfer, asked while the transfer is still in
    // the multi handle; none after a failure, whose connection libcurl closed.
    curl_socket_t kept = CURL_SOCKET_BAD;
    if (result == CURLE_OK) curl_easy_getinfo(easy, CURLINFO_ACTIVESOCKET, &kept);
    finish(job, result, kept, "");
  }
}

void CurlUvDriver::finish(Job* job, CURLcode result, curl_socket_t kept, const std::string& error) {
  if (job->inMulti) {
    curl_multi_remove_handle(multi_, job->easy);
    job->inMulti = false;
  }
  completed_.fetch_add(1);
  std::lock_guard<std::mutex> lock(mutex_);
  job->end.result = result;
  job->end.kept = kept;
  job->end.error = error;
  job->done = true;
  jobs_.erase(job->easy);
  // The waiter may return (and its job go) as soon as the lock is released.
  done_.notify_all();
}

void CurlUvDriver::close() {
  std::vector<Job*> pending;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (closed_) return;
    closed_ = true;  // no uv_async_send from now on: the handle is closed below
    for (auto& [easy, job] : jobs_) pending.push_back(job);
  }
  for (Job* job : pending)
    finish(job, CURLE_ABORTED_BY_CALLBACK, CURL_SOCKET_BAD, "the daemon's event loop is closing");
  if (multi_ != nullptr) {
    CURLM* multi = multi_;
    multi_ = nullptr;           // the callbacks below must not use it
    curl_multi_cleanup(multi);  // closes the kept connection (CURL_POLL_REMOVE for watched sockets)
  }
  while (!watches_.empty()) closeWatch(*watches_.begin());
  if (timer_ != nullptr) closeAndDelete(timer_);
  if (async_ != nullptr) closeAndDelete(async_);
  timer_ = nullptr;
  async_ = nullptr;
}

CurlUvDriver::Counters CurlUvDriver::counters() const {
  Counters c;
  c.socketCallbacks = socketCallbacks_.load();
  c.socketActions = socketActions_.load();
  c.completed = completed_.load();
  return c;
}

}  // namespace pim
