// CRC-32C (Castagnoli), the checksum of dataset chunks, shards and checkpoint blobs.
// Uses the SSE4.2 crc32 instruction when the CPU has it (~10 GB/s), else a table (~1 GB/s).
// Same polynomial and convention as Ceph's, iSCSI's and ext4's crc32c ("123456789" -> e3069283).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace gantry::storage {

// Continues a running checksum: Crc32c(b, Crc32c(a)) == Crc32c(a ++ b). Start with 0.
uint32_t Crc32c(std::span<const std::byte> data, uint32_t crc = 0);
inline uint32_t Crc32c(std::string_view s, uint32_t crc = 0) {
  return Crc32c(std::as_bytes(std::span<const char>(s.data(), s.size())), crc);
}

// 8 lowercase hex digits, the form stored in index and manifest JSON.
std::string Crc32cHex(uint32_t crc);

}  // namespace gantry::storage
