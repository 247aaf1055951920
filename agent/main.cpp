// pim-access-agent: the thin entry point; agent/cli/ parses the command line and wires everything.
#include "agent/cli/cli.h"
#include "agent/daemon/daemon.h"

int main(int argc, char** argv) {
  // Writes to a peer that went away (store connection, pipes) fail with EPIPE, never kill.
  pim::guardAgainstSigpipe();
  return static_cast<int>(pim::runCli(argc, argv));
}
