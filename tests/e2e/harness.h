#pragma once
// End-to-end test harness: helpers for Catch2 tests that drive real programs (useradd, sshd,
// ssh, sftp, the agent) inside the private namespaces of tests/e2e/in-namespace.sh.
//
// A scenario is meant to read like this:
//   PIM_E2E_REQUIRE_NAMESPACE();
//   TempDir tmp;
//   KeyPair alice = generateKey(tmp.path());
//   TestSshd sshd(TestSshd::Options{"/etc/ssh/sshd_config.d/*.conf"});
//   ... run the agent with reload_command = sshd.reloadCommand() ...
//   CHECK(sshd.sshRun("akeneo", Credential::key(alice), "id -un").out == "akeneo\n");
//   CHECK(sshd.sftpBatch("akeneosftp", Credential::password("pw"), "put f\n").exit == 0);

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <catch2/catch.hpp>

#include "providers/host/subprocess.h"
#include "tests/support/skip.h"

namespace pim::e2e {

/// True inside in-namespace.sh: PIM_E2E_NAMESPACE=1, root, and /etc is a private mount.
bool inTestNamespace();

/// Every e2e test case starts with this. Outside the namespace it returns from the test case
/// with a printed reason (under CI it fails it: tests/support/skip.h): tests change the system
/// (useradd, mounts) and each case gets its own fresh namespace from the script, which runs one
/// case at a time (PIM_E2E_TEST, tests/e2e/e2e_main.cpp).
#define PIM_E2E_REQUIRE_NAMESPACE()                                                                      \
  do {                                                                                                   \
    if (!::pim::test::runsHere(::pim::e2e::inTestNamespace(),                                            \
                               "run through tests/e2e/in-namespace.sh (needs root and a private /etc)")) \
      return;                                                                                            \
  } while (0)

/// A fresh directory under $TMPDIR (or /tmp), mode 0755, removed with its contents (without
/// crossing mount points or following symlinks) on destruction. Throws on failure.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "pim-e2e.");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  /// path() + "/" + name.
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct CommandOutput {
  int exit = -1;  // exit code; 128 + signal when killed; -1 when it could not start
  std::string out;
  std::string err;
  bool timedOut = false;
};

/// Runs argv (argv[0] looked up in PATH, no shell) in its own session (no controlling
/// terminal, so ssh can never prompt), feeds `input` on stdin, collects stdout and stderr. On
/// time-out the whole process group is killed with SIGKILL and timedOut is set. `env` entries
/// ("NAME=value") are added to the inherited environment.
CommandOutput runCommand(const std::vector<std::string>& argv, const std::string& input = {},
                         std::chrono::milliseconds timeout = std::chrono::seconds(60),
                         const std::vector<std::string>& env = {});

/// Like runCommand(), but REQUIREs exit code 0 (the failure message shows the output).
CommandOutput mustRun(const std::vector<std::string>& argv, const std::string& input = {});

struct KeyPair {
  std::string privateKey;  // path of the private key (mode 0600)
  std::string publicKey;   // path of the .pub file
  std::string publicLine;  // "ssh-ed25519 AAAA... comment" without the newline
};

/// Generates a key pair without passphrase with ssh-keygen in `dir` ("<dir>/<name>" and
/// "<dir>/<name>.pub"); type: ed25519, ecdsa, rsa. Throws on failure.
KeyPair generateKey(const std::string& dir, const std::string& type = "ed25519", const std::string& name = "id");

/// Writes a file (truncating), then chmod/chown. Throws on failure.
void writeFile(const std::string& path, const std::string& content, mode_t mode = 0644, uid_t uid = 0, gid_t gid = 0);
/// The whole file; throws when it cannot be read.
std::string readFile(const std::string& path);
/// mkdir -p; new directories get `mode` and root ownership. Throws on failure.
void makeDirs(const std::string& path, mode_t mode = 0755);

struct LocalUser {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
  std::string home;
};
/// useradd -m (home under /home, shell /bin/bash by default) plus `extraArgs`; REQUIREs success.
LocalUser createUser(const std::string& name, const std::vector<std::string>& extraArgs = {});
/// The user from /etc/passwd; REQUIREs that it exists.
LocalUser lookupUser(const std::string& name);
/// Sets a clear-text password with chpasswd.
void setPassword(const std::string& user, const std::string& password);
/// Writes ~/.ssh/authorized_keys (0600) in a .ssh directory (0700), both owned by the user.
void writeAuthorizedKeys(const LocalUser& user, const std::vector<std::string>& publicLines);

/// How a client authenticates: a private key file or a password (through sshpass -e).
struct Credential {
  std::string keyPath;
  std::string password;
  static Credential key(const std::string& privateKeyPath) { return {privateKeyPath, {}}; }
  static Credential key(const KeyPair& pair) { return {pair.privateKey, {}}; }
  static Credential withPassword(const std::string& pw) { return {{}, pw}; }
};

/// What a client connects over: the command prefix that enters its network namespace
/// ({"ip", "netns", "exec", "pimclient"}), its source address there, and the server's address.
struct NetPath {
  std::vector<std::string> via;
  std::string from;
  std::string to;
};

/// A client network namespace ("pimclient") joined to the test's own by a veth pair, for what
/// loopback cannot show (the firewall always lets loopback through). The test's side holds
/// kServer4/24 and kServer6/64; the client's side holds every address given (IPv4 addresses from
/// 198.51.100.0/24, IPv6 from 2001:db8:1::/64, added with nodad so they work at once). Removed on
/// destruction. REQUIREs that `ip` sets it up.
class ClientNetwork {
 public:
  explicit ClientNetwork(const std::vector<std::string>& clientAddresses);
  ~ClientNetwork();
  ClientNetwork(const ClientNetwork&) = delete;
  ClientNetwork& operator=(const ClientNetwork&) = delete;
  static constexpr const char* kServer4 = "198.51.100.1";
  static constexpr const char* kServer6 = "2001:db8:1::1";
  /// From `address` (one of the client's) to the server address of the same family.
  NetPath from(const std::string& address) const;
};

/// A real sshd on 127.0.0.1:<free port> with its own host key, started with
/// `/usr/sbin/sshd -D -f <cfg> -E <log>` (through `setpriv --pdeathsig TERM`, which execs it),
/// stopped (SIGTERM, then SIGKILL) on destruction.
/// Its config mirrors Debian's sshd_config: `Include <options.include>` first, UsePAM yes,
/// KbdInteractiveAuthentication no, Subsystem sftp /usr/lib/openssh/sftp-server, LogLevel
/// VERBOSE. Clients may connect from any 127.0.0.0/8 address (bindAddr) to test sources.
class TestSshd {
 public:
  struct Options {
    std::string include;                   // Include pattern (the drop-in or its directory glob)
    std::vector<std::string> extraConfig;  // appended lines, after the Debian-like defaults
    bool usePam = true;
    std::vector<std::string> listenAddresses = {};  // besides 127.0.0.1 (ClientNetwork's kServer4, ...)
  };
  /// Writes the config, generates the host key, starts sshd and waits until it listens.
  /// REQUIREs success (the failure shows sshd's log).
  explicit TestSshd(Options options);
  ~TestSshd();
  TestSshd(const TestSshd&) = delete;
  TestSshd& operator=(const TestSshd&) = delete;

