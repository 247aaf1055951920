#include "providers/login_user.h"

#include <algorithm>

#include "providers/core/paths.h"
#include "providers/host/accounts_tool.h"

namespace pim {
namespace {

constexpr const char* kLoginShell = "/bin/bash";
constexpr mode_t kHomeMode = 0750;

// Action payloads: which step apply() runs (no secrets here).
constexpr const char* kOpGroup = "create-group";
constexpr const char* kOpUser = "create-user";
constexpr const char* kOpMember = "add-member";
constexpr const char* kOpLock = "lock-password";
constexpr const char* kOpHome = "create-home";

Action makeAction(Verb verb, std::string object, std::string detail, std::string op) {
  // A password on the key-only login user is taken away with the revocations; the rest makes
  // the user (locked) that keys are later granted to.
  const Stage stage = op == kOpLock ? Stage::kRevoke : Stage::kPrepare;
  Action a = makeProviderAction("login_user", stage, verb, std::move(object), std::move(detail));
  a.payload = std::move(op);
  return a;
}

}  // namespace

Result<LoginUserCurrent> observeLoginUser(Host& host, const Ledger& ledger, const LoginUserDesired& desired) {
  LoginUserCurrent c;
  auto group = host.findGroup(desired.group);
  if (!group) return group.status();
  c.groupExists = group->has_value();
  auto userGroup = host.findGroup(desired.user);
  if (!userGroup) return userGroup.status();
  c.userGroupExists = userGroup->has_value();
  auto user = host.findUser(desired.user);
  if (!user) return user.status();
  c.userExists = user->has_value();
  c.userOwned = ledger.owns(OwnedKind::kUser, desired.user);
  c.home = "/home/" + desired.user;
  if (!c.userExists) return c;

  c.uid = (*user)->uid;
  c.gid = (*user)->gid;
  c.home = (*user)->home;
  if (*group) {
    const auto& members = (*group)->members;
    c.userInGroup = (*group)->gid == c.gid || std::find(members.begin(), members.end(), desired.user) != members.end();
  }
  if (c.userOwned) {
    AccountsTool tool(host);
    auto entry = tool.shadow(desired.user);
    if (!entry) return entry.status();
    c.passwordLocked = !*entry || (*entry)->passwordLocked();
  }
  if (!c.home.empty() && c.home[0] == '/' && c.home != "/") {
    auto home = host.lstat(c.home);
    if (!home) return home.status();
    c.homeExists = home->exists();
  }
  return c;
}

std::vector<Action> planLoginUser(const LoginUserDesired& desired, const LoginUserCurrent& current) {
  std::vector<Action> actions;
  if (!current.groupExists) {
    Action a = makeAction(Verb::kCreate, "group " + desired.group, "system group", kOpGroup);
    a.after = "group " + desired.group;
    actions.push_back(std::move(a));
  }
  if (!current.userExists) {
    Action a = makeAction(
        Verb::kCreate, "user " + desired.user,
        "home " + current.home + ", shell " + kLoginShell + ", member of " + desired.group + ", password locked",
        kOpUser);
    a.after = "user " + desired.user;
    actions.push_back(std::move(a));
    return actions;
  }
  if (!current.userInGroup) {
    Action a = makeAction(Verb::kAdd, "user " + desired.user + " to group " + desired.group, "", kOpMember);
    a.before = "not a member";
    a.after = "member";
    actions.push_back(std::move(a));
  }
  if (current.userOwned && !current.passwordLocked) {
    Action a = makeAction(Verb::kLock, "password of " + desired.user, "key-only login user has a password", kOpLock);
    a.before = "password set";
    a.after = "password locked";
    actions.push_back(std::move(a));
  }
  if (!current.homeExists) {
    Action a = makeAction(Verb::kCreate, current.home, "missing home of " + desired.user, kOpHome);
    a.after = "directory";
    actions.push_back(std::move(a));
  }
  return actions;
}

LoginUserProvider::LoginUserProvider(Logger log, Ledger& ledger) : log_(std::move(log)), ledger_(ledger) {}

std::string LoginUserProvider::name() const { return "login_user"; }

Result<std::vector<Action>> LoginUserProvider::plan(const Desired& desired, Host& host) {
  LoginUserDesired want{desired.host.loginUser, desired.host.transferGroup};
  auto current = observeLoginUser(host, ledger_, want);
  if (!current) return current.status();
  auto actions = planLoginUser(want, *current);
  logPlan(log_, actions);
  return actions;
}

Status LoginUserProvider::apply(const Action& action, const Desired& desired, Host& host) {
  const std::string& user = desired.host.loginUser;
  const std::string& group = desired.host.transferGroup;
  AccountsTool tool(host);
  const std::string& op = action.payload;

  if (op == kOpGroup) {
    if (Status s = tool.addGroup(group, true); !s) return s;
    log_->info("created group {}", group);
    return ledger_.recordCreated(OwnedKind::kGroup, group);
  }
  if (op == kOpUser) {
    auto userGroup = host.findGroup(user);
    if (!userGroup) return userGroup.status();
    NewUser u;
    u.name = user;
    u.home = "/home/" + user;
    u.createHome = true;
    u.shell = kLoginShell;
    // A leftover group named like the user would make `useradd -U` fail: use it as the primary.
    if (userGroup->has_value()) u.primaryGroup = user;
    u.supplementaryGroups = {group};
    if (Status s = tool.addUser(u); !s) return s;
    log_->info("created user {} (home {}, member of {})", user, u.home, group);
    if (Status s = ledger_.recordCreated(OwnedKind::kUser, user); !s) return s;
    // useradd leaves the password as "!"; make sure of it whatever login.defs says.
    auto entry = tool.shadow(user);
    if (!entry) return entry.status();
    if (*entry && !(*entry)->passwordLocked()) return tool.lockPassword(user);
    return Status::ok();
  }
  if (op == kOpMember) {
    if (Status s = tool.addToGroup(user, group); !s) return s;
    log_->info("added {} to group {}", user, group);
    return Status::ok();
  }
  if (op == kOpLock) {
    log_->warn("drift: login user {} has a password; locking it (key-only)", user);
    return tool.lockPassword(user);
  }
  if (op == kOpHome) {
    auto found = host.findUser(user);
    if (!found) return found.status();
    if (!*found) return Status::error(ErrorCode::kNotFound, "create home of " + user + ": no such user");
    const UserInfo& info = **found;
    if (Status s = host.makeDirectories(parentOf(info.home), {0755, 0, 0}); !s) return s;
    if (Status s = host.makeDirectory(info.home, {kHomeMode, info.uid, info.gid}); !s) return s;
    log_->info("created home {} of {}", info.home, user);
    return Status::ok();
  }
  return Status::error(ErrorCode::kInternal, "login_user: unknown action " + action.describe());
}

}  // namespace pim
