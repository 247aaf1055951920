#include "providers/host/real_host.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "tests/support/banner_listener.h"

namespace fs = std::filesystem;
using pim::ErrorCode;
using pim::FileType;
using pim::RealHost;

namespace {

struct Sandbox {
  fs::path dir;
  Sandbox() {
    char tmpl[] = "/tmp/pim-host-XXXXXX";
    dir = ::mkdtemp(tmpl);
  }
  ~Sandbox() { fs::remove_all(dir); }
  void write(const std::string& rel, const std::string& text) {
    fs::create_directories((dir / rel.substr(1)).parent_path());
    std::ofstream(dir / rel.substr(1)) << text;
  }
};

}  // namespace

TEST_CASE("RealHost maps host paths below the root", "[host]") {
  RealHost host("/tmp/x/", pim::nullLogger());
  CHECK(host.realPath("/etc/passwd") == "/tmp/x/etc/passwd");
  CHECK(host.realPath("/") == "/tmp/x");
  RealHost real("", pim::nullLogger());
  CHECK(real.realPath("/etc/passwd") == "/etc/passwd");
}

TEST_CASE("RealHost writes atomically with mode and owner, leaving no temporary file", "[host]") {
  Sandbox sb;
  RealHost host(sb.dir.string(), pim::nullLogger());
  fs::create_directories(sb.dir / "etc");
  REQUIRE(host.writeFileAtomic("/etc/f", "hello\n", {0640, ::geteuid(), ::getegid()}).isOk());
  auto text = host.readFile("/etc/f", 100);
  REQUIRE(text.isOk());
  CHECK(*text == "hello\n");
  auto info = host.lstat("/etc/f");
  REQUIRE(info.isOk());
  CHECK(info->type == FileType::kRegular);
  CHECK(info->mode == 0640);
  REQUIRE(host.writeFileAtomic("/etc/f", "again\n", {0600, ::geteuid(), ::getegid()}).isOk());
  CHECK(*host.readFile("/etc/f", 100) == "again\n");
  auto names = host.listDirectory("/etc");
  REQUIRE(names.isOk());
  CHECK(*names == std::vector<std::string>{"f"});
}

TEST_CASE("RealHost refuses symbolic links on the way and at the target", "[host][security]") {
  Sandbox sb;
  RealHost host(sb.dir.string(), pim::nullLogger());
  sb.write("/outside/secret", "root-only\n");
  fs::create_directories(sb.dir / "home/u");
  fs::create_directory_symlink(sb.dir / "outside", sb.dir / "home/u/.ssh");
  auto w = host.writeFileAtomic("/home/u/.ssh/authorized_keys", "x", {0600, 0, 0});
  CHECK(w.code() == ErrorCode::kUnsafe);
  CHECK(!fs::exists(sb.dir / "outside/authorized_keys"));
  CHECK(host.readFile("/home/u/.ssh/secret", 100).status().code() == ErrorCode::kUnsafe);

  fs::create_symlink(sb.dir / "outside/secret", sb.dir / "home/u/link");
  CHECK(host.writeFileAtomic("/home/u/link", "pwned", {0600, 0, 0}).code() == ErrorCode::kUnsafe);
  CHECK(host.readFile("/home/u/link", 100).status().code() == ErrorCode::kUnsafe);
  CHECK(host.setMode("/home/u/link", 0777).code() == ErrorCode::kUnsafe);
  CHECK(host.setOwner("/home/u/link", 0, 0).code() == ErrorCode::kUnsafe);
  CHECK(host.makeDirectory("/home/u/link", {0755, 0, 0}).code() == ErrorCode::kUnsafe);
  std::ifstream in(sb.dir / "outside/secret");
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(content == "root-only\n");
  CHECK((fs::status(sb.dir / "outside/secret").permissions() & fs::perms::others_all) != fs::perms::others_all);
  auto info = host.lstat("/home/u/link");
  REQUIRE(info.isOk());
  CHECK(info->type == FileType::kSymlink);
  CHECK(host.lstat("/home/u/.ssh/secret").status().code() == ErrorCode::kUnsafe);
}

TEST_CASE("RealHost::readLink reads a link's target as stored and follows nothing on the way", "[host][security]") {
  Sandbox sb;
  RealHost host(sb.dir.string(), pim::nullLogger());
  sb.write("/usr/bin/python3.11", "");
  fs::create_symlink("python3.11", sb.dir / "usr/bin/python3");
  fs::create_symlink("/usr/bin/python3", sb.dir / "usr/bin/py");
  fs::create_directory_symlink("usr/bin", sb.dir / "bin");
  auto rel = host.readLink("/usr/bin/python3");
  REQUIRE(rel.isOk());
  CHECK(*rel == "python3.11");
  auto abs = host.readLink("/usr/bin/py");
  REQUIRE(abs.isOk());
  CHECK(*abs == "/usr/bin/python3");  // a host path: the caller resolves it below the root
  CHECK(host.readLink("/bin").value() == "usr/bin");
  CHECK(host.readLink("/bin/python3").status().code() == ErrorCode::kUnsafe);  // through a link
  CHECK(host.readLink("/usr/bin/python3.11").status().code() == ErrorCode::kInvalid);
  CHECK(host.readLink("/usr/bin/nothing").status().code() == ErrorCode::kNotFound);
}

