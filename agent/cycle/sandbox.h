#pragma once
// A bare --root sandbox (tests, demos) has no account files; the shadow tools need them. This
// creates minimal ones (root only) below the root prefix, never on the real system.

#include "providers/host/host.h"

namespace pim {

/// With a non-empty root: creates <root>/etc/{passwd,group,shadow,gshadow} holding only root,
/// and <root>/home, when missing. With the real system (empty root): does nothing.
Status prepareSandbox(Host& host);

}  // namespace pim
