// Issue 19, "Privileges", end to end: sudo tasks for the login user, checked with the real sudo
// (`sudo -n -l`, `sudo -n CMD` as akeneo through runuser) against the file the agent installs in
// the namespace's private /etc/sudoers.d; and SFTP accounts that only read or only upload, checked
// with a real sftp client against a real sshd. Each case runs in its own namespace.

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <catch2/catch.hpp>

#include "providers/sudoers.h"
#include "tests/e2e/harness.h"

using namespace pim::e2e;

namespace {

constexpr const char* kLogin = "akeneo";

/// The rules `sudo -n -l` lists for akeneo ("(root) NOPASSWD: /usr/bin/id -u"), in order.
std::vector<std::string> listedRules() {
  CommandOutput r = runAs(kLogin, {"sudo", "-n", "-l"});
  INFO("sudo -n -l: exit " << r.exit << "\n" << r.out << r.err);
  std::vector<std::string> rules;
  bool inRules = false;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    if (contains(line, "may run the following commands")) {
      inRules = true;
      continue;
    }
    if (inRules && !trim(line).empty()) rules.push_back(trim(line));
  }
  return rules;
}

/// What `sudo -n -l` shows for a task: the rule without "akeneo ALL=".
std::string listed(const DocTask& t) {
  pim::SudoTask task;
  task.id = t.id;
  task.command = t.command;
  task.runAs = t.runAs.empty() ? "root" : t.runAs;
  const std::string rule = pim::renderTaskRule(kLogin, task, "");
  // sudo -l prints an argument as its parser kept it: a literal backslash, written "\\\\"
  // (once for the parser, once for the matcher), shows as "\\".
  return replaceAll(rule.substr(rule.find('=') + 1), "\\\\", "\\");
}

/// sudo -n as akeneo; "sudo: a password is required" is how sudo -n refuses.
CommandOutput sudo(const std::vector<std::string>& argv) {
  std::vector<std::string> all{"sudo", "-n"};
  all.insert(all.end(), argv.begin(), argv.end());
  return runAs(kLogin, all);
}

void checkRuns(const std::vector<std::string>& argv, const std::string& want) {
  CommandOutput r = sudo(argv);
  INFO("sudo -n " << argv.back() << ": exit " << r.exit << "\n" << r.out << r.err);
  CHECK(r.exit == 0);
  CHECK(r.out == want);
}

void checkRefused(const std::vector<std::string>& argv) {
  CommandOutput r = sudo(argv);
  INFO("sudo -n ... " << argv.back() << ": exit " << r.exit << "\n" << r.out << r.err);
  CHECK(r.exit != 0);
  CHECK(contains(r.err, "a password is required"));
  CHECK(r.out.empty());
}

/// id -> {installed} of status --json's sudo_tasks.
std::map<std::string, bool> installedTasks(ManagedHost& host) {
  std::map<std::string, bool> out;
  auto tasks = host.status()->getArray("sudo_tasks");
  for (size_t i = 0; i < tasks->size(); ++i) {
    auto t = tasks->getObject(unsigned(i));
    out[t->getValue<std::string>("id")] = t->getValue<bool>("installed");
  }
  return out;
}

std::map<std::string, std::string> skippedOf(ManagedHost& host) {
  std::map<std::string, std::string> out;
  auto skipped = host.status()->getArray("skipped");
  for (size_t i = 0; i < skipped->size(); ++i) {
    auto s = skipped->getObject(unsigned(i));
    out[s->getValue<std::string>("id")] = s->getValue<std::string>("reason");
  }
  return out;
}

/// A copy of a program under /srv (tmpfs, private to the namespace), root-owned, with `mode`.
std::string program(const std::string& name, const std::string& from, mode_t mode,
                    const std::string& dir = "/srv/bin") {
  makeDirs(dir, 0755);
  const std::string path = dir + "/" + name;
  mustRun({"cp", from, path});
  REQUIRE(::chmod(path.c_str(), mode) == 0);
  return path;
}

