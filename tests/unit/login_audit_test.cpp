// The login audit: sshd's login messages (accepted and failed, hostile ones included), the view of
// the document's keys by fingerprint, and the state's login tables (upserts, sums, bounds, the
// cursor moved in the same transaction).
#include "agent/daemon/login_audit.h"

#include <catch2/catch.hpp>
#include <string>

#include "tests/support/temp_dir.h"

using namespace pim;

namespace {

// alice's key and its fingerprint as `ssh-keygen -l` prints it.
const char* kAliceBase64 = "AAAAC3NzaC1lZDI1NTE5AAAAIF672WCNFtqcThBzVbXOfOSdud0k+tJpV0314p0yRK8S";
const char* kAliceFp = "SHA256:h5SgJuZRFyXhHe1unT758WQC0467LmMwowjsmtdQTyU";

std::string describe(const std::optional<SshdLoginEvent>& e) {
  if (!e) return "none";
  if (e->kind == SshdLoginEvent::Kind::kFailed) return "failed " + e->address;
  return "accepted " + e->user + " " + e->method + " " + e->address + (e->fingerprint.empty() ? "" : " ") +
         e->fingerprint;
}

}  // namespace

TEST_CASE("login audit: the logins sshd reports", "[audit]") {
  const std::string fp = kAliceFp;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"Accepted publickey for akeneo from 198.51.100.20 port 45678 ssh2: ED25519 " + fp,
       "accepted akeneo publickey 198.51.100.20 " + fp},
      {"Accepted publickey for akeneo from 2001:db8:0:0::5 port 1 ssh2: RSA " + fp + "\r",
       "accepted akeneo publickey 2001:db8::5 " + fp},
      {"Accepted password for akeneosftp from 198.51.100.21 port 50000 ssh2",
       "accepted akeneosftp password 198.51.100.21"},
      {"Accepted keyboard-interactive/pam for akeneosftp from 198.51.100.21 port 50000 ssh2",
       "accepted akeneosftp keyboard-interactive/pam 198.51.100.21"},
      // A syslog file's line.
      {"Dec  6 03:30:00 web1 sshd[123]: Accepted password for akeneosftp from 198.51.100.21 port 22 ssh2",
       "accepted akeneosftp password 198.51.100.21"},
      // A certificate: the key's fingerprint comes first.
      {"Accepted publickey for akeneo from 198.51.100.20 port 1 ssh2: ED25519-CERT " + fp +
           " ID alice (serial 1) CA ED25519 SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
       "accepted akeneo publickey 198.51.100.20 " + fp},
      // Failed logins: one per connection, whatever the method.
      {"Connection closed by authenticating user akeneo 198.51.100.7 port 50000 [preauth]", "failed 198.51.100.7"},
      {"Connection reset by authenticating user akeneo 198.51.100.7 port 50000 [preauth]", "failed 198.51.100.7"},
      {"Disconnected from invalid user bob 2001:db8::1 port 2 [preauth]", "failed 2001:db8::1"},
      {"Connection closed by invalid user bob 198.51.100.8 port 2 [preauth]", "failed 198.51.100.8"},
      {"Disconnecting authenticating user akeneo 198.51.100.7 port 5: Too many authentication failures [preauth]",
       "failed 198.51.100.7"},
      {"Disconnecting invalid user x 198.51.100.9 port 5: Change of username or service not allowed: "
       "(x,ssh-connection) "
       "-> (y,ssh-connection) [preauth]",
       "failed 198.51.100.9"},
  };
  for (const auto& [message, want] : cases) {
    INFO(message);
    CHECK(describe(parseSshdLogin(message)) == want);
  }
}

TEST_CASE("login audit: other and hostile messages are no login", "[audit][hostile]") {
  const std::string fp = kAliceFp;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "none"},
      {"Server listening on 0.0.0.0 port 22.", "none"},
      {"Received disconnect from 198.51.100.7 port 5:11: disconnected by user", "none"},
      {"Disconnected from user akeneo 198.51.100.7 port 5", "none"},                    // a session that ended
      {"Connection closed by 198.51.100.7 port 5 [preauth]", "none"},                   // no user tried
      {"Connection closed by authenticating user akeneo 198.51.100.7 port 5", "none"},  // not preauth
      {"Accepted publickey for akeneo from 198.51.100.20 port 1 ssh2", "none"},         // a key without fingerprint
      {"Accepted publickey for akeneo from 198.51.100.20 port 1 ssh2: ED25519 SHA256:short", "none"},
      {"Accepted publickey for akeneo from 198.51.100.20 port 1 ssh2: ED25519 SHA256:" + std::string(43, '!'), "none"},
      {"Accepted password for akeneosftp from 198.51.100.21 port 22 ssh2 and more", "none"},
      {"Accepted password for akeneosftp from not-an-address port 22 ssh2", "none"},
      {"Accepted password for akeneosftp from 198.51.100.21 port 123456 ssh2", "none"},
      {"Accepted password for  from 198.51.100.21 port 22 ssh2", "none"},
      {"Accepted password for a\tb from 198.51.100.21 port 22 ssh2", "none"},
      {"Accepted password for " + std::string(300, 'a') + " from 198.51.100.21 port 22 ssh2", "none"},
      {"Accepted", "none"},
      {"Accepted password", "none"},
      // A user name made to look like the end of the message: the address is what sshd wrote last.
      {"Connection closed by invalid user x 203.0.113.66 port 1 [preauth] 198.51.100.9 port 22 [preauth]",
       "failed 198.51.100.9"},
      {"Connection closed by invalid user x 203.0.113.66 port 1 [preauth] y port 22 [preauth]", "none"},
      {"Connection closed by invalid user [preauth]", "none"},
      {"Disconnecting authenticating user akeneo 198.51.100.7 port : x [preauth]", "none"},
      {std::string("Connection closed by invalid user ") + '\0' + " 198.51.100.9 port 22 [preauth]",
       "failed 198.51.100.9"},
  };
  for (const auto& [message, want] : cases) {
    INFO(message);
    CHECK(describe(parseSshdLogin(message)) == want);
  }
}

