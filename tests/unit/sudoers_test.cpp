// The sudoers provider: escaping and rendering (golden file), the deny list, the host checks of a
// task on observed facts (tables), the plan's stages (tables), and apply() against
// RealHost(tmpdir) with the real visudo (root: files owned by root) and a visudo that refuses.
#include "providers/sudoers.h"

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include "providers/core/log.h"
#include "providers/host/real_host.h"
#include "tests/support/skip.h"
#include "tests/support/temp_dir.h"

namespace fs = std::filesystem;
using namespace pim;

namespace {

SudoTask task(const std::string& id, std::vector<std::string> command, const std::string& runAs = "root",
              bool active = true) {
  SudoTask t;
  t.id = id;
  t.command = std::move(command);
  t.runAs = runAs;
  t.active = active;
  return t;
}

FileInfo dir(uid_t uid = 0, mode_t mode = 0755) {
  FileInfo f;
  f.type = FileType::kDirectory;
  f.uid = uid;
  f.mode = mode;
  return f;
}

FileInfo file(uid_t uid = 0, mode_t mode = 0755, uint64_t inode = 100) {
  FileInfo f;
  f.type = FileType::kRegular;
  f.uid = uid;
  f.mode = mode;
  f.device = 1;
  f.inode = inode;
  return f;
}

/// Facts of a program at /usr/bin/<name> that every rule accepts.
ProgramFacts goodProgram(const std::string& path, uint64_t inode = 100) {
  ProgramFacts f;
  f.steps = {{"/", dir()}, {"/usr", dir()}, {"/usr/bin", dir()}, {path, file(0, 0755, inode)}};
  f.names = {path.substr(path.rfind('/') + 1)};
  f.resolved = path;
  return f;
}

/// A current state where every program of `tasks` is good and every run_as user a system user.
SudoersCurrent hostWith(const std::vector<SudoTask>& tasks) {
  SudoersCurrent c;
  for (const auto& t : tasks) {
    c.programs[t.command.front()] = goodProgram(t.command.front());
    c.runAs[t.runAs] = t.runAs == "root" ? 0 : 33;
  }
  return c;
}

void withFile(SudoersCurrent& c, const std::string& content, bool owned = true, mode_t mode = 0440) {
  c.file = file(0, mode);
  c.content = content;
  c.owned = owned;
}

std::string readText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> verbs(const SudoersPlan& p) {
  std::vector<std::string> out;
  for (const auto& a : p.actions) out.push_back(std::string(stageName(a.stage)) + " " + verbName(a.verb));
  return out;
}

const SudoTask kRestart = task("restart-php", {"/usr/bin/systemctl", "restart", "php8.2-fpm"});
const SudoTask kWhoami = task("whoami-www", {"/usr/bin/whoami"}, "www-data");
const SudoTask kDu = task("disk-usage", {"/usr/bin/du", "-sh", "/data/transfer/pim"});

}  // namespace

TEST_CASE("sudoers: arguments are escaped so that they match only themselves", "[sudoers]") {
  struct Row {
    std::string arg, want;
  };
  const std::vector<Row> rows = {
      {"restart", "restart"},
      {"php8.2-fpm", "php8.2-fpm"},
      {"pim-worker@*.service", "pim-worker@\\*.service"},
      {"a?b", "a\\?b"},
      {"[x]", "\\[x\\]"},
      {"k=v", "k\\=v"},
      {"a,b", "a\\,b"},
      {"host:22", "host\\:22"},
      {"#1", "\\#1"},
      {"!x", "\\!x"},
      {"^x$", "\\^x$"},
      {"a\\b", "a\\\\\\\\b"},  // two levels: the sudoers parser, then fnmatch
      {"%u~$x;&|<>(){}'`+@", "%u~$x;&|<>(){}'`+@"},
  };
  for (const auto& r : rows) {
    INFO(r.arg);
    CHECK(escapeSudoersArgument(r.arg) == r.want);
  }
}

