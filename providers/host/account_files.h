#pragma once
// One reader of the account files, passwd(5) and group(5), for everything that looks up an
// account: RealHost, the accounts tool, the SFTP accounts provider and adoption after a rebuilt
// state database. (shadow(5): parseShadowEntry in accounts_tool.h.)

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

}  // namespace pim
