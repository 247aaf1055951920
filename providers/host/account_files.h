#pragma once
// One reader of the account files, passwd(5), group(5) and shadow(5), for everything that looks
// up an account: RealHost, the accounts tool, the SFTP accounts provider and adoption after a
// rebuilt state database.

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "providers/host/host.h"

namespace pim {

/// passwd(5) text as entries by name; the first line of a name wins (as getpwnam); malformed
/// lines (fewer than 7 fields, no name) are ignored; a CR before the LF is dropped. Pure.
std::map<std::string, UserInfo> parsePasswd(const std::string& text);
/// group(5) text as entries by name, with the same rules (4 fields). Pure.
std::map<std::string, GroupInfo> parseGroup(const std::string& text);
/// The first well-formed entry of `name`, if any. Pure.
std::optional<UserInfo> findPasswdEntry(const std::string& text, const std::string& name);
std::optional<GroupInfo> findGroupEntry(const std::string& text, const std::string& name);

/// One line of <root>/etc/shadow. `password` may hold a hash: never log or print it.
struct ShadowEntry {
  std::string name;
  std::string password;               // "!", "*", "!$y$...", "$y$..."
  std::optional<int64_t> expireDays;  // field 8, days since 1970-01-01; nullopt when empty
  /// True when no password can authenticate: the field is empty-locked ("!..." or "*...").
  bool passwordLocked() const { return !password.empty() && (password[0] == '!' || password[0] == '*'); }
  /// True when the account is expired on day `nowSeconds / 86400` (pam_unix's rule).
  bool accountExpired(int64_t nowSeconds) const {
    return expireDays && *expireDays >= 0 && nowSeconds / 86400 >= *expireDays;
  }
};

/// shadow(5) text as entries by name, with the same rules (2 fields; an expiry field 8 that is
/// not a whole number is read as none). Pure.
std::map<std::string, ShadowEntry> parseShadow(const std::string& text);
/// The entry of `user` in shadow(5) text, if any. Pure.
std::optional<ShadowEntry> parseShadowEntry(const std::string& shadowText, const std::string& user);

}  // namespace pim
