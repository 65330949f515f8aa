// The .npy header (NumPy's array file format, versions 1-3): one parser for every reader, so a
// damaged or hostile header is an error naming the file, never an exception, an overflowed
// size or a read past the data.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"

namespace gantry {

struct NpyHeader {
  char kind = 0;      // 'u' unsigned int, 'i' signed int, 'f' float, 'b' bool
  int item = 0;       // bytes per element: 1, 2, 4 or 8
  std::string descr;  // little-endian form, e.g. "<f4" (also for '|u1' and '=i8')
  std::vector<int64_t> shape;
  uint64_t data_offset = 0;  // where the elements start in the file
  uint64_t elements = 0;     // product of `shape`
  uint64_t data_bytes = 0;   // elements * item
};

// Bytes the preamble plus header take, from the file's first bytes (`first`, at least 12 or the
// whole file): InvalidArgument for a file that is not .npy.
StatusOr<uint64_t> NpyHeaderEnd(std::span<const uint8_t> first, const std::string& path);

// Parses the header; `head` holds the file's first NpyHeaderEnd() bytes and `file_size` is the
// whole file's. Checks the dtype (little-endian or byte order not applicable), C order, every
// dimension, that the sizes do not overflow, and that the file holds all the elements
// (DataLoss when it is shorter).
StatusOr<NpyHeader> ParseNpyHeader(std::span<const uint8_t> head, uint64_t file_size,
                                   const std::string& path);

// Opens `path` and parses its header.
StatusOr<NpyHeader> ReadNpyHeader(const std::string& path);

}  // namespace gantry