TEST_CASE("RealHost reports missing paths as kNone and creates directories with exact modes", "[host]") {
  Sandbox sb;
  RealHost host(sb.dir.string(), pim::nullLogger());
  auto missing = host.lstat("/no/such/path");
  REQUIRE(missing.isOk());
  CHECK(!missing->exists());
  ::umask(077);
  REQUIRE(host.makeDirectories("/srv/pim-sftp/u", {0755, ::geteuid(), ::getegid()}).isOk());
  ::umask(022);
  auto info = host.lstat("/srv/pim-sftp/u");
  REQUIRE(info.isOk());
  CHECK(info->type == FileType::kDirectory);
  CHECK(info->mode == 0755);
  REQUIRE(host.setMode("/srv/pim-sftp/u", 02770).isOk());
  CHECK(host.lstat("/srv/pim-sftp/u")->mode == 02770);
  REQUIRE(host.removeDirectory("/srv/pim-sftp/u").isOk());
  CHECK(!host.lstat("/srv/pim-sftp/u")->exists());
  CHECK(host.removeFile("/srv/nothing").isOk());
}

TEST_CASE("RealHost reads users and groups from the root's account files", "[host]") {
  Sandbox sb;
  sb.write("/etc/passwd", "root:x:0:0:root:/root:/bin/bash\nakeneo:x:1000:1000::/home/akeneo:/bin/bash\n");
  sb.write("/etc/group", "root:x:0:\npimtransfer:x:1001:akeneo,other\n");
  RealHost host(sb.dir.string(), pim::nullLogger());
  auto u = host.findUser("akeneo");
  REQUIRE(u.isOk());
  REQUIRE(u->has_value());
  CHECK((*u)->uid == 1000);
  CHECK((*u)->home == "/home/akeneo");
  CHECK(!host.findUser("akeneosftp")->has_value());
  auto g = host.findGroup("pimtransfer");
  REQUIRE(g->has_value());
  CHECK((*g)->gid == 1001);
  CHECK((*g)->members == std::vector<std::string>{"akeneo", "other"});
}

TEST_CASE("RealHost parses mountinfo below its root only", "[host]") {
  const std::string text =
      "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
      "90 22 8:1 /data/transfer/pim /tmp/sb/srv/pim-sftp/a\\040b/transfer rw - ext4 /dev/sda1 rw\n"
      "91 22 0:5 / /tmp/sbx/srv rw - tmpfs tmpfs rw\n";
  auto mounts = RealHost::parseMountInfo(text, "/tmp/sb");
  REQUIRE(mounts.size() == 1);
  CHECK(mounts[0].target == "/srv/pim-sftp/a b/transfer");
  CHECK(mounts[0].root == "/data/transfer/pim");
  CHECK(RealHost::parseMountInfo(text, "").size() == 3);
}

TEST_CASE("RealHost runs commands without a shell and feeds standard input", "[host]") {
  RealHost host("", pim::nullLogger());
  auto r = host.run({"/bin/cat"}, "through stdin");
  REQUIRE(r.isOk());
  CHECK(r->exitCode == 0);
  CHECK(r->out == "through stdin");
  auto f = host.run({"/bin/sh", "-c", "echo oops >&2; exit 3"});
  REQUIRE(f.isOk());
  CHECK(f->exitCode == 3);
  CHECK(f->err == "oops\n");
  auto missing = host.run({"/no/such/binary"});
  REQUIRE(missing.isOk());
  CHECK(missing->exitCode == 127);
  CHECK(missing->err == "cannot execute /no/such/binary");
  // A fixed environment, whatever the agent's own.
  auto env = host.run({"/usr/bin/env"});
  REQUIRE(env.isOk());
  CHECK(env->out == "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nLC_ALL=C\n");
}

TEST_CASE("RealHost::abortCommands kills the running command's group and refuses later ones", "[host]") {
  RealHost host("", pim::nullLogger());
  std::thread aborter([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    host.abortCommands();
  });
  const auto start = std::chrono::steady_clock::now();
  // The grandchild (sleep) holds stdout: run() returns once the whole group is gone.
  auto r = host.run({"/bin/sh", "-c", "sleep 300 & wait"});
  aborter.join();
  REQUIRE(r.isOk());
  CHECK(r->exitCode == 128 + SIGKILL);
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(30));
  auto later = host.run({"/bin/true"});
  REQUIRE_FALSE(later.isOk());
  CHECK(later.status().code() == ErrorCode::kCommand);
  CHECK_THAT(later.status().message(), Catch::Contains("the agent is stopping"));
}