const DocTask kIdU{"id-u", {"/usr/bin/id", "-u"}, "", true};
const DocTask kWhoami{"whoami-www", {"/usr/bin/whoami"}, "www-data", true};
const DocTask kEcho{"echo-escaped", {"/usr/bin/echo", "a*b", "k=v,w:x", "#c", "\\d", "^e!", "[f]?"}, "root", true};
const DocTask kDate{"date-utc", {"/usr/bin/date", "-u", "+%Y"}, "", true};

}  // namespace

TEST_CASE("e2e sudo: akeneo may run exactly the active tasks; bad tasks are skipped and reported", "[e2e][sudo]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  ManagedHost host;
  const std::string groupWritable = program("pim-gw", "/usr/bin/id", 0775);
  makeDirs("/tmp/pim-tools", 0755);  // inside /tmp, which anyone may write to
  const std::string inTmp = program("tool", "/usr/bin/id", 0755, "/tmp/pim-tools");
  // A shell under another name: a symbolic link to dash.
  const std::string renamedShell = "/srv/bin/restart-app";
  REQUIRE(::symlink("/usr/bin/dash", renamedShell.c_str()) == 0);
  DocSpec doc;
  doc.allowedSources = {"203.0.113.0/24"};
  doc.tasks = {kIdU,
               kWhoami,
               kEcho,
               {"id-g-inactive", {"/usr/bin/id", "-g"}, "", false},
               {"group-writable", {groupWritable}, "", true},
               {"relative", {"usr/bin/id", "-u"}, "", true},
               {"shell", {"/bin/sh", "-c", "id"}, "", true},
               {"interpreter", {"/usr/bin/python3", "-V"}, "", true},
               {"world-writable-dir", {inTmp}, "", true},
               {"human-run-as", {"/usr/bin/id", "-u"}, "nobody", true},
               {"renamed-shell", {renamedShell}, "", true}};
  CommandOutput once = host.apply(doc);
  for (const char* id : {"group-writable", "relative", "shell", "interpreter", "world-writable-dir", "human-run-as"}) {
    INFO(id);
    CHECK(contains(once.out, std::string("  ") + id + ": "));
  }
  CHECK(contains(once.out, "skipped 7 entries"));

  // The file: the agent's, root:root 0440, checked by visudo.
  struct stat st {};
  REQUIRE(::stat(pim::kSudoersFile, &st) == 0);
  CHECK((st.st_mode & 07777) == 0440);
  CHECK(st.st_uid == 0);
  CHECK(st.st_gid == 0);
  mustRun({"visudo", "-c", "-f", pim::kSudoersFile});

  // sudo -n -l: exactly the active, accepted tasks (sorted by id), and the logging Defaults.
  CHECK(listedRules() == std::vector<std::string>{listed(kEcho), listed(kIdU), listed(kWhoami)});
  CommandOutput defaults = mustRun({"sudo", "-n", "-l", "-U", kLogin});
  CHECK(contains(defaults.out, "log_allowed, log_denied"));

  // A listed command line runs; the same program with other arguments, or anything else, does not.
  checkRuns({"/usr/bin/id", "-u"}, "0\n");
  checkRuns({"-u", "www-data", "/usr/bin/whoami"}, "www-data\n");
  checkRuns({"/usr/bin/echo", "a*b", "k=v,w:x", "#c", "\\d", "^e!", "[f]?"}, "a*b k=v,w:x #c \\d ^e! [f]?\n");
  checkRefused({"/usr/bin/id"});
  checkRefused({"/usr/bin/id", "-u", "-n"});
  checkRefused({"/usr/bin/id", "-g"});  // inactive
  checkRefused({"-u", "www-data", "/usr/bin/whoami", "--version"});
  checkRefused({"/usr/bin/whoami"});  // as root: the task runs as www-data only
  checkRefused({"/usr/bin/echo", "aXb", "k=v,w:x", "#c", "\\d", "^e!", "[f]?"});  // '*' is not a wildcard
  checkRefused({"/usr/bin/echo", "a*b", "k=v,w:x", "#c", "\\d", "^e!", "[f]X"});  // nor '?'
  // (sudo matches the arguments joined by spaces: the same words merged into one argument with
  // spaces would match too; docs/access-document.md says so.)
  checkRefused({"/bin/sh", "-c", "id"});
  checkRefused({"/usr/bin/python3", "-V"});
  checkRefused({groupWritable});
  checkRefused({inTmp});
  checkRefused({renamedShell});
  checkRefused({"/usr/bin/cat", "/etc/shadow"});

  // status: every task, and whether its rule is in force; the refused ones with their reasons.
  CHECK(installedTasks(host) == std::map<std::string, bool>{{"id-u", true},
                                                            {"whoami-www", true},
                                                            {"echo-escaped", true},
                                                            {"id-g-inactive", false},
                                                            {"group-writable", false},
                                                            {"shell", false},
                                                            {"interpreter", false},
                                                            {"world-writable-dir", false},
                                                            {"human-run-as", false},
                                                            {"renamed-shell", false}});
  auto skipped = skippedOf(host);
  CHECK(contains(skipped["group-writable"], "writable by group or others (mode 0775)"));
  CHECK(contains(skipped["relative"], "command[0]: not absolute"));
  CHECK(contains(skipped["shell"], "is a shell"));
  CHECK(contains(skipped["interpreter"], "/usr/bin/python3 is an interpreter"));
  CHECK(contains(skipped["world-writable-dir"], "directory /tmp is writable by group or others"));
  CHECK(contains(skipped["human-run-as"], "not a system user"));
  CHECK(contains(skipped["renamed-shell"], "/srv/bin/restart-app (dash) is a shell"));
  CommandOutput text = host.run({"status"});
  CHECK(contains(text.out, "  id-u  /usr/bin/id -u  as root  installed\n"));
  CHECK(contains(text.out, "  id-g-inactive  /usr/bin/id -g  as root  inactive\n"));

  // A second once changes nothing; an empty task list removes the file.
  CommandOutput again = host.apply(doc);
  CHECK(contains(again.out, "changes: 0"));
  doc.revision = 2;
  doc.tasks.clear();
  host.apply(doc);
  CHECK_FALSE(pathExists(pim::kSudoersFile));
  CHECK(listedRules().empty());
  checkRefused({"/usr/bin/id", "-u"});
}

