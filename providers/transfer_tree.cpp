#include "providers/transfer_tree.h"
#include "providers/core/text_fields.h"

#include <cstdio>
#include <cstdlib>
#include <set>
#include <sstream>

#include "providers/host/accounts_tool.h"

namespace pim {
namespace {

constexpr const char* kProvider = "transfer_tree";

/// "/a/b/c" -> {"/a", "/a/b"} (strict ancestors, "/" excluded).
std::vector<std::string> ancestorsOf(const std::string& path) {
  std::vector<std::string> out;
  for (size_t pos = path.find('/', 1); pos != std::string::npos; pos = path.find('/', pos + 1)) {
    out.push_back(path.substr(0, pos));
  }
  return out;
}

/// The component paths of a folder below the root: "a/b" -> {root/a, root/a/b}; "." -> {}.
std::vector<std::string> folderComponents(const std::string& root, const std::string& folderPath) {
  std::vector<std::string> out;
  if (folderPath.size() <= root.size()) return out;
  for (size_t pos = folderPath.find('/', root.size() + 1); pos != std::string::npos;
       pos = folderPath.find('/', pos + 1)) {
    out.push_back(folderPath.substr(0, pos));
  }
  out.push_back(folderPath);
  return out;
}

Action makeAction(Verb verb, const std::string& object, const std::string& detail) {
  // Correcting a folder's mode or group can only narrow who may use it; creating one grants
  // nothing by itself.
  return makeProviderAction(kProvider, verb == Verb::kFix ? Stage::kRevoke : Stage::kPrepare, verb, object, detail);
}

Action mkdirAction(const std::string& path, mode_t mode, bool transferGroup, const std::string& group) {
  Action a = makeAction(Verb::kMkdir, path, octalMode(mode) + " root:" + (transferGroup ? group : std::string("root")));
  a.payload = octalMode(mode) + (transferGroup ? ":group" : ":root");
  a.before = "missing";
  a.after = "directory " + a.detail;
  return a;
}

/// Plans a directory under the transfer root (the root included): created, or mode/group fixed.
void planTransferDirectory(const std::string& path, const FileInfo& info, const TransferTreeDesired& desired,
                           const std::optional<gid_t>& gid, std::vector<Action>& actions) {
  if (!info.exists()) {
    actions.push_back(mkdirAction(path, kTransferDirectoryMode, true, desired.transferGroup));
    return;
  }
  std::vector<std::string> fixes;
  if (info.mode != kTransferDirectoryMode)
    fixes.push_back("mode " + octalMode(info.mode) + " -> " + octalMode(kTransferDirectoryMode));
  if (!gid || info.gid != *gid) fixes.push_back("group " + std::to_string(info.gid) + " -> " + desired.transferGroup);
  if (fixes.empty()) return;
  std::string detail;
  for (const auto& f : fixes) detail += (detail.empty() ? "" : ", ") + f;
  Action a = makeAction(Verb::kFix, path, detail);
  a.before = octalMode(info.mode) + " gid " + std::to_string(info.gid);
  a.after = octalMode(kTransferDirectoryMode) + " group " + desired.transferGroup;
  actions.push_back(a);
}

}  // namespace

std::optional<std::string> transferFolderPath(const std::string& transferRoot, const std::string& folder) {
  if (!folder.empty() && folder[0] == '/') return std::nullopt;
  std::string path = transferRoot;
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  std::stringstream ss(folder);
  std::string part;
  while (std::getline(ss, part, '/')) {
    if (part.empty() || part == ".") continue;
    if (part == "..") return std::nullopt;
    path += (path == "/" ? "" : "/") + part;
  }
  return path;
}

TransferTreeDesired transferTreeDesired(const Desired& desired) {
  TransferTreeDesired d;
  d.transferRoot = desired.host.transferRoot;
  d.transferGroup = desired.host.transferGroup;
  for (const auto& account : desired.document.accounts) d.folders.push_back({account.id, account.folder});
  return d;
}

Result<TransferTreeCurrent> observeTransferTree(const TransferTreeDesired& desired, Host& host) {
  TransferTreeCurrent current;
  auto group = host.findGroup(desired.transferGroup);
  if (!group) return group.status();
  if (*group) current.groupGid = (*group)->gid;

  const std::string root = *transferFolderPath(desired.transferRoot, ".");
  std::vector<std::string> chain = ancestorsOf(root);
  chain.push_back(root);
  for (const auto& path : chain) {
    auto info = host.lstat(path);
    if (!info) return info.status();
    if (info->exists() && info->type != FileType::kDirectory) {
      return Status::error(ErrorCode::kUnsafe,
                           "transfer root " + root + ": " + path +
                               (info->type == FileType::kSymlink ? " is a symbolic link" : " is not a directory"),
                           path);
    }
    current.paths[path] = *info;
  }

  for (const auto& f : desired.folders) {
    auto folderPath = transferFolderPath(root, f.folder);
    if (!folderPath) continue;
    for (const auto& path : folderComponents(root, *folderPath)) {
      if (current.unsafe.count(path)) break;
      if (auto known = current.paths.find(path); known != current.paths.end()) {
        if (!known->second.exists()) break;
        continue;
      }
      auto info = host.lstat(path);
      if (!info) {
        if (info.status().code() != ErrorCode::kUnsafe) return info.status();
        current.unsafe[path] = info.status().message();
        break;
      }
      if (info->type == FileType::kSymlink) {
        current.unsafe[path] = path + " is a symbolic link";
        break;
      }
      if (info->exists() && info->type != FileType::kDirectory) {
        current.unsafe[path] = path + " is not a directory";
        break;
      }
      current.paths[path] = *info;
      if (!info->exists()) break;  // everything below is missing too
    }
  }
  return current;
}

std::vector<Action> planTransferTree(const TransferTreeDesired& desired, const TransferTreeCurrent& current,
                                     std::vector<SkippedEntry>* skipped) {
  std::vector<Action> actions;
  const std::string root = *transferFolderPath(desired.transferRoot, ".");
  auto infoOf = [&](const std::string& path) {
    auto it = current.paths.find(path);
    return it == current.paths.end() ? FileInfo{} : it->second;
  };
  for (const auto& path : ancestorsOf(root)) {
    if (!infoOf(path).exists()) actions.push_back(mkdirAction(path, kTransferParentMode, false, desired.transferGroup));
  }
  planTransferDirectory(root, infoOf(root), desired, current.groupGid, actions);

  std::set<std::string> planned{root};
  for (const auto& f : desired.folders) {
    auto folderPath = transferFolderPath(root, f.folder);
    if (!folderPath) {
      if (skipped) skipped->push_back({f.id, "folder '" + f.folder + "' is not below the transfer root"});
      continue;
    }
    const auto components = folderComponents(root, *folderPath);
    std::string why;
    for (const auto& path : components) {
      auto it = current.unsafe.find(path);
      if (it != current.unsafe.end()) {
        why = it->second;
        break;
      }
    }
    if (!why.empty()) {
      if (skipped) skipped->push_back({f.id, "folder '" + f.folder + "' refused: " + why});
      continue;
    }
    for (const auto& path : components) {
      if (!planned.insert(path).second) continue;
      planTransferDirectory(path, infoOf(path), desired, current.groupGid, actions);
    }
  }
  return actions;
}

TransferTreeProvider::TransferTreeProvider(Logger log) : log_(std::move(log)) {}

std::string TransferTreeProvider::name() const { return kProvider; }

Result<std::vector<Action>> TransferTreeProvider::plan(const Desired& desired, Host& host) {
  const auto d = transferTreeDesired(desired);
  return observeAndPlan([&] { return observeTransferTree(d, host); },
                        [&](const TransferTreeCurrent& current) { return planTransferTree(d, current, &skipped_); },
                        skipped_, log_);
}

Status TransferTreeProvider::apply(const Action& action, const Desired& desired, Host& host) {
  const std::string& group = desired.host.transferGroup;
  auto gidOf = [&]() -> Result<gid_t> {
    auto g = host.findGroup(group);
    if (!g) return g.status();
    if (!*g) return Status::error(ErrorCode::kNotFound, "group " + group + ": does not exist");
    return (*g)->gid;
  };

  if (action.verb == Verb::kMkdir) {
    const auto colon = action.payload.find(':');
    if (colon == std::string::npos)
      return Status::error(ErrorCode::kInternal, "mkdir " + action.object + ": bad action");
    const mode_t mode = mode_t(std::strtoul(action.payload.substr(0, colon).c_str(), nullptr, 8));
    Ownership own{mode, 0, 0};
    if (action.payload.substr(colon + 1) == "group") {
      auto gid = gidOf();
      if (!gid) return gid.status();
      own.gid = *gid;
    }
    if (Status s = host.makeDirectory(action.object, own); !s) return s;
    log_->info("created directory {} ({})", action.object, action.detail);
    return Status::ok();
  }

  if (action.verb == Verb::kFix) {
    auto gid = gidOf();
    if (!gid) return gid.status();
    auto info = host.lstat(action.object);
    if (!info) return info.status();
    if (info->type != FileType::kDirectory) {
      return Status::error(ErrorCode::kUnsafe, "fix " + action.object + ": no longer a directory", action.object);
    }
    // Group first, then mode: chown clears the set-gid bit on some file systems.
    if (info->gid != *gid) {
      if (Status s = host.setOwner(action.object, info->uid, *gid); !s) return s;
    }
    if (Status s = host.setMode(action.object, kTransferDirectoryMode); !s) return s;
    log_->warn("corrected {}: {}", action.object, action.detail);
    return Status::ok();
  }
  return Status::error(ErrorCode::kInternal, "transfer_tree: unknown action " + std::string(verbName(action.verb)));
}

}  // namespace pim
