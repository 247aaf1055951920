#include "agent/store/etcd_store_client.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <cctype>
#include <sstream>

#include "agent/store/file_store_client.h"
#include "agent/store/signature.h"

namespace pim {
namespace {

constexpr size_t kMaxEndpoints = 16;
constexpr size_t kMaxKeyBytes = 1024;
constexpr int64_t kMaxPasswordFileBytes = 64 * 1024;
constexpr int64_t kJsonSlack = 64 * 1024;
// A watch that ends this many times at once without a change (compaction, a restart) hands the
// decision back to the caller, whose loop spaces the next attempt.
constexpr int kImmediateWatches = 3;
// How long a signature older than its document is waited for.
constexpr int64_t kSignatureWaitS = 2;

Status invalidUrl(const std::string& why) { return Status::error(ErrorCode::kInvalid, "store.source: " + why); }

bool validHost(const std::string& host) {
  if (host.empty() || host.size() > 253) return false;
  if (host.front() == '[') {
    if (host.size() < 4 || host.back() != ']') return false;
    return std::all_of(host.begin() + 1, host.end() - 1,
                       [](unsigned char c) { return std::isxdigit(c) || c == ':' || c == '.'; });
  }
  return std::all_of(host.begin(), host.end(),
                     [](unsigned char c) { return std::isalnum(c) || c == '.' || c == '-' || c == '_'; });
}

// "host", "host:port", "[v6]", "[v6]:port" -> "host:port".
Result<std::string> parseEndpoint(const std::string& text) {
  std::string host = text;
  std::string port = "2379";
  const auto close = text.find(']');
  const auto colon = text.rfind(':');
  if (colon != std::string::npos && (text.front() != '[' || (close != std::string::npos && colon > close))) {
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  if (!validHost(host)) return invalidUrl("malformed etcd endpoint host");
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](unsigned char c) { return std::isdigit(c); }) || std::stoi(port) < 1 ||
      std::stoi(port) > 65535) {
    return invalidUrl("the etcd endpoint port must be a number from 1 to 65535");
  }
  return host + ":" + port;
}

// A JSON revision: the gateway writes int64 as a decimal string; a number is taken too.
bool readRevision(const Poco::Dynamic::Var& v, int64_t& out) {
  if (v.isEmpty()) return false;
  if (v.isString()) {
    const std::string s = v.extract<std::string>();
    if (s.empty() || s.size() > 18 || !std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); }))
      return false;
    out = std::stoll(s);
    return true;
  }
  if (v.isInteger()) {
    out = v.convert<int64_t>();
    return out >= 0;
  }
  return false;
}

Poco::JSON::Object::Ptr parseObject(const std::string& json) {
  try {
    Poco::JSON::Parser parser;
    Poco::Dynamic::Var v = parser.parse(json);
    if (v.type() != typeid(Poco::JSON::Object::Ptr)) return nullptr;
    return v.extract<Poco::JSON::Object::Ptr>();
  } catch (const std::exception&) {
    return nullptr;
  } catch (...) {
    return nullptr;
  }
}

std::string jsonText(const Poco::JSON::Object& o) {
  std::ostringstream out;
  o.stringify(out);
  return out.str();
}

// "etcd:<document mod_revision>:<signature mod_revision>"; false when `etag` is not one.
bool parseEtag(const std::string& etag, int64_t& document, int64_t& signature) {
  if (etag.rfind("etcd:", 0) != 0) return false;
  const auto colon = etag.find(':', 5);
  if (colon == std::string::npos) return false;
  const std::string a = etag.substr(5, colon - 5);
  const std::string b = etag.substr(colon + 1);
  auto digits = [](const std::string& s) {
    return !s.empty() && s.size() <= 18 &&
           std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
  };
  if (!digits(a) || !digits(b)) return false;
  document = std::stoll(a);
  signature = std::stoll(b);
  return true;
}

}  // namespace