TEST_CASE("e2e sudo: tasks removed are revoked before tasks added are granted; rollback restores the previous list",
          "[e2e][sudo][rollback]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  ManagedHost host;
  DocSpec doc;
  doc.allowedSources = {"203.0.113.0/24"};
  doc.revision = 1;
  doc.tasks = {kIdU, kWhoami};
  host.apply(doc);
  CHECK(listedRules() == std::vector<std::string>{listed(kIdU), listed(kWhoami)});

  // Revision 2: id-u goes, date-utc comes: two writes, the revocation first.
  doc.revision = 2;
  doc.tasks = {kWhoami, kDate};
  host.agent().setDocument(renderDocument(doc));
  CommandOutput plan = host.run({"plan"});
  REQUIRE(plan.exit == 0);
  const size_t revoke = plan.out.find("[revoke] sudoers: remove");
  const size_t revokeWrite = plan.out.find("[revoke] sudoers: write");
  const size_t grant = plan.out.find("[grant] sudoers: write");
  INFO(plan.out);
  CHECK((revoke != std::string::npos || revokeWrite != std::string::npos));
  CHECK(grant != std::string::npos);
  CHECK(std::min(revoke, revokeWrite) < grant);
  host.apply(doc);
  CHECK(listedRules() == std::vector<std::string>{listed(kDate), listed(kWhoami)});
  checkRefused({"/usr/bin/id", "-u"});
  CommandOutput year = sudo({"/usr/bin/date", "-u", "+%Y"});
  CHECK(year.exit == 0);

  // rollback 1: id-u and whoami-www again, date-utc revoked.
  CommandOutput rolled = host.run({"rollback", "1"});
  INFO(rolled.out << rolled.err);
  REQUIRE(rolled.exit == 0);
  CHECK(listedRules() == std::vector<std::string>{listed(kIdU), listed(kWhoami)});
  checkRuns({"/usr/bin/id", "-u"}, "0\n");
  checkRefused({"/usr/bin/date", "-u", "+%Y"});
  CHECK(installedTasks(host) == std::map<std::string, bool>{{"id-u", true}, {"whoami-www", true}});
}

