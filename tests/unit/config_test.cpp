#include "agent/config/config.h"

#include <catch2/catch.hpp>

TEST_CASE("config: defaults", "[config]") {
  auto c = pim::parseConfig("");
  REQUIRE(c.isOk());
}
