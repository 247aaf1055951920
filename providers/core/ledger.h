#pragma once
// What the agent created on the host (users, groups, mounts, files), so that it only ever changes
// or removes its own objects. Backed by the state database in the agent; an in-memory ledger
// serves `plan` and tests.

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "providers/core/result.h"

namespace pim {

/// Kinds of host objects the agent records as its own, so that it only ever removes those.
enum class OwnedKind { kUser, kGroup, kMount, kFile, kKey };

/// "user", "group", "mount", "file" or "key": the spellings of the state database (also written in
/// state/schema.cpp's CHECK constraint).
inline const char* ownedKindName(OwnedKind kind) {
  switch (kind) {
    case OwnedKind::kUser:
      return "user";
    case OwnedKind::kGroup:
      return "group";
    case OwnedKind::kMount:
      return "mount";
    case OwnedKind::kFile:
      return "file";
    case OwnedKind::kKey:
      return "key";
  }
  return "unknown";
}

/// The kind named `name` (as ownedKindName writes it), or nullopt.
inline std::optional<OwnedKind> parseOwnedKind(const std::string& name) {
  for (OwnedKind kind : {OwnedKind::kUser, OwnedKind::kGroup, OwnedKind::kMount, OwnedKind::kFile, OwnedKind::kKey}) {
    if (name == ownedKindName(kind)) return kind;
  }
  return std::nullopt;
}

class Ledger {
 public:
  virtual ~Ledger() = default;
  /// True when the agent recorded creating (kind, name).
  virtual bool owns(OwnedKind kind, const std::string& name) const = 0;
  /// Every name of a kind the agent owns, sorted.
  virtual std::vector<std::string> owned(OwnedKind kind) const = 0;
  /// Records that the agent created (kind, name). Errors: the record could not be stored.
  virtual Status recordCreated(OwnedKind kind, const std::string& name) = 0;
  /// Records that the agent removed (kind, name).
  virtual Status recordRemoved(OwnedKind kind, const std::string& name) = 0;
  /// Records several objects of one kind at once (a ledger backed by a database does it in one
  /// durable write; a batch of accounts records all its intents before their creation).
  virtual Status recordCreatedAll(OwnedKind kind, const std::vector<std::string>& names) {
    for (const auto& name : names) {
      if (Status s = recordCreated(kind, name); !s) return s;
    }
    return Status::ok();
  }
  /// Forgets several removed objects of one kind at once (one durable write in a database).
  virtual Status recordRemovedAll(OwnedKind kind, const std::vector<std::string>& names) {
    for (const auto& name : names) {
      if (Status s = recordRemoved(kind, name); !s) return s;
    }
    return Status::ok();
  }
};

/// A Ledger in memory (for `plan`, tests, and as the write-back cache of the database ledger).
class MemoryLedger : public Ledger {
 public:
  bool owns(OwnedKind kind, const std::string& name) const override {
    auto it = owned_.find(kind);
    return it != owned_.end() && it->second.count(name) > 0;
  }
  std::vector<std::string> owned(OwnedKind kind) const override {
    auto it = owned_.find(kind);
    if (it == owned_.end()) return {};
    return {it->second.begin(), it->second.end()};
  }
  Status recordCreated(OwnedKind kind, const std::string& name) override {
    owned_[kind].insert(name);
    return Status::ok();
  }
  Status recordRemoved(OwnedKind kind, const std::string& name) override {
    owned_[kind].erase(name);
    return Status::ok();
  }

 private:
  std::map<OwnedKind, std::set<std::string>> owned_;
};

}  // namespace pim