TEST_CASE("e2e sudo: a candidate visudo refuses is never installed; the revocations still happen", "[e2e][sudo]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  ManagedHost host;
  // visudo, as the namespace sees it, refuses every candidate that grants /usr/bin/date and checks
  // the others with the real visudo (bind mounts stay inside the namespace).
  const std::string real = program("visudo.real", "/usr/sbin/visudo", 0755);
  const std::string fake = host.tmp().file("visudo");
  writeFile(fake,
            "#!/bin/sh\n"
            "if grep -q /usr/bin/date \"$3\"; then echo \"$3:9:1: syntax error\" >&2; exit 1; fi\n"
            "exec " +
                real + " \"$@\"\n",
            0755);
  mustRun({"mount", "--bind", fake, "/usr/sbin/visudo"});

  DocSpec doc;
  doc.allowedSources = {"203.0.113.0/24"};
  doc.revision = 1;
  doc.tasks = {kIdU, kWhoami};
  host.apply(doc);
  const std::string installed = readFile(pim::kSudoersFile);

  // A grant visudo refuses: nothing installed, exit 5 naming visudo, the old tasks stay.
  doc.revision = 2;
  doc.tasks = {kIdU, kWhoami, kDate};
  host.agent().setDocument(renderDocument(doc));
  CommandOutput refused = host.run({"once"});
  INFO(refused.out << refused.err);
  CHECK(refused.exit == 5);
  CHECK(contains(refused.out + refused.err, "visudo -c refused the candidate sudoers file"));
  CHECK(readFile(pim::kSudoersFile) == installed);
  CHECK(listedRules() == std::vector<std::string>{listed(kIdU), listed(kWhoami)});
  checkRefused({"/usr/bin/date", "-u", "+%Y"});
  CHECK(contains(host.status()->getValue<std::string>("last_error"), "visudo"));
  CHECK(installedTasks(host)["date-utc"] == false);

  // id-u and whoami-www go, date-utc comes: the revocation applies, the refused grant does not.
  doc.revision = 3;
  doc.tasks = {kDate};
  host.agent().setDocument(renderDocument(doc));
  CommandOutput partial = host.run({"once"});
  INFO(partial.out << partial.err);
  CHECK(partial.exit == 5);
  CHECK_FALSE(pathExists(pim::kSudoersFile));
  CHECK(listedRules().empty());
  checkRefused({"/usr/bin/id", "-u"});
  checkRefused({"/usr/bin/date", "-u", "+%Y"});
}

TEST_CASE("e2e sudo: a hand-edited sudoers file is rewritten by the daemon within seconds", "[e2e][sudo][daemon]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  ManagedHost host(std::map<std::string, std::string>{{"store.poll_interval_s", "30"}});
  DocSpec doc;
  doc.allowedSources = {"203.0.113.0/24"};
  doc.tasks = {kIdU};
  host.agent().setDocument(renderDocument(doc));
  AgentDaemon daemon(host.agent().configPath(), host.tmp().file("daemon.log"));
  INFO("daemon log:\n" << daemon.log());
  REQUIRE(eventually([] { return listedRules() == std::vector<std::string>{listed(kIdU)}; }));
  const std::string rendered = readFile(pim::kSudoersFile);

  // Someone gives akeneo everything, in place (the file keeps its inode, header and mode).
  {
    std::ofstream edit(pim::kSudoersFile, std::ios::app);
    edit << "akeneo ALL=(ALL) NOPASSWD: ALL\n";
  }
  CHECK(contains(readFile(pim::kSudoersFile), "NOPASSWD: ALL"));
  const auto edited = std::chrono::steady_clock::now();
  REQUIRE(eventually([&] { return readFile(pim::kSudoersFile) == rendered; }, 10));
  CHECK(std::chrono::steady_clock::now() - edited < std::chrono::seconds(10));
  CHECK(listedRules() == std::vector<std::string>{listed(kIdU)});
  checkRefused({"/usr/bin/cat", "/etc/shadow"});

  // Removed by hand: granted again (the document in force says so).
  REQUIRE(::unlink(pim::kSudoersFile) == 0);
  const bool back =
      eventually([&] { return pathExists(pim::kSudoersFile) && readFile(pim::kSudoersFile) == rendered; }, 10);
  INFO("daemon log now:\n" << daemon.log());
  REQUIRE(back);
  CHECK(contains(daemon.log(), "sudoers"));
}

