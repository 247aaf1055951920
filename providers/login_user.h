#pragma once
// The login_user provider: the transfer group exists, the login user exists (created if missing:
// home /home/<user>, shell /bin/bash, its own user group, password locked: key only) and is a
// member of the transfer group. The login user is never removed. A login user that the agent
// did not create is managed for its group membership (and a missing home) only: its password
// and shell are the operator's. The agent records what it created in the ledger ("user",
// "group") so that other code never removes what it did not create.

#include <string>
#include <vector>

#include "providers/core/ledger.h"
#include "providers/core/log.h"
#include "providers/core/result.h"
#include "providers/host/host.h"
#include "providers/provider.h"

namespace pim {

/// What the provider wants.
struct LoginUserDesired {
  std::string user;   // login user ("akeneo")
  std::string group;  // transfer group ("pimtransfer")
};

/// What observeLoginUser() found.
struct LoginUserCurrent {
  bool groupExists = false;
  bool userExists = false;
  bool userOwned = false;        // the ledger says the agent created the user
  bool userInGroup = false;      // listed in the group, or the group is its primary group
  bool userGroupExists = false;  // a group named like the user exists (useradd -U would fail)
  bool passwordLocked = true;    // shadow field starts with '!' or '*' (only read when owned)
  bool homeExists = true;
  std::string home;  // from passwd; "/home/<user>" for a user still to create
  uid_t uid = 0;
  gid_t gid = 0;
};

/// Reads passwd, group, shadow (for an owned user) and the home through the host.
/// Errors: a file could not be read.
Result<LoginUserCurrent> observeLoginUser(Host& host, const Ledger& ledger, const LoginUserDesired& desired);

/// Pure: the actions, in order: create the group, create the user (with the group as a
/// supplementary group), add the existing user to the group, lock the password of an owned user
/// that has one, create a missing home.
std::vector<Action> planLoginUser(const LoginUserDesired& desired, const LoginUserCurrent& current);

class LoginUserProvider : public Provider {
 public:
  /// `ledger` must outlive the provider.
  LoginUserProvider(Logger log, Ledger& ledger);

  /// "login_user".
  std::string name() const override;
  /// Observes users and groups; changes nothing. Errors: see observeLoginUser().
  Result<std::vector<Action>> plan(const Desired& desired, Host& host) override;
  /// Runs the shadow tool for one action and records creations in the ledger.
  /// Errors: kCommand (the tool failed: message names it and its stderr), ledger errors.
  Status apply(const Action& action, const Desired& desired, Host& host) override;

 private:
  Logger log_;
  Ledger& ledger_;
};

}  // namespace pim
