#pragma once
// Small text helpers shared by every layer, one copy each: splitting the colon-separated lines of
// passwd(5), group(5), shadow(5) and the space-separated lines of mountinfo, trimming, printing
// a file mode and a time.

#include <cstdint>
#include <string>
#include <vector>

namespace pim {

/// Splits `line` at every `sep`; empty fields are kept ("a::b" -> {"a", "", "b"}). Pure.
std::vector<std::string> splitFields(const std::string& line, char sep);

/// `s` without leading and trailing spaces, tabs, CR and LF. Pure.
std::string trimmed(const std::string& s);

/// A file mode's permission bits as chmod writes them: 0755 -> "0755", 02770 -> "2770". Pure.
std::string octalMode(unsigned mode);

/// Unix seconds as RFC 3339 UTC to the second: "2026-11-21T10:00:00Z". Pure.
std::string isoTime(int64_t unixSeconds);

}  // namespace pim