TEST_CASE("sudoers: a rule per task; no arguments means none allowed", "[sudoers]") {
  CHECK(renderTaskRule("akeneo", kRestart, "") == "akeneo ALL=(root) NOPASSWD: /usr/bin/systemctl restart php8.2-fpm");
  CHECK(renderTaskRule("akeneo", kWhoami, "") == "akeneo ALL=(www-data) NOPASSWD: /usr/bin/whoami \"\"");
  CHECK(renderTaskRule("akeneo", kWhoami, "/sandbox") ==
        "akeneo ALL=(www-data) NOPASSWD: /sandbox/usr/bin/whoami \"\"");
  // Never renderable: what the parser refuses, checked again.
  CHECK_FALSE(renderableTask("akeneo", task("x", {"usr/bin/id"})));
  CHECK_FALSE(renderableTask("akeneo", task("x", {"/usr/bin/i*"})));
  CHECK_FALSE(renderableTask("akeneo", task("x", {"/usr/bin/id", "a b"})));
  CHECK_FALSE(renderableTask("akeneo", task("x", {"/usr/bin/id", ""})));
  CHECK_FALSE(renderableTask("akeneo", task("x", {"/usr/bin/id", "\"\""})));
  CHECK_FALSE(renderableTask("akeneo", task("x", {"/usr/bin/id", "a\nb"})));
  CHECK_FALSE(renderableTask("akeneo", task("x", {"/usr/bin/id"}, "ALL")));
  CHECK_FALSE(renderableTask("akeneo", task("x", {"/usr/bin/id"}, "akeneo")));
  CHECK_FALSE(renderableTask("ak,eneo", task("x", {"/usr/bin/id"})));
  CHECK_FALSE(renderableTask("akeneo", task("x y", {"/usr/bin/id"})));
  CHECK_FALSE(renderableTask("akeneo", task("x", {})));
  CHECK(renderableTask("akeneo", task("x", {"/usr/bin/id", "-u"})));
}

TEST_CASE("sudoers: the whole file is the golden one", "[sudoers][golden]") {
  const std::vector<SudoTask> tasks = {
      kWhoami, kRestart, kDu, task("restart-workers", {"/usr/bin/systemctl", "restart", "pim-worker@*.service"})};
  const std::string text = renderSudoersFile("akeneo", tasks, "");
  CHECK(text == readText(std::string(PIM_SOURCE_DIR) + "/tests/golden/sudoers-full.txt"));
  CHECK(hasSudoersHeader(text));
  CHECK(installedTaskIds("akeneo", tasks, "", text) ==
        std::vector<std::string>{"whoami-www", "restart-php", "disk-usage", "restart-workers"});
}

TEST_CASE("sudoers: entries are logical lines; comments and blank lines are not", "[sudoers]") {
  const std::string text =
      "# a comment\n\nDefaults:akeneo log_allowed\n"
      "akeneo ALL=(root) NOPASSWD: /usr/bin/foo \\\n"
      "akeneo ALL=(root) NOPASSWD: /usr/bin/id -u\n"
      "#include /tmp/x\n"
      "  akeneo ALL=(root) NOPASSWD: /usr/bin/id -g  \n";
  CHECK(sudoersEntries(text) ==
        std::vector<std::string>{"Defaults:akeneo log_allowed",
                                 "akeneo ALL=(root) NOPASSWD: /usr/bin/foo akeneo ALL=(root) NOPASSWD: /usr/bin/id -u",
                                 "#include /tmp/x", "akeneo ALL=(root) NOPASSWD: /usr/bin/id -g"});
}

