#include "providers/transfer_tree.h"

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "providers/host/accounts_tool.h"
#include "providers/host/real_host.h"
#include "tests/support/etc_sandbox.h"
#include "tests/support/skip.h"

namespace fs = std::filesystem;
using namespace pim;

namespace {

std::vector<std::string> verbsAndObjects(const std::vector<Action>& actions) {
  std::vector<std::string> out;
  for (const auto& a : actions) out.push_back(std::string(verbName(a.verb)) + " " + a.object);
  return out;
}

TransferTreeDesired desiredOf(std::vector<TransferFolder> folders) {
  return TransferTreeDesired{"/data/transfer/pim", "pimtransfer", std::move(folders)};
}

FileInfo dir(mode_t mode, gid_t gid = 900) {
  FileInfo f;
  f.type = FileType::kDirectory;
  f.mode = mode;
  f.gid = gid;
  return f;
}

/// The root and its parents in place, group 900.
TransferTreeCurrent settledRoot() {
  TransferTreeCurrent c;
  c.groupGid = 900;
  c.paths["/data"] = dir(0755, 0);
  c.paths["/data/transfer"] = dir(0755, 0);
  c.paths["/data/transfer/pim"] = dir(02770);
  return c;
}

bool isRoot() { return pim::test::runsAsRoot("groupadd --prefix, chown"); }

struct stat statOf(const std::string& path) {
  struct stat st {};
  ::lstat(path.c_str(), &st);
  return st;
}

}  // namespace

TEST_CASE("transferFolderPath keeps folders below the root", "[transfer_tree]") {
  CHECK(transferFolderPath("/data/transfer/pim", ".") == std::optional<std::string>("/data/transfer/pim"));
  CHECK(transferFolderPath("/data/transfer/pim/", "imports/erp") ==
        std::optional<std::string>("/data/transfer/pim/imports/erp"));
  CHECK(transferFolderPath("/data/transfer/pim", "a//./b/") == std::optional<std::string>("/data/transfer/pim/a/b"));
  CHECK_FALSE(transferFolderPath("/data/transfer/pim", "../../etc"));
  CHECK_FALSE(transferFolderPath("/data/transfer/pim", "a/../../b"));
  CHECK_FALSE(transferFolderPath("/data/transfer/pim", "/etc"));
}

TEST_CASE("planTransferTree table", "[transfer_tree]") {
  SECTION("nothing there: parents 0755, root and folders 2770, shared parents once (the group is login_user's)") {
    TransferTreeCurrent c;
    auto actions = planTransferTree(desiredOf({{"a", "."}, {"b", "imports/erp"}, {"c", "imports/pim"}}), c);
    CHECK(verbsAndObjects(actions) ==
          std::vector<std::string>{"mkdir /data", "mkdir /data/transfer", "mkdir /data/transfer/pim",
                                   "mkdir /data/transfer/pim/imports", "mkdir /data/transfer/pim/imports/erp",
                                   "mkdir /data/transfer/pim/imports/pim"});
    CHECK(actions[0].detail == "0755 root:root");
    CHECK(actions[2].detail == "2770 root:pimtransfer");
    CHECK(actions[2].describe() == "transfer_tree: mkdir /data/transfer/pim (2770 root:pimtransfer)");
  }
  SECTION("everything in place: nothing to do") {
    auto c = settledRoot();
    c.paths["/data/transfer/pim/imports"] = dir(02770);
    CHECK(planTransferTree(desiredOf({{"a", "."}, {"b", "imports"}}), c).empty());
  }
  SECTION("a folder with the wrong mode or group is corrected, not recreated") {
    auto c = settledRoot();
    c.paths["/data/transfer/pim"] = dir(0755);
    c.paths["/data/transfer/pim/imports"] = dir(02770, 0);
    auto actions = planTransferTree(desiredOf({{"b", "imports"}}), c);
    CHECK(verbsAndObjects(actions) ==
          std::vector<std::string>{"fix /data/transfer/pim", "fix /data/transfer/pim/imports"});
    CHECK(actions[0].detail == "mode 0755 -> 2770");
    CHECK(actions[1].detail == "group 0 -> pimtransfer");
  }
  SECTION("a symbolic link on a folder's way refuses that folder only") {
    auto c = settledRoot();
    c.unsafe["/data/transfer/pim/imports"] = "/data/transfer/pim/imports is a symbolic link";
    std::vector<SkippedEntry> skipped;
    auto actions = planTransferTree(desiredOf({{"b", "imports/erp"}, {"c", "exports"}}), c, &skipped);
    CHECK(verbsAndObjects(actions) == std::vector<std::string>{"mkdir /data/transfer/pim/exports"});
    REQUIRE(skipped.size() == 1);
    CHECK(skipped[0].id == "b");
    CHECK_THAT(skipped[0].reason, Catch::Contains("symbolic link"));
  }
  SECTION("a folder escaping the root is refused") {
    std::vector<SkippedEntry> skipped;
    CHECK(planTransferTree(desiredOf({{"x", "../../etc"}}), settledRoot(), &skipped).empty());
    REQUIRE(skipped.size() == 1);
    CHECK(skipped[0].id == "x");
  }
  SECTION("folders are never removed: an account gone plans nothing") {
    auto c = settledRoot();
    c.paths["/data/transfer/pim/imports"] = dir(02770);
    CHECK(planTransferTree(desiredOf({}), c).empty());
  }
}

