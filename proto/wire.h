// The wire under proto/gantry.proto: one Envelope per ZeroMQ frame, a protocol version, a
// size limit, errors as Status, ZeroMQ error conversion, and CURVE key files.
// Stateless helpers; the ZeroMQ context is process-wide (thread-safe, created on first use).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "proto/gantry.pb.h"

namespace gantry::wire {

inline constexpr uint32_t kProtocolVersion = 1;
// Envelopes above this are refused with an error reply (GANTRY_MAX_MESSAGE_BYTES overrides).
inline constexpr size_t kDefaultMaxMessageBytes = 8u << 20;
// ZeroMQ drops the connection of a peer sending more than this (ZMQ_MAXMSGSIZE): a hard cap
// well above the application limit so ordinary oversize still gets an error reply.
inline constexpr int64_t kHardMaxMessageBytes = 64ll << 20;
inline constexpr int kDefaultCoordinatorPort = 7450;
size_t MaxMessageBytes();

// The process-wide ZeroMQ context.
void* Context();
// "what: zmq_strerror(errno) (errno N)" with the right code (EAGAIN -> kDeadlineExceeded).
Status ZmqError(const std::string& what);

std::string Encode(const proto::Envelope& env);
// Refuses oversized, unparsable and wrong-version frames with a message saying which.
StatusOr<proto::Envelope> Decode(const void* data, size_t size, size_t max_bytes);

// The request_id of a message Decode refused, read from its first bytes (0 if not there), so
// the error reply reaches the call that is waiting for it.
uint64_t PeekRequestId(const void* data, size_t size);

// Error reply for request `request_id`, and back.
proto::Envelope ErrorReply(uint64_t request_id, const Status& status);
Status StatusFromError(const proto::Error& error);
// Name of the body case ("submit_job"), for logs and errors.
std::string BodyName(const proto::Envelope& env);

// Sends one frame (optionally after a routing identity frame, for ROUTER sockets).
Status Send(void* socket, const std::string& bytes, const std::string* identity = nullptr,
            bool dont_wait = false);

// CURVE keys, Z85 text (40 characters). Key files hold one key on the first line.
struct CurveKeyPair {
  std::string public_key;
  std::string secret_key;
};
StatusOr<CurveKeyPair> GenerateCurveKeys();
bool CurveAvailable();
// Writes NAME.pub (0644) and NAME.key (0600) in `dir`.
Status WriteKeyPair(const std::string& dir, const std::string& name, const CurveKeyPair& keys);
StatusOr<std::string> ReadKeyFile(const std::string& path);
// Public keys allowed to connect: a directory of *.pub files, or a file with one key per line
// ('#' comments).
StatusOr<std::vector<std::string>> ReadAllowList(const std::string& path);

// True for tcp://127.x.y.z:port, tcp://localhost:port, ipc:// and inproc://.
bool IsLoopbackEndpoint(const std::string& endpoint);
// kInvalidArgument naming `what` unless `endpoint` is tcp://HOST:PORT (PORT 0..65535 or *),
// ipc://PATH or inproc://NAME. ZeroMQ takes tcp://h:99999 as port 34463 without a word.
Status CheckEndpoint(const std::string& endpoint, const std::string& what);
int64_t NowUnixMs();

}  // namespace gantry::wire