TEST_CASE("sudoers: the deny list names shells, interpreters, escapes and runners", "[sudoers]") {
  for (const char* name :
       {"sh",        "bash",   "dash",     "zsh",        "ksh93",     "fish",       "busybox",     "env",
        "su",        "sudo",   "sudoedit", "doas",       "python3",   "python3.11", "perl",        "perl5.36.0",
        "ruby3.1",   "php8.2", "node",     "lua5.4",     "tclsh8.6",  "wish",       "awk",         "gawk",
        "mawk",      "sed",    "find",     "vi",         "vim.basic", "nvim",       "nano",        "ed",
        "emacs-gtk", "less",   "more",     "most",       "man",       "script",     "expect",      "tmux",
        "screen",    "socat",  "nc",       "nc.openbsd", "ncat",      "netcat",     "ssh",         "git",
        "tar",       "xargs",  "nohup",    "timeout",    "strace",    "gdb",        "systemd-run", "run-parts",
        "docker",    "make",   "sqlite3"}) {
    INFO(name);
    CHECK(deniedProgramReason(name).has_value());
  }
  for (const char* name : {"systemctl", "id", "whoami", "du", "journalctl", "nginx", "true"}) {
    INFO(name);
    CHECK_FALSE(deniedProgramReason(name).has_value());
  }
}

TEST_CASE("sudoers: the host checks of a task", "[sudoers]") {
  const SudoersDesired desired{"akeneo", "", {}};
  struct Row {
    std::string name;
    std::function<void(SudoersCurrent&, SudoTask&)> change;
    std::string refusal;  // part of the reason; "" : accepted
  };
  const std::vector<Row> rows = {
      {"accepted", [](SudoersCurrent&, SudoTask&) {}, ""},
      {"group-writable program",
       [](SudoersCurrent& c, SudoTask&) { c.programs["/usr/bin/systemctl"].steps.back().info.mode = 0775; },
       "writable by group or others (mode 0775)"},
      {"other-writable program",
       [](SudoersCurrent& c, SudoTask&) { c.programs["/usr/bin/systemctl"].steps.back().info.mode = 0757; },
       "writable by group or others"},
      {"program not owned by root",
       [](SudoersCurrent& c, SudoTask&) { c.programs["/usr/bin/systemctl"].steps.back().info.uid = 1000; },
       "not owned by root (uid 1000)"},
      {"not executable",
       [](SudoersCurrent& c, SudoTask&) { c.programs["/usr/bin/systemctl"].steps.back().info.mode = 0644; },
       "not executable"},
      {"a directory on the way is group-writable",
       [](SudoersCurrent& c, SudoTask&) { c.programs["/usr/bin/systemctl"].steps[2].info.mode = 02775; },
       "directory /usr/bin is writable by group or others"},
      {"a directory on the way belongs to a user",
       [](SudoersCurrent& c, SudoTask&) { c.programs["/usr/bin/systemctl"].steps[1].info.uid = 1000; },
       "directory /usr is not owned by root"},
      {"missing",
       [](SudoersCurrent& c, SudoTask&) {
         c.programs["/usr/bin/systemctl"].error = "/usr/bin/systemctl: no such file or directory";
       },
       "no such file"},
      {"a directory, not a file",
       [](SudoersCurrent& c, SudoTask&) { c.programs["/usr/bin/systemctl"].steps.back().info = dir(); },
       "not a regular file"},
      {"a link to a shell",
       [](SudoersCurrent& c, SudoTask&) { c.programs["/usr/bin/systemctl"].names.push_back("bash"); },
       "(bash) is a shell"},
      {"a login shell by identity (another name, a hard link)",
       [](SudoersCurrent& c, SudoTask&) {
         c.loginShells.insert({1, 100});
       },
       "is a login shell"},
      {"run_as missing", [](SudoersCurrent& c, SudoTask&) { c.runAs["root"] = std::nullopt; }, "run_as: no user"},
      {"run_as a human user",
       [](SudoersCurrent& c, SudoTask& t) {
         t.runAs = "alice";
         c.runAs["alice"] = 1000;
       },
       "not a system user (uid 1000 > 999)"},
      {"run_as the login user",
       [](SudoersCurrent& c, SudoTask& t) {
         t.runAs = "akeneo";
         c.runAs["akeneo"] = 100;
       },
       "cannot be written safely"},
  };
  for (const auto& r : rows) {
    SECTION(r.name) {
      SudoTask t = kRestart;
      SudoersCurrent c = hostWith({t});
      r.change(c, t);
      const std::string why = checkTask(desired, t, c);
      if (r.refusal.empty()) {
        CHECK(why.empty());
      } else {
        INFO(why);
        CHECK(why.find(r.refusal) != std::string::npos);
      }
    }
  }
}

