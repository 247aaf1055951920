// libFuzzer target: parsePublicKey. The first byte picks the mode: odd = the input is the key
// line itself; even = the rest is a raw SSH wire blob, base64-encoded behind one of the known
// type names (so that the fuzzer reaches the blob checks without having to learn base64).

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "agent/document/validators.h"

namespace {

std::string base64(std::string_view in) {
  static const char* k = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (uint32_t(uint8_t(in[i])) << 16) | (uint32_t(uint8_t(in[i + 1])) << 8) | uint8_t(in[i + 2]);
    out += {k[v >> 18], k[(v >> 12) & 63], k[(v >> 6) & 63], k[v & 63]};
  }
  if (in.size() - i == 1) {
    uint32_t v = uint32_t(uint8_t(in[i])) << 16;
    out += {k[v >> 18], k[(v >> 12) & 63], '=', '='};
  } else if (in.size() - i == 2) {
    uint32_t v = (uint32_t(uint8_t(in[i])) << 16) | (uint32_t(uint8_t(in[i + 1])) << 8);
    out += {k[v >> 18], k[(v >> 12) & 63], k[(v >> 6) & 63], '='};
  }
  return out;
}

constexpr std::array<const char*, 7> kTypes = {"ssh-ed25519",
                                               "ecdsa-sha2-nistp256",
                                               "ecdsa-sha2-nistp384",
                                               "ecdsa-sha2-nistp521",
                                               "sk-ssh-ed25519@openssh.com",
                                               "sk-ecdsa-sha2-nistp256@openssh.com",
                                               "ssh-rsa"};

void check(const std::string& line) {
  const auto key = pim::parsePublicKey(line);
  if (!key) return;
  // Accepted keys are stable: their parts re-assemble into a line that parses to the same key.
  std::string again = key->identity();
  if (!key->comment.empty()) again += " " + key->comment;
  const auto second = pim::parsePublicKey(again);
  if (!second || !(*second == *key) || second->comment != key->comment) __builtin_trap();
  for (char c : line) {
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  if (data[0] & 1) {
    check(std::string(rest));
  } else {
    check(std::string(kTypes[(data[0] >> 1) % kTypes.size()]) + " " + base64(rest) + " fuzz");
  }
  return 0;
}
