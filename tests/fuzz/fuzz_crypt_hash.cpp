// libFuzzer target: checkCryptHash. Accepted hashes have one of the four prefixes and only
// printable characters; messages stay short (a fixed text: they never carry the input).

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "agent/document/validators.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view hash(reinterpret_cast<const char*>(data), size);
  const pim::Status s = pim::checkCryptHash(hash);
  if (s) {
    const bool known = hash.substr(0, 3) == "$y$" || hash.substr(0, 3) == "$6$" || hash.substr(0, 3) == "$5$" ||
                       hash.substr(0, 4) == "$2b$";
    if (!known) __builtin_trap();
    for (char c : hash) {
      if (c == ':' || static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) >= 0x7f) __builtin_trap();
    }
  } else if (s.message().size() > 120) {
    __builtin_trap();
  }
  return 0;
}
