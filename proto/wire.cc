// Envelope framing, ZeroMQ errors and CURVE key files (see proto/wire.h).
#include "proto/wire.h"

#include <algorithm>
#include <dirent.h>
#include <sys/stat.h>
#include <google/protobuf/io/coded_stream.h>
#include <zmq.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <sstream>

namespace gantry::wire {

size_t MaxMessageBytes() {
  static const size_t value = [] {
    const char* env = std::getenv("GANTRY_MAX_MESSAGE_BYTES");
    if (env && *env) {
      const long long v = std::atoll(env);
      if (v > 0 && v < kHardMaxMessageBytes) return static_cast<size_t>(v);
    }
    return kDefaultMaxMessageBytes;
  }();
  return value;
}

void* Context() {
  static void* ctx = [] {
    void* c = zmq_ctx_new();
    zmq_ctx_set(c, ZMQ_BLOCKY, 0);  // sockets default to linger 0: exit never hangs
    return c;
  }();
  return ctx;
}

Status ZmqError(const std::string& what) {
  const int err = zmq_errno();
  std::string msg = what + ": " + zmq_strerror(err) + " (errno " + std::to_string(err) + ")";
  if (err == EAGAIN) return DeadlineExceededError(msg);
  if (err == ETERM || err == EHOSTUNREACH) return UnavailableError(msg);
  if (err == EINVAL || err == EPROTONOSUPPORT || err == EADDRINUSE || err == EADDRNOTAVAIL)
    return InvalidArgumentError(msg);
  return Status(StatusCode::kSystemError, msg);
}

std::string Encode(const proto::Envelope& env) {
  std::string out;
  env.SerializeToString(&out);
  return out;
}

StatusOr<proto::Envelope> Decode(const void* data, size_t size, size_t max_bytes) {
  if (size > max_bytes) {
    return ResourceExhaustedError("message of " + std::to_string(size) +
                                  " bytes exceeds the limit of " + std::to_string(max_bytes) +
                                  " bytes (GANTRY_MAX_MESSAGE_BYTES)");
  }
  proto::Envelope env;
  if (!env.ParseFromArray(data, static_cast<int>(size))) {
    return InvalidArgumentError("malformed message: " + std::to_string(size) +
                                " bytes that do not parse as a gantry.proto.Envelope");
  }
  if (env.version() != kProtocolVersion) {
    return FailedPreconditionError("protocol version " + std::to_string(env.version()) +
                                   " is not supported (this build speaks " +
                                   std::to_string(kProtocolVersion) +
                                   "); use gantry binaries of the same release");
  }
  if (env.body_case() == proto::Envelope::BODY_NOT_SET) {
    return InvalidArgumentError("message " + std::to_string(env.request_id()) + " has no body");
  }
  return env;
}

uint64_t PeekRequestId(const void* data, size_t size) {
  // Envelope fields 1 (version) and 2 (request_id) are varints, serialised first; a refused
  // message (too big, another version, damaged further on) still has them in its first bytes.
  google::protobuf::io::CodedInputStream in(static_cast<const uint8_t*>(data),
                                            static_cast<int>(std::min<size_t>(size, 64)));
  for (int fields = 0; fields < 4; ++fields) {
    const uint32_t tag = in.ReadTag();
    if (tag == 0) return 0;
    const int field = static_cast<int>(tag >> 3), wire_type = static_cast<int>(tag & 7);
    uint64_t value = 0;
    if (wire_type != 0 || !in.ReadVarint64(&value)) return 0;
    if (field == 2) return value;
  }
  return 0;
}

proto::Envelope ErrorReply(uint64_t request_id, const Status& status) {
  proto::Envelope env;
  env.set_version(kProtocolVersion);
  env.set_request_id(request_id);
  env.mutable_error()->set_code(static_cast<int32_t>(status.code()));
  env.mutable_error()->set_message(status.message());
  return env;
}

Status StatusFromError(const proto::Error& error) {
  int code = error.code();
  if (code <= 0 || code > static_cast<int>(StatusCode::kDeviceError)) {
    code = static_cast<int>(StatusCode::kRemoteError);
  }
  return Status(static_cast<StatusCode>(code), error.message());
}

std::string BodyName(const proto::Envelope& env) {
  const auto* field = proto::Envelope::descriptor()->FindFieldByNumber(env.body_case());
  return field ? field->name() : "none";
}

Status Send(void* socket, const std::string& bytes, const std::string* identity, bool dont_wait) {
  const int flags = dont_wait ? ZMQ_DONTWAIT : 0;
  if (identity && zmq_send(socket, identity->data(), identity->size(), flags | ZMQ_SNDMORE) < 0)
    return ZmqError("sending the routing frame");
  if (zmq_send(socket, bytes.data(), bytes.size(), flags) < 0)
    return ZmqError("sending a " + std::to_string(bytes.size()) + "-byte message");
  return OkStatus();
}

bool CurveAvailable() { return zmq_has("curve") != 0; }

StatusOr<CurveKeyPair> GenerateCurveKeys() {
  if (!CurveAvailable())
    return UnimplementedError(
        "this libzmq was built without CURVE (libsodium); install libzmq5 "
        "from Debian, which has it");
  char pub[41] = {0}, sec[41] = {0};
  if (zmq_curve_keypair(pub, sec) != 0) return ZmqError("zmq_curve_keypair");
  return CurveKeyPair{pub, sec};
}

Status WriteKeyPair(const std::string& dir, const std::string& name, const CurveKeyPair& keys) {
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    return ErrnoError("creating key directory " + dir, errno);
  const std::string pub = dir + "/" + name + ".pub", sec = dir + "/" + name + ".key";
  {
    std::ofstream out(pub, std::ios::trunc);
    out << keys.public_key << "\n";
    if (!out) return ErrnoError("writing " + pub, errno);
  }
  {
    std::ofstream out(sec, std::ios::trunc);
    out << keys.secret_key << "\n";
    if (!out) return ErrnoError("writing " + sec, errno);
  }
  if (chmod(sec.c_str(), 0600) != 0) return ErrnoError("chmod 0600 " + sec, errno);
  return OkStatus();
}

StatusOr<std::string> ReadKeyFile(const std::string& path) {
  std::ifstream in(path);
  if (!in)
    return NotFoundError("cannot read key file " + path + ": create one with `gantry keys gen`");
  std::string key;
  std::getline(in, key);
  while (!key.empty() && (key.back() == '\r' || key.back() == ' ')) key.pop_back();
  if (key.size() != 40)
    return InvalidArgumentError("key file " + path + " must hold one 40-character Z85 key; got " +
                                std::to_string(key.size()) + " characters");
  return key;
}

StatusOr<std::vector<std::string>> ReadAllowList(const std::string& path) {
  std::vector<std::string> keys;
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return ErrnoError("reading allow-list " + path, errno);
  if (S_ISDIR(st.st_mode)) {
    DIR* d = opendir(path.c_str());
    if (!d) return ErrnoError("opening allow-list directory " + path, errno);
    while (dirent* e = readdir(d)) {
      std::string n = e->d_name;
      if (n.size() > 4 && n.substr(n.size() - 4) == ".pub") {
        auto key = ReadKeyFile(path + "/" + n);
        if (!key.ok()) {
          closedir(d);
          return key.status();
        }
        keys.push_back(*key);
      }
    }
    closedir(d);
    return keys;
  }
  std::ifstream in(path);
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    const size_t b = line.find_first_not_of(" \t");
    if (b == std::string::npos || line[b] == '#') continue;
    std::string key = line.substr(b, 40);
    if (key.size() != 40)
      return InvalidArgumentError(path + ":" + std::to_string(lineno) +
                                  ": expected a 40-character Z85 public key");
    keys.push_back(key);
  }
  return keys;
}