TEST_CASE("login audit: keys are found by fingerprint, accounts by name", "[audit]") {
  CHECK(fingerprintOfBase64(kAliceBase64) == kAliceFp);
  CHECK(fingerprintOfBase64("not base64!").empty());
  LoginView view({{"akeneo", kAliceFp, "publickey", 100, "198.51.100.20"},
                  {"akeneo", kAliceFp, "publickey", 50, "198.51.100.1"},  // older, listed later
                  {"partner", kAliceFp, "publickey", 300, "198.51.100.30"},
                  {"partner", "", "password", 200, "198.51.100.31"}});
  auto alice = view.lastKeyLogin("akeneo", kAliceBase64);
  REQUIRE(alice);
  CHECK(alice->time == 100);
  CHECK(alice->address == "198.51.100.20");
  // The same key as another user is that user's login, not akeneo's.
  CHECK(view.lastKeyLogin("partner", kAliceBase64)->time == 300);
  CHECK_FALSE(view.lastKeyLogin("nobody", kAliceBase64));
  CHECK_FALSE(view.lastKeyLogin("akeneo", "AAAA"));
  auto partner = view.lastUserLogin("partner");
  REQUIRE(partner);
  CHECK(partner->time == 300);
  CHECK(partner->method == "publickey");
  CHECK_FALSE(view.lastUserLogin("akeneosftp"));
  CHECK(lastLoginJson(std::nullopt).isEmpty());
}

TEST_CASE("login audit: the state keeps the newest login, sums failures, and is bounded", "[audit][state]") {
  test::TempDir dir;
  auto opened = StateStore::open(dir.path() + "/state.db", nullptr);
  REQUIRE(opened.isOk());
  StateStore& state = **opened;
  REQUIRE(state
              .recordLogins({{"akeneo", kAliceFp, "publickey", 100, "198.51.100.20"}}, {{"198.51.100.7", 2, 90}},
                            "cursor-1")
              .isOk());
  // Read again (an older login, as after a lost cursor): the newer one stays.
  REQUIRE(state.recordLogins({{"akeneo", kAliceFp, "publickey", 60, "198.51.100.1"}}, {{"198.51.100.7", 3, 80}}, "")
              .isOk());
  auto logins = state.logins();
  REQUIRE(logins.isOk());
  REQUIRE(logins->size() == 1);
  CHECK((*logins)[0].time == 100);
  CHECK((*logins)[0].address == "198.51.100.20");
  auto failures = state.loginFailures(10);
  REQUIRE(failures.isOk());
  REQUIRE(failures->top.size() == 1);
  CHECK(failures->top[0].count == 5);
  CHECK(failures->top[0].lastTime == 90);
  CHECK(failures->total == 5);
  // The cursor moved with the first batch; "" left it.
  CHECK(*state.defenderCursor() == "cursor-1");

  // A flood of sources: the newest kMaxLoginFailures are kept, the top is by count.
  std::vector<LoginFailureRecord> flood;
  for (int i = 0; i < 1500; ++i) {
    flood.push_back({"10.0." + std::to_string(i / 256) + "." + std::to_string(i % 256), 1, 1000 + i});
  }
  REQUIRE(state.recordLogins({}, flood, "cursor-2").isOk());
  failures = state.loginFailures(3);
  REQUIRE(failures.isOk());
  CHECK(failures->sources == StateStore::kMaxLoginFailures);
  CHECK(failures->total == StateStore::kMaxLoginFailures);  // the oldest (198.51.100.7 included) went
  REQUIRE(failures->top.size() == 3);
  CHECK(failures->top[0].address == "10.0.5.219");  // 1499: the newest first among equal counts
  CHECK(*state.defenderCursor() == "cursor-2");
}
