#pragma once
// When the daemon asks the store next: the pure part of its poll loop, shared with the fleet
// simulator (tests/bench/simulate_fleet.cpp, scripts/simulate-fleet) so that what the simulation
// measures is the code the daemon runs. The random source and the clock are the caller's.
//
//   first poll   a host that has a document in force (a reboot, a restart) re-applies it and asks
//                the store after U[0, poll interval]; a host with nothing in force asks at once.
//                A fleet that boots together spreads its first requests over the poll interval.
//   failure      Backoff's full jitter (base min(poll interval, 2 s), cap 10 min), at least
//                200 ms, at least the store's Retry-After (capped at 10 min).
//   success      back-to-back long polls / watches when the store held the request (or it was not
//                asked to, or a new document came); otherwise the poll interval.
//   hold         each long poll / watch asks for U[hold/2, hold] seconds, not `hold`: a fleet whose
//                requests started together (a boot, the end of an outage, a change that answered
//                every held request at once) drifts apart instead of coming back as one herd
//                every `hold` seconds.

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>

#include "agent/daemon/backoff.h"

namespace pim {

class PollSchedule {
 public:
  /// pollIntervalS >= 1; holdS >= 0 (0: no long poll); random01 as Backoff's (empty: seeded).
  PollSchedule(int64_t pollIntervalS, int64_t holdS, std::function<double()> random01 = {});

  /// The wait before the first request of a daemon that just started.
  std::chrono::milliseconds firstPoll(bool documentInForce);
  /// How long the next request may be held (0 when no long poll): U[hold/2, hold], whole seconds.
  int64_t nextHold();
  /// The wait after a failed cycle (counts one failure).
  std::chrono::milliseconds afterFailure(std::optional<std::chrono::seconds> retryAfter);
  /// The wait after a successful cycle (resets the failures): `askedHold` what the request asked,
  /// `took` how long it lasted, `newDocument` whether it brought one.
  std::chrono::milliseconds afterSuccess(int64_t askedHold, std::chrono::milliseconds took, bool newDocument);
  int failures() const { return backoff_.failures(); }

 private:
  double draw();
  int64_t pollIntervalS_;
  int64_t holdS_;
  std::function<double()> random01_;
  Backoff backoff_;
};

}  // namespace pim