  int port() const { return port_; }
  pid_t pid() const { return sshd_ ? sshd_->pid() : -1; }
  const std::string& configPath() const { return config_; }
  /// sshd's log so far (-E file).
  std::string log() const;
  /// The -E file sshd logs to (the defender reads it: ManagedHost's defender.log_file).
  const std::string& logPath() const { return logPath_; }
  /// How many times sshd started listening (1 after start, +1 per completed reload).
  size_t starts() const;
  /// The agent's sshd.reload_command for this daemon: "/bin/kill -HUP <pid>".
  std::string reloadCommand() const;
  /// Sends SIGHUP and waits until sshd listens again; REQUIREs it within the time-out.
  void reload();
  /// Waits until starts() > previous (after a reload triggered elsewhere, e.g. by the agent).
  bool waitForStart(size_t previous, std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;
  /// `sshd -T -C user=..,addr=..` for this config: the effective settings, one "key value" line
  /// each.
  CommandOutput effective(const std::string& user, const std::string& addr) const;

  /// Runs `command` over ssh as `user` from `bindAddr`. extraOpts ("-o", "X=y", ...) come first
  /// and so override the defaults (ssh keeps the first value): StrictHostKeyChecking=no,
  /// UserKnownHostsFile=/dev/null, BatchMode=yes, IdentitiesOnly=yes, IdentityAgent=none, and
  /// PasswordAuthentication=no for a key / PubkeyAuthentication=no for a password.
  CommandOutput sshRun(const std::string& user, const Credential& cred, const std::string& command,
                       const std::vector<std::string>& extraOpts = {}, const std::string& bindAddr = "127.0.0.1") const;
  /// sshRun() over a ClientNetwork path: from its client address to the server address.
  CommandOutput sshOver(const NetPath& path, const std::string& user, const Credential& cred,
                        const std::string& command, const std::vector<std::string>& extraOpts = {}) const;
  /// sftpBatch() over a ClientNetwork path.
  CommandOutput sftpOver(const NetPath& path, const std::string& user, const Credential& cred,
                         const std::string& batch) const;
  /// Runs an sftp batch ("put a b\nls\n", fed on stdin with -b -) as `user` from `bindAddr`;
  /// the batch stops at the first failing command, and the exit code says so.
  CommandOutput sftpBatch(const std::string& user, const Credential& cred, const std::string& batch,
                          const std::string& bindAddr = "127.0.0.1",
                          const std::vector<std::string>& extraOpts = {}) const;

 private:
  std::vector<std::string> clientOptions(const Credential& cred, const std::vector<std::string>& extraOpts,
                                         const std::string& bindAddr) const;
  CommandOutput withCredential(std::vector<std::string> argv, const Credential& cred, const std::string& input) const;

  Options options_;
  TempDir dir_{"pim-e2e-sshd."};
  std::string config_;
  std::string logPath_;
  int port_ = 0;
  mutable std::optional<Subprocess> sshd_;  // mutable: waitForStart() reaps an sshd that died
};

/// Paths of the programs under test, from the build (PIM_AGENT_BINARY, PIM_SOURCE_DIR); the
/// environment variable PIM_E2E_AGENT, when set, names another agent binary to test.
std::string agentBinary();
std::string sourceDir();

/// Runs the agent: `pim-access-agent --config <config> <args...>`.
CommandOutput runAgent(const std::string& config, const std::vector<std::string>& args,
                       std::chrono::milliseconds timeout = std::chrono::seconds(120));

/// The agent configured for the test namespace, so a scenario only writes documents and runs
/// commands. Defaults (each "section.key" can be overridden through `settings`):
///   store.source = file://<tempdir>/access.json   state.db = <tempdir>/state.db
///   host.transfer_root = /srv/transfer/pim        sshd.reload_command = /bin/true
/// everything else is the agent's default: /etc/ssh/sshd_config.d/10-pim-access-agent.conf,
/// /srv/pim-sftp, /etc/pim-access-agent/authorized_keys, /home/akeneo (all private to the
/// namespace).
/// Pair it with TestSshd{"/etc/ssh/sshd_config.d/*.conf"} and
/// settings {{"sshd.reload_command", sshd.reloadCommand()}} to test what the agent installs.
class AgentSandbox {
 public:
  explicit AgentSandbox(std::map<std::string, std::string> settings = {});
  /// Replaces the store's document (written to a temporary name, then renamed).
  void setDocument(const std::string& json) const;
  const std::string& configPath() const { return config_; }
  const std::string& documentPath() const { return document_; }
  /// The value of a setting ("host.transfer_root").
  std::string setting(const std::string& key) const;
  /// `pim-access-agent --config <config> <args...>`.
  CommandOutput run(const std::vector<std::string>& args) const;
  CommandOutput once() const { return run({"once"}); }

