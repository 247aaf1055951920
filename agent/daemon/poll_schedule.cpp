#include "agent/daemon/poll_schedule.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>

#include "agent/daemon/daemon.h"

namespace pim {

namespace {

std::function<double()> seeded(std::function<double()> random01) {
  if (random01) return random01;
  auto engine = std::make_shared<std::mt19937_64>(std::random_device{}());
  return [engine]() { return std::uniform_real_distribution<double>(0.0, 1.0)(*engine); };
}

}  // namespace

PollSchedule::PollSchedule(int64_t pollIntervalS, int64_t holdS, std::function<double()> random01)
    : pollIntervalS_(std::max<int64_t>(1, pollIntervalS)),
      holdS_(std::max<int64_t>(0, holdS)),
      random01_(seeded(std::move(random01))),
      backoff_(backoffBase(pollIntervalS_), Backoff::kDefaultCap, random01_) {}

double PollSchedule::draw() {
  double r = random01_();
  if (!(r >= 0.0)) r = 0.0;
  return std::min(r, 1.0);
}

std::chrono::milliseconds PollSchedule::firstPoll(bool documentInForce) {
  if (!documentInForce) return std::chrono::milliseconds(0);
  return std::chrono::milliseconds(std::llround(draw() * static_cast<double>(pollIntervalS_) * 1000.0));
}

int64_t PollSchedule::nextHold() {
  if (holdS_ <= 1) return holdS_;
  const int64_t low = (holdS_ + 1) / 2;
  return std::min(holdS_, low + static_cast<int64_t>(std::floor(draw() * static_cast<double>(holdS_ - low + 1))));
}

std::chrono::milliseconds PollSchedule::afterFailure(std::optional<std::chrono::seconds> retryAfter) {
  return retryDelay(backoff_.nextDelay(), retryAfter, Backoff::kDefaultCap);
}

std::chrono::milliseconds PollSchedule::afterSuccess(int64_t askedHold, std::chrono::milliseconds took,
                                                     bool newDocument) {
  backoff_.reset();
  // Back-to-back long polls, unless the store answered a long poll at once without holding it (a
  // store that does not long-poll must not be hammered). A request that did not ask to be held,
  // and a new document, are good reasons to ask again at once.
  const bool again = holdS_ > 0 && (askedHold == 0 || took >= std::chrono::seconds(1) || newDocument);
  return again ? std::chrono::milliseconds(0) : std::chrono::milliseconds(pollIntervalS_ * 1000);
}

}  // namespace pim
