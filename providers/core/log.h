#pragma once
// Named spdlog loggers on one shared stderr sink. main.cpp creates them and passes them to
// constructors; code never looks loggers up by name on its own.

#include <spdlog/spdlog.h>

#include <memory>
#include <string>

namespace pim {

using Logger = std::shared_ptr<spdlog::logger>;

/// Returns the logger `name` ("provider.sftp", "store.http"), creating it on the shared stderr
/// sink at the current level. Thread-safe.
Logger makeLogger(const std::string& name);
/// Sets the level of every logger made so far and of those made later.
void setLogLevel(spdlog::level::level_enum level);
/// A logger that drops everything (for tests that do not look at logs).
Logger nullLogger();

}  // namespace pim
