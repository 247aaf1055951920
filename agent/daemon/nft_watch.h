#pragma once
// Drift of the firewall without polling: a NETLINK_NETFILTER socket subscribed to the kernel's
// NFNLGRP_NFTABLES multicast group, which reports every change of any nftables table (what
// `nft monitor` reads). The daemon's loop polls the socket (uv_poll_t): an idle host costs
// nothing, a flush or delete of the agent's table wakes the daemon at once. Messages about other
// tables, and element changes of the defender's ban sets, are dropped here.

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <set>
#include <string>

#include "agent/daemon/uv_handle.h"
#include "providers/core/log.h"
#include "providers/core/result.h"

namespace pim {

/// Whether a datagram of nfnetlink messages (`data`, `len` bytes) holds a change of the table
/// `table`: a table, chain, rule or set message naming it, or an element message of one of its
/// sets other than `ignoredSets`. Pure; malformed input is read as far as it is well formed.
bool nftMessagesConcern(const uint8_t* data, size_t len, const std::string& table,
                        const std::set<std::string>& ignoredSets);

class NftWatch {
 public:
  /// `onChange` runs on the loop thread for every datagram that concerns `table` (and after a
  /// lost message: the socket's buffer overflowed).
  NftWatch(uv_loop_t* loop, std::string table, std::set<std::string> ignoredSets, std::function<void()> onChange,
           Logger log);
  /// Calls stop() (on the loop's thread, the loop still open).
  ~NftWatch();
  NftWatch(const NftWatch&) = delete;
  NftWatch& operator=(const NftWatch&) = delete;

  /// Opens the socket, joins the group and starts polling. Errors: kIo (no netlink socket, no
  /// CAP_NET_ADMIN to join the group).
  Status start();
  /// Reads and drops what is queued: the agent's own changes, once its work is done.
  void drain();
  /// Stops polling and closes the socket (the handle closes on the loop). Idempotent.
  void stop();

 private:
  static void onReadable(uv_poll_t* handle, int status, int events);
  /// Reads every queued datagram; true when one concerned the table.
  bool readAll();

  uv_loop_t* loop_;
  std::string table_;
  std::set<std::string> ignoredSets_;
  std::function<void()> onChange_;
  Logger log_;
  int fd_ = -1;
  UvHandle<uv_poll_t> poll_;
};

}  // namespace pim
