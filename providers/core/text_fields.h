#pragma once
// Splitting the colon-separated lines of passwd(5), group(5), shadow(5) and the space-separated
// lines of mountinfo: one helper for every reader of those files.

#include <string>
#include <vector>

namespace pim {

/// Splits `line` at every `sep`; empty fields are kept ("a::b" -> {"a", "", "b"}). Pure.
std::vector<std::string> splitFields(const std::string& line, char sep);

}  // namespace pim