 private:
  TempDir dir_{"pim-e2e-agent."};
  std::map<std::string, std::string> settings_;
  std::string config_;
  std::string document_;
};

/// One entry of `ssh.keys` for renderDocument(). An empty expiresAt renders as null.
struct DocKey {
  std::string id;
  std::string publicKey;
  bool active = true;
  std::string expiresAt;
  std::vector<std::string> allowedSources = {};  // rendered only when not empty
};

/// One entry of `sftp.accounts` for renderDocument(). An empty passwordHash renders as null
/// (key-only account).
struct DocAccount {
  std::string id;
  std::string username;
  std::string passwordHash;
  std::string folder = ".";
  bool active = true;
  std::vector<std::string> publicKeys;
  std::vector<std::string> allowedSources = {};  // rendered only when not empty
};

/// One entry of `sudo.tasks` for renderDocument(). An empty runAs is not written (root).
struct DocTask {
  std::string id;
  std::vector<std::string> command;
  std::string runAs;
  bool active = true;
};

/// What an access document (version 1) holds, for scenarios that change it revision by revision.
struct DocSpec {
  int64_t revision = 1;
  std::string instance = "e2e";
  std::vector<DocKey> keys;
  std::vector<DocAccount> accounts;
  std::vector<std::string> allowedSources;
  std::vector<DocTask> tasks;  // rendered as the optional sudo section when not empty
  /// Account id -> its "access" ("read-write", "read-only", "upload-only"); absent: not written.
  std::map<std::string, std::string> access;
};

/// The document as the store sends it (JSON, every string escaped).
std::string renderDocument(const DocSpec& spec);

/// A real sshd and the agent configured as on a host, inside the test namespace: the agent runs
/// WITHOUT --root (real useradd on the namespace's private /etc), its drop-in is
/// /etc/ssh/sshd_config.d/10-pim-access-agent.conf which the sshd Includes, its sshd.main_config
/// is that sshd's config (so `sshd -t` validates exactly what runs), reload_command SIGHUPs that
/// sshd, and state.db, transfer_root and chroot_base live under /srv (tmpfs):
///   state.db = /srv/pim-access-agent/state.db   host.transfer_root = /srv/transfer/pim
///   host.chroot_base = /srv/pim-sftp            host.always_allow = 127.0.0.1/32
/// so that 127.0.0.2 stands for an address outside the operator ranges; defender.log_file is the
/// sshd's -E file (a daemon's defender counts its failed passwords). `settings` override.
class ManagedHost {
 public:
  /// `sshdListen`: addresses the sshd listens on besides 127.0.0.1 (ClientNetwork's servers).
  explicit ManagedHost(std::map<std::string, std::string> settings = {}, std::vector<std::string> sshdListen = {});
  ManagedHost(const ManagedHost&) = delete;
  ManagedHost& operator=(const ManagedHost&) = delete;