TEST_CASE("sudoers: the plan's stages", "[sudoers][plan]") {
  const std::string login = "akeneo";
  auto render = [&](std::vector<SudoTask> tasks) { return renderSudoersFile(login, std::move(tasks), ""); };

  SECTION("no task, no file: nothing") {
    auto p = planSudoers({login, "", {}}, SudoersCurrent{});
    CHECK(p.actions.empty());
  }
  SECTION("first tasks: one grant") {
    auto p = planSudoers({login, "", {kRestart, kWhoami}}, hostWith({kRestart, kWhoami}));
    CHECK(verbs(p) == std::vector<std::string>{"grant write"});
    CHECK(p.actions[0].payload == render({kRestart, kWhoami}));
    CHECK(p.actions[0].object == kSudoersFile);
  }
  SECTION("up to date: nothing") {
    SudoersCurrent c = hostWith({kRestart, kWhoami});
    withFile(c, render({kRestart, kWhoami}));
    CHECK(planSudoers({login, "", {kRestart, kWhoami}}, c).actions.empty());
  }
  SECTION("a task removed: one revocation") {
    SudoersCurrent c = hostWith({kRestart, kWhoami});
    withFile(c, render({kRestart, kWhoami}));
    auto p = planSudoers({login, "", {kRestart}}, c);
    CHECK(verbs(p) == std::vector<std::string>{"revoke write"});
    CHECK(p.actions[0].payload == render({kRestart}));
  }
  SECTION("a task deactivated: a revocation") {
    SudoersCurrent c = hostWith({kRestart, kWhoami});
    withFile(c, render({kRestart, kWhoami}));
    SudoTask off = kWhoami;
    off.active = false;
    auto p = planSudoers({login, "", {kRestart, off}}, c);
    CHECK(verbs(p) == std::vector<std::string>{"revoke write"});
  }
  SECTION("a task added: one grant, nothing to revoke") {
    SudoersCurrent c = hostWith({kRestart, kWhoami});
    withFile(c, render({kRestart}));
    auto p = planSudoers({login, "", {kRestart, kWhoami}}, c);
    CHECK(verbs(p) == std::vector<std::string>{"grant write"});
  }
  SECTION("one removed, one added: two writes") {
    SudoersCurrent c = hostWith({kRestart, kWhoami, kDu});
    withFile(c, render({kRestart, kWhoami}));
    auto p = planSudoers({login, "", {kRestart, kDu}}, c);
    REQUIRE(verbs(p) == std::vector<std::string>{"revoke write", "grant write"});
    CHECK(p.actions[0].payload == render({kRestart}));
    CHECK(p.actions[1].payload == render({kRestart, kDu}));
  }
  SECTION("a task's arguments narrowed is a revocation then a grant of the new line") {
    SudoersCurrent c = hostWith({kRestart});
    withFile(c, render({kRestart}));
    SudoTask changed = kRestart;
    changed.command = {"/usr/bin/systemctl", "reload", "php8.2-fpm"};
    auto p = planSudoers({login, "", {changed}}, c);
    REQUIRE(verbs(p) == std::vector<std::string>{"revoke remove", "grant write"});
  }
  SECTION("every task gone: the file is removed") {
    SudoersCurrent c;
    withFile(c, render({kRestart}));
    auto p = planSudoers({login, "", {}}, c);
    CHECK(verbs(p) == std::vector<std::string>{"revoke remove"});
  }
  SECTION("a line added by hand is revoked") {
    SudoersCurrent c = hostWith({kRestart});
    withFile(c, render({kRestart}) + "akeneo ALL=(ALL) NOPASSWD: ALL\n");
    auto p = planSudoers({login, "", {kRestart}}, c);
    REQUIRE(verbs(p) == std::vector<std::string>{"revoke write"});
    CHECK(p.actions[0].payload == render({kRestart}));
  }
  SECTION("a hand edit that added one of the document's tasks early still waits for the grant stage") {
    SudoersCurrent c = hostWith({kRestart, kWhoami});
    // Continued onto the line of a task: sudo reads one entry, not the task's rule.
    withFile(c, render({kRestart}) + "akeneo ALL=(root) NOPASSWD: /usr/bin/id \\\n" +
                    renderTaskRule(login, kWhoami, "") + "\n");
    auto p = planSudoers({login, "", {kRestart, kWhoami}}, c);
    REQUIRE(verbs(p) == std::vector<std::string>{"revoke write", "grant write"});
    CHECK(p.actions[0].payload == render({kRestart}));
  }
  SECTION("mode or owner wrong: nothing it holds counts as granted") {
    SudoersCurrent c = hostWith({kRestart});
    withFile(c, render({kRestart}), true, 0644);
    auto p = planSudoers({login, "", {kRestart}}, c);
    CHECK(verbs(p) == std::vector<std::string>{"revoke remove", "grant write"});
  }
  SECTION("refused tasks are reported and revoked") {
    SudoersCurrent c = hostWith({kRestart, kWhoami});
    withFile(c, render({kRestart, kWhoami}));
    c.programs["/usr/bin/whoami"].steps.back().info.mode = 0777;
    auto p = planSudoers({login, "", {kRestart, kWhoami}}, c);
    CHECK(verbs(p) == std::vector<std::string>{"revoke write"});
    REQUIRE(p.refused.size() == 1);
    CHECK(p.refused[0].id == "whoami-www");
  }
  SECTION("a file the agent did not write is left alone, its tasks reported") {
    SudoersCurrent c = hostWith({kRestart});
    withFile(c, "akeneo ALL=(ALL) ALL\n", false);
    auto p = planSudoers({login, "", {kRestart}}, c);
    CHECK(p.actions.empty());
    REQUIRE(p.refused.size() == 1);
    CHECK(p.refused[0].reason.find("not written by pim-access-agent") != std::string::npos);
    CHECK(planSudoers({login, "", {}}, c).actions.empty());
  }
  SECTION("a file with the agent's header is the agent's without the ledger (rebuilt database)") {
    SudoersCurrent c = hostWith({kRestart});
    withFile(c, render({kRestart, kWhoami}), false);
    auto p = planSudoers({login, "", {kRestart}}, c);
    CHECK(verbs(p) == std::vector<std::string>{"revoke write"});
  }
  SECTION("a file the ledger records is the agent's even without its header") {
    SudoersCurrent c = hostWith({kRestart});
    withFile(c, "akeneo ALL=(ALL) NOPASSWD: ALL\n", true);
    auto p = planSudoers({login, "", {kRestart}}, c);
    CHECK(verbs(p) == std::vector<std::string>{"revoke remove", "grant write"});
  }
  SECTION("a symbolic link or a directory at the path is never touched") {
    SudoersCurrent c = hostWith({kRestart});
    c.file.type = FileType::kSymlink;
    c.owned = true;
    CHECK(planSudoers({login, "", {kRestart}}, c).actions.empty());
    CHECK(planSudoers({login, "", {}}, c).actions.empty());
  }
}

