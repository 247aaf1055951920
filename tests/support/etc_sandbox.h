#pragma once
// A --root sandbox for tests that run the real shadow tools: a temporary directory holding a
// minimal etc/{passwd,group,shadow,gshadow} (root only) and a copy of the host's login.defs, so
// that `useradd --prefix DIR` and `chpasswd --root DIR` act on it and never on the real /etc.
// Removed with everything in it when the object goes away.

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace pim::test {

class EtcSandbox {
 public:
  EtcSandbox() {
    char tmpl[] = "/tmp/pim-etc-XXXXXX";
    const char* d = ::mkdtemp(tmpl);
    dir_ = d != nullptr ? d : "";
    std::filesystem::create_directories(dir_ + "/etc");
    write("/etc/passwd", "root:x:0:0:root:/root:/bin/bash\n", 0644);
    write("/etc/group", "root:x:0:\n", 0644);
    write("/etc/shadow", "root:*:19000:0:99999:7:::\n", 0640);
    write("/etc/gshadow", "root:*::\n", 0640);
    std::error_code ec;
    std::filesystem::copy_file("/etc/login.defs", dir_ + "/etc/login.defs", ec);
  }
  ~EtcSandbox() {
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }
  EtcSandbox(const EtcSandbox&) = delete;
  EtcSandbox& operator=(const EtcSandbox&) = delete;

  /// The sandbox directory (the --root).
  const std::string& dir() const { return dir_; }
  /// The real path of a host path inside the sandbox.
  std::string path(const std::string& hostPath) const { return dir_ + hostPath; }
  /// Writes a file (parents created) with `mode`.
  void write(const std::string& hostPath, const std::string& text, mode_t mode = 0644) const {
    std::filesystem::create_directories(std::filesystem::path(path(hostPath)).parent_path());
    { std::ofstream(path(hostPath), std::ios::binary | std::ios::trunc) << text; }
    ::chmod(path(hostPath).c_str(), mode);
  }
  /// Appends text to a file.
  void append(const std::string& hostPath, const std::string& text) const {
    std::ofstream(path(hostPath), std::ios::binary | std::ios::app) << text;
  }
  /// The bytes of a file ("" when missing).
  std::string read(const std::string& hostPath) const {
    std::ifstream in(path(hostPath), std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

 private:
  std::string dir_;
};

}  // namespace pim::test
