// Entry point of the `gantry` binary: everything happens in cli::RunGantry (cli/command.cc).
#include "cli/command.h"

int main(int argc, char** argv) { return gantry::cli::RunGantry(argc, argv); }
