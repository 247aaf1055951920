// libFuzzer target: parseRfc3339, checked against glibc's timegm() for every accepted time.

#include <time.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "agent/document/validators.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const auto t = pim::parseRfc3339(text);
  if (!t) return 0;
  // Accepted: "YYYY-MM-DDTHH:MM:SS" leads; timegm normalises, so compare the arithmetic.
  struct tm tm = {};
  tm.tm_year = std::stoi(text.substr(0, 4)) - 1900;
  tm.tm_mon = std::stoi(text.substr(5, 2)) - 1;
  tm.tm_mday = std::stoi(text.substr(8, 2));
  tm.tm_hour = std::stoi(text.substr(11, 2));
  tm.tm_min = std::stoi(text.substr(14, 2));
  tm.tm_sec = std::stoi(text.substr(17, 2));
  const time_t expected = timegm(&tm);
  if (static_cast<int64_t>(expected) != *t) __builtin_trap();
  // timegm did not have to normalise anything: the calendar check agrees with glibc's.
  if (tm.tm_mday != std::stoi(text.substr(8, 2)) || tm.tm_mon != std::stoi(text.substr(5, 2)) - 1) __builtin_trap();
  return 0;
}
