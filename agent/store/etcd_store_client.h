#pragma once
// The etcd:// and etcds:// source: the access document is the value of one etcd v3 key, read
// through etcd's JSON gateway (/v3/kv/range, /v3/watch; keys and values in base64) on the
// libcurl transport of agent/store/http_store_client.h (one HttpStoreClient per endpoint, used
// through its exchange()).
//
//   etcd://HOST[:PORT][,HOST[:PORT]...]/KEY      (plain HTTP, port 2379 by default)
//   etcds://HOST[:PORT][,HOST[:PORT]...]/KEY     (TLS: ca_file, and client_cert/client_key)
//
// KEY is the URL path, leading '/' included ("etcd://e1:2379/pim/web-1/access" reads the key
// "/pim/web-1/access"). The signature (when signing_key is set) is the value of the sibling key
// KEY + ".sig", read at the same etcd revision as the document.
//
// fetch(etag, wait): with wait > 0 and the ETag of an earlier fetch, it first watches the
// document and its signature from the revision after the ones that ETag names, and returns as
// soon as etcd reports a change (or when `wait` runs out, or the watch is cancelled by etcd:
// compaction, a restart); then one range request reads both keys at one revision. A watch that
// breaks is not an error: the range decides. The ETag is "etcd:<document mod_revision>:<signature
// mod_revision>"; kUnchanged when it matches the one given. The endpoints are tried in turn,
// starting with the one that answered last.
//
// Auth: with etcd_user and etcd_password_file, a token from /v3/auth/authenticate (the password
// file is read at each authentication, the token kept until etcd refuses it), sent in the
// Authorization header; with client_cert/client_key, TLS client certificates. Neither the
// password nor the token is ever logged.

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "agent/store/http_store_client.h"

namespace pim {

/// An etcd:// or etcds:// source, parsed.
struct EtcdSource {
  bool tls = false;
  std::vector<std::string> endpoints;  // "host:port", "[v6]:port"; port always present
  std::string key;                     // the key, '/' first
};

/// Parses an etcd source URL. Errors (kInvalid, "store.source: ..."): another scheme, no
/// endpoint, an empty or malformed host or port (1..65535), more than 16 endpoints, credentials
/// ('@'), a query or fragment, a key that is empty ("/"), over 1024 bytes, or holds white space,
/// control characters or '%'.
Result<EtcdSource> parseEtcdUrl(const std::string& url);

/// What one etcd answer (range or watch message) says, decoded from the gateway's JSON.
struct EtcdKeyValue {
  std::string key;
  std::string value;
  int64_t modRevision = 0;
};
struct EtcdRange {
  int64_t revision = 0;           // header.revision
  std::vector<EtcdKeyValue> kvs;  // decoded
};
/// Parses a /v3/kv/range answer. Errors: kUnreachable for anything but a JSON object with a
/// header revision and well-formed kvs (base64 key and value, decimal revisions).
Result<EtcdRange> parseEtcdRange(const std::string& json);

/// What the watch stream says so far: whether a message other than the creation arrived (an
/// event, a cancellation, a compaction, an error).
enum class EtcdWatchState { kWaiting, kChanged };
/// Looks at the watch stream received so far (newline-separated JSON objects, the last one maybe
/// incomplete). Anything that is not a plain "created" message counts as kChanged.
EtcdWatchState scanEtcdWatch(const std::string& stream);

class EtcdStoreClient : public StoreClient {
 public:
  struct Params {
    EtcdSource source;
    std::string user;              // etcd_user; "" = no authentication by password
    std::string passwordPath;      // full path
    HttpStoreClient::Params http;  // url is ignored; TLS, limits, proxy, verifier, options as for http(s)
  };
  static Result<std::unique_ptr<EtcdStoreClient>> create(Params params, Logger log);

  Result<FetchOutcome> fetch(const std::string& etag, int64_t waitSeconds) override;
  void cancel() override;
  /// Writes `value` to the key under a new lease of `ttlSeconds` (/v3/lease/grant, /v3/kv/put),
  /// then revokes the lease of the previous write: one live lease per writer, and the key goes
  /// away `ttlSeconds` after the last write (the reports of a dead instance expire). The
  /// endpoints are tried in turn. Errors: kUnreachable as fetch().
  Status putWithLease(const std::string& value, int64_t ttlSeconds);
  std::string describe() const override;

 private:
  EtcdStoreClient(Params params, Logger log);
  // One request to the endpoint i, authenticated when configured (a refused token is renewed once).
  Result<HttpStoreClient::Reply> call(size_t i, HttpStoreClient::Exchange x);
  Status authenticate(size_t i);
  Result<FetchOutcome> range(size_t i, const std::string& etag);
  // Returns once something changed after `fromRevision`, the wait ran out or the watch broke.
  void watch(size_t i, int64_t fromRevision, int64_t waitSeconds);

  Params params_;
  Logger log_;
  std::string shown_;
  std::vector<std::unique_ptr<HttpStoreClient>> clients_;  // one per endpoint
  std::vector<std::string> tokens_;                        // per endpoint; "" = none yet
  size_t current_ = 0;
  int64_t revision_ = 0;          // the etcd revision of the last range
  std::string lastEtag_;          // the ETag that range gave
  bool signatureBehind_ = false;  // the last range was rejected with a signature older than the document
  std::atomic<bool> cancelled_{false};
  std::string leaseId_;  // putWithLease(): the lease of the last write ("" = none)
};

/// The client of the reports to etcd (docs/agent.md, "Reports"): settings.reportUrl, an etcd://
/// or etcds:// URL naming the report's key (by convention the source's key + "/report"), on the
/// source's cluster credentials (etcd_user and password file, client certificates, CA file,
/// proxy). Errors: kInvalid when the source is not etcd, or as makeStoreClient's (messages name
/// store.report_url).
Result<std::unique_ptr<EtcdStoreClient>> makeEtcdReportClient(const StoreSettings& settings, const std::string& root,
                                                              Logger log, const StoreClientOptions& options = {});

}  // namespace pim
