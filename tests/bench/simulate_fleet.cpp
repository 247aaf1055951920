// The fleet simulator behind scripts/simulate-fleet: N agents, each with the daemon's own
// PollSchedule (agent/daemon/poll_schedule.h: first-poll jitter, long-poll/watch hold jitter,
// Backoff's full-jitter retries), driven by a simulated clock against a store that answers at
// once, holds long polls / watches for what they ask, or is down. Counts the requests that reach
// the store per simulated second.
//
//   simulate_fleet [--agents N] [--poll S] [--hold S] [--outage S] [--baseline] [--timeline]
//
// --baseline replays the schedule of the code before the jitter (first request at start, every
// long poll asking the full hold) with the same Backoff, for comparison.
// Prints, for the two scenarios, (a) a fleet boot: how the first requests spread; (b) an outage
// of --outage seconds starting once the fleet is steady: the request rate per second before,
// during and after. Exits 1 when a target is missed: first requests within the poll interval
// with no second above 2x the interval's mean; peak after recovery at most 2x the steady rate.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <queue>
#include <random>
#include <string>
#include <vector>

#include "agent/daemon/poll_schedule.h"

namespace {

struct Options {
  int agents = 10000;
  int64_t pollS = 30;
  int64_t holdS = 0;
  int64_t outageS = 600;
  bool baseline = false;
  bool timeline = false;
};

struct Event {
  double at;  // simulated seconds
  int agent;
  bool operator>(const Event& o) const { return at > o.at; }
};

struct Window {
  double mean = 0;
  int64_t max = 0;
  int64_t min = 0;
};

Window window(const std::vector<int64_t>& perSecond, int64_t from, int64_t to) {
  Window w;
  from = std::max<int64_t>(0, from);
  to = std::min<int64_t>(static_cast<int64_t>(perSecond.size()), to);
  if (to <= from) return w;
  int64_t sum = 0;
  w.min = perSecond[from];
  for (int64_t s = from; s < to; ++s) {
    sum += perSecond[s];
    w.max = std::max(w.max, perSecond[s]);
    w.min = std::min(w.min, perSecond[s]);
  }
  w.mean = static_cast<double>(sum) / static_cast<double>(to - from);
  return w;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> int64_t {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "simulate_fleet: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return std::atoll(argv[++i]);
    };
    if (a == "--agents") {
      o.agents = static_cast<int>(value());
    } else if (a == "--poll") {
      o.pollS = value();
    } else if (a == "--hold") {
      o.holdS = value();
    } else if (a == "--outage") {
      o.outageS = value();
    } else if (a == "--baseline") {
      o.baseline = true;
    } else if (a == "--timeline") {
      o.timeline = true;
    } else {
      std::fprintf(stderr,
                   "usage: simulate_fleet [--agents N] [--poll S] [--hold S] [--outage S] [--baseline] [--timeline]\n");
      return 2;
    }
  }
  if (o.agents < 1 || o.pollS < 1 || o.holdS < 0 || o.outageS < 0) {
    std::fprintf(stderr, "simulate_fleet: values must be positive\n");
    return 2;
  }

  // The fleet settles for max(30 min, 6 holds), then the outage, then an hour.
  const double outageStart = static_cast<double>(std::max<int64_t>(1800, 6 * o.holdS));
  const double outageEnd = outageStart + static_cast<double>(o.outageS);
  const double end = outageEnd + 3600;
  std::vector<int64_t> perSecond(static_cast<size_t>(end) + 1, 0);
  std::vector<int64_t> firstPerSecond(static_cast<size_t>(end) + 1, 0);

