// Helper program for scripts/bench-perms: builds trees, runs PermEnforcer passes and a
// PermWatcher, writes bursts of files and measures how long files stayed wrong. Not a test: it
// prints figures and asserts nothing.
//
//   bench_perms make-tree DIR N            N files (0644, group 0) in leaf dirs of 1000 files
//   bench_perms pass DIR GID               one full pass; prints "seconds scanned changed"
//   bench_perms watch DIR GID              PermWatcher until SIGTERM; prints "ready" after the
//                                          first pass, totals at exit
//   bench_perms burst DIR N PROCS          N files in N/100 nested leaf dirs (a/b/c), PROCS
//                                          processes, as fast as possible; prints seconds
//   bench_perms latency DIR GID STALL_S    waits until every file is right (or no progress for
//                                          STALL_S s), then prints latency creation -> fix from
//                                          the time written in each file (else btime) to
//                                          its ctime: p50 p99 max missed

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "agent/daemon/perm_watcher.h"
#include "providers/host/transfer_perms.h"

namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

int usage() {
  std::fprintf(stderr,
               "usage: bench_perms make-tree DIR N | pass DIR GID [by-name|by-fd THREADS] | watch DIR GID | "
               "burst DIR N PROCS | latency DIR GID STALL_S\n");
  return 2;
}

void die(const char* what, const std::string& path) {
  std::fprintf(stderr, "bench_perms: %s %s: %s\n", what, path.c_str(), std::strerror(errno));
  std::exit(1);
}

int makeTree(const std::string& dir, long n) {
  constexpr long kPerLeaf = 1000;
  constexpr long kLeavesPerTop = 100;
  umask(022);
  if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) die("mkdir", dir);
  long leaves = (n + kPerLeaf - 1) / kPerLeaf;
  long made = 0;
  for (long leaf = 0; leaf < leaves; ++leaf) {
    std::string top = dir + "/t" + std::to_string(leaf / kLeavesPerTop);
    if (leaf % kLeavesPerTop == 0 && mkdir(top.c_str(), 0755) != 0 && errno != EEXIST) {
      die("mkdir", top);
    }
    std::string leafDir = top + "/l" + std::to_string(leaf);
    if (mkdir(leafDir.c_str(), 0755) != 0) die("mkdir", leafDir);
    int dfd = open(leafDir.c_str(), O_RDONLY | O_DIRECTORY);
    if (dfd < 0) die("open", leafDir);
    for (long i = 0; i < kPerLeaf && made < n; ++i, ++made) {
      char name[32];
      std::snprintf(name, sizeof name, "f%ld", i);
      int fd = openat(dfd, name, O_CREAT | O_WRONLY | O_TRUNC, 0644);
      if (fd < 0) die("create", leafDir + "/" + name);
      close(fd);
    }
    close(dfd);
  }
  std::printf("%ld files in %ld directories\n", made, leaves + (leaves + kLeavesPerTop - 1) / kLeavesPerTop);
  return 0;
}

// `method`: "" (the default choice), "by-name" or "by-fd", with `threads` threads.
int pass(const std::string& dir, gid_t gid, const std::string& method, unsigned threads) {
  pim::PermEnforcer enforcer(dir, gid, pim::nullLogger());
  if (!method.empty()) enforcer.setMethod(method == "by-name", threads);
  if (method == "by-name" && !enforcer.pathChanges()) {
    std::fprintf(stderr, "bench_perms: no fchmodat2 here (Linux < 6.6) or fs.protected_hardlinks is off\n");
    return 3;
  }
  auto start = Clock::now();
  pim::PermStats stats = enforcer.fullPass();
  double s = since(start);
  std::printf("%.3f %llu %llu %llu\n", s, static_cast<unsigned long long>(stats.scanned),
              static_cast<unsigned long long>(stats.changed), static_cast<unsigned long long>(stats.errors));
  return stats.errors == 0 ? 0 : 1;
}

struct WatchState {
  pim::PermWatcher* watcher = nullptr;
  bool announced = false;
  size_t watches = 0;
};

