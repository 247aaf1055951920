#include "providers/core/log.h"

#include <spdlog/sinks/null_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <mutex>

namespace pim {
namespace {

std::mutex gMutex;
spdlog::level::level_enum gLevel = spdlog::level::info;

std::shared_ptr<spdlog::sinks::sink> stderrSink() {
  static auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  return sink;
}

}  // namespace

Logger makeLogger(const std::string& name) {
  std::lock_guard<std::mutex> lock(gMutex);
  if (auto existing = spdlog::get(name)) return existing;
  auto logger = std::make_shared<spdlog::logger>(name, stderrSink());
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %^%l%$ [%n] %v", spdlog::pattern_time_type::utc);
  logger->set_level(gLevel);
  spdlog::register_logger(logger);
  return logger;
}

void setLogLevel(spdlog::level::level_enum level) {
  std::lock_guard<std::mutex> lock(gMutex);
  gLevel = level;
  spdlog::set_level(level);
}

Logger nullLogger() {
  static auto logger = [] {
    auto l = std::make_shared<spdlog::logger>("null", std::make_shared<spdlog::sinks::null_sink_mt>());
    l->set_level(spdlog::level::off);  // nothing is formatted for it
    return l;
  }();
  return logger;
}

}  // namespace pim
