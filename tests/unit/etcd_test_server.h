#pragma once
// A real etcd (Debian's etcd-server) for the tests of the etcd:// source: one member on 127.0.0.1,
// free ports, a temporary data directory; stopped, restarted (same data and ports), compacted
// and written through etcdctl (Debian's etcd-client) or its own HTTP gateway.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tests/unit/store_test_server.h"

namespace pim {
namespace storetest {

class EtcdTestServer {
 public:
  struct Options {
    const StoreTestPki* tls = nullptr;  // serve HTTPS with pki.serverCert
    bool clientCertAuth = false;        // with tls: require a client certificate signed by the CA
  };
  /// Whether /usr/bin/etcd and /usr/bin/etcdctl are installed.
  static bool available();
  /// Starts etcd and waits until it serves (up to 20 s). Throws std::runtime_error on failure.
  explicit EtcdTestServer(Options options);
  EtcdTestServer() : EtcdTestServer(Options{}) {}
  ~EtcdTestServer();
  EtcdTestServer(const EtcdTestServer&) = delete;
  EtcdTestServer& operator=(const EtcdTestServer&) = delete;

  uint16_t port() const { return clientPort_; }
  /// "etcd://127.0.0.1:PORT" + key (etcds:// with TLS).
  std::string url(const std::string& key) const;
  /// SIGTERM and wait; start() again on the same data directory and ports.
  void stop();
  void start();
  /// etcdctl ARGS... (as root when auth is on); throws when it fails; returns its output.
  std::string ctl(const std::vector<std::string>& args) const;
  void put(const std::string& key, const std::string& value) const { ctl({"put", key, value}); }
  /// The store's current revision.
  int64_t revision() const;
  /// Compacts the history up to the current revision (physically).
  void compact() const;
  /// Creates root (password rootpw) and `user` with read access to everything, and turns auth on.
  void enableAuth(const std::string& user, const std::string& password);

 private:
  Options options_;
  StoreTestDir dir_;
  uint16_t clientPort_ = 0;
  uint16_t peerPort_ = 0;
  std::optional<Subprocess> process_;
  bool auth_ = false;
};

}  // namespace storetest
}  // namespace pim
