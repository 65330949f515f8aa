// The subcommand registry and the top-level driver: parse, dispatch, map errors to exit codes.
#include "cli/command.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <csignal>
#include <iostream>
#include <map>
#include <memory>
#include <iomanip>
#include <sstream>

#include "base/logging.h"
#include "gantry_config.h"

namespace gantry::cli {
namespace {

std::vector<Command>& Registry() {
  static std::vector<Command>* commands = new std::vector<Command>();
  return *commands;
}

std::string StripTrace(const std::string& message) {
  if (LogEnabled(LogLevel::kDebug)) return message;
  std::string out;
  size_t pos = 0;
  while (pos <= message.size()) {
    size_t nl = message.find('\n', pos);
    std::string line = message.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    if (line.rfind("  at ", 0) != 0) {
      if (!out.empty()) out += '\n';
      out += line;
    }
    if (nl == std::string::npos) break;
    pos = nl + 1;
  }
  return out;
}

bool IsKnownCommand(const std::string& name) {
  for (const auto& c : Registry()) {
    if (c.name == name) return true;
  }
  return false;
}

}  // namespace

CommandRegistration::CommandRegistration(const char* name, const char* help, CommandSetup setup) {
  Registry().push_back(Command{name, help, std::move(setup)});
}

std::vector<Command> RegisteredCommands() {
  std::vector<Command> out = Registry();
  std::sort(out.begin(), out.end(),
            [](const Command& a, const Command& b) { return a.name < b.name; });
  return out;
}

int ReportError(const Status& status) {
  std::cerr << "gantry: error: " << StripTrace(status.message()) << std::endl;
  return kExitFailure;
}

int ExitCodeFor(const Status& status) { return status.ok() ? kExitOk : ReportError(status); }

CLI::Validator FiniteIn(double lo, double hi) {
  std::ostringstream range;
  range << std::setprecision(12) << "[" << lo << ", " << hi << "]";
  return CLI::Validator(
      [lo, hi, r = range.str()](std::string& text) -> std::string {
        char* end = nullptr;
        const double v = std::strtod(text.c_str(), &end);
        if (text.empty() || *end != '\0' || !std::isfinite(v) || v < lo || v > hi) {
          return "'" + text + "' is not a number in " + r;
        }
        return "";
      },
      "NUMBER in " + range.str());
}

int RunGantry(int argc, char** argv) {
  // Sockets send with MSG_NOSIGNAL; a closed stdout/stderr pipe (`gantry logs | head`, a
  // supervisor gone) must give EPIPE to the writer, not kill a coordinator or a rank.
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app{"gantry: train and serve neural networks on a cluster (CPU, CUDA, MPI, Ceph)",
               "gantry"};
  app.set_version_flag("--version", std::string("gantry ") + GANTRY_VERSION);
  app.require_subcommand(1);
  app.fallthrough();  // global flags are accepted after the subcommand too
  std::string log_level;
  app.add_option("--log-level", log_level,
                 "debug | info | warning | error | off (default: $GANTRY_LOG_LEVEL or info)");

  std::map<CLI::App*, CommandHandler> handlers;
  for (const Command& c : RegisteredCommands()) {
    CLI::App* sub = app.add_subcommand(c.name, c.help);
    handlers[sub] = c.setup(*sub);
  }

  // An unknown subcommand deserves a better message than CLI11's "arguments not expected".
  if (argc > 1 && argv[1][0] != '-' && !IsKnownCommand(argv[1])) {
    std::cerr << "gantry: error: unknown command '" << argv[1]
              << "'; run 'gantry --help' to list the commands" << std::endl;
    return kExitUsage;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help, --version
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    if (argc == 1) {
      std::cerr << app.help() << std::endl;
    } else {
      std::cerr << "gantry: error: " << e.what() << "; run 'gantry "
                << (app.get_subcommands().empty() ? "" : app.get_subcommands()[0]->get_name() + " ")
                << "--help' for usage" << std::endl;
    }
    return kExitUsage;
  }
  if (!log_level.empty()) {
    auto level = ParseLogLevel(log_level);
    if (!level.ok()) {
      std::cerr << "gantry: error: --log-level: " << level.status().message() << std::endl;
      return kExitUsage;
    }
    SetLogLevel(*level);
  }
  for (CLI::App* sub : app.get_subcommands()) {
    auto it = handlers.find(sub);
    if (it != handlers.end() && it->second) return it->second();
  }
  std::cerr << "gantry: error: no command given; run 'gantry --help'" << std::endl;
  return kExitUsage;
}

}  // namespace gantry::cli
