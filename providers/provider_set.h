#pragma once
// The providers and the order they run in. makeProviders() in provider_set.cpp is the one place
// where that order is written down; everything else (the reconciler, the cycle, failpoints, the
// README) refers here.

#include <memory>
#include <vector>

#include "providers/core/ledger.h"
#include "providers/provider.h"

namespace pim {

/// Builds every provider bound to `ledger`, each with its own named logger.
std::vector<std::unique_ptr<Provider>> makeProviders(Ledger& ledger);

}  // namespace pim
