#include "providers/host/account_files.h"

#include <cstdlib>
#include <sstream>
#include <vector>

#include "providers/core/text_fields.h"

namespace pim {
namespace {

UserInfo userOf(const std::vector<std::string>& f) {
  UserInfo u;
  u.name = f[0];
  u.uid = uid_t(std::strtoul(f[2].c_str(), nullptr, 10));
  u.gid = gid_t(std::strtoul(f[3].c_str(), nullptr, 10));
  u.home = f[5];
  u.shell = f[6];
  return u;
}

GroupInfo groupOf(const std::vector<std::string>& f) {
  GroupInfo g;
  g.name = f[0];
  g.gid = gid_t(std::strtoul(f[2].c_str(), nullptr, 10));
  if (!f[3].empty()) g.members = splitFields(f[3], ',');
  return g;
}

ShadowEntry shadowOf(const std::vector<std::string>& f) {
  ShadowEntry e;
  e.name = f[0];
  e.password = f[1];
  if (f.size() > 7 && !f[7].empty()) {
    char* end = nullptr;
    long long v = std::strtoll(f[7].c_str(), &end, 10);
    if (end != nullptr && *end == '\0') e.expireDays = v;
  }
  return e;
}

/// The entries of `text` (lines of at least `minFields` fields and a name), by name, the first
/// line of a name winning; only `name`'s when it is given (and then it stops there).
template <class Entry>
std::map<std::string, Entry> entries(const std::string& text, size_t minFields,
                                     Entry (*make)(const std::vector<std::string>&), const std::string* name) {
  std::map<std::string, Entry> out;
  std::stringstream ss(text);
  for (std::string line; std::getline(ss, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (name && line.compare(0, name->size() + 1, *name + ":") != 0) continue;
    auto f = splitFields(line, ':');
    if (f.size() < minFields || f[0].empty()) continue;
    out.emplace(f[0], make(f));
    if (name) break;
  }
  return out;
}

template <class Entry>
std::optional<Entry> only(std::map<std::string, Entry> found) {
  if (found.empty()) return std::nullopt;
  return std::move(found.begin()->second);
}

}  // namespace

std::map<std::string, UserInfo> parsePasswd(const std::string& text) { return entries(text, 7, userOf, nullptr); }

std::map<std::string, GroupInfo> parseGroup(const std::string& text) { return entries(text, 4, groupOf, nullptr); }

std::optional<UserInfo> findPasswdEntry(const std::string& text, const std::string& name) {
  return only(entries(text, 7, userOf, &name));
}

std::optional<GroupInfo> findGroupEntry(const std::string& text, const std::string& name) {
  return only(entries(text, 4, groupOf, &name));
}

std::map<std::string, ShadowEntry> parseShadow(const std::string& text) { return entries(text, 2, shadowOf, nullptr); }

std::optional<ShadowEntry> parseShadowEntry(const std::string& shadowText, const std::string& user) {
  return only(entries(shadowText, 2, shadowOf, &user));
}

}  // namespace pim
