#pragma once
// Standard base64 (RFC 4648 alphabet), one copy for every reader: the keys of the access document
// (padding required), the store's signatures and etcd's JSON gateway (padding optional). Every
// text decodes to one byte string and every byte string has one spelling: characters outside
// the alphabet (white space included), misplaced or excess '=', impossible lengths and non-zero
// unused bits are refused.

#include <optional>
#include <string>
#include <string_view>

#include "providers/core/result.h"

namespace pim {

enum class Base64Padding { kRequired, kOptional };

/// Decodes `text` into `out`. Errors (kInvalid) say "not valid base64 (<why>)": empty (when
/// padding is required), length is not a multiple of 4, unexpected character, non-zero padding
/// bits. Pure.
Status decodeBase64(std::string_view text, std::string& out, Base64Padding padding = Base64Padding::kRequired);
/// The same with padding optional; nullopt on any error.
std::optional<std::string> decodeBase64(const std::string& text);
/// Encodes bytes as standard base64 with padding, on one line. Pure.
std::string encodeBase64(const std::string& bytes);

}  // namespace pim
