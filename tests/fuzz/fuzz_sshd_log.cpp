// libFuzzer target: the readers of sshd's messages (the defender's failedAuthSource and the login
// audit's parseSshdLogin). Whatever they return is well formed: a canonical address, and for a
// login a printable user and method and, for a key, a SHA256 fingerprint.

#include <arpa/inet.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "agent/daemon/defender.h"
#include "agent/daemon/login_audit.h"

namespace {

bool canonical(const std::string& address) {
  unsigned char bin[16];
  char buf[INET6_ADDRSTRLEN] = {};
  const int family = address.find(':') == std::string::npos ? AF_INET : AF_INET6;
  if (::inet_pton(family, address.c_str(), bin) != 1) return false;
  return address == ::inet_ntop(family, bin, buf, sizeof buf);
}

bool printable(const std::string& s) {
  if (s.empty()) return false;
  for (unsigned char c : s) {
    if (c <= 0x20 || c >= 0x7f) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string message(reinterpret_cast<const char*>(data), size);
  if (auto source = pim::failedAuthSource(message); source && !canonical(*source)) __builtin_trap();
  auto e = pim::parseSshdLogin(message);
  if (!e) return 0;
  if (!canonical(e->address)) __builtin_trap();
  if (e->kind == pim::SshdLoginEvent::Kind::kAccepted) {
    if (!printable(e->user) || !printable(e->method)) __builtin_trap();
    if (e->method == "publickey" && (e->fingerprint.size() != 50 || e->fingerprint.rfind("SHA256:", 0) != 0)) {
      __builtin_trap();
    }
  }
  return 0;
}