TEST_CASE("transfer_tree against RealHost in a sandbox", "[transfer_tree][root]") {
  if (!isRoot()) return;
  test::EtcSandbox sb;
  RealHost host(sb.dir(), nullLogger());
  TransferTreeProvider provider(nullLogger());
  HostSettings hs;
  SshdSettings ss;
  AccessDocument doc;
  SftpAccount a;
  a.id = "sftp-main";
  a.username = "akeneosftp";
  a.folder = ".";
  SftpAccount b = a;
  b.id = "sftp-imports";
  b.username = "akeneosftp2";
  b.folder = "imports/erp";
  doc.accounts = {a, b};
  Desired d{doc, hs, ss, 0};

  auto reconcile = [&]() -> Status {
    auto actions = provider.plan(d, host);
    if (!actions) return actions.status();
    for (const auto& act : *actions) {
      if (Status s = provider.apply(act, d, host); !s) return s;
    }
    return Status::ok();
  };

  // The group is the login user's to make (providers/login_user.h).
  REQUIRE(AccountsTool(host).addGroup("pimtransfer", true).isOk());
  REQUIRE(reconcile().isOk());
  auto group = host.findGroup("pimtransfer");
  REQUIRE(group.isOk());
  REQUIRE(group->has_value());
  const gid_t gid = (*group)->gid;

  auto st = statOf(sb.path("/data"));
  CHECK((st.st_mode & 07777) == 0755);
  CHECK(st.st_uid == 0);
  CHECK(st.st_gid == 0);
  for (const char* p : {"/data/transfer/pim", "/data/transfer/pim/imports", "/data/transfer/pim/imports/erp"}) {
    INFO(p);
    st = statOf(sb.path(p));
    CHECK(S_ISDIR(st.st_mode));
    CHECK((st.st_mode & 07777) == 02770);
    CHECK(st.st_uid == 0);
    CHECK(st.st_gid == gid);
  }
  auto again = provider.plan(d, host);
  REQUIRE(again.isOk());
  CHECK(again->empty());

  SECTION("drift on a folder is corrected, its owner kept") {
    REQUIRE(::chmod(sb.path("/data/transfer/pim/imports").c_str(), 0777) == 0);
    REQUIRE(::chown(sb.path("/data/transfer/pim/imports").c_str(), 4242, 0) == 0);
    REQUIRE(reconcile().isOk());
    st = statOf(sb.path("/data/transfer/pim/imports"));
    CHECK((st.st_mode & 07777) == 02770);
    CHECK(st.st_gid == gid);
    CHECK(st.st_uid == 4242);
    CHECK(provider.plan(d, host)->empty());
  }

  SECTION("a symbolic link planted where a folder goes is refused, nothing created through it") {
    fs::create_directories(sb.path("/outside"));
    fs::create_directory_symlink(sb.path("/outside"), sb.path("/data/transfer/pim/exports"));
    SftpAccount c = a;
    c.id = "sftp-exports";
    c.username = "akeneosftp3";
    c.folder = "exports/daily";
    doc.accounts.push_back(c);
    auto actions = provider.plan(d, host);
    REQUIRE(actions.isOk());
    CHECK(actions->empty());
    REQUIRE(provider.skipped().size() == 1);
    CHECK(provider.skipped()[0].id == "sftp-exports");
    CHECK_FALSE(fs::exists(sb.path("/outside/daily")));
    st = statOf(sb.path("/outside"));
    CHECK((st.st_mode & 07777) != 02770);
  }

  SECTION("folders are never removed") {
    doc.accounts = {a};
    REQUIRE(reconcile().isOk());
    CHECK(fs::is_directory(sb.path("/data/transfer/pim/imports/erp")));
  }

  SECTION("a symbolic link at the transfer root fails the plan") {
    fs::remove_all(sb.path("/data/transfer/pim"));
    fs::create_directories(sb.path("/elsewhere"));
    fs::create_directory_symlink(sb.path("/elsewhere"), sb.path("/data/transfer/pim"));
    auto actions = provider.plan(d, host);
    REQUIRE_FALSE(actions.isOk());
    CHECK(actions.status().code() == ErrorCode::kUnsafe);
  }
}
