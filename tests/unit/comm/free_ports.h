// FreePortPair: ports for tests that need MASTER_PORT and MASTER_PORT+1 (the TCP store's port
// under torchrun's agent store) free on 127.0.0.1. Used by unit and integration tests.
#pragma once

#include "comm/tcp/socket.h"

namespace gantry::comm::testing {

// An unused TCP port P on 127.0.0.1 with P+1 unused too (bound, read, released); 0 if none.
inline int FreePortPair() {
  for (int attempt = 0; attempt < 50; ++attempt) {
    auto a = Listen("127.0.0.1", 0);
    if (!a.ok()) continue;
    const int p = BoundPort(*a);
    if (p < 65535 && Listen("", p + 1).ok()) return p;
  }
  return 0;
}

}  // namespace gantry::comm::testing
