#pragma once
// Skips that cannot hide failures. A test that cannot run here (not root, a tool missing) says
// why and returns; under CI (the environment variable CI set: CI installs every tool and runs the
// suite as root) the same situation fails the test instead, so a skip never passes for a pass.
//
//   if (!pim::test::runsHere(::geteuid() == 0, "needs root (useradd --prefix)")) return;

#include <unistd.h>

#include <cstdlib>
#include <string>

#include <catch2/catch.hpp>

namespace pim::test {

/// True when the CI environment variable is set and not empty.
inline bool underCi() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && *ci != '\0';
}

/// True when `possible`; otherwise prints "skipped: WHY" and returns false, or under CI fails the
/// test case (throws Catch2's failure).
inline bool runsHere(bool possible, const std::string& why) {
  if (possible) return true;
  if (underCi()) FAIL("cannot run: " << why << " (CI is set: a skipped test would hide a failure)");
  WARN("skipped: " << why);
  return false;
}

/// runsHere(euid == 0, "needs root (WHAT)").
inline bool runsAsRoot(const std::string& what) { return runsHere(::geteuid() == 0, "needs root (" + what + ")"); }

}  // namespace pim::test
