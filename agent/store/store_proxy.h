#pragma once
// Which proxy the http(s) store client goes through, decided once when the client is made, from
// `store.proxy` or, when it is empty, from the environment by libcurl 7.88's own rules (so that
// the `curl` command run with the same environment goes the same way):
//   - https:// sources: https_proxy, else HTTPS_PROXY, else all_proxy, else ALL_PROXY;
//   - http:// sources:  http_proxy, else all_proxy, else ALL_PROXY (upper-case HTTP_PROXY is
//     ignored, as libcurl and most HTTP clients do: in CGI programs it can be set by a request's
//     "Proxy:" header, "httpoxy");
//   - a variable set to the empty string counts as unset; a value without a scheme
//     ("proxy.example:3128") is an http:// proxy;
//   - hosts in no_proxy (else NO_PROXY) go direct: a comma-separated list of host names (matching
//     the name and its subdomains), IP addresses or CIDR ranges, or "*" for every host.
// `store.proxy = none` goes direct whatever the environment says; a URL in `store.proxy` is used
// for the store in any case (the environment's NO_PROXY does not apply to it).

#include <functional>
#include <optional>
#include <string>

#include "providers/core/result.h"

namespace pim {

/// The proxy decision handed to libcurl (CURLOPT_PROXY and CURLOPT_NOPROXY, both always set, so
/// that libcurl never reads the environment itself).
struct StoreProxy {
  std::string url;      // the proxy URL, credentials included; "" : direct
  std::string noProxy;  // hosts that go direct (the NO_PROXY syntax above); "" : none
  std::string origin;   // where the choice came from: "store.proxy", "https_proxy", "HTTPS_PROXY", ...; "" : default
  /// scheme://host[:port] of the proxy for logs and messages, never its credentials ("direct"
  /// when there is none).
  std::string describe() const;
};

/// Reads one environment variable: its value, or nullopt when unset.
using EnvironmentReader = std::function<std::optional<std::string>(const std::string& name)>;

/// The process's environment (getenv).
EnvironmentReader processEnvironment();

/// The proxy for a store URL of `scheme` ("http" or "https"): `configured` is store.proxy ("",
/// "none" or a URL already checked by the config). Errors: kInvalid when the proxy variable the
/// rules pick holds no valid proxy URL (checkProxyUrl); the message names the variable, never its
/// value.
Result<StoreProxy> chooseStoreProxy(const std::string& configured, const std::string& scheme,
                                    const EnvironmentReader& environment);

}  // namespace pim
