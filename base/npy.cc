// .npy header parsing: the header is a Python dict literal,
// {'descr': '<f4', 'fortran_order': False, 'shape': (N, 28, 28), }, padded with spaces.
#include "base/npy.h"

#include <charconv>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

namespace gantry {

namespace {

constexpr uint64_t kMaxHeaderBytes = 1u << 20;  // NumPy writes well under 64 KiB

// The text after `'key':` (spaces skipped), or npos when the key is missing.
size_t ValueOf(const std::string& h, const char* key) {
  const size_t k = h.find(std::string("'") + key + "'");
  if (k == std::string::npos) return std::string::npos;
  size_t v = h.find(':', k);
  if (v == std::string::npos) return std::string::npos;
  v = h.find_first_not_of(' ', v + 1);
  return v;
}

}  // namespace

StatusOr<uint64_t> NpyHeaderEnd(std::span<const uint8_t> first, const std::string& path) {
  if (first.size() < 10 || std::memcmp(first.data(), "\x93NUMPY", 6) != 0)
    return InvalidArgumentError(path + " is not a .npy file (bad magic)");
  const int major = first[6];
  if (major < 1 || major > 3)
    return InvalidArgumentError(path + ": .npy format version " + std::to_string(major) +
                                " is not supported (1, 2 or 3)");
  if (major == 1) return 10 + (uint64_t{first[8]} | uint64_t{first[9]} << 8);
  if (first.size() < 12) return InvalidArgumentError(path + ": truncated .npy header");
  const uint64_t len = uint64_t{first[8]} | uint64_t{first[9]} << 8 |
                       uint64_t{first[10]} << 16 | uint64_t{first[11]} << 24;
  if (len > kMaxHeaderBytes)
    return InvalidArgumentError(path + ": .npy header claims " + std::to_string(len) +
                                " bytes; the file is damaged");
  return 12 + len;
}

StatusOr<NpyHeader> ParseNpyHeader(std::span<const uint8_t> head, uint64_t file_size,
                                   const std::string& path) {
  GANTRY_ASSIGN_OR_RETURN(const uint64_t end, NpyHeaderEnd(head, path));
  if (end > head.size() || end > file_size)
    return InvalidArgumentError(path + ": truncated .npy header");
  const size_t start = head[6] == 1 ? 10 : 12;
  const std::string h(reinterpret_cast<const char*>(head.data()) + start, end - start);
  NpyHeader out;
  out.data_offset = end;

  size_t v = ValueOf(h, "descr");
  const size_t close = v == std::string::npos ? v : h.find('\'', v + 1);
  if (v == std::string::npos || h[v] != '\'' || close == std::string::npos || close - v < 4)
    return InvalidArgumentError(path + ": no dtype ('descr') in the .npy header");
  const std::string descr = h.substr(v + 1, close - v - 1);
  const char order = descr[0], kind = descr[1];
  int item = 0;
  const auto [ptr, ec] = std::from_chars(descr.data() + 2, descr.data() + descr.size(), item);
  const bool sized = ec == std::errc() && ptr == descr.data() + descr.size() &&
                     (item == 1 || item == 2 || item == 4 || item == 8);
  const bool byte_order = order == '<' || order == '=' || (order == '|' && item == 1);
  if (!sized || !byte_order || std::strchr("uifb", kind) == nullptr || (kind == 'f' && item < 2))
    return InvalidArgumentError(path + ": .npy dtype '" + descr +
                                "' is not supported (need a little-endian int, uint, float or "
                                "bool of 1, 2, 4 or 8 bytes)");
  out.kind = kind;
  out.item = item;
  out.descr = std::string("<") + kind + std::to_string(item);

  v = ValueOf(h, "fortran_order");
  if (v == std::string::npos || (h.compare(v, 5, "False") != 0 && h.compare(v, 4, "True") != 0))
    return InvalidArgumentError(path + ": no 'fortran_order' in the .npy header");
  if (h.compare(v, 4, "True") == 0)
    return InvalidArgumentError(path + " is Fortran-ordered; save it in C order "
                                "(np.ascontiguousarray)");

  v = ValueOf(h, "shape");
  const size_t shut = v == std::string::npos ? v : h.find(')', v);
  if (v == std::string::npos || h[v] != '(' || shut == std::string::npos)
    return InvalidArgumentError(path + ": no shape tuple in the .npy header");
  uint64_t elements = 1;
  const uint64_t limit = (uint64_t{1} << 62) / static_cast<uint64_t>(item);
  for (size_t i = v + 1; i < shut;) {
    i = h.find_first_not_of(" ,", i);
    if (i >= shut) break;
    int64_t d = -1;
    const auto [p, e] = std::from_chars(h.data() + i, h.data() + shut, d);
    if (e != std::errc() || d < 0)
      return InvalidArgumentError(path + ": .npy shape '" + h.substr(v, shut - v + 1) +
                                  "' has a dimension that is not a non-negative integer");
    if (d != 0 && elements > limit / static_cast<uint64_t>(d))
      return InvalidArgumentError(path + ": .npy shape '" + h.substr(v, shut - v + 1) +
                                  "' is too large; the header is damaged");
    elements *= static_cast<uint64_t>(d);
    out.shape.push_back(d);
    i = static_cast<size_t>(p - h.data());
    if (i < shut && h[i] != ',' && h[i] != ' ')
      return InvalidArgumentError(path + ": .npy shape '" + h.substr(v, shut - v + 1) +
                                  "' is not a tuple of integers");
  }
  if (out.shape.empty()) return InvalidArgumentError(path + " holds a scalar, not an array");
  out.elements = elements;
  out.data_bytes = elements * static_cast<uint64_t>(item);
  if (file_size < out.data_offset || file_size - out.data_offset < out.data_bytes)
    return DataLossError(path + " is shorter than its header's shape says (" +
                         std::to_string(out.data_bytes) + " bytes of data after the header, " +
                         std::to_string(file_size - std::min(file_size, out.data_offset)) +
                         " in the file)");
  return out;
}

StatusOr<NpyHeader> ReadNpyHeader(const std::string& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), std::fclose);
  if (!f) return NotFoundError(".npy file " + path + " cannot be opened");
  std::error_code ec;
  const uint64_t size = std::filesystem::file_size(path, ec);
  if (ec) return ErrnoError("reading the size of " + path, ec.value());
  uint8_t first[12] = {0};
  const size_t got = std::fread(first, 1, sizeof(first), f.get());
  GANTRY_ASSIGN_OR_RETURN(const uint64_t end, NpyHeaderEnd({first, got}, path));
  if (end > size) return InvalidArgumentError(path + ": truncated .npy header");
  std::vector<uint8_t> head(end);
  std::rewind(f.get());
  if (std::fread(head.data(), 1, head.size(), f.get()) != head.size())
    return InvalidArgumentError(path + ": truncated .npy header");
  return ParseNpyHeader(head, size, path);
}

}  // namespace gantry
