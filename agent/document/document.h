#pragma once
// The access document parser: JSON text from the store -> a validated AccessDocument. The rules
// are docs/access-document.md: whole-document problems reject the document, per-entry
// problems skip only that entry.

#include <cstdint>
#include <string>
#include <string_view>

#include "providers/core/model.h"
#include "providers/core/result.h"

namespace pim {

/// Deepest nesting of arrays and objects accepted (the top-level object counts as 1).
inline constexpr int kMaxDocumentDepth = 64;
/// Most JSON objects and arrays in one document (bounds the memory of the parsed tree).
inline constexpr size_t kMaxJsonContainers = 32768;
/// Most JSON values (scalars, objects, arrays) in one document.
inline constexpr size_t kMaxJsonValues = 262144;
/// Most entries accepted in network.allowed_sources.
inline constexpr size_t kMaxAllowedSources = 1024;
/// Most entries accepted in sudo.tasks.
inline constexpr size_t kMaxSudoTasks = 64;
/// Most entries accepted in one key's or account's own allowed_sources.
inline constexpr size_t kMaxEntrySources = 256;
/// Longest ssh.keys[].owner accepted, in bytes.
inline constexpr size_t kMaxOwnerBytes = 256;

struct DocumentOptions {
  std::string expectedInstance;  // "" : any instance
  std::string loginUser = "akeneo";
  int64_t maxBytes = 4194304;  // <= 0: no limit
};

/// Parses and validates an access document. Whole-document problems return Status kRejected
/// whose message names the field and the reason ("version: must be 1, got 2",
/// "sftp.accounts[1].username: duplicate 'akeneosftp' (also in sftp.accounts[0])"): size over
/// maxBytes, NUL byte, invalid UTF-8, nesting deeper than 64, more than kMaxJsonContainers
/// objects and arrays or kMaxJsonValues values, not JSON, a duplicate key in an
/// object, wrong version/revision/instance, a missing or mistyped section, more than 1024
/// allowed_sources, a present but mistyped `sudo` or `sudo.tasks` (the section is optional: absent
/// or null means no task), more than kMaxSudoTasks tasks, a duplicate id (within keys, within
/// accounts, within tasks) or username. Per-entry problems
/// skip only that entry (AccessDocument::skipped, by id or by JSON path when the id itself is
/// bad; sources by value); a skipped account whose username is valid (not root, not the login
/// user) is listed in lockedUsernames. Unknown fields are listed in unknownFields. No side
/// effects; messages never contain password hashes or key material.
Result<AccessDocument> parseDocument(std::string_view body, const DocumentOptions& options);

/// The document pretty-printed (2-space JSON, member order kept) with every password_hash, and
/// any member whose name contains "password", "secret" or "token", replaced by "********" (null
/// stays null; inside an object or array under such a name, every scalar), for `show`. Streams
/// (no tree). When the body is not JSON or is over the nesting/value limits of parseDocument,
/// returns a note that says so, without any of the body, as a JSON string literal
/// ("\"(document not shown: it is not valid JSON)\""): the result is always valid JSON.
std::string maskSecrets(std::string_view body);

}  // namespace pim