bool IsLoopbackEndpoint(const std::string& endpoint) {
  if (endpoint.rfind("ipc://", 0) == 0 || endpoint.rfind("inproc://", 0) == 0) return true;
  if (endpoint.rfind("tcp://", 0) != 0) return false;
  const std::string host = endpoint.substr(6, endpoint.rfind(':') - 6);
  return host.rfind("127.", 0) == 0 || host == "localhost" || host == "[::1]";
}

Status CheckEndpoint(const std::string& endpoint, const std::string& what) {
  if (endpoint.rfind("ipc://", 0) == 0 || endpoint.rfind("inproc://", 0) == 0) return OkStatus();
  const size_t colon = endpoint.rfind(':');
  if (endpoint.rfind("tcp://", 0) != 0 || colon == std::string::npos || colon < 6) {
    return InvalidArgumentError(what + " '" + endpoint +
                                "': expected tcp://HOST:PORT (or ipc://PATH)");
  }
  const std::string port = endpoint.substr(colon + 1);
  if (port == "*") return OkStatus();
  const bool digits = !port.empty() && port.size() <= 5 &&
                      std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (!digits || std::stoi(port) > 65535) {
    return InvalidArgumentError(what + " '" + endpoint + "': port '" + port +
                                "' is not a number in 0..65535 (or *)");
  }
  return OkStatus();
}

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace gantry::wire
