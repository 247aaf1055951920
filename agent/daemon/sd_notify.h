#pragma once
// The systemd notification protocol (sd_notify(3)), small enough to speak without libsystemd:
// one datagram to the AF_UNIX socket named by $NOTIFY_SOCKET.

#include <chrono>
#include <optional>
#include <string>

namespace pim {

/// Sends `state` ("READY=1", "WATCHDOG=1", "STOPPING=1", "STATUS=...") when the service manager
/// asked for notifications; returns false when it did not or the send failed. Never throws.
bool sdNotify(const std::string& state);

/// The watchdog interval requested by the service manager ($WATCHDOG_USEC, for this pid), or
/// nullopt when there is none.
std::optional<std::chrono::microseconds> sdWatchdogInterval();

}  // namespace pim
