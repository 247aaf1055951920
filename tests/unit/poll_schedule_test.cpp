// PollSchedule: the daemon's first-poll jitter, long-poll/watch hold jitter and retries (also
// what scripts/simulate-fleet drives).

#include "agent/daemon/poll_schedule.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <random>
#include <vector>

using pim::PollSchedule;
using std::chrono::milliseconds;
using std::chrono::seconds;

namespace {

std::function<double()> fixed(double r) {
  return [r]() { return r; };
}

std::function<double()> seeded(uint64_t seed) {
  auto engine = std::make_shared<std::mt19937_64>(seed);
  return [engine]() { return std::uniform_real_distribution<double>(0.0, 1.0)(*engine); };
}

}  // namespace

TEST_CASE("poll schedule: the first request waits U[0, poll interval] only with a document in force", "[poll]") {
  CHECK(PollSchedule(30, 0, fixed(0.5)).firstPoll(false) == milliseconds(0));
  CHECK(PollSchedule(30, 0, fixed(0.5)).firstPoll(true) == milliseconds(15000));
  CHECK(PollSchedule(30, 0, fixed(1.0)).firstPoll(true) == milliseconds(30000));
  CHECK(PollSchedule(30, 300, fixed(0.0)).firstPoll(true) == milliseconds(0));
  CHECK(PollSchedule(30, 0, fixed(7.0)).firstPoll(true) == milliseconds(30000));  // clamped
  // A fleet: the first requests cover the interval.
  std::vector<int64_t> firsts;
  for (uint64_t i = 0; i < 1000; ++i) firsts.push_back(PollSchedule(30, 0, seeded(i)).firstPoll(true).count());
  CHECK(*std::min_element(firsts.begin(), firsts.end()) < 1000);
  CHECK(*std::max_element(firsts.begin(), firsts.end()) > 29000);
  CHECK(*std::max_element(firsts.begin(), firsts.end()) <= 30000);
}

TEST_CASE("poll schedule: each long poll or watch asks U[hold/2, hold] whole seconds", "[poll]") {
  CHECK(PollSchedule(30, 300, fixed(0.0)).nextHold() == 150);
  CHECK(PollSchedule(30, 300, fixed(0.5)).nextHold() == 225);
  CHECK(PollSchedule(30, 300, fixed(1.0)).nextHold() == 300);
  CHECK(PollSchedule(30, 301, fixed(0.0)).nextHold() == 151);
  CHECK(PollSchedule(30, 2, fixed(0.0)).nextHold() == 1);
  CHECK(PollSchedule(30, 1, fixed(0.0)).nextHold() == 1);
  CHECK(PollSchedule(30, 0, fixed(0.7)).nextHold() == 0);
  PollSchedule s(30, 60, seeded(1));
  std::vector<int64_t> holds;
  for (int i = 0; i < 2000; ++i) holds.push_back(s.nextHold());
  CHECK(*std::min_element(holds.begin(), holds.end()) == 30);
  CHECK(*std::max_element(holds.begin(), holds.end()) == 60);
}

TEST_CASE("poll schedule: after a success, back-to-back long polls unless the store did not hold", "[poll]") {
  PollSchedule longPoll(30, 300, fixed(0.5));
  CHECK(longPoll.afterSuccess(0, milliseconds(5), false) == milliseconds(0));         // the first, not held
  CHECK(longPoll.afterSuccess(225, seconds(225), false) == milliseconds(0));          // held to the end
  CHECK(longPoll.afterSuccess(225, milliseconds(50), true) == milliseconds(0));       // a new document
  CHECK(longPoll.afterSuccess(225, milliseconds(50), false) == milliseconds(30000));  // not held: no hammering
  PollSchedule polling(30, 0, fixed(0.5));
  CHECK(polling.afterSuccess(0, milliseconds(5), true) == milliseconds(30000));
}

TEST_CASE("poll schedule: failures back off with full jitter, at least 200 ms and Retry-After", "[poll]") {
  PollSchedule s(30, 0, fixed(1.0));
  CHECK(s.afterFailure(std::nullopt) == milliseconds(2000));
  CHECK(s.afterFailure(std::nullopt) == milliseconds(4000));
  CHECK(s.afterFailure(seconds(60)) == milliseconds(60000));
  CHECK(s.failures() == 3);
  s.afterSuccess(0, milliseconds(1), false);
  CHECK(s.failures() == 0);
  CHECK(PollSchedule(30, 0, fixed(0.0)).afterFailure(std::nullopt) == milliseconds(200));
  PollSchedule capped(30, 0, fixed(1.0));
  for (int i = 0; i < 20; ++i) capped.afterFailure(std::nullopt);
  CHECK(capped.afterFailure(std::nullopt) == milliseconds(600000));
}
