// pim-access-agent: the thin entry point; agent/cli.cpp wires everything.
#include "agent/cli.h"

int main(int argc, char** argv) { return pim::runCli(argc, argv); }