Result<EtcdSource> parseEtcdUrl(const std::string& url) {
  EtcdSource out;
  std::string rest;
  auto startsNoCase = [&](const char* p) {
    const std::string prefix(p);
    if (url.size() < prefix.size()) return false;
    for (size_t i = 0; i < prefix.size(); ++i) {
      if (std::tolower(static_cast<unsigned char>(url[i])) != prefix[i]) return false;
    }
    return true;
  };
  if (startsNoCase("etcds://")) {
    out.tls = true;
    rest = url.substr(8);
  } else if (startsNoCase("etcd://")) {
    rest = url.substr(7);
  } else {
    return invalidUrl("expected etcd://HOST[:PORT][,HOST[:PORT]...]/KEY or etcds://...");
  }
  for (unsigned char c : rest) {
    if (c <= 0x20 || c == 0x7f) return invalidUrl("white space or control character in the etcd URL");
  }
  if (rest.find('@') != std::string::npos) {
    return invalidUrl("credentials in the URL are not supported (use etcd_user and etcd_password_file)");
  }
  if (rest.find_first_of("?#") != std::string::npos) return invalidUrl("an etcd URL has no query or fragment");
  const auto slash = rest.find('/');
  if (slash == std::string::npos) return invalidUrl("the etcd URL names no key (etcd://HOST:PORT/KEY)");
  const std::string authority = rest.substr(0, slash);
  out.key = rest.substr(slash);
  if (authority.empty()) return invalidUrl("the etcd URL names no endpoint");
  size_t start = 0;
  for (;;) {
    const auto comma = authority.find(',', start);
    const std::string item = authority.substr(start, comma == std::string::npos ? comma : comma - start);
    auto endpoint = parseEndpoint(item);
    if (!endpoint) return endpoint.status();
    out.endpoints.push_back(*endpoint);
    if (out.endpoints.size() > kMaxEndpoints) return invalidUrl("more than 16 etcd endpoints");
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (out.key.size() <= 1) return invalidUrl("the etcd key is empty");
  if (out.key.size() > kMaxKeyBytes) return invalidUrl("the etcd key is longer than 1024 bytes");
  if (out.key.find('%') != std::string::npos) return invalidUrl("'%' in the etcd key (keys are taken literally)");
  return out;
}

Result<EtcdRange> parseEtcdRange(const std::string& json) {
  auto bad = [](const std::string& why) {
    return Status::error(ErrorCode::kUnreachable, "malformed etcd range answer: " + why);
  };
  Poco::JSON::Object::Ptr o = parseObject(json);
  if (!o) return bad("not a JSON object");
  EtcdRange out;
  try {
    Poco::JSON::Object::Ptr header = o->getObject("header");
    if (!header || !readRevision(header->get("revision"), out.revision)) return bad("no header revision");
    if (!o->has("kvs")) return out;
    Poco::JSON::Array::Ptr kvs = o->getArray("kvs");
    if (!kvs) return bad("kvs is not an array");
    for (size_t i = 0; i < kvs->size(); ++i) {
      Poco::JSON::Object::Ptr kv = kvs->getObject(static_cast<unsigned int>(i));
      if (!kv) return bad("a kv is not an object");
      EtcdKeyValue item;
      const Poco::Dynamic::Var key = kv->get("key");
      const Poco::Dynamic::Var value = kv->get("value");
      if (!key.isString()) return bad("a kv has no key");
      auto k = decodeBase64(key.extract<std::string>());
      if (!k) return bad("a key is not base64");
      item.key = std::move(*k);
      if (!value.isEmpty()) {  // an empty value is left out by the gateway
        if (!value.isString()) return bad("a value is not a string");
        auto v = decodeBase64(value.extract<std::string>());
        if (!v) return bad("a value is not base64");
        item.value = std::move(*v);
      }
      if (!readRevision(kv->get("mod_revision"), item.modRevision)) return bad("a kv has no mod_revision");
      out.kvs.push_back(std::move(item));
    }
  } catch (const std::exception&) {
    return bad("unexpected JSON types");
  }
  return out;
}

EtcdWatchState scanEtcdWatch(const std::string& stream) {
  size_t start = 0;
  while (start < stream.size()) {
    const auto nl = stream.find('\n', start);
    std::string message = stream.substr(start, nl == std::string::npos ? nl : nl - start);
    start = nl == std::string::npos ? stream.size() : nl + 1;
    if (message.find_first_not_of(" \t\r") == std::string::npos) continue;
    Poco::JSON::Object::Ptr o = parseObject(message);
    if (!o) {
      if (nl == std::string::npos) return EtcdWatchState::kWaiting;  // the rest has not come yet
      return EtcdWatchState::kChanged;                               // garbage: range again
    }
    try {
      Poco::JSON::Object::Ptr result = o->getObject("result");
      const bool plainCreated = result && !o->has("error") && result->optValue<bool>("created", false) &&
                                !result->has("events") && !result->optValue<bool>("canceled", false) &&
                                !result->has("compact_revision");
      if (!plainCreated) return EtcdWatchState::kChanged;
    } catch (const std::exception&) {
      return EtcdWatchState::kChanged;
    }
  }
  return EtcdWatchState::kWaiting;
}

EtcdStoreClient::EtcdStoreClient(Params params, Logger log) : params_(std::move(params)), log_(std::move(log)) {
  shown_ = std::string(params_.source.tls ? "etcds://" : "etcd://");
  for (size_t i = 0; i < params_.source.endpoints.size(); ++i) {
    shown_ += (i ? "," : "") + params_.source.endpoints[i];
  }
  shown_ += params_.source.key;
}

Result<std::unique_ptr<EtcdStoreClient>> EtcdStoreClient::create(Params params, Logger log) {
  if (params.source.endpoints.empty()) return invalidUrl("the etcd URL names no endpoint");
  if (!params.source.tls && !params.http.clientCertPath.empty()) {
    return Status::error(ErrorCode::kInvalid, "store.client_cert: only for etcds:// sources");
  }
  std::unique_ptr<EtcdStoreClient> client(new EtcdStoreClient(std::move(params), log));
  Params& p = client->params_;
  if (!p.user.empty() && !p.source.tls) {
    log->warn("the etcd password and token are sent unencrypted to {}: use etcds://", client->shown_);
  }
  for (const auto& endpoint : p.source.endpoints) {
    HttpStoreClient::Params http = p.http;
    http.url = std::string(p.source.tls ? "https://" : "http://") + endpoint + "/";
    http.tokenPath.clear();
    http.verifier.reset();
    // Keys and values come in base64 inside JSON.
    http.maxBytes = p.http.maxBytes / 3 * 4 + kJsonSlack;
    auto c = HttpStoreClient::create(std::move(http), log);
    if (!c) return c.status();
    client->clients_.push_back(std::move(*c));
    client->tokens_.emplace_back();
  }
  return client;
}

std::string EtcdStoreClient::describe() const { return shown_; }

Status EtcdStoreClient::putWithLease(const std::string& value, int64_t ttlSeconds) {
  Status last = Status::error(ErrorCode::kUnreachable, shown_ + ": no endpoint");
  const size_t n = clients_.size();
  for (size_t k = 0; k < n && !cancelled_.load(); ++k) {
    const size_t i = (current_ + k) % n;
    const std::string where = shown_ + " (endpoint " + params_.source.endpoints[i] + ")";
    Poco::JSON::Object grant;
    grant.set("TTL", ttlSeconds);
    HttpStoreClient::Exchange x;
    x.path = "/v3/lease/grant";
    x.body = jsonText(grant);
    auto granted = call(i, x);
    if (!granted) {
      last = granted.status();
      continue;
    }
    // The gateway writes int64 values as strings.
    Poco::JSON::Object::Ptr o = parseObject(granted->body);
    std::string id;
    try {
      if (o && o->has("ID")) id = o->get("ID").toString();
    } catch (const std::exception&) {
      id.clear();
    }
    if (id.empty() || id.size() > 20 || id.find_first_not_of("0123456789") != std::string::npos) {
      last = Status::error(ErrorCode::kUnreachable, where + ": /v3/lease/grant gave no lease ID");
      continue;
    }
    Poco::JSON::Object put;
    put.set("key", encodeBase64(params_.source.key));
    put.set("value", encodeBase64(value));
    put.set("lease", id);
    x.path = "/v3/kv/put";
    x.body = jsonText(put);
    auto written = call(i, x);
    if (!written) {
      last = written.status();  // the new lease expires by itself
      continue;
    }
    if (!leaseId_.empty() && leaseId_ != id) {
      Poco::JSON::Object revoke;
      revoke.set("ID", leaseId_);
      x.path = "/v3/lease/revoke";
      x.body = jsonText(revoke);
      // A lease already gone (expired, another endpoint's cluster restarted) is fine: it ends anyway.
      if (auto r = call(i, x); !r) log_->debug("{}: revoke lease {}: {}", where, leaseId_, r.status().message());
    }
    leaseId_ = id;
    current_ = i;
    return Status::ok();
  }
  return last;
}

void EtcdStoreClient::cancel() {
  cancelled_.store(true);
  for (auto& c : clients_) c->cancel();
}

Status EtcdStoreClient::authenticate(size_t i) {
  auto password = readRegularFile(params_.passwordPath, kMaxPasswordFileBytes);
  if (!password) {
    return Status::error(ErrorCode::kUnreachable, "store.etcd_password_file: " + password.status().message(),
                         params_.passwordPath);
  }
  std::string pw = *password;
  while (!pw.empty() && (pw.back() == '\n' || pw.back() == '\r')) pw.pop_back();
  Poco::JSON::Object request;
  request.set("name", params_.user);
  request.set("password", pw);
  HttpStoreClient::Exchange x;
  x.path = "/v3/auth/authenticate";
  x.body = jsonText(request);
  auto reply = clients_[i]->exchange(x);
  std::fill(x.body.begin(), x.body.end(), '\0');
  std::fill(pw.begin(), pw.end(), '\0');
  if (!reply) {
    // 400/401: wrong name or password (the answer's text is not read: it could echo the request).
    return Status::error(ErrorCode::kUnreachable,
                         "etcd authentication as " + params_.user + " failed: " + reply.status().message());
  }
  Poco::JSON::Object::Ptr o = parseObject(reply->body);
  std::string token;
  try {
    if (o && o->get("token").isString()) token = o->get("token").extract<std::string>();
  } catch (const std::exception&) {
    token.clear();
  }
  const bool printable = std::all_of(token.begin(), token.end(), [](unsigned char c) { return c > 0x20 && c < 0x7f; });
  if (token.empty() || !printable) {
    return Status::error(ErrorCode::kUnreachable, "etcd authentication as " + params_.user + ": no usable token");
  }
  tokens_[i] = std::move(token);
  return Status::ok();
}

Result<HttpStoreClient::Reply> EtcdStoreClient::call(size_t i, HttpStoreClient::Exchange x) {
  for (int attempt = 0;; ++attempt) {
    HttpStoreClient::Exchange sent = x;
    if (!params_.user.empty()) {
      if (tokens_[i].empty()) {
        Status s = authenticate(i);
        if (!s) return s;
      }
      sent.headers.push_back("Authorization: " + tokens_[i]);
    }
    auto reply = clients_[i]->exchange(sent);
    // A token etcd no longer knows (expired, etcd restarted): one new one.
    if (!reply && clients_[i]->lastStatus() == 401 && !params_.user.empty() && attempt == 0) {
      log_->info("etcd {} refused the token; authenticating again", params_.source.endpoints[i]);
      tokens_[i].clear();
      continue;
    }
    return reply;
  }
}

Result<FetchOutcome> EtcdStoreClient::range(size_t i, const std::string& etag) {
  const std::string where = shown_ + " (endpoint " + params_.source.endpoints[i] + ")";
  auto read = [&](const std::string& key, int64_t revision) -> Result<EtcdRange> {
    Poco::JSON::Object request;
    request.set("key", encodeBase64(key));
    if (revision > 0) request.set("revision", revision);
    HttpStoreClient::Exchange x;
    x.path = "/v3/kv/range";
    x.body = jsonText(request);
    auto reply = call(i, x);
    if (!reply) return reply.status();
    auto r = parseEtcdRange(reply->body);
    if (!r) return Status::error(ErrorCode::kUnreachable, where + ": " + r.status().message());
    return r;
  };
  auto document = read(params_.source.key, 0);
  if (!document) return document.status();
  if (document->kvs.empty()) return Status::error(ErrorCode::kUnreachable, where + ": no such key");
  const EtcdKeyValue& kv = document->kvs.front();
  if (kv.key != params_.source.key)
    return Status::error(ErrorCode::kUnreachable, where + ": etcd answered another key");
  std::string signature;
  int64_t signatureRevision = 0;
  if (params_.http.verifier) {
    auto sig = read(params_.source.key + ".sig", document->revision);
    if (!sig) return sig.status();
    if (!sig->kvs.empty()) {
      signature = sig->kvs.front().value;
      signatureRevision = sig->kvs.front().modRevision;
    }
  }
  revision_ = document->revision;
  signatureBehind_ = false;
  FetchOutcome out;
  out.etag = "etcd:" + std::to_string(kv.modRevision) + ":" + std::to_string(signatureRevision);
  if (out.etag == etag) {
    out.kind = FetchOutcome::Kind::kUnchanged;
    log_->debug("{}: unchanged (revision {})", where, document->revision);
    return out;
  }
  if (static_cast<int64_t>(kv.value.size()) > params_.http.maxBytes) {
    return Status::error(ErrorCode::kRejected,
                         where + ": document of " + std::to_string(kv.value.size()) + " bytes is over the limit of " +
                             std::to_string(params_.http.maxBytes) + " bytes (max_document_bytes)");
  }
  if (params_.http.verifier) {
    Status v = params_.http.verifier->verify(kv.value, signature, where);
    signatureBehind_ = !v && signatureRevision < kv.modRevision;
    if (!v) return v;
  }
  out.kind = FetchOutcome::Kind::kDocument;
  out.body = kv.value;
  log_->debug("{}: {} bytes, mod_revision {} (revision {})", where, out.body.size(), kv.modRevision,
              document->revision);
  return out;
}

void EtcdStoreClient::watch(size_t i, int64_t fromRevision, int64_t waitSeconds) {
  Poco::JSON::Object create;
  create.set("key", encodeBase64(params_.source.key));
  // The signature key too, when it counts: [KEY, KEY.sig\0) (a key sorting in between wakes the
  // watch for nothing: the range then finds the document unchanged).
  if (params_.http.verifier) create.set("range_end", encodeBase64(params_.source.key + ".sig" + std::string(1, '\0')));
  create.set("start_revision", fromRevision);
  Poco::JSON::Object request;
  request.set("create_request", create);
  HttpStoreClient::Exchange x;
  x.path = "/v3/watch";
  x.body = jsonText(request);
  x.hold = std::chrono::seconds(waitSeconds);
  x.enough = [](const std::string& soFar) { return scanEtcdWatch(soFar) == EtcdWatchState::kChanged; };
  auto reply = call(i, x);
  if (!reply) {
    log_->debug("{}: the watch ended: {}; reading the key", shown_, reply.status().message());
  } else if (reply->timedOut) {
    log_->debug("{}: no change in {} s", shown_, waitSeconds);
  }
}

Result<FetchOutcome> EtcdStoreClient::fetch(const std::string& etag, int64_t waitSeconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(std::max<int64_t>(0, waitSeconds));
  int64_t documentRevision = 0, signatureRevision = 0;
  const bool watchable = waitSeconds > 0 && parseEtag(etag, documentRevision, signatureRevision);
  // After a range of this client that gave this ETag, nothing changed up to revision_; otherwise
  // (a new client) nothing changed since the keys' own revisions.
  int64_t from =
      (etag == lastEtag_ && revision_ > 0) ? revision_ + 1 : std::max(documentRevision, signatureRevision) + 1;
  for (int immediate = 0;;) {
    if (cancelled_.load()) return Status::error(ErrorCode::kUnreachable, shown_ + ": cancelled");
    const auto left = std::chrono::duration_cast<std::chrono::seconds>(deadline - std::chrono::steady_clock::now());
    const auto started = std::chrono::steady_clock::now();
    if (watchable && left.count() > 0) watch(current_, from, left.count());
    const bool quick = std::chrono::steady_clock::now() - started < std::chrono::milliseconds(200);
    Status last = Status::ok();
    for (size_t n = 0; n < clients_.size(); ++n) {
      const size_t i = (current_ + n) % clients_.size();
      auto out = range(i, etag);
      if (!out && out.status().code() == ErrorCode::kRejected && signatureBehind_) {
        // A document written before its signature (two puts, not one transaction): the
        // signature that goes with it is waited for a moment, then both are read again.
        log_->debug("{}: the signature is older than the document; waiting for it", shown_);
        watch(i, revision_ + 1, kSignatureWaitS);
        if (!cancelled_.load()) out = range(i, etag);
      }
      if (cancelled_.load()) return Status::error(ErrorCode::kUnreachable, shown_ + ": cancelled");
      if (out || out.status().code() != ErrorCode::kUnreachable) {
        if (i != current_) log_->info("{}: now reading from endpoint {}", shown_, params_.source.endpoints[i]);
        current_ = i;
        if (!out) return out;
        lastEtag_ = out->etag;
        // Unchanged before the wait ran out (a compaction, a restart, the signature key alone):
        // watch again from the revision just read.
        if (out->kind == FetchOutcome::Kind::kUnchanged && watchable &&
            std::chrono::steady_clock::now() + std::chrono::seconds(1) < deadline &&
            (!quick || ++immediate < kImmediateWatches)) {
          from = revision_ + 1;
          break;
        }
        return out;
      }
      last = out.status();
      if (clients_.size() > 1) log_->debug("{}: {}", params_.source.endpoints[i], last.message());
    }
    if (!last) return last;
  }
}

}  // namespace pim