  TempDir& tmp() { return tmp_; }
  TestSshd& sshd() { return sshd_; }
  const AgentSandbox& agent() const { return *agent_; }
  std::string transferRoot() const { return agent_->setting("host.transfer_root"); }
  std::string chrootBase() const { return agent_->setting("host.chroot_base"); }
  static constexpr const char* kDropin = "/etc/ssh/sshd_config.d/10-pim-access-agent.conf";
  /// The login user's key file, written by the agent.
  static constexpr const char* kLoginKeys = "/etc/pim-access-agent/authorized_keys/akeneo";

  /// Runs `pim-access-agent --config <cfg> <args...>` and, when it reloaded sshd (the drop-in
  /// changed, or sshd logged a SIGHUP), waits until sshd listens again, so the next client
  /// meets the new config. Does not check the exit code.
  CommandOutput run(const std::vector<std::string>& args);
  /// Writes the document, then run({"once"}) and REQUIREs exit 0 (the failure shows the output).
  CommandOutput apply(const DocSpec& spec);
  /// `status --json` / `history --json`, parsed; REQUIREs exit 0 and valid JSON of that shape.
  Poco::JSON::Object::Ptr status();
  Poco::JSON::Array::Ptr history();

 private:
  TempDir tmp_{"pim-e2e-host."};
  TestSshd sshd_;
  std::unique_ptr<AgentSandbox> agent_;
};

/// `pim-access-agent --config <config> run` in the background (stdout and stderr to `log`),
/// stopped with SIGTERM (then SIGKILL) on destruction.
class AgentDaemon {
 public:
  AgentDaemon(const std::string& config, const std::string& log);
  ~AgentDaemon();
  AgentDaemon(const AgentDaemon&) = delete;
  AgentDaemon& operator=(const AgentDaemon&) = delete;
  std::string log() const { return readFile(log_); }