namespace {

/// A sandbox root for RealHost with /usr/bin holding the given programs (copies of /usr/bin/true,
/// root-owned 0755) and /etc/passwd, /etc/shells.
struct Sandbox {
  test::TempDir tmp{"sudoers"};
  std::string root = tmp.path();
  RealHost host{root, makeLogger("host")};
  Sandbox() {
    fs::create_directories(root + "/usr/bin");
    fs::create_directories(root + "/etc/sudoers.d");
    ::chmod(root.c_str(), 0755);
    std::ofstream(root + "/etc/passwd") << "root:x:0:0:root:/root:/bin/bash\n"
                                           "www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n"
                                           "alice:x:1000:1000::/home/alice:/bin/bash\n";
    std::ofstream(root + "/etc/shells") << "/usr/bin/bash\n";
    for (const char* p : {"systemctl", "whoami", "du", "bash"}) program(p);
  }
  void program(const std::string& name, mode_t mode = 0755) {
    const std::string path = root + "/usr/bin/" + name;
    fs::copy_file("/usr/bin/true", path, fs::copy_options::overwrite_existing);
    ::chmod(path.c_str(), mode);
  }
  std::string live() const { return root + kSudoersFile; }
};

Desired desiredOf(const AccessDocument& doc) {
  static const HostSettings host;
  static const SshdSettings sshd;
  return Desired{doc, host, sshd, 0};
}

/// A "visudo" that refuses every candidate, like visudo does a syntax error.
std::string refusingVisudo(const std::string& dir) {
  const std::string path = dir + "/visudo-refuses";
  std::ofstream(path) << "#!/bin/sh\necho \"$3:1:5: syntax error\" >&2\nexit 1\n";
  ::chmod(path.c_str(), 0755);
  return path;
}

}  // namespace

