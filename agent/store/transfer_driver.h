#pragma once
// What runs the libcurl transfers of agent/store/http_store_client.h: the seam between the client
// (which prepares one easy handle per request and reads its answer) and the multi handle that moves
// the bytes. Two drivers exist:
// - PollingTransferDriver (here): a multi handle of its own polled in the calling thread
//   (curl_multi_perform / curl_multi_poll), for `once`, `plan`, the report thread and tests;
//   every client without a driver of its own gets one.
// - the daemon's (agent/daemon/curl_uv.h): one multi handle driven by the daemon's libuv loop,
//   shared by the clients the daemon makes; the fetching thread waits for the loop.
// libuv stays out of agent/store: the daemon passes its driver in StoreClientOptions::driver.

#include <curl/curl.h>

#include <atomic>
#include <mutex>
#include <string>

namespace pim {

/// How one transfer ended.
struct TransferEnd {
  /// libcurl's result: CURLE_ABORTED_BY_CALLBACK when cancelled (or when the driver is closed).
  CURLcode result = CURLE_OK;
  /// The connection libcurl kept for the next transfer (CURLINFO_ACTIVESOCKET, asked while the
  /// transfer was still in the multi handle); CURL_SOCKET_BAD after a failure, whose connection
  /// libcurl closed.
  curl_socket_t kept = CURL_SOCKET_BAD;
  /// The driver's own failure (the multi handle's), "" when libcurl's result says it all.
  std::string error;
};

class TransferDriver {
 public:
  virtual ~TransferDriver() = default;

  /// Runs the transfer prepared on `easy` to its end, or until `cancelled` is true (checked at
  /// the start and whenever wake() is called), and takes `easy` out of the multi handle again.
  /// Blocking; one transfer per easy handle at a time; the easy handle's callbacks may run on
  /// another thread (the daemon's loop) while the caller waits. Never throws.
  virtual TransferEnd run(CURL* easy, const std::atomic<bool>& cancelled) = 0;

  /// Makes the run() of `easy` in progress look at its `cancelled` flag now (the caller sets the
  /// flag first); no effect when none runs. Thread-safe: any thread, a signal watcher included.
  virtual void wake(CURL* easy) = 0;

  /// Closes the connections kept for later transfers. False when this driver cannot (its
  /// connections are shared): the caller then asks for a new connection itself
  /// (CURLOPT_FRESH_CONNECT), and libcurl closes the old one when the new one is kept
  /// (CURLMOPT_MAXCONNECTS 1). Call from the thread that calls run(), never during run().
  virtual bool dropConnections() = 0;
};

/// curl_global_init() once per process, before the first handle (libcurl's own lazy
/// initialisation is not thread-safe); whether it succeeded. Thread-safe.
bool initLibcurl();

/// curl_multi_init() (after initLibcurl()) with its sockets (libcurl 7.88's wake-up socket pair) made close-on-exec and
/// one kept connection at most (CURLMOPT_MAXCONNECTS 1); nullptr when libcurl fails. The agent
/// runs useradd, sshd -t and the reload command while a connection is kept: they must not inherit
/// any of libcurl's descriptors.
CURLM* newCloexecMultiHandle();

/// The default driver: a multi handle of its own (newCloexecMultiHandle()), polled in the thread
/// that calls run() with curl_multi_perform / curl_multi_poll; wake() is curl_multi_wakeup();
/// dropConnections() replaces the multi handle (closing the kept connection).
class PollingTransferDriver : public TransferDriver {
 public:
  /// Makes the multi handle now; valid() says whether libcurl could.
  PollingTransferDriver();
  ~PollingTransferDriver() override;
  PollingTransferDriver(const PollingTransferDriver&) = delete;
  PollingTransferDriver& operator=(const PollingTransferDriver&) = delete;

  bool valid() const { return multi_ != nullptr; }
  TransferEnd run(CURL* easy, const std::atomic<bool>& cancelled) override;
  void wake(CURL* easy) override;
  bool dropConnections() override;

 private:
  std::mutex mutex_;  // wake() (any thread) against a new multi handle (the running thread)
  CURLM* multi_ = nullptr;
};

}  // namespace pim
