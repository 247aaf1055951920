#include "agent/store/transfer_driver.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <set>

namespace pim {
namespace {

// The descriptors of this process that an exec would pass on.
std::set<int> inheritableDescriptors() {
  std::set<int> out;
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return out;
  const int own = ::dirfd(dir);
  while (dirent* entry = ::readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(entry->d_name, &end, 10);
    if (end == entry->d_name || *end != '\0' || fd == own) continue;
    const int flags = ::fcntl(static_cast<int>(fd), F_GETFD);
    if (flags >= 0 && (flags & FD_CLOEXEC) == 0) out.insert(static_cast<int>(fd));
  }
  ::closedir(dir);
  return out;
}

}  // namespace

// Never cleaned up: the process ends with it.
bool initLibcurl() {
  static const bool ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
  return ok;
}

// libcurl 7.88 makes the multi handle's wake-up socket pair without close-on-exec (fixed in
// 8.8.0) and there is no API to reach it: the sockets that appeared during the call without
// close-on-exec are marked (everything else in the agent opens its descriptors close-on-exec).
CURLM* newCloexecMultiHandle() {
  if (!initLibcurl()) return nullptr;
  const std::set<int> before = inheritableDescriptors();
  CURLM* multi = curl_multi_init();
  if (multi == nullptr) return nullptr;
  for (int fd : inheritableDescriptors()) {
    struct stat st {};
    if (before.count(fd) == 0 && ::fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode)) ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  }
  // One connection at most: the one kept for the next poll.
  curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, 1L);
  return multi;
}

PollingTransferDriver::PollingTransferDriver() : multi_(newCloexecMultiHandle()) {}

PollingTransferDriver::~PollingTransferDriver() {
  if (multi_ != nullptr) curl_multi_cleanup(multi_);
}

TransferEnd PollingTransferDriver::run(CURL* easy, const std::atomic<bool>& cancelled) {
  TransferEnd end;
  CURLM* multi = multi_;
  if (multi == nullptr || curl_multi_add_handle(multi, easy) != CURLM_OK) {
    end.result = CURLE_OUT_OF_MEMORY;
    return end;
  }
  bool done = false;
  for (;;) {
    int running = 0;
    CURLMcode mc = curl_multi_perform(multi, &running);
    int left = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi, &left)) {
      if (msg->msg == CURLMSG_DONE && msg->easy_handle == easy) {
        end.result = msg->data.result;
        done = true;
      }
    }
    if (done) break;
    if (mc != CURLM_OK || running == 0) {
      end.error = std::string("libcurl: ") + curl_multi_strerror(mc);
      end.result = CURLE_SEND_ERROR;
      break;
    }
    if (cancelled.load()) break;
    // Returns when a socket of the transfer is ready, when libcurl's next time-out is due, or
    // when wake() wakes it.
    mc = curl_multi_poll(multi, nullptr, 0, 60000, nullptr);
    if (mc != CURLM_OK) {
      end.error = std::string("libcurl: ") + curl_multi_strerror(mc);
      end.result = CURLE_RECV_ERROR;
      break;
    }
    if (cancelled.load()) break;
  }
  if (!done && cancelled.load()) end.result = CURLE_ABORTED_BY_CALLBACK;
  // The connection libcurl kept for the next transfer (asked while the transfer is still in the
  // multi handle); none after a failure, whose connection libcurl closed.
  if (done && end.result == CURLE_OK) curl_easy_getinfo(easy, CURLINFO_ACTIVESOCKET, &end.kept);
  // Removing an unfinished transfer closes its connection; a name look-up in progress is left to
  // its thread (CURLOPT_QUICK_EXIT).
  curl_multi_remove_handle(multi, easy);
  return end;
}

void PollingTransferDriver::wake(CURL* /*easy*/) {
  std::lock_guard<std::mutex> lock(mutex_);
  // Wakes curl_multi_poll() in the running thread (or makes its next call return at once).
  if (multi_ != nullptr) curl_multi_wakeup(multi_);
}

bool PollingTransferDriver::dropConnections() {
  // Dropping the multi handle closes the kept connection (and forgets libcurl's caches).
  CURLM* fresh = newCloexecMultiHandle();
  if (fresh == nullptr) return false;
  CURLM* old = nullptr;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    old = multi_;
    multi_ = fresh;
  }
  if (old != nullptr) curl_multi_cleanup(old);
  return true;
}

}  // namespace pim