TEST_CASE("sudoers: apply on a sandbox with the real visudo; a fresh plan is then empty", "[sudoers][apply][root]") {
  if (!test::runsAsRoot("files owned by root")) return;
  if (!test::runsHere(::access(kVisudo, X_OK) == 0, "visudo is not installed (apt-get install sudo)")) return;
  Sandbox sb;
  MemoryLedger ledger;
  SudoersProvider provider(makeLogger("provider.sudoers"), &ledger);
  AccessDocument doc;
  doc.sudoTasks = {kRestart,
                   kWhoami,
                   task("workers", {"/usr/bin/systemctl", "restart", "pim-worker@*.service"}),
                   task("shell", {"/usr/bin/bash"}),
                   task("human", {"/usr/bin/whoami"}, "alice"),
                   task("missing", {"/usr/bin/nothing-here"}),
                   task("writable", {"/usr/bin/du"})};
  sb.program("du", 0775);  // group-writable: refused
  auto plan = provider.plan(desiredOf(doc), sb.host);
  REQUIRE(plan);
  REQUIRE(plan->size() == 1);
  std::set<std::string> refused;
  for (const auto& r : provider.skipped()) refused.insert(r.id);
  CHECK(refused == std::set<std::string>{"shell", "human", "missing", "writable"});
  REQUIRE(provider.apply(plan->front(), desiredOf(doc), sb.host));
  struct stat st {};
  REQUIRE(::stat(sb.live().c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0440);
  CHECK(st.st_uid == 0);
  CHECK(ledger.owns(OwnedKind::kFile, kSudoersFile));
  const std::string text = readText(sb.live());
  CHECK(text.find("NOPASSWD: " + sb.root + "/usr/bin/systemctl restart pim-worker@\\*.service\n") != std::string::npos);
  CHECK(text.find("bash") == std::string::npos);
  // Nothing but the live file in the directory: the candidate was checked elsewhere.
  CHECK(std::distance(fs::directory_iterator(sb.root + "/etc/sudoers.d"), fs::directory_iterator{}) == 1);
  auto again = provider.plan(desiredOf(doc), sb.host);
  REQUIRE(again);
  CHECK(again->empty());

  // Through a symbolic link (merged /usr: /bin -> usr/bin) the real file is checked.
  fs::create_directory_symlink("usr/bin", sb.root + "/bin");
  fs::create_symlink("systemctl", sb.root + "/usr/bin/sctl");
  fs::create_symlink("bash", sb.root + "/usr/bin/innocent");
  doc.sudoTasks = {task("via-bin", {"/bin/sctl", "status"}), task("innocent", {"/usr/bin/innocent"})};
  plan = provider.plan(desiredOf(doc), sb.host);
  REQUIRE(plan);
  refused.clear();
  for (const auto& r : provider.skipped()) refused.insert(r.id + ": " + r.reason);
  REQUIRE(refused.size() == 1);
  CHECK(refused.begin()->find("innocent: program: /usr/bin/innocent (bash) is a shell") == 0);
  REQUIRE(plan->size() == 2);  // the old tasks revoked (file removed), then via-bin granted
  for (const auto& a : *plan) REQUIRE(provider.apply(a, desiredOf(doc), sb.host));
  CHECK(readText(sb.live()).find("NOPASSWD: " + sb.root + "/bin/sctl status\n") != std::string::npos);

  // Every task gone: the file goes, and the ledger forgets it.
  doc.sudoTasks.clear();
  plan = provider.plan(desiredOf(doc), sb.host);
  REQUIRE(plan);
  REQUIRE(plan->size() == 1);
  REQUIRE(provider.apply(plan->front(), desiredOf(doc), sb.host));
  CHECK_FALSE(fs::exists(sb.live()));
  CHECK_FALSE(ledger.owns(OwnedKind::kFile, kSudoersFile));
}

TEST_CASE("sudoers: a candidate visudo refuses is never installed; a refused revocation removes the file",
          "[sudoers][apply][root]") {
  if (!test::runsAsRoot("files owned by root")) return;
  if (!test::runsHere(::access(kVisudo, X_OK) == 0, "visudo is not installed (apt-get install sudo)")) return;
  Sandbox sb;
  MemoryLedger ledger;
  SudoersProvider good(makeLogger("provider.sudoers"), &ledger);
  SudoersProvider refusing(makeLogger("provider.sudoers"), &ledger, refusingVisudo(sb.tmp.path()));
  AccessDocument doc;
  doc.sudoTasks = {kRestart, kWhoami};
  auto plan = good.plan(desiredOf(doc), sb.host);
  REQUIRE(plan);
  for (const auto& a : *plan) REQUIRE(good.apply(a, desiredOf(doc), sb.host));
  const std::string installed = readText(sb.live());

  SECTION("a grant") {
    doc.sudoTasks.push_back(kDu);
    plan = refusing.plan(desiredOf(doc), sb.host);
    REQUIRE(plan);
    REQUIRE(plan->size() == 1);
    Status s = refusing.apply(plan->front(), desiredOf(doc), sb.host);
    REQUIRE_FALSE(s);
    CHECK(s.message().find("visudo -c refused the candidate sudoers file") != std::string::npos);
    CHECK(s.message().find("syntax error") != std::string::npos);
    CHECK(readText(sb.live()) == installed);
  }
  SECTION("a revocation") {
    doc.sudoTasks = {kRestart};
    plan = refusing.plan(desiredOf(doc), sb.host);
    REQUIRE(plan);
    REQUIRE(plan->size() == 1);
    CHECK(plan->front().stage == Stage::kRevoke);
    Status s = refusing.apply(plan->front(), desiredOf(doc), sb.host);
    REQUIRE_FALSE(s);
    CHECK(s.message().find("removed " + std::string(kSudoersFile) + " instead") != std::string::npos);
    CHECK_FALSE(fs::exists(sb.live()));
  }
}

TEST_CASE("sudoers: a file someone else wrote is never touched", "[sudoers][apply][root]") {
  if (!test::runsAsRoot("files owned by root")) return;
  Sandbox sb;
  MemoryLedger ledger;
  SudoersProvider provider(makeLogger("provider.sudoers"), &ledger);
  const std::string foreign = "akeneo ALL=(ALL) NOPASSWD: /usr/bin/id\n";
  std::ofstream(sb.live()) << foreign;
  ::chmod(sb.live().c_str(), 0440);
  AccessDocument doc;
  doc.sudoTasks = {kRestart};
  auto plan = provider.plan(desiredOf(doc), sb.host);
  REQUIRE(plan);
  CHECK(plan->empty());
  REQUIRE(provider.skipped().size() == 1);
  // Even an action planned earlier is refused at apply time.
  Action a;
  a.provider = "sudoers";
  a.verb = Verb::kRemove;
  a.object = kSudoersFile;
  a.stage = Stage::kRevoke;
  CHECK(provider.apply(a, desiredOf(doc), sb.host).code() == ErrorCode::kUnsafe);
  CHECK(readText(sb.live()) == foreign);
}