 private:
  std::string log_;
  std::optional<Subprocess> process_;
};

/// A command (argv[0] looked up in PATH) in the background in a process group of its own,
/// stdout and stderr appended to `log`; the group is stopped (SIGTERM, then SIGKILL) on
/// destruction. For services a scenario needs (journald, a log forwarder).
class Background {
 public:
  Background(const std::vector<std::string>& argv, const std::string& log);
  ~Background();
  Background(const Background&) = delete;
  Background& operator=(const Background&) = delete;

 private:
  std::optional<Subprocess> process_;
};

/// Polls `condition` every 100 ms for up to `timeout`.
bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds timeout = std::chrono::seconds(20));
/// The same, for up to `seconds`.
bool eventually(const std::function<bool()>& condition, int seconds);

/// Runs argv as `user` (runuser -u USER --, no shell), like runCommand().
CommandOutput runAs(const std::string& user, const std::vector<std::string>& argv,
                    std::chrono::milliseconds timeout = std::chrono::seconds(30));

/// An ssh-agent listening on `socket` (ssh-agent -a), killed on destruction.
class SshAgent {
 public:
  explicit SshAgent(const std::string& socket);
  ~SshAgent();
  SshAgent(const SshAgent&) = delete;
  SshAgent& operator=(const SshAgent&) = delete;
  const std::string& socket() const { return socket_; }
  /// ssh-add of a private key; REQUIREs success.
  void add(const KeyPair& key) const;

 private:
  std::string socket_;
  pid_t pid_ = -1;
};

/// The lines of an sftp batch's stdout that are not echoed commands ("sftp> ..."), trimmed.
std::vector<std::string> sftpListing(const std::string& out);

/// Modification time (ns) and inode of a path (lstat); REQUIREs that it exists.
struct FileStamp {
  ino_t inode = 0;
  int64_t mtimeNs = 0;
  bool operator==(const FileStamp& o) const { return inode == o.inode && mtimeNs == o.mtimeNs; }
};
FileStamp stampOf(const std::string& path);
/// True when lstat(path) succeeds.
bool pathExists(const std::string& path);

/// A SHA-512 crypt(3) hash of `password` (openssl passwd -6), for documents.
std::string cryptHash(const std::string& password);
/// `text` with every `from` replaced by `to` (fills keys and hashes into document templates).
std::string replaceAll(std::string text, const std::string& from, const std::string& to);

/// Trims white space at both ends (handy for command output).
std::string trim(const std::string& s);
/// True when `haystack` contains `needle`.
inline bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

}  // namespace pim::e2e