TEST_CASE("RealHost keeps reads only while asked and forgets them on any change", "[host]") {
  Sandbox sb;
  RealHost host(sb.dir.string(), pim::nullLogger());
  sb.write("/etc/passwd", "root:x:0:0:root:/root:/bin/bash\n");
  sb.write("/etc/other", "one\n");
  {
    pim::KeptReads kept(host);
    REQUIRE(*host.readFile("/etc/passwd", 1000) == "root:x:0:0:root:/root:/bin/bash\n");
    REQUIRE(host.findUser("akeneo")->has_value() == false);
    // Changed behind the host's back: the kept content answers (one read per plan).
    sb.write("/etc/passwd", "akeneo:x:1000:1000::/home/akeneo:/bin/bash\n");
    CHECK_FALSE(host.findUser("akeneo")->has_value());
    // A limit smaller than the kept content is still enforced.
    CHECK(host.readFile("/etc/passwd", 5).status().code() == ErrorCode::kInvalid);
    // Any change made through the host forgets everything kept.
    REQUIRE(host.setMode("/etc/other", 0600).isOk());
    CHECK(host.findUser("akeneo")->has_value());
    sb.write("/etc/passwd", "root:x:0:0:root:/root:/bin/bash\n");
    CHECK(host.findUser("akeneo")->has_value());  // kept again since the change
  }
  // Outside the scope every read goes to the file.
  CHECK_FALSE(host.findUser("akeneo")->has_value());
  sb.write("/etc/passwd", "akeneo:x:1000:1000::/home/akeneo:/bin/bash\n");
  CHECK(host.findUser("akeneo")->has_value());
}

TEST_CASE("RealHost opens deep paths in one step and still refuses a symlink in the middle", "[host][security]") {
  Sandbox sb;
  RealHost host(sb.dir.string(), pim::nullLogger());
  sb.write("/a/b/c/d/file", "deep\n");
  CHECK(*host.readFile("/a/b/c/d/file", 100) == "deep\n");
  fs::rename(sb.dir / "a/b/c", sb.dir / "a/b/real-c");
  fs::create_directory_symlink(sb.dir / "a/b/real-c", sb.dir / "a/b/c");
  auto refused = host.readFile("/a/b/c/d/file", 100);
  REQUIRE_FALSE(refused.isOk());
  CHECK(refused.status().code() == ErrorCode::kUnsafe);
  CHECK_THAT(refused.status().message(), Catch::Contains("symbolic link at component 'c'"));
  // A relative symlink that stays inside the root is refused just the same.
  fs::remove(sb.dir / "a/b/c");
  fs::create_directory_symlink("real-c", sb.dir / "a/b/c");
  CHECK(host.readFile("/a/b/c/d/file", 100).status().code() == ErrorCode::kUnsafe);
}

TEST_CASE("RealHost::sshAnswers: an SSH banner within the time-out, nothing else", "[host]") {
  using pim::test::BannerListener;
  using std::chrono::milliseconds;
  RealHost host("", pim::nullLogger());
  BannerListener l(BannerListener::Mode::kBanner);
  REQUIRE(l.port() > 0);
  auto yes = host.sshAnswers("127.0.0.1", l.port(), milliseconds(2000));
  REQUIRE(yes.isOk());
  CHECK(*yes);

  SECTION("accepted but silent (a stopped sshd): false once the time-out is over") {
    l.setMode(BannerListener::Mode::kSilent);
    const auto start = std::chrono::steady_clock::now();
    auto r = host.sshAnswers("127.0.0.1", l.port(), milliseconds(300));
    const auto took = std::chrono::steady_clock::now() - start;
    REQUIRE(r.isOk());
    CHECK_FALSE(*r);
    CHECK(took >= milliseconds(280));
    CHECK(took < milliseconds(2000));
  }
  SECTION("another protocol, or a connection closed at once") {
    l.setMode(BannerListener::Mode::kHttp);
    CHECK_FALSE(*host.sshAnswers("127.0.0.1", l.port(), milliseconds(1000)));
    l.setMode(BannerListener::Mode::kClose);
    CHECK_FALSE(*host.sshAnswers("127.0.0.1", l.port(), milliseconds(1000)));
  }
  SECTION("nothing listens: refused at once") {
    l.stop();
    const auto start = std::chrono::steady_clock::now();
    auto r = host.sshAnswers("127.0.0.1", l.port(), milliseconds(2000));
    REQUIRE(r.isOk());
    CHECK_FALSE(*r);
    CHECK(std::chrono::steady_clock::now() - start < milliseconds(1000));
  }
  SECTION("a name or a bad port is not an address") {
    CHECK(host.sshAnswers("localhost", 22, milliseconds(100)).status().code() == ErrorCode::kInvalid);
    CHECK(host.sshAnswers("127.0.0.1", 0, milliseconds(100)).status().code() == ErrorCode::kInvalid);
  }
}
