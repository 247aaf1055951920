#include "agent/daemon/nft_watch.h"

#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace pim {
namespace {

// The string attribute `type` among the attributes in [p, end), or "".
std::string stringAttr(const uint8_t* p, const uint8_t* end, uint16_t type) {
  while (p + sizeof(nlattr) <= end) {
    nlattr a;
    std::memcpy(&a, p, sizeof a);
    if (a.nla_len < sizeof(nlattr) || p + a.nla_len > end) break;
    if ((a.nla_type & NLA_TYPE_MASK) == type) {
      const char* s = reinterpret_cast<const char*>(p + NLA_HDRLEN);
      size_t n = a.nla_len - NLA_HDRLEN;
      while (n > 0 && s[n - 1] == '\0') --n;
      return std::string(s, n);
    }
    p += NLA_ALIGN(a.nla_len);
  }
  return {};
}

}  // namespace

bool nftMessagesConcern(const uint8_t* data, size_t len, const std::string& table,
                        const std::set<std::string>& ignoredSets) {
  const uint8_t* p = data;
  const uint8_t* end = data + len;
  while (p + sizeof(nlmsghdr) <= end) {
    nlmsghdr h;
    std::memcpy(&h, p, sizeof h);
    if (h.nlmsg_len < sizeof(nlmsghdr) || p + h.nlmsg_len > end) break;
    const uint8_t* msgEnd = p + h.nlmsg_len;
    if ((h.nlmsg_type >> 8) == NFNL_SUBSYS_NFTABLES && p + NLMSG_HDRLEN + sizeof(nfgenmsg) <= msgEnd) {
      const int type = h.nlmsg_type & 0xff;
      const uint8_t* attrs = p + NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(nfgenmsg));
      // The table is attribute 1 of table, chain, rule, set and element messages alike
      // (NFTA_TABLE_NAME, NFTA_CHAIN_TABLE, NFTA_RULE_TABLE, NFTA_SET_TABLE,
      // NFTA_SET_ELEM_LIST_TABLE); generation messages have none.
      switch (type) {
        case NFT_MSG_NEWTABLE:
        case NFT_MSG_DELTABLE:
        case NFT_MSG_NEWCHAIN:
        case NFT_MSG_DELCHAIN:
        case NFT_MSG_NEWRULE:
        case NFT_MSG_DELRULE:
        case NFT_MSG_NEWSET:
        case NFT_MSG_DELSET:
          if (stringAttr(attrs, msgEnd, 1) == table) return true;
          break;
        case NFT_MSG_NEWSETELEM:
        case NFT_MSG_DELSETELEM:
          if (stringAttr(attrs, msgEnd, NFTA_SET_ELEM_LIST_TABLE) == table &&
              !ignoredSets.count(stringAttr(attrs, msgEnd, NFTA_SET_ELEM_LIST_SET))) {
            return true;
          }
          break;
        default:
          break;
      }
    }
    p += NLMSG_ALIGN(h.nlmsg_len);
  }
  return false;
}

NftWatch::NftWatch(uv_loop_t* loop, std::string table, std::set<std::string> ignoredSets,
                   std::function<void()> onChange, Logger log)
    : loop_(loop),
      table_(std::move(table)),
      ignoredSets_(std::move(ignoredSets)),
      onChange_(std::move(onChange)),
      log_(std::move(log)) {}

NftWatch::~NftWatch() { stop(); }

Status NftWatch::start() {
  fd_ = ::socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (fd_ < 0) return Status::error(ErrorCode::kIo, std::string("netlink socket: ") + std::strerror(errno));
  sockaddr_nl addr{};
  addr.nl_family = AF_NETLINK;
  int group = NFNLGRP_NFTABLES;
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::setsockopt(fd_, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &group, sizeof group) != 0) {
    const int err = errno;
    ::close(fd_);
    fd_ = -1;
    return Status::error(ErrorCode::kIo, std::string("join the nftables netlink group: ") + std::strerror(err));
  }
  if (poll_.init(loop_, this, uv_poll_init, fd_) != 0) {
    ::close(fd_);
    fd_ = -1;
    return Status::error(ErrorCode::kIo, "poll the nftables netlink socket");
  }
  uv_poll_start(poll_.get(), UV_READABLE, onReadable);
  return Status::ok();
}

bool NftWatch::readAll() {
  std::vector<uint8_t> buf(64 * 1024);
  bool concerned = false;
  for (;;) {
    const ssize_t n = ::recv(fd_, buf.data(), buf.size(), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      // ENOBUFS: messages were lost; whatever they said, look at the table again.
      if (errno == ENOBUFS) concerned = true;
      break;
    }
    if (n == 0) break;
    if (nftMessagesConcern(buf.data(), size_t(n), table_, ignoredSets_)) concerned = true;
  }
  return concerned;
}

void NftWatch::drain() {
  if (fd_ >= 0) (void)readAll();
}

void NftWatch::onReadable(uv_poll_t* handle, int status, int /*events*/) {
  auto* self = static_cast<NftWatch*>(handle->data);
  if (status < 0) {
    self->log_->warn("nftables netlink socket: {}", uv_strerror(status));
    return;
  }
  if (self->readAll() && self->onChange_) self->onChange_();
}

void NftWatch::stop() {
  poll_.reset();  // the socket is no longer polled once uv_close() returns: it can go at once
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

}  // namespace pim
