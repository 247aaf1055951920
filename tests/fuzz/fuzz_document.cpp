// libFuzzer target: the access document parser and the masking printer on arbitrary bytes.
// Invariants checked beyond "no crash": every accepted key and CIDR re-parses to itself, and the
// masked pretty-print of an accepted document is itself an accepted document with the same keys.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "agent/document/document.h"
#include "agent/document/validators.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  pim::DocumentOptions options;
  options.maxBytes = 1 << 20;
  const auto doc = pim::parseDocument(body, options);
  const std::string masked = pim::maskSecrets(body);
  if (!doc) return 0;
  for (const auto& k : doc->keys) {
    const auto again = pim::parsePublicKey(k.key.identity());
    if (!again || !(*again == k.key)) __builtin_trap();
  }
  for (const auto& c : doc->allowedSources) {
    const auto again = pim::parseCidr(c.text);
    if (!again || again->text != c.text) __builtin_trap();
  }
  for (const auto& a : doc->accounts) {
    if (a.username == "root" || a.username == options.loginUser) __builtin_trap();
  }
  pim::DocumentOptions unlimited;
  unlimited.maxBytes = 0;
  const auto reparsed = pim::parseDocument(masked, unlimited);
  if (!reparsed || reparsed->keys.size() != doc->keys.size() ||
      reparsed->allowedSources.size() != doc->allowedSources.size() || reparsed->revision != doc->revision) {
    __builtin_trap();
  }
  return 0;
}
