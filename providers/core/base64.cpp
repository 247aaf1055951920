#include "providers/core/base64.h"

#include <cstdint>

namespace pim {
namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int base64Value(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

Status invalidBase64(const char* why) {
  return Status::error(ErrorCode::kInvalid, std::string("not valid base64 (") + why + ")");
}

}  // namespace

Status decodeBase64(std::string_view text, std::string& out, Base64Padding padding) {
  out.clear();
  const bool required = padding == Base64Padding::kRequired;
  if (required && text.empty()) return invalidBase64("empty");
  size_t pad = 0;
  while (pad < 2 && text.size() > pad && text[text.size() - 1 - pad] == '=') ++pad;
  if ((required || pad > 0) && text.size() % 4 != 0) return invalidBase64("length is not a multiple of 4");
  const size_t dataLen = text.size() - pad;
  if (dataLen % 4 == 1) return invalidBase64("length is not a multiple of 4");
  out.reserve(dataLen / 4 * 3 + 2);
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < dataLen; ++i) {
    const int v = base64Value(static_cast<unsigned char>(text[i]));
    if (v < 0) return invalidBase64("unexpected character");  // also a third '=' or one inside
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  // Unused bits must be zero: otherwise two texts would decode to the same bytes.
  if (bits > 0 && (acc & ((1u << bits) - 1)) != 0) return invalidBase64("non-zero padding bits");
  return Status::ok();
}

std::optional<std::string> decodeBase64(const std::string& text) {
  std::string out;
  if (!decodeBase64(text, out, Base64Padding::kOptional)) return std::nullopt;
  return out;
}

std::string encodeBase64(const std::string& bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  auto byteAt = [&](size_t k) { return static_cast<uint32_t>(static_cast<unsigned char>(bytes[k])); };
  for (; i + 3 <= bytes.size(); i += 3) {
    const uint32_t n = (byteAt(i) << 16) | (byteAt(i + 1) << 8) | byteAt(i + 2);
    for (int shift : {18, 12, 6, 0}) out.push_back(kAlphabet[(n >> shift) & 63]);
  }
  const size_t rest = bytes.size() - i;
  if (rest > 0) {
    uint32_t n = byteAt(i) << 16;
    if (rest == 2) n |= byteAt(i + 1) << 8;
    out.push_back(kAlphabet[(n >> 18) & 63]);
    out.push_back(kAlphabet[(n >> 12) & 63]);
    out.push_back(rest == 2 ? kAlphabet[(n >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

}  // namespace pim