TEST_CASE("e2e sftp access: read-only reads and lists, upload-only writes blind, the default does all",
          "[e2e][sftp][access]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  ManagedHost host;
  const std::string root = host.transferRoot();
  DocSpec doc;
  doc.allowedSources = {"203.0.113.0/24"};
  doc.accounts = {{"feed", "feedsftp", cryptHash("Feed-pass-1"), ".", true, {}},
                  {"drop", "dropsftp", cryptHash("Drop-pass-2"), ".", true, {}},
                  {"main", "mainsftp", cryptHash("Main-pass-3"), ".", true, {}}};
  doc.access = {{"feed", "read-only"}, {"drop", "upload-only"}};
  host.apply(doc);
  writeFile(root + "/seed.csv", "seed\n", 0666);
  writeFile(host.tmp().file("local.csv"), "local\n");
  const std::string local = host.tmp().file("local.csv");

  // sshd -T shows each account's ForceCommand.
  CHECK(contains(host.sshd().effective("feedsftp", "203.0.113.9").out,
                 "forcecommand internal-sftp -d /transfer -u 0007 -R\n"));
  CHECK(contains(host.sshd().effective("dropsftp", "203.0.113.9").out,
                 "forcecommand internal-sftp -d /transfer -u 0007 -p open,close,write,mkdir,realpath,fsync,limits\n"));
  CHECK(contains(host.sshd().effective("mainsftp", "203.0.113.9").out,
                 "forcecommand internal-sftp -d /transfer -u 0007\n"));

  auto batch = [&](const std::string& user, const std::string& password, const std::string& commands) {
    CommandOutput r = host.sshd().sftpBatch(user, Credential::withPassword(password), commands);
    UNSCOPED_INFO(user << ": " << commands << "exit " << r.exit << "\nstdout:\n" << r.out << "\nstderr:\n" << r.err);
    return r;
  };

  // read-only: get and ls; put, rm, rename, mkdir fail and change nothing.
  CHECK(batch("feedsftp", "Feed-pass-1", "get seed.csv " + host.tmp().file("got.csv") + "\n").exit == 0);
  CHECK(readFile(host.tmp().file("got.csv")) == "seed\n");
  CommandOutput ls = batch("feedsftp", "Feed-pass-1", "ls -1\n");
  CHECK(ls.exit == 0);
  CHECK(sftpListing(ls.out) == std::vector<std::string>{"seed.csv"});
  for (const std::string& c : {"put " + local + " new.csv", std::string("rm seed.csv"),
                               std::string("rename seed.csv moved.csv"), std::string("mkdir newdir")}) {
    CommandOutput r = batch("feedsftp", "Feed-pass-1", c + "\n");
    CHECK(r.exit != 0);
    CHECK(contains(r.err, "Permission denied"));
  }
  CHECK(readFile(root + "/seed.csv") == "seed\n");
  CHECK_FALSE(pathExists(root + "/new.csv"));
  CHECK_FALSE(pathExists(root + "/moved.csv"));
  CHECK_FALSE(pathExists(root + "/newdir"));

  // upload-only: put and mkdir; get, ls, rm, rename fail, also on what it uploaded itself.
  CHECK(batch("dropsftp", "Drop-pass-2", "put " + local + " up.csv\nmkdir updir\nput " + local + " updir/in.csv\n")
            .exit == 0);
  CHECK(readFile(root + "/up.csv") == "local\n");
  CHECK(readFile(root + "/updir/in.csv") == "local\n");
  for (const std::string& c :
       {"get seed.csv " + host.tmp().file("stolen"), "get up.csv " + host.tmp().file("stolen"),
        std::string("rm seed.csv"), std::string("rm up.csv"), std::string("rename up.csv moved.csv"),
        std::string("rmdir updir"), std::string("ls -1 updir")}) {
    CommandOutput r = batch("dropsftp", "Drop-pass-2", c + "\n");
    CHECK(r.exit != 0);
    CHECK(sftpListing(r.out).empty());
  }
  CommandOutput blind = batch("dropsftp", "Drop-pass-2", "ls -1\n");  // sftp reports the refusal, exit 0
  CHECK(contains(blind.err, "Permission denied"));
  CHECK(sftpListing(blind.out).empty());
  CHECK_FALSE(pathExists(host.tmp().file("stolen")));
  CHECK(pathExists(root + "/seed.csv"));
  CHECK(pathExists(root + "/up.csv"));
  CHECK_FALSE(pathExists(root + "/moved.csv"));

  // read-write (the default): everything.
  CommandOutput all = batch("mainsftp", "Main-pass-3",
                            "put " + local + " rw.csv\nget up.csv " + host.tmp().file("rw-got") +
                                "\nls -1\nrename rw.csv rw2.csv\nmkdir rwdir\nrm rw2.csv\nrmdir rwdir\n");
  CHECK(all.exit == 0);
  CHECK(readFile(host.tmp().file("rw-got")) == "local\n");
  CHECK_FALSE(pathExists(root + "/rw2.csv"));

  // status says each account's access.
  auto accounts = host.status()->getArray("accounts");
  std::map<std::string, std::string> access;
  for (size_t i = 0; i < accounts->size(); ++i) {
    auto a = accounts->getObject(unsigned(i));
    access[a->getValue<std::string>("username")] = a->getValue<std::string>("access");
  }
  CHECK(access == std::map<std::string, std::string>{
                      {"feedsftp", "read-only"}, {"dropsftp", "upload-only"}, {"mainsftp", "read-write"}});

  // Narrowed: the default account becomes read-only at the next once.
  doc.revision = 2;
  doc.access["main"] = "read-only";
  host.apply(doc);
  CHECK(batch("mainsftp", "Main-pass-3", "put " + local + " late.csv\n").exit != 0);
  CHECK_FALSE(pathExists(root + "/late.csv"));
}

