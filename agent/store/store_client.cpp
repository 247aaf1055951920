#include "agent/store/store_client.h"

#include <strings.h>

#include "agent/store/etcd_store_client.h"
#include "agent/store/file_store_client.h"
#include "agent/store/http_store_client.h"
#include "agent/store/signature.h"
#include "agent/store/store_proxy.h"

namespace pim {
namespace {

bool startsWithNoCase(const std::string& s, const std::string& prefix) {
  return s.size() >= prefix.size() && strncasecmp(s.c_str(), prefix.c_str(), prefix.size()) == 0;
}

std::string rooted(const std::string& root, const std::string& path) { return path.empty() ? path : root + path; }

// The parameters of an http(s) client for `url` (the source or the report URL): the same token,
// CA file, proxy and time limits.
Result<HttpStoreClient::Params> httpParams(const StoreSettings& settings, const std::string& url,
                                           const std::string& root, const StoreClientOptions& options) {
  const std::string scheme = startsWithNoCase(url, "https://") || startsWithNoCase(url, "etcds://") ? "https" : "http";
  auto proxy = chooseStoreProxy(settings.proxy, scheme,
                                options.environment ? EnvironmentReader(options.environment) : processEnvironment());
  if (!proxy) return proxy.status();
  HttpStoreClient::Params params;
  params.url = url;
  params.proxy = std::move(*proxy);
  params.tokenPath = rooted(root, settings.tokenFile);
  params.caPath = rooted(root, settings.caFile);
  params.maxBytes = settings.maxDocumentBytes;
  params.options = options;
  return params;
}

// The etcd client for `url` (the source or the report URL) on the http(s) parameters `http`:
// the same etcd user, password file and client certificates.
Result<std::unique_ptr<EtcdStoreClient>> makeEtcdClient(const StoreSettings& settings, const std::string& url,
                                                        HttpStoreClient::Params http, const std::string& root,
                                                        Logger log) {
  auto source = parseEtcdUrl(url);
  if (!source) return source.status();
  if (!settings.tokenFile.empty()) {
    return Status::error(ErrorCode::kInvalid,
                         "store.token_file: not for etcd sources (use etcd_user and etcd_password_file)");
  }
  for (const auto& [key, path] : {std::pair<const char*, const std::string*>{"client_cert", &settings.clientCert},
                                  {"client_key", &settings.clientKey}}) {
    if (path->empty()) continue;
    auto text = readRegularFile(rooted(root, *path), 1 << 20);
    if (!text) return Status::error(ErrorCode::kInvalid, std::string("store.") + key + ": " + text.status().message());
  }
  EtcdStoreClient::Params etcdParams;
  etcdParams.source = std::move(*source);
  etcdParams.user = settings.etcdUser;
  etcdParams.passwordPath = rooted(root, settings.etcdPasswordFile);
  http.clientCertPath = rooted(root, settings.clientCert);
  http.clientKeyPath = rooted(root, settings.clientKey);
  etcdParams.http = std::move(http);
  return EtcdStoreClient::create(std::move(etcdParams), std::move(log));
}

}  // namespace

Result<std::unique_ptr<StoreClient>> makeStoreClient(const StoreSettings& settings, const std::string& root, Logger log,
                                                     const StoreClientOptions& options) {
  if (settings.source.empty()) return Status::error(ErrorCode::kInvalid, "store.source: not set");
  if (settings.maxDocumentBytes <= 0) {
    return Status::error(ErrorCode::kInvalid, "store.max_document_bytes: must be positive");
  }
  std::shared_ptr<const SignatureVerifier> verifier;
  if (!settings.signingKey.empty()) {
    auto v = SignatureVerifier::fromPemFile(rooted(root, settings.signingKey));
    if (!v) return Status::error(ErrorCode::kInvalid, "store.signing_key: " + v.status().message(), v.status().path());
    verifier = *v;
  }

  const bool etcd = startsWithNoCase(settings.source, "etcd://") || startsWithNoCase(settings.source, "etcds://");
  if (!etcd) {
    for (const auto& [key, value] : {std::pair<const char*, const std::string*>{"client_cert", &settings.clientCert},
                                     {"client_key", &settings.clientKey},
                                     {"etcd_user", &settings.etcdUser},
                                     {"etcd_password_file", &settings.etcdPasswordFile}}) {
      if (!value->empty()) {
        return Status::error(ErrorCode::kInvalid,
                             std::string("store.") + key + ": only for etcd:// and etcds:// sources");
      }
    }
  }
  if (settings.clientCert.empty() != settings.clientKey.empty()) {
    return Status::error(ErrorCode::kInvalid, settings.clientCert.empty()
                                                  ? "store.client_cert: not set (client_key is)"
                                                  : "store.client_key: not set (client_cert is)");
  }
  if (settings.etcdUser.empty() != settings.etcdPasswordFile.empty()) {
    return Status::error(ErrorCode::kInvalid, settings.etcdUser.empty()
                                                  ? "store.etcd_user: not set (etcd_password_file is)"
                                                  : "store.etcd_password_file: not set (etcd_user is)");
  }
  if (startsWithNoCase(settings.source, "file:")) {
    auto path = FileStoreClient::parseFileUrl(settings.source);
    if (!path) return path.status();
    if (!settings.tokenFile.empty()) log->debug("store.token_file is not used for a file:// source");
    return std::unique_ptr<StoreClient>(
        std::make_unique<FileStoreClient>(*path, verifier, settings.maxDocumentBytes, std::move(log)));
  }
  if (startsWithNoCase(settings.source, "http://") || startsWithNoCase(settings.source, "https://") || etcd) {
    auto params = httpParams(settings, settings.source, root, options);
    if (!params) return params.status();
    params->verifier = verifier;
    if (etcd) {
      auto client = makeEtcdClient(settings, settings.source, std::move(*params), root, std::move(log));
      if (!client) return client.status();
      return std::unique_ptr<StoreClient>(std::move(*client));
    }
    auto client = HttpStoreClient::create(std::move(*params), std::move(log));
    if (!client) return client.status();
    return std::unique_ptr<StoreClient>(std::move(*client));
  }
  auto colon = settings.source.find(':');
  std::string scheme = colon == std::string::npos ? settings.source : settings.source.substr(0, colon);
  if (scheme.size() > 16) scheme = scheme.substr(0, 16) + "...";
  return Status::error(ErrorCode::kInvalid, "store.source: unsupported scheme '" + scheme +
                                                "' (expected https://, http://, etcd://, etcds:// or file://)");
}

Result<std::unique_ptr<EtcdStoreClient>> makeEtcdReportClient(const StoreSettings& settings, const std::string& root,
                                                              Logger log, const StoreClientOptions& options) {
  if (!startsWithNoCase(settings.source, "etcd://") && !startsWithNoCase(settings.source, "etcds://")) {
    return Status::error(ErrorCode::kInvalid,
                         "store.report_url: an etcd:// or etcds:// report needs an etcd source (its cluster and "
                         "credentials)");
  }
  auto params = httpParams(settings, settings.reportUrl, root, options);
  if (!params) return params.status();
  params->urlKey = "store.report_url";
  params->maxBytes = 1 << 20;  // etcd's answers to a lease grant and a put are small
  auto client = makeEtcdClient(settings, settings.reportUrl, std::move(*params), root, std::move(log));
  if (!client) {
    std::string message = client.status().message();
    if (message.rfind("store.source", 0) == 0) message = "store.report_url" + message.substr(12);
    return Status::error(client.status().code(), message, client.status().path());
  }
  return client;
}

Result<std::unique_ptr<HttpStoreClient>> makeReportClient(const StoreSettings& settings, const std::string& root,
                                                          Logger log, const StoreClientOptions& options) {
  if (settings.reportUrl.empty()) return Status::error(ErrorCode::kInvalid, "store.report_url: not set");
  auto params = httpParams(settings, settings.reportUrl, root, options);
  if (!params) return params.status();
  params->urlKey = "store.report_url";
  return HttpStoreClient::create(std::move(*params), std::move(log));
}

}  // namespace pim
