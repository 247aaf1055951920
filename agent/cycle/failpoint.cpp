#include "agent/cycle/failpoint.h"

#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <sstream>
#include <vector>

#include "providers/core/text_fields.h"

namespace pim {

namespace {

constexpr const char* kVariable = "PIM_FAILPOINT";

Result<int> positive(const std::string& item, const std::string& text) {
  if (text.empty() || text.size() > 6 || text.find_first_not_of("0123456789") != std::string::npos) {
    return Status::error(ErrorCode::kInvalid, "failpoint '" + item + "': expected a number >= 1");
  }
  const int n = std::atoi(text.c_str());
  if (n < 1) return Status::error(ErrorCode::kInvalid, "failpoint '" + item + "': expected a number >= 1");
  return n;
}

Result<std::string> providerName(const std::string& item, const std::string& text) {
  if (text.empty() || text.find_first_not_of("abcdefghijklmnopqrstuvwxyz_") != std::string::npos) {
    return Status::error(ErrorCode::kInvalid, "failpoint '" + item + "': expected a provider name");
  }
  return text;
}

}  // namespace

bool FailPoints::empty() const {
  return !failAfterAction && !crashAfterAction && failBeforeProvider.empty() && crashBeforeProvider.empty() &&
         failProvider.empty() && !crashBeforeFinish;
}

std::string FailPoints::describe() const {
  std::vector<std::string> items;
  if (failAfterAction) items.push_back("after-action:" + std::to_string(*failAfterAction));
  if (crashAfterAction) items.push_back("crash-after-action:" + std::to_string(*crashAfterAction));
  if (!failBeforeProvider.empty()) items.push_back("before-provider:" + failBeforeProvider);
  if (!crashBeforeProvider.empty()) items.push_back("crash-before-provider:" + crashBeforeProvider);
  if (!failProvider.empty()) items.push_back("fail-provider:" + failProvider);
  if (crashBeforeFinish) items.push_back("crash-before-finish");
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ",") + item;
  return out;
}

void FailPoints::crash(const std::string& where) const {
  if (crashHook) {
    crashHook(where);
    return;
  }
  // The last words go straight to the file descriptor: a crash flushes nothing.
  const std::string line = "pim-access-agent: failpoint " + where + ": killing the process\n";
  ssize_t ignored = ::write(2, line.data(), line.size());
  (void)ignored;
  ::raise(SIGKILL);
}

Result<FailPoints> FailPoints::parse(const std::string& spec) {
  FailPoints fp;
  std::istringstream in(spec);
  std::string item;
  while (std::getline(in, item, ',')) {
    item = trimmed(item);
    if (item.empty()) continue;
    const auto colon = item.find(':');
    const std::string name = item.substr(0, colon);
    const std::string arg = colon == std::string::npos ? std::string() : item.substr(colon + 1);
    const bool hasArg = colon != std::string::npos;
    if (name == "crash-before-finish" && !hasArg) {
      fp.crashBeforeFinish = true;
    } else if ((name == "after-action" || name == "crash-after-action") && hasArg) {
      auto n = positive(item, arg);
      if (!n) return n.status();
      (name == "after-action" ? fp.failAfterAction : fp.crashAfterAction) = *n;
    } else if ((name == "before-provider" || name == "crash-before-provider" || name == "fail-provider") && hasArg) {
      auto p = providerName(item, arg);
      if (!p) return p.status();
      if (name == "before-provider") fp.failBeforeProvider = *p;
      if (name == "crash-before-provider") fp.crashBeforeProvider = *p;
      if (name == "fail-provider") fp.failProvider = *p;
    } else {
      return Status::error(ErrorCode::kInvalid,
                           "failpoint '" + item +
                               "' not understood (after-action:N, crash-after-action:N, before-provider:NAME, "
                               "crash-before-provider:NAME, fail-provider:NAME, crash-before-finish)");
    }
  }
  return fp;
}

Result<FailPoints> FailPoints::fromEnvironment() {
  const char* value = std::getenv(kVariable);
  if (value == nullptr) return FailPoints{};
  auto fp = parse(value);
  if (!fp) return Status::error(ErrorCode::kInvalid, std::string(kVariable) + ": " + fp.status().message());
  return fp;
}

}  // namespace pim
