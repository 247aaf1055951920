// libFuzzer target: parseCidr. Accepted CIDRs are canonical: parsing the output gives it back.

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "agent/document/validators.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto cidr = pim::parseCidr(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!cidr) return 0;
  const auto again = pim::parseCidr(cidr->text);
  if (!again || again->text != cidr->text) __builtin_trap();
  return 0;
}