  std::vector<std::unique_ptr<pim::PollSchedule>> schedules;
  std::vector<int64_t> asked(o.agents, 0);
  std::vector<bool> started(o.agents, false);
  schedules.reserve(o.agents);
  std::priority_queue<Event, std::vector<Event>, std::greater<Event>> queue;
  for (int i = 0; i < o.agents; ++i) {
    auto engine = std::make_shared<std::mt19937_64>(static_cast<uint64_t>(i) * 7919 + 17);
    schedules.push_back(std::make_unique<pim::PollSchedule>(
        o.pollS, o.holdS, [engine]() { return std::uniform_real_distribution<double>(0.0, 1.0)(*engine); }));
    // (a) the fleet boots at t = 0, every host with a document in force.
    const double first = o.baseline ? 0.0 : static_cast<double>(schedules[i]->firstPoll(true).count()) / 1000.0;
    queue.push({first, i});
  }
  double lastFirst = 0;
  while (!queue.empty()) {
    const Event e = queue.top();
    queue.pop();
    if (e.at >= end) break;
    pim::PollSchedule& s = *schedules[e.agent];
    const auto second = static_cast<size_t>(e.at);
    ++perSecond[second];
    if (!started[e.agent]) {
      started[e.agent] = true;
      ++firstPerSecond[second];
      lastFirst = std::max(lastFirst, e.at);
    }
    const bool down = e.at >= outageStart && e.at < outageEnd;
    double next;
    if (down) {
      next = e.at + static_cast<double>(s.afterFailure(std::nullopt).count()) / 1000.0;  // refused at once
    } else {
      const int64_t hold = o.baseline ? o.holdS : s.nextHold();
      if (hold > 0 && e.at < outageStart && e.at + static_cast<double>(hold) > outageStart) {
        // A held request broken by the outage: fails when it starts.
        next = outageStart + static_cast<double>(s.afterFailure(std::nullopt).count()) / 1000.0;
      } else {
        const double took = static_cast<double>(hold);
        next = e.at + took +
               static_cast<double>(
                   s.afterSuccess(hold, std::chrono::milliseconds(static_cast<int64_t>(took * 1000)), false).count()) /
                   1000.0;
      }
    }
    queue.push({next, e.agent});
  }

  const int64_t os = static_cast<int64_t>(outageStart), oe = static_cast<int64_t>(outageEnd);
  const std::string mode = o.holdS > 0 ? "long poll / watch, hold " + std::to_string(o.holdS) + " s" : "polling";
  std::printf("fleet of %d agents, poll interval %lld s, %s%s\n", o.agents, static_cast<long long>(o.pollS),
              mode.c_str(), o.baseline ? " [BASELINE: no first-poll jitter, fixed hold]" : "");
  // (a) boot
  const Window boot = window(firstPerSecond, 0, o.pollS);
  const double ideal = static_cast<double>(o.agents) / static_cast<double>(o.pollS);
  std::printf("(a) fleet boot: first requests over %.1f s; per second: mean %.0f, max %lld (even spread: %.0f/s)\n",
              lastFirst, boot.mean, static_cast<long long>(boot.max), ideal);
  // (b) outage
  const Window before = window(perSecond, os - 600, os);
  const Window during = window(perSecond, os, oe);
  const Window after = window(perSecond, oe, oe + 1800);
  const Window afterFirst = window(perSecond, oe, oe + 60);
  std::printf("(b) outage %lld s: requests per second\n", static_cast<long long>(o.outageS));
  std::printf("    before (steady, last 10 min): mean %7.1f  min %6lld  max %6lld\n", before.mean,
              static_cast<long long>(before.min), static_cast<long long>(before.max));
  std::printf("    during:                       mean %7.1f  min %6lld  max %6lld\n", during.mean,
              static_cast<long long>(during.min), static_cast<long long>(during.max));
  std::printf("    after (first minute):         mean %7.1f  min %6lld  max %6lld\n", afterFirst.mean,
              static_cast<long long>(afterFirst.min), static_cast<long long>(afterFirst.max));
  std::printf("    after (30 min):               mean %7.1f  min %6lld  max %6lld\n", after.mean,
              static_cast<long long>(after.min), static_cast<long long>(after.max));
  if (o.timeline) {
    std::printf("    timeline (per 60 s: mean/max requests per second), outage from %lld to %lld s\n",
                static_cast<long long>(os), static_cast<long long>(oe));
    for (int64_t t = os - 600; t < oe + 1800; t += 60) {
      const Window w = window(perSecond, t, t + 60);
      std::printf("    t=%5lld s %s mean %8.1f max %6lld\n", static_cast<long long>(t),
                  t >= os && t < oe ? "DOWN" : "    ", w.mean, static_cast<long long>(w.max));
    }
  }
  const bool spread = lastFirst <= static_cast<double>(o.pollS) && static_cast<double>(boot.max) <= 2 * ideal;
  const bool flat = static_cast<double>(after.max) <= 2 * before.mean;
  std::printf("    target: first requests spread over the poll interval (max <= 2x even): %s\n",
              spread ? "met" : "MISSED");
  std::printf("    target: peak after recovery <= 2x steady (%lld <= %.0f): %s\n", static_cast<long long>(after.max),
              2 * before.mean, flat ? "met" : "MISSED");
  return spread && flat ? 0 : 1;
}
