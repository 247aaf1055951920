#pragma once
// What the agent created on the host (users, groups, mounts, files), so that it only ever changes
// or removes its own objects. Backed by the state database in the agent; an in-memory ledger
// serves `plan` and tests.

#include <map>
#include <set>
#include <string>
#include <vector>

#include "providers/core/result.h"

namespace pim {

class Ledger {
 public:
  virtual ~Ledger() = default;
  /// True when the agent recorded creating (kind, name): kind is "user", "group", "mount", "file".
  virtual bool owns(const std::string& kind, const std::string& name) const = 0;
  /// Every name of a kind the agent owns, sorted.
  virtual std::vector<std::string> owned(const std::string& kind) const = 0;
  /// Records that the agent created (kind, name). Errors: the record could not be stored.
  virtual Status recordCreated(const std::string& kind, const std::string& name) = 0;
  /// Records that the agent removed (kind, name).
  virtual Status recordRemoved(const std::string& kind, const std::string& name) = 0;
  /// Records several objects of one kind at once (a ledger backed by a database does it in one
  /// durable write; a batch of accounts records all its intents before their creation).
  virtual Status recordCreatedAll(const std::string& kind, const std::vector<std::string>& names) {
    for (const auto& name : names) {
      if (Status s = recordCreated(kind, name); !s) return s;
    }
    return Status::ok();
  }
  /// Forgets several removed objects of one kind at once (one durable write in a database).
  virtual Status recordRemovedAll(const std::string& kind, const std::vector<std::string>& names) {
    for (const auto& name : names) {
      if (Status s = recordRemoved(kind, name); !s) return s;
    }
    return Status::ok();
  }
};

/// A Ledger in memory (for `plan`, tests, and as the write-back cache of the database ledger).
class MemoryLedger : public Ledger {
 public:
  bool owns(const std::string& kind, const std::string& name) const override {
    auto it = owned_.find(kind);
    return it != owned_.end() && it->second.count(name) > 0;
  }
  std::vector<std::string> owned(const std::string& kind) const override {
    auto it = owned_.find(kind);
    if (it == owned_.end()) return {};
    return {it->second.begin(), it->second.end()};
  }
  Status recordCreated(const std::string& kind, const std::string& name) override {
    owned_[kind].insert(name);
    return Status::ok();
  }
  Status recordRemoved(const std::string& kind, const std::string& name) override {
    owned_[kind].erase(name);
    return Status::ok();
  }

 private:
  std::map<std::string, std::set<std::string>> owned_;
};

}  // namespace pim
