#pragma once
// The daemon's TransferDriver (agent/store/transfer_driver.h): one libcurl multi handle driven by
// the daemon's libuv loop (libcurl's "multi_socket" API). CURLMOPT_SOCKETFUNCTION gives each
// socket libcurl wants watched a uv_poll_t (started, changed and stopped with CURL_POLL_IN, _OUT
// and _REMOVE), CURLMOPT_TIMERFUNCTION arms one uv_timer_t; their events call
// curl_multi_socket_action, and curl_multi_info_read reports the transfers that ended.
//
// Threads: run() is called by the thread that fetches (the daemon's worker, inside the cycle); it
// hands the easy handle to the loop (uv_async_t) and waits on a condition variable until the loop
// reports its end. cancel (wake()) from any thread makes the loop remove the transfer
// (curl_multi_remove_handle, which closes its connection; a name look-up is left to libcurl's
// resolver thread) and wake the waiter with CURLE_ABORTED_BY_CALLBACK. Every libcurl call on the
// multi handle, and every callback of the easy handles while they are in it, runs on the loop
// thread. The multi handle keeps one connection at most (CURLMOPT_MAXCONNECTS 1) for the next
// poll, and its sockets are close-on-exec (newCloexecMultiHandle(); connections are opened
// close-on-exec by the client).
//
// The driver's handles are unreferenced (uv_unref): they never keep the loop running by
// themselves. close() (loop thread; also by the destructor) ends what is still queued or running
// with CURLE_ABORTED_BY_CALLBACK, cleans up the multi handle (closing the kept connection) and
// closes the handles; the loop frees them in their close callbacks, so the driver object may go
// before the loop runs again. A run() after close() fails at once. Clients hold the driver by
// shared_ptr, so it outlives every client made with it.
//
// The daemon makes one driver per config (its Runtime), not one for its life: libcurl caches the
// TLS verification store per multi handle, ca_file's certificates included (added by the
// client's CURLOPT_SSL_CTX_FUNCTION), and a reloaded config must not inherit the old trust nor
// the old config's kept connection.

#include <uv.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>

#include "agent/store/transfer_driver.h"
#include "providers/core/log.h"
#include "providers/core/result.h"

namespace pim {

class CurlUvDriver : public TransferDriver {
 public:
  /// Makes the multi handle and the loop's handles (an async and a timer, unreferenced) on
  /// `loop`, which must be initialised. Call on the loop thread. Errors: kInternal when libcurl or
  /// libuv cannot.
  static Result<std::shared_ptr<CurlUvDriver>> create(uv_loop_t* loop, Logger log);
  ~CurlUvDriver() override;
  CurlUvDriver(const CurlUvDriver&) = delete;
  CurlUvDriver& operator=(const CurlUvDriver&) = delete;

  /// See TransferDriver::run. Never call on the loop thread (it would wait for itself).
  TransferEnd run(CURL* easy, const std::atomic<bool>& cancelled) override;
  /// See TransferDriver::wake. Any thread, the loop's included.
  void wake(CURL* easy) override;
  /// Always false: the connection cache is shared by the daemon's clients.
  bool dropConnections() override { return false; }

  /// Ends the queued and running transfers (CURLE_ABORTED_BY_CALLBACK), cleans up the multi
  /// handle and closes the loop's handles. Loop thread; idempotent.
  void close();

  /// What the loop did so far (tests: proof that the transfers went through the loop).
  struct Counters {
    uint64_t socketCallbacks = 0;  // CURLMOPT_SOCKETFUNCTION calls
    uint64_t socketActions = 0;    // curl_multi_socket_action calls (socket events and time-outs)
    uint64_t completed = 0;        // transfers that ended on the loop thread (any result)
  };
  Counters counters() const;

 private:
  struct Job;
  struct SocketWatch;
  CurlUvDriver(uv_loop_t* loop, Logger log);

  static int onSocket(CURL* easy, curl_socket_t s, int what, void* userp, void* socketp);
  static int onTimerChange(CURLM* multi, long timeoutMs, void* userp);
  static void onAsync(uv_async_t* handle);
  static void onTimeout(uv_timer_t* handle);
  static void onPoll(uv_poll_t* handle, int status, int events);

  // Loop thread: adds the queued transfers and removes the cancelled ones.
  void serviceQueue();
  void socketAction(curl_socket_t s, int flags);
  // Loop thread: the transfers that ended (curl_multi_info_read).
  void collectDone();
  // Loop thread: stops and closes the poll of one socket (freed by its close callback).
  void closeWatch(SocketWatch* watch);
  // Loop thread: takes `job` out of the multi handle (when it is in) and wakes its waiter.
  void finish(Job* job, CURLcode result, curl_socket_t kept, const std::string& error);

  uv_loop_t* loop_;
  Logger log_;
  CURLM* multi_ = nullptr;
  uv_async_t* async_ = nullptr;     // freed by its close callback
  uv_timer_t* timer_ = nullptr;     // likewise
  std::set<SocketWatch*> watches_;  // loop thread only

  mutable std::mutex mutex_;
  std::condition_variable done_;
  std::map<CURL*, Job*> jobs_;  // the transfers handed over and not yet ended
  bool closed_ = false;

  std::atomic<uint64_t> socketCallbacks_{0}, socketActions_{0}, completed_{0};
};

}  // namespace pim