int watch(const std::string& dir, gid_t gid) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  pim::PermEnforcer enforcer(dir, gid, pim::nullLogger());
  pim::PermWatcher watcher(&loop, enforcer, dir, pim::nullLogger());
  if (!watcher.start().isOk()) return 1;
  WatchState state{&watcher, false, 0};

  uv_timer_t ready;
  uv_timer_init(&loop, &ready);
  ready.data = &state;
  uv_timer_start(
      &ready,
      [](uv_timer_t* t) {
        auto* st = static_cast<WatchState*>(t->data);
        if (!st->announced && st->watcher->fullPasses() >= 1) {
          st->announced = true;
          std::printf("ready\n");
          std::fflush(stdout);
          uv_timer_stop(t);
        }
      },
      5, 5);

  uv_signal_t term, intr;
  uv_signal_init(&loop, &term);
  uv_signal_init(&loop, &intr);
  term.data = &state;
  intr.data = &state;
  auto onSignal = [](uv_signal_t* s, int) {
    auto* st = static_cast<WatchState*>(s->data);
    st->watches = st->watcher->watchCount();
    st->watcher->stop();
    uv_walk(
        s->loop,
        [](uv_handle_t* h, void*) {
          if (!uv_is_closing(h)) uv_close(h, nullptr);
        },
        nullptr);
  };
  uv_signal_start(&term, onSignal, SIGTERM);
  uv_signal_start(&intr, onSignal, SIGINT);
  uv_run(&loop, UV_RUN_DEFAULT);
  pim::PermStats t = watcher.totals();
  std::printf("totals scanned=%llu changed=%llu overflows=%llu watches=%zu passes=%llu\n",
              static_cast<unsigned long long>(t.scanned), static_cast<unsigned long long>(t.changed),
              static_cast<unsigned long long>(watcher.overflows()), state.watches,
              static_cast<unsigned long long>(watcher.fullPasses()));
  uv_loop_close(&loop);
  return 0;
}

void writeNumber(char* out, unsigned long n) {
  char tmp[24];
  int len = 0;
  do {
    tmp[len++] = static_cast<char>('0' + n % 10);
    n /= 10;
  } while (n != 0);
  for (int i = 0; i < len; ++i) out[i] = tmp[len - 1 - i];
  out[len] = '\0';
}

int burst(const std::string& dir, long n, int procs) {
  const long leaves = std::max<long>(1, n / 100);
  auto start = Clock::now();
  std::vector<pid_t> children;
  for (int p = 0; p < procs; ++p) {
    pid_t pid = fork();
    if (pid < 0) die("fork", dir);
    if (pid == 0) {
      umask(022);
      int rootFd = open(dir.c_str(), O_RDONLY | O_DIRECTORY);
      if (rootFd < 0) _exit(1);
      for (long leaf = p; leaf < leaves; leaf += procs) {
        char a[24], b[24], c[24];
        writeNumber(a, static_cast<unsigned long>(leaf / 100));
        writeNumber(b, static_cast<unsigned long>(leaf / 10 % 10));
        writeNumber(c, static_cast<unsigned long>(leaf % 10));
        int fd = rootFd;
        for (const char* name :
             {static_cast<const char*>(a), static_cast<const char*>(b), static_cast<const char*>(c)}) {
          mkdirat(fd, name, 0755);
          int next = openat(fd, name, O_RDONLY | O_DIRECTORY);
          if (fd != rootFd) close(fd);
          if (next < 0) _exit(2);
          fd = next;
        }
        long first = leaf * n / leaves, last = (leaf + 1) * n / leaves;
        for (long i = first; i < last; ++i) {
          char name[24];
          writeNumber(name, static_cast<unsigned long>(i));
          // The file holds its own creation time: the latency tool reads it back.
          struct timespec created {};
          clock_gettime(CLOCK_REALTIME, &created);
          int f = openat(fd, name, O_CREAT | O_WRONLY | O_TRUNC, 0644);
          if (f < 0) _exit(3);
          if (write(f, &created, sizeof created) != static_cast<ssize_t>(sizeof created)) _exit(4);
          close(f);
        }
        close(fd);
      }
      _exit(0);
    }
    children.push_back(pid);
  }
  int failed = 0;
  for (pid_t pid : children) {
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) ++failed;
  }
  std::printf("%.3f\n", since(start));
  return failed == 0 ? 0 : 1;
}

gid_t gGid = 0;
long gWrong = 0;
std::vector<double>* gLatencies = nullptr;

