#include "tests/unit/etcd_test_server.h"

#include <unistd.h>

#include <csignal>
#include <stdexcept>
#include <thread>

namespace pim {
namespace storetest {

bool EtcdTestServer::available() {
  return ::access("/usr/bin/etcd", X_OK) == 0 && ::access("/usr/bin/etcdctl", X_OK) == 0;
}

EtcdTestServer::EtcdTestServer(Options options) : options_(options) {
  clientPort_ = unusedLoopbackPort();
  peerPort_ = unusedLoopbackPort();
  start();
}

EtcdTestServer::~EtcdTestServer() { stop(); }

std::string EtcdTestServer::url(const std::string& key) const {
  return std::string(options_.tls ? "etcds" : "etcd") + "://127.0.0.1:" + std::to_string(clientPort_) + key;
}

void EtcdTestServer::start() {
  const std::string scheme = options_.tls ? "https" : "http";
  const std::string client = scheme + "://127.0.0.1:" + std::to_string(clientPort_);
  const std::string peer = "http://127.0.0.1:" + std::to_string(peerPort_);
  std::vector<std::string> argv = {"/usr/bin/etcd",
                                   "--name=test",
                                   "--data-dir=" + dir_.file("data"),
                                   "--listen-client-urls=" + client,
                                   "--advertise-client-urls=" + client,
                                   "--listen-peer-urls=" + peer,
                                   "--initial-advertise-peer-urls=" + peer,
                                   "--initial-cluster=test=" + peer,
                                   "--log-level=warn",
                                   "--logger=zap"};
  if (options_.tls) {
    argv.push_back("--cert-file=" + options_.tls->serverCert);
    argv.push_back("--key-file=" + options_.tls->serverKey);
    if (options_.clientCertAuth) {
      argv.push_back("--client-cert-auth");
      argv.push_back("--trusted-ca-file=" + options_.tls->caCert);
    }
  }
  process_.emplace(spawn(argv, dir_.file("etcd.log")));
  for (int i = 0; i < 400; ++i) {
    if (acceptsConnections(clientPort_)) {
      // Serving once a read goes through (the member elected itself).
      try {
        ctl({"get", "/pim-test-ready"});
        return;
      } catch (const std::exception&) {
      }
    }
    if (!process_->running()) {
      process_.reset();
      throw std::runtime_error("etcd exited at start: " + readAll(dir_.file("etcd.log")));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  throw std::runtime_error("etcd did not serve within 20 s: " + readAll(dir_.file("etcd.log")));
}

void EtcdTestServer::stop() {
  if (!process_) return;
  process_->kill(SIGTERM);
  (void)waitFor(*process_, std::chrono::seconds(10));
  process_.reset();
}

std::string EtcdTestServer::ctl(const std::vector<std::string>& args) const {
  std::vector<std::string> argv = {
      "/usr/bin/etcdctl",
      "--endpoints=" + std::string(options_.tls ? "https" : "http") + "://127.0.0.1:" + std::to_string(clientPort_),
      "--dial-timeout=2s", "--command-timeout=5s"};
  if (options_.tls) {
    argv.push_back("--cacert=" + options_.tls->caCert);
    argv.push_back("--cert=" + options_.tls->clientCert);
    argv.push_back("--key=" + options_.tls->clientKey);
  }
  if (auth_) argv.push_back("--user=root:rootpw");
  argv.insert(argv.end(), args.begin(), args.end());
  const std::string out = dir_.file("etcdctl.out");
  Subprocess etcdctl = spawn(argv, out, {"ETCDCTL_API=3"});
  const int rc = waitFor(etcdctl, std::chrono::seconds(15));
  const std::string text = readAll(out);
  if (rc != 0) throw std::runtime_error("etcdctl " + (args.empty() ? "" : args[0]) + " failed: " + text);
  return text;
}

int64_t EtcdTestServer::revision() const {
  // "endpoint status -w json" is terse; a get of a missing key with -w json carries the header.
  const std::string json = ctl({"get", "/pim-test-none", "-w", "json"});
  const auto at = json.find("\"revision\":");
  if (at == std::string::npos) throw std::runtime_error("etcdctl get: no revision in " + json);
  return std::stoll(json.substr(at + 11));
}

void EtcdTestServer::compact() const { ctl({"compact", std::to_string(revision()), "--physical"}); }

void EtcdTestServer::enableAuth(const std::string& user, const std::string& password) {
  ctl({"user", "add", "root:rootpw"});
  ctl({"user", "add", user + ":" + password});
  ctl({"role", "add", "reader"});
  ctl({"role", "grant-permission", "reader", "--prefix=true", "read", "/"});
  ctl({"user", "grant-role", user, "reader"});
  ctl({"auth", "enable"});
  auth_ = true;
}

}  // namespace storetest
}  // namespace pim
