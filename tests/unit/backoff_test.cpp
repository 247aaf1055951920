#include "agent/daemon/backoff.h"

#include <catch2/catch.hpp>

#include <chrono>
#include <vector>

using pim::Backoff;
using std::chrono::milliseconds;

namespace {

std::function<double()> fixed(double r) {
  return [r]() { return r; };
}

}  // namespace

TEST_CASE("backoff ceiling doubles from the base up to the cap", "[backoff]") {
  // With random = 1 the delay is the ceiling itself.
  Backoff b(milliseconds(30000), milliseconds(600000), fixed(1.0));
  const std::vector<int64_t> expected = {30000, 60000, 120000, 240000, 480000, 600000, 600000, 600000};
  for (size_t i = 0; i < expected.size(); ++i) {
    INFO("failure " << i);
    CHECK(b.failures() == static_cast<int>(i));
    CHECK(b.nextDelay().count() == expected[i]);
  }
  CHECK(b.failures() == static_cast<int>(expected.size()));
}

TEST_CASE("backoff draws with full jitter in [0, ceiling]", "[backoff]") {
  struct Row {
    double random;
    int failuresBefore;
    int64_t expected;
  };
  const std::vector<Row> rows = {
      {0.0, 0, 0},      {0.5, 0, 500},    {1.0, 0, 1000}, {0.25, 2, 1000}, {0.5, 3, 4000}, {0.0, 10, 0},
      {1.0, 10, 60000}, {0.5, 10, 30000}, {-3.0, 1, 0},   {7.0, 1, 2000},  // out-of-range randoms are clamped
  };
  for (const auto& row : rows) {
    INFO("random " << row.random << " after " << row.failuresBefore << " failures");
    Backoff b(milliseconds(1000), milliseconds(60000), fixed(row.random));
    for (int i = 0; i < row.failuresBefore; ++i) (void)b.nextDelay();
    CHECK(b.nextDelay().count() == row.expected);
  }
}

TEST_CASE("backoff reset starts again from the base", "[backoff]") {
  Backoff b(milliseconds(1000), milliseconds(60000), fixed(1.0));
  for (int i = 0; i < 5; ++i) (void)b.nextDelay();
  CHECK(b.ceiling().count() == 32000);
  b.reset();
  CHECK(b.failures() == 0);
  CHECK(b.ceiling().count() == 1000);
  CHECK(b.nextDelay().count() == 1000);
  CHECK(b.nextDelay().count() == 2000);
}

TEST_CASE("backoff never exceeds the cap nor overflows after many failures", "[backoff]") {
  Backoff b(milliseconds(30000), Backoff::kDefaultCap, fixed(1.0));
  for (int i = 0; i < 1000; ++i) {
    auto d = b.nextDelay();
    REQUIRE(d.count() >= 0);
    REQUIRE(d <= Backoff::kDefaultCap);
  }
  CHECK(b.failures() == 1000);
  CHECK(b.nextDelay() == Backoff::kDefaultCap);
  // A huge base is capped at once.
  Backoff huge(milliseconds(INT64_MAX / 2), milliseconds(600000), fixed(1.0));
  CHECK(huge.nextDelay().count() == 600000);
  CHECK(huge.nextDelay().count() == 600000);
}

TEST_CASE("backoff default random source stays within bounds", "[backoff]") {
  Backoff b(milliseconds(100), milliseconds(1000));
  bool sawBelowCeiling = false;
  for (int i = 0; i < 200; ++i) {
    auto ceiling = b.ceiling();
    auto d = b.nextDelay();
    REQUIRE(d.count() >= 0);
    REQUIRE(d <= ceiling);
    if (d < ceiling) sawBelowCeiling = true;
  }
  CHECK(sawBelowCeiling);  // jitter: not always the ceiling
}

TEST_CASE("backoff refuses a non-positive base", "[backoff]") {
  CHECK_THROWS_AS(Backoff(milliseconds(0)), std::invalid_argument);
  CHECK_THROWS_AS(Backoff(milliseconds(-1)), std::invalid_argument);
}