int countEntry(const char*, const struct stat* st, int type, struct FTW*) {
  if (type == FTW_NS) return 0;
  if (S_ISDIR(st->st_mode)) {
    if ((st->st_mode & 07777) != 02770 || st->st_gid != gGid) ++gWrong;
  } else if (S_ISREG(st->st_mode)) {
    mode_t want = (st->st_mode & 0111) ? 0770 : 0660;
    if ((st->st_mode & 07777) != want || st->st_gid != gGid) ++gWrong;
  }
  return 0;
}

int latencyEntry(const char* path, const struct stat* st, int type, struct FTW*) {
  if (type == FTW_NS || !S_ISREG(st->st_mode)) return 0;
  mode_t want = (st->st_mode & 0111) ? 0770 : 0660;
  if ((st->st_mode & 07777) != want || st->st_gid != gGid) return 0;  // missed: counted apart
  struct statx sx {};
  if (statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, STATX_BTIME | STATX_CTIME, &sx) != 0) return 0;
  double c = static_cast<double>(sx.stx_ctime.tv_sec) + sx.stx_ctime.tv_nsec / 1e9;
  // Creation time: written into the file by `burst` just before it was created (precise), else
  // the kernel's btime (tick granularity).
  double b = 0;
  struct timespec created {};
  int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd >= 0 && read(fd, &created, sizeof created) == static_cast<ssize_t>(sizeof created)) {
    b = static_cast<double>(created.tv_sec) + created.tv_nsec / 1e9;
  } else if ((sx.stx_mask & STATX_BTIME) != 0) {
    b = static_cast<double>(sx.stx_btime.tv_sec) + sx.stx_btime.tv_nsec / 1e9;
  }
  if (fd >= 0) close(fd);
  if (b > 0) gLatencies->push_back(std::max(0.0, c - b));
  return 0;
}

long countWrong(const std::string& dir) {
  gWrong = 0;
  nftw(dir.c_str(), countEntry, 64, FTW_PHYS);
  return gWrong;
}

int latency(const std::string& dir, gid_t gid, int stallSeconds) {
  gGid = gid;
  auto start = Clock::now();
  long best = countWrong(dir);
  auto lastProgress = Clock::now();
  while (best > 0 && since(lastProgress) < stallSeconds) {
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    long now = countWrong(dir);
    if (now < best) {
      best = now;
      lastProgress = Clock::now();
    }
  }
  double settle = since(start) - (best > 0 ? stallSeconds : 0);
  std::vector<double> lat;
  gLatencies = &lat;
  nftw(dir.c_str(), latencyEntry, 64, FTW_PHYS);
  std::sort(lat.begin(), lat.end());
  auto pct = [&](double p) {
    if (lat.empty()) return 0.0;
    size_t i = static_cast<size_t>(p * static_cast<double>(lat.size() - 1));
    return lat[i] * 1000.0;
  };
  // Percentiles over the files that were corrected; the others are reported as missed.
  std::printf("p50_ms=%.1f p99_ms=%.1f max_ms=%.1f missed=%ld settle_s=%.1f files=%zu\n", pct(0.50), pct(0.99),
              lat.empty() ? 0.0 : lat.back() * 1000.0, best, std::max(0.0, settle), lat.size());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return usage();
  std::string cmd = argv[1];
  std::string dir = argv[2];
  if (cmd == "make-tree" && argc == 4) return makeTree(dir, std::atol(argv[3]));
  if (cmd == "pass" && argc == 4) return pass(dir, static_cast<gid_t>(std::atol(argv[3])), "", 0);
  if (cmd == "pass" && argc == 6) {
    return pass(dir, static_cast<gid_t>(std::atol(argv[3])), argv[4], static_cast<unsigned>(std::atoi(argv[5])));
  }
  if (cmd == "watch" && argc == 4) return watch(dir, static_cast<gid_t>(std::atol(argv[3])));
  if (cmd == "burst" && argc == 5) return burst(dir, std::atol(argv[3]), std::atoi(argv[4]));
  if (cmd == "latency" && argc == 5) {
    return latency(dir, static_cast<gid_t>(std::atol(argv[3])), std::atoi(argv[4]));
  }
  return usage();
}
