// wait: until a store document is applied on the host (for provisioning scripts).
#include "agent/cli/commands.h"

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "agent/cli/cli.h"
#include "agent/cli/cli_support.h"
#include "agent/cycle/open_state.h"
#include "providers/core/log.h"
#include "providers/host/real_host.h"

namespace pim {
namespace {

constexpr int64_t kDefaultTimeoutS = 600;
constexpr auto kLook = std::chrono::milliseconds(200);

Result<int64_t> number(const std::string& option, const std::string& text, int64_t fallback, int64_t min) {
  if (text.empty()) return fallback;
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (end == text.c_str() || *end != '\0' || v < min) {
    return Status::error(ErrorCode::kInvalid, "wait: " + option + " needs a whole number >= " + std::to_string(min) +
                                                  ", not '" + text + "'");
  }
  return int64_t(v);
}

/// What the state says about a store document of revision >= `revision`: an exit code when the
/// wait is over, nullopt while it goes on. `why` says it for people.
Result<std::optional<ExitCode>> verdict(const StateStore& state, int64_t revision, std::string* why) {
  auto inForce = state.lastApplied();
  if (!inForce) return inForce.status();
  if (inForce->has_value()) {
    const GenerationRecord& g = **inForce;
    const bool fromStore = g.cause != GenerationCause::kRollback && !g.rollbackOf;
    if (fromStore && g.revision && *g.revision >= revision) {
      if (g.outcome == GenerationOutcome::kApplied || g.outcome == GenerationOutcome::kUnchanged) {
        *why = "revision " + std::to_string(*g.revision) + " applied (generation " + std::to_string(g.generation) + ")";
        return std::optional<ExitCode>(ExitCode::kOk);
      }
      if (g.outcome == GenerationOutcome::kPartial || g.outcome == GenerationOutcome::kFailed) {
        *why = "revision " + std::to_string(*g.revision) + " " + outcomeName(g.outcome) + ": " + g.error;
        return std::optional<ExitCode>(ExitCode::kApplyFailed);
      }
    }
  }
  auto latest = state.latest();
  if (!latest) return latest.status();
  if (latest->has_value() && (*latest)->outcome == GenerationOutcome::kRejected &&
      (!(*latest)->revision || *(*latest)->revision >= revision)) {
    *why = "document rejected: " + (*latest)->error;
    return std::optional<ExitCode>(ExitCode::kRejected);
  }
  return std::optional<ExitCode>();
}

}  // namespace

ExitCode cmdWait(const Config& config, const CliOptions& o) {
  auto timeout = number("--timeout", o.timeout, kDefaultTimeoutS, 0);
  if (!timeout) return fail(timeout.status());
  auto revision = number("--revision", o.revision, 1, 1);
  if (!revision) return fail(revision.status());
  RealHost host(config.root, makeLogger("host"));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(*timeout);
  std::string lastPoll;
  for (;;) {
    // Opened again each time: the daemon may create the database after the wait began.
    auto state = openStateForReading(config, host);
    if (state) {
      std::string why;
      auto v = verdict(**state, *revision, &why);
      if (!v) return fail(v.status());
      if (v->has_value()) {
        (**v == ExitCode::kOk ? std::cout : std::cerr)
            << (**v == ExitCode::kOk ? "" : "pim-access-agent: ") << why << "\n";
        return **v;
      }
      auto poll = (*state)->pollStatus();
      if (poll && poll->time) lastPoll = poll->outcome + (poll->error.empty() ? "" : ": " + poll->error);
    }
    if (std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(kLook);
  }
  std::cerr << "pim-access-agent: wait: no store document"
            << (o.revision.empty() ? "" : " of revision " + o.revision + " or above") << " applied within " << *timeout
            << " s" << (lastPoll.empty() ? "" : "; last poll: " + lastPoll) << "\n";
  return lastPoll.rfind("error", 0) == 0 ? ExitCode::kUnreachable : ExitCode::kTimedOut;
}

}  // namespace pim
