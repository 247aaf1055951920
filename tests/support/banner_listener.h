#pragma once
// A TCP listener on 127.0.0.1 (a free port) that plays an sshd for Host::sshAnswers() and the
// sshd provider's reload check: it sends a banner, says something else, stays silent, or closes
// at once, as the test asks; stop() closes the port. Serves connections from one thread until
// destroyed.

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace pim::test {

class BannerListener {
 public:
  enum class Mode { kBanner, kSilent, kHttp, kClose };

  explicit BannerListener(Mode mode = Mode::kBanner) : mode_(mode) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || ::listen(fd_, 16) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&sa), &len) != 0) {
      return;
    }
    port_ = ntohs(sa.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~BannerListener() {
    done_ = true;
    if (thread_.joinable()) thread_.join();
    stop();
    for (int c : clients_) ::close(c);
  }
  BannerListener(const BannerListener&) = delete;
  BannerListener& operator=(const BannerListener&) = delete;

  int port() const { return port_; }
  void setMode(Mode mode) { mode_ = mode; }
  /// Closes the listening socket: later connections are refused.
  void stop() {
    const int fd = fd_.exchange(-1);
    if (fd >= 0) ::close(fd);
  }
  /// Closes the port as soon as `path` exists (a reload command can take sshd "down" this way).
  void stopWhenExists(const std::string& path) {
    std::lock_guard<std::mutex> lock(mutex_);
    stopFlag_ = path;
  }
  /// How many connections it accepted.
  int accepted() const { return accepted_; }

 private:
  void serve() {
    while (!done_) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!stopFlag_.empty() && ::access(stopFlag_.c_str(), F_OK) == 0) stop();
      }
      const int fd = fd_;
      if (fd < 0) return;
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      const int c = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      ++accepted_;
      switch (mode_.load()) {
        case Mode::kBanner:
          (void)!::write(c, "SSH-2.0-OpenSSH_test\r\n", 22);
          clients_.push_back(c);
          break;
        case Mode::kHttp:
          (void)!::write(c, "HTTP/1.1 400 Bad Request\r\n\r\n", 28);
          clients_.push_back(c);
          break;
        case Mode::kSilent:
          clients_.push_back(c);  // accepted, never answered: a stopped sshd
          break;
        case Mode::kClose:
          ::close(c);
          break;
      }
    }
  }

  std::atomic<int> fd_{-1};
  int port_ = 0;
  std::atomic<Mode> mode_;
  std::atomic<bool> done_{false};
  std::atomic<int> accepted_{0};
  std::vector<int> clients_;
  std::mutex mutex_;
  std::string stopFlag_;
  std::thread thread_;
};

}  // namespace pim::test
