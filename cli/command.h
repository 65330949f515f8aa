// Subcommand registry of the `gantry` binary. Each cli/cmd_<x>.cc registers its subcommand
// with a static CommandRegistration; main.cc builds the CLI11 app from the registry.
//
//   namespace {
//   gantry::cli::CommandRegistration kInfo("info", "Show build features and hardware",
//       [](CLI::App& app) -> gantry::cli::CommandHandler {
//         auto json = std::make_shared<bool>(false);
//         app.add_flag("--json", *json, "print JSON");
//         return [json]() -> int { ...; return gantry::cli::kExitOk; };
//       });
//   }
//
// The setup function adds options (and nested subcommands, if any) to `app` and returns the
// handler, run after a successful parse when this subcommand was chosen. Handlers return an
// exit code; library errors go through ReportError (one clear line on stderr, exit 1).
// The cli sources are compiled into the executable itself, so the static objects are kept.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

#include "base/status.h"

namespace gantry::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;  // the command ran and failed
inline constexpr int kExitUsage = 2;    // bad flags, unknown command, missing arguments

using CommandHandler = std::function<int()>;
using CommandSetup = std::function<CommandHandler(CLI::App& app)>;

struct Command {
  std::string name;
  std::string help;
  CommandSetup setup;
};

class CommandRegistration {
 public:
  CommandRegistration(const char* name, const char* help, CommandSetup setup);
};

// Every registered command, sorted by name.
std::vector<Command> RegisteredCommands();

// Prints "gantry: error: <message>" to stderr (file:line trace lines only with
// GANTRY_LOG_LEVEL=debug) and returns kExitFailure.
int ReportError(const Status& status);

// Runs a handler that returns Status: kExitOk, or ReportError(status).
int ExitCodeFor(const Status& status);

// An option check: a finite number in [lo, hi] (CLI::Range lets NaN through).
CLI::Validator FiniteIn(double lo, double hi);

// The whole program (main() calls this); separate so tests can drive it.
int RunGantry(int argc, char** argv);

}  // namespace gantry::cli