TEST_CASE("e2e sftp access: the daemon makes an upload-only account's files and directories group-writable",
          "[e2e][sftp][access][daemon]") {
  PIM_E2E_REQUIRE_NAMESPACE();
  ManagedHost host;
  const std::string root = host.transferRoot();
  DocSpec doc;
  doc.allowedSources = {"203.0.113.0/24"};
  doc.accounts = {{"drop", "dropsftp", cryptHash("Drop-pass-2"), ".", true, {}}};
  doc.access = {{"drop", "upload-only"}};
  host.agent().setDocument(renderDocument(doc));
  AgentDaemon daemon(host.agent().configPath(), host.tmp().file("daemon.log"));
  INFO("daemon log:\n" << daemon.log());
  REQUIRE(eventually([&] {
    return contains(host.sshd().effective("dropsftp", "203.0.113.9").out, "-p open,close,write,mkdir") &&
           pathExists(host.chrootBase() + "/dropsftp/transfer");
  }));
  const std::string local = host.tmp().file("local.csv");
  writeFile(local, "local\n", 0644);
  REQUIRE(eventually([&] {
    return host.sshd()
               .sftpBatch("dropsftp", Credential::withPassword("Drop-pass-2"),
                          "put " + local + " up.csv\n-mkdir updir\nput " + local + " updir/in.csv\n")
               .exit == 0;
  }));
  auto modeOf = [](const std::string& path) {
    struct stat st {};
    return ::lstat(path.c_str(), &st) == 0 ? (st.st_mode & 07777) : 0u;
  };
  CHECK(eventually(
      [&] {
        return modeOf(root + "/up.csv") == 0660 && modeOf(root + "/updir") == 02770 &&
               modeOf(root + "/updir/in.csv") == 0660;
      },
      10));
}
