#pragma once
// Splitting a path into its directory and its last component, textually (nothing is resolved).

#include <string>

namespace pim {

/// "/a/b" -> "/a"; "/a" -> "/"; "b" -> ".".
inline std::string parentOf(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

/// "/a/b" -> "b"; "/" -> ""; "b" -> "b".
inline std::string baseName(const std::string& path) {
  const auto slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace pim
