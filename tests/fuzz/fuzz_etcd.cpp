// libFuzzer target: the etcd:// source's parsers (the source URL, a /v3/kv/range answer, the
// /v3/watch stream). Whatever they accept must be consistent with what they promise.

#include <cstddef>
#include <cstdint>
#include <string>

#include "agent/store/etcd_store_client.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto url = pim::parseEtcdUrl(text);
  if (url) {
    if (url->endpoints.empty() || url->endpoints.size() > 16) __builtin_trap();
    if (url->key.size() < 2 || url->key[0] != '/' || url->key.size() > 1024) __builtin_trap();
    for (unsigned char c : url->key) {
      if (c <= 0x20 || c == 0x7f || c == '%' || c == '?' || c == '#') __builtin_trap();
    }
  }
  auto range = pim::parseEtcdRange(text);
  if (range) {
    if (range->revision < 0) __builtin_trap();
    for (const auto& kv : range->kvs) {
      if (kv.modRevision < 0) __builtin_trap();
    }
  }
  (void)pim::scanEtcdWatch(text);
  return 0;
}
