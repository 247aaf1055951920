#include "agent/store/store_proxy.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <vector>

#include "agent/config/config.h"

namespace pim {
namespace {

// libcurl's curl_getenv(): an empty value is no value.
std::optional<std::string> nonEmpty(const EnvironmentReader& environment, const std::string& name) {
  auto value = environment(name);
  if (value && value->empty()) return std::nullopt;
  return value;
}

}  // namespace

std::string StoreProxy::describe() const {
  if (url.empty()) return "direct";
  const auto sep = url.find("://");
  if (sep == std::string::npos) return "(malformed proxy URL)";
  std::string scheme = url.substr(0, sep);
  std::transform(scheme.begin(), scheme.end(), scheme.begin(), [](unsigned char c) { return std::tolower(c); });
  std::string authority = url.substr(sep + 3);
  authority = authority.substr(0, authority.find('/'));
  const auto at = authority.rfind('@');
  if (at != std::string::npos) authority = authority.substr(at + 1);
  return scheme + "://" + authority;
}

EnvironmentReader processEnvironment() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  };
}

Result<StoreProxy> chooseStoreProxy(const std::string& configured, const std::string& scheme,
                                    const EnvironmentReader& environment) {
  StoreProxy proxy;
  if (configured == "none") {
    proxy.origin = "store.proxy";
    return proxy;
  }
  if (!configured.empty()) {
    proxy.url = configured;
    proxy.origin = "store.proxy";
    return proxy;
  }
  std::vector<std::string> names;
  names.push_back(scheme + "_proxy");
  if (scheme != "http") {
    std::string upper = names.back();
    std::transform(upper.begin(), upper.end(), upper.begin(), [](unsigned char c) { return std::toupper(c); });
    names.push_back(upper);
  }
  names.push_back("all_proxy");
  names.push_back("ALL_PROXY");
  for (const auto& name : names) {
    auto value = nonEmpty(environment, name);
    if (!value) continue;
    // libcurl takes "proxy.example:3128" as an http:// proxy; such values are common.
    if (value->find("://") == std::string::npos) value = "http://" + *value;
    Status s = checkProxyUrl(*value);
    if (!s) return Status::error(ErrorCode::kInvalid, "environment variable " + name + ": " + s.message());
    proxy.url = *value;
    proxy.origin = name;
    break;
  }
  if (proxy.url.empty()) return proxy;
  for (const char* name : {"no_proxy", "NO_PROXY"}) {
    auto value = nonEmpty(environment, name);
    if (!value) continue;
    proxy.noProxy = *value;
    break;
  }
  return proxy;
}

}  // namespace pim
