// pim-access-agent: the thin entry point; agent/cli.cpp wires everything.
#include "agent/cli.h"
#include "agent/daemon.h"

int main(int argc, char** argv) {
  // Writes to a peer that went away (store connection, pipes) fail with EPIPE, never kill.
  pim::guardAgainstSigpipe();
  return pim::runCli(argc, argv);
}
