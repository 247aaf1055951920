// The end-to-end runner: Catch2's session, narrowed to the one test case named by PIM_E2E_TEST
// when it is set (tests/e2e/in-namespace.sh runs each case alone in fresh namespaces), so the
// other cases are not run at all rather than counted as passes.
#define CATCH_CONFIG_RUNNER
#include <signal.h>

#include <cstdlib>
#include <string>

#include <catch2/catch.hpp>

namespace {

// A test case's name as a Catch2 test spec that matches it and nothing else.
std::string exactSpec(const std::string& name) {
  std::string spec;
  for (char c : name) {
    if (c == '\\' || c == ',' || c == '[' || c == ']' || c == '*' || c == '"' || c == '~') spec += '\\';
    spec += c;
  }
  return spec;
}

}  // namespace

int main(int argc, char** argv) {
  // A write to a peer that has gone (a socket, a pipe) fails with EPIPE instead of ending the
  // run; the programs the harness starts get the default disposition back (Subprocess).
  ::signal(SIGPIPE, SIG_IGN);
  Catch::Session session;
  const int rc = session.applyCommandLine(argc, argv);
  if (rc != 0) return rc;
  const char* only = std::getenv("PIM_E2E_TEST");
  if (only != nullptr && *only != '\0') session.configData().testsOrTags = {exactSpec(only)};
  return session.run();
}
