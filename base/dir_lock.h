// One process per directory: an exclusive flock on <dir>/<name>, held while the returned file
// descriptor is open (for the process's life: the kernel drops it when the process ends, even
// on SIGKILL), with the holder's pid written into it for the error a second process gets.
#pragma once

#include <string>

#include "base/status.h"

namespace gantry {

// kFailedPrecondition "<what> <dir> is in use by another <holder> (pid N)..." when held.
StatusOr<int> LockDirectory(const std::string& dir, const std::string& name,
                            const std::string& what, const std::string& holder);

}  // namespace gantry
