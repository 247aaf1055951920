// libFuzzer target: the INI config parser (agent/config/config.h) on arbitrary bytes.

#include <cstddef>
#include <cstdint>
#include <string>

#include "agent/config/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto config = pim::parseConfig(std::string(reinterpret_cast<const char*>(data), size));
  (void)config;
  return 0;
}
