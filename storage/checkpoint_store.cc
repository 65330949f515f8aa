// CheckpointStore: data first, manifest last, compare-and-put of `latest`, keep-last-N, and
// verified loads that fall back to the previous committed checkpoint.
#include "storage/checkpoint_store.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>

#include "base/logging.h"
#include "storage/checksum.h"

namespace gantry::storage {
namespace {

using Json = nlohmann::ordered_json;  // keys in insertion order: bytes depend on content only
constexpr char kFormat[] = "gantry-checkpoint-store";
constexpr int kFormatVersion = 1;
constexpr char kDirPrefix[] = "ckpt-";
// Earlier checkpoints of a step that was saved again: replaced/ckpt-NNNNNN.K/ (never pruned).
constexpr char kReplacedPrefix[] = "replaced/";
constexpr int64_t kMaxStep = 999999999999;

// One row of the manifest's blob table.
struct BlobEntry {
  std::string name;
  uint64_t bytes = 0;
  std::optional<uint32_t> crc32c;  // nullopt: the caller checksums this blob
};

bool ValidBlobName(std::string_view n) {
  return !n.empty() && n.size() <= 200 && n != kCheckpointManifestName &&
         std::all_of(n.begin(), n.end(), [](char c) {
           return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
         });
}

// The step of a key "ckpt-000200/..." (canonical names only).
std::optional<int64_t> StepOfKey(std::string_view key) {
  return CheckpointStore::StepOf(key.substr(0, key.find('/')));
}

// Errors that mean "this checkpoint is damaged or incomplete" (skip it for the previous one).
// Anything else (the store is unwell or misconfigured, a manifest of another format version)
// stops the load: falling back would silently throw away the newer checkpoint's progress.
bool IsCheckpointFault(const Status& s) {
  return s.code() == StatusCode::kNotFound || s.code() == StatusCode::kDataLoss;
}

// Parses a manifest: metadata (compact JSON) and the blob table, checked against `step`.
Status ParseManifest(const std::string& text, int64_t step, const std::string& where,
                     std::string* metadata, std::vector<BlobEntry>* blobs) {
  Json m = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (m.is_discarded()) return DataLossError("checkpoint " + where + ": manifest.json is not JSON");
  try {
    if (!m.is_object() || m.value("format", "") != kFormat) {
      return DataLossError("checkpoint " + where + ": manifest.json is not a " + kFormat +
                           " manifest (damaged, or written by another program)");
    }
    if (m.at("version").get<int>() != kFormatVersion) {
      return FailedPreconditionError(
          "checkpoint " + where + ": manifest version " + m.at("version").dump() +
          " is not supported (this build reads version " + std::to_string(kFormatVersion) +
          "); resume with the Gantry that wrote it, or use another checkpoint directory");
    }
    if (m.at("step").get<int64_t>() != step) {
      return DataLossError("checkpoint " + where + ": manifest says step " + m.at("step").dump() +
                           "; the checkpoint is damaged");
    }
    const Json& md = m.at("metadata");
    *metadata = md.is_null() ? std::string() : md.dump();
    // The metadata (step, data position, RNG, settings) has its own checksum: a flipped bit
    // there is as damaging as one in a tensor. Manifests written before it existed have none.
    if (m.contains("metadata_crc32c")) {
      const std::string want = m.at("metadata_crc32c").get<std::string>();
      const std::string got = Crc32cHex(Crc32c(*metadata));
      if (want != got) {
        return DataLossError("checkpoint " + where + ": the manifest's metadata fails its crc32c "
                             "check (manifest " + want + ", metadata " + got +
                             "): the manifest is damaged");
      }
    }
    for (const Json& b : m.at("blobs")) {
      BlobEntry e{b.at("name").get<std::string>(), b.at("bytes").get<uint64_t>(), std::nullopt};
      if (b.contains("crc32c")) {
        e.crc32c = uint32_t(std::stoul(b.at("crc32c").get<std::string>(), nullptr, 16));
      } else if (b.value("checksum", "") != "caller") {
        return DataLossError("checkpoint " + where + ": blob '" + e.name + "' has no checksum");
      }
      if (!ValidBlobName(e.name)) return DataLossError("checkpoint " + where + ": bad blob name");
      blobs->push_back(std::move(e));
    }
  } catch (const std::exception& e) {
    return DataLossError("checkpoint " + where + ": malformed manifest.json: " + e.what());
  }
  return OkStatus();
}

}  // namespace

std::string CheckpointStore::DirName(int64_t step) {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%s%06lld", kDirPrefix, static_cast<long long>(step));
  return buf;
}

std::optional<int64_t> CheckpointStore::StepOf(std::string_view name) {
  const std::string_view digits = name.substr(std::min(name.size(), sizeof(kDirPrefix) - 1));
  if (!name.starts_with(kDirPrefix) || digits.empty() || digits.size() > 12) return std::nullopt;
  int64_t v = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + (c - '0');
  }
  if (DirName(v) != name) return std::nullopt;  // "ckpt-0000200" is not step 200's name
  return v;
}

StatusOr<std::unique_ptr<CheckpointStore>> CheckpointStore::Open(std::string_view uri,
                                                                 CheckpointStoreOptions options) {
  GANTRY_ASSIGN_OR_RETURN(auto store, OpenObjectStore(uri));
  return std::make_unique<CheckpointStore>(std::shared_ptr<ObjectStore>(std::move(store)), options);
}

CheckpointStore::CheckpointStore(std::shared_ptr<ObjectStore> store, CheckpointStoreOptions options)
    : store_(std::move(store)), options_(options) {}

Status CheckpointStore::Save(int64_t step, const std::vector<CheckpointBlob>& blobs,
                             std::string_view metadata) {
  if (step < 0 || step > kMaxStep) {
    return InvalidArgumentError("checkpoint step " + std::to_string(step) + " is outside 0.." +
                                std::to_string(kMaxStep));
  }
  Json manifest{{"format", kFormat}, {"version", kFormatVersion}, {"step", step},
                {"blobs", Json::array()}, {"metadata", nullptr}};
  if (!metadata.empty()) {
    manifest["metadata"] = Json::parse(metadata, nullptr, /*allow_exceptions=*/false);
    if (manifest["metadata"].is_discarded()) {
      return InvalidArgumentError("checkpoint step " + std::to_string(step) +
                                  ": metadata is not a JSON document");
    }
  }
  manifest["metadata_crc32c"] =
      Crc32cHex(Crc32c(manifest["metadata"].is_null() ? std::string()
                                                      : manifest["metadata"].dump()));
  std::set<std::string> names;
  for (const auto& b : blobs) {
    if (!ValidBlobName(b.name) || !names.insert(b.name).second) {
      return InvalidArgumentError("checkpoint blob name '" + b.name + "' is empty, repeated, "
                                  "'manifest.json' or has characters outside [A-Za-z0-9._-]");
    }
  }
  const std::string dir = DirName(step), manifest_key = dir + "/" + kCheckpointManifestName;
  const std::string context = "checkpoint " + Describe() + "/" + dir;
  // An earlier committed checkpoint of this step (one refused as corrupt, which training then
  // passed again) is moved aside, never overwritten: its bytes may be all that explains why.
  GANTRY_ASSIGN_OR_RETURN(bool exists, store_->Exists(manifest_key));
  if (exists) GANTRY_RETURN_IF_ERROR(KeepAside(step).Prepend(context));
  for (const auto& b : blobs) {
    GANTRY_RETURN_IF_ERROR(store_->Put(dir + "/" + b.name, b.data).Prepend(context));
    Json row{{"name", b.name}, {"bytes", b.data.size()}};
    if (b.caller_checksums) {
      row["checksum"] = "caller";
    } else {
      row["crc32c"] = Crc32cHex(Crc32c(b.data));
    }
    manifest["blobs"].push_back(std::move(row));
  }
  GANTRY_RETURN_IF_ERROR(store_->Put(manifest_key, manifest.dump(2) + "\n").Prepend(context));
  GANTRY_RETURN_IF_ERROR(Commit(step).Prepend(context + " commit"));
  return Prune(step);
}

Status CheckpointStore::KeepAside(int64_t step) {
  const std::string dir = DirName(step);
  GANTRY_ASSIGN_OR_RETURN(auto keys, store_->List(dir + "/"));
  GANTRY_ASSIGN_OR_RETURN(auto taken, store_->List(std::string(kReplacedPrefix) + dir + "."));
  auto used = [&](int k) {
    const std::string prefix = std::string(kReplacedPrefix) + dir + "." + std::to_string(k) + "/";
    return std::any_of(taken.begin(), taken.end(),
                       [&](const std::string& key) { return key.starts_with(prefix); });
  };
  int n = 1;
  while (used(n)) ++n;
  const std::string to = std::string(kReplacedPrefix) + dir + "." + std::to_string(n);
  // Manifest last in the copy and first in the removal: the copy is complete once it has
  // one, and the original stops being a checkpoint before any of its data goes.
  std::stable_partition(keys.begin(), keys.end(), [](const std::string& k) {
    return !k.ends_with(kCheckpointManifestName);
  });
  for (const std::string& k : keys) {
    GANTRY_ASSIGN_OR_RETURN(std::string bytes, store_->GetAll(k));
    GANTRY_RETURN_IF_ERROR(store_->Put(to + k.substr(dir.size()), std::as_bytes(std::span(bytes))));
  }
  std::reverse(keys.begin(), keys.end());
  for (const std::string& k : keys) {
    Status st = store_->Remove(k);
    if (!st.ok() && st.code() != StatusCode::kNotFound) return st;
  }
  GANTRY_LOG(WARNING, "an earlier checkpoint of this step was moved aside, not overwritten")
      .Field("store", Describe())
      .Field("checkpoint", dir)
      .Field("moved_to", to)
      .Field("objects", int64_t(keys.size()));
  return OkStatus();
}

// Moves `latest` from what we saw to `step`, unless someone moved it meanwhile (Aborted).
Status CheckpointStore::Commit(int64_t step) {
  auto current = store_->GetAll(kCheckpointLatestKey);
  if (!current.ok() && current.status().code() != StatusCode::kNotFound) return current.status();
  std::optional<std::string_view> expected;
  if (current.ok()) expected = *current;
  return store_->CompareAndPut(kCheckpointLatestKey, expected, DirName(step) + "\n");
}

Status CheckpointStore::Prune(int64_t committed_step) {
  GANTRY_ASSIGN_OR_RETURN(auto keys, store_->List(kDirPrefix));
  std::map<int64_t, std::vector<std::string>> by_step;
  std::set<int64_t> committed;
  for (auto& k : keys) {
    auto step = StepOfKey(k);
    if (!step) continue;
    if (k == DirName(*step) + "/" + kCheckpointManifestName) committed.insert(*step);
    by_step[*step].push_back(k);
  }
  // The keep_last newest checkpoints up to this commit. Newer directories are left alone and
  // not counted: another writer in progress, or newer checkpoints that a resume refused
  // (corrupt; `latest` moved back past them). Counting those deleted the valid checkpoints
  // this one is the only successor of.
  std::vector<int64_t> keep;
  for (auto it = committed.rbegin(); it != committed.rend(); ++it) {
    if (*it <= committed_step) keep.push_back(*it);
  }
  if (options_.keep_last > 0 && keep.size() > size_t(options_.keep_last)) {
    keep.resize(options_.keep_last);
  }
  keep.push_back(committed_step);
  for (auto& [step, step_keys] : by_step) {
    const bool kept = std::find(keep.begin(), keep.end(), step) != keep.end();
    if (kept || step > committed_step) continue;
    // Manifest first: a half-deleted checkpoint is then "incomplete", never "corrupt".
    std::stable_partition(step_keys.begin(), step_keys.end(), [](const std::string& k) {
      return k.ends_with(kCheckpointManifestName);
    });
    for (auto& k : step_keys) {
      Status st = store_->Remove(k);
      if (!st.ok() && st.code() != StatusCode::kNotFound) return st.Prepend("prune old checkpoint");
    }
  }
  return OkStatus();
}

StatusOr<Checkpoint> CheckpointStore::Load(int64_t step, const CheckpointCheck& check) {
  const std::string dir = DirName(step), where = Describe() + "/" + dir;
  auto text = store_->GetAll(dir + "/" + kCheckpointManifestName);
  if (!text.ok() && text.status().code() == StatusCode::kNotFound) {
    return NotFoundError("checkpoint " + where + " has no manifest.json (not committed)");
  }
  if (!text.ok()) return text.status();
  Checkpoint ckpt;
  ckpt.step = step;
  std::vector<BlobEntry> entries;
  GANTRY_RETURN_IF_ERROR(ParseManifest(*text, step, where, &ckpt.metadata, &entries));
  const uint64_t piece = std::max<uint64_t>(1, options_.read_piece_bytes);
  for (const BlobEntry& e : entries) {
    const std::string key = dir + "/" + e.name;
    // The object's real size first: a manifest's size is not trusted with an allocation.
    auto size = store_->Size(key);
    if (!size.ok() && size.status().code() == StatusCode::kNotFound) {
      return DataLossError("checkpoint " + where + ": blob '" + e.name + "' is missing");
    }
    if (!size.ok()) return size.status();
    if (*size != e.bytes) {
      return DataLossError("checkpoint " + where + ": blob '" + e.name + "' is " +
                           std::to_string(*size) + " bytes, the manifest says " +
                           std::to_string(e.bytes) + " (truncated or replaced)");
    }
    std::string& data = ckpt.blobs[e.name];
    data.resize(e.bytes);
    auto bytes = std::as_writable_bytes(std::span(data));
    for (uint64_t off = 0; off < e.bytes; off += piece) {
      const uint64_t n = std::min(piece, e.bytes - off);
      auto got = store_->Get(key, off, bytes.subspan(off, n));
      if (!got.ok() && got.status().code() == StatusCode::kNotFound) {
        return DataLossError("checkpoint " + where + ": blob '" + e.name + "' is missing");
      }
      if (!got.ok()) return got.status();
      if (*got != n) {
        return DataLossError("checkpoint " + where + ": blob '" + e.name + "' ended at " +
                             std::to_string(off + *got) + " bytes while read, the manifest says " +
                             std::to_string(e.bytes) + " (replaced meanwhile?)");
      }
    }
    if (e.crc32c && Crc32c(data) != *e.crc32c) {
      return DataLossError("checkpoint " + where + ": blob '" + e.name + "' fails its CRC-32C " +
                           "check (manifest " + Crc32cHex(*e.crc32c) + ", data " +
                           Crc32cHex(Crc32c(data)) + "): the data is corrupt");
    }
  }
  if (check) GANTRY_RETURN_IF_ERROR(check(ckpt));
  return ckpt;
}

StatusOr<std::vector<int64_t>> CheckpointStore::ListCommitted() {
  GANTRY_ASSIGN_OR_RETURN(auto keys, store_->List(kDirPrefix));
  std::vector<int64_t> steps;
  for (auto& k : keys) {
    auto step = StepOfKey(k);
    if (step && k == DirName(*step) + "/" + kCheckpointManifestName) steps.push_back(*step);
  }
  std::sort(steps.begin(), steps.end());
  return steps;
}

StatusOr<std::optional<int64_t>> CheckpointStore::LatestStep() {
  auto text = store_->GetAll(kCheckpointLatestKey);
  if (!text.ok() && text.status().code() == StatusCode::kNotFound) return std::optional<int64_t>();
  if (!text.ok()) return text.status();
  std::string_view name(*text);
  if (name.ends_with('\n')) name.remove_suffix(1);
  auto step = StepOf(name);
  if (!step) {
    return DataLossError(Describe() + "/latest holds '" + text->substr(0, 64) +
                         "', not a checkpoint name (ckpt-NNNNNN)");
  }
  return std::optional<int64_t>(*step);
}

StatusOr<Checkpoint> CheckpointStore::LoadLatest(const CheckpointCheck& check) {
  auto latest = LatestStep();
  if (!latest.ok() && latest.status().code() != StatusCode::kDataLoss) return latest.status();
  if (!latest.ok()) {
    GANTRY_LOG(WARNING, "checkpoint pointer unreadable; scanning for committed checkpoints")
        .Field("store", Describe()).Field("error", latest.status());
  }
  GANTRY_ASSIGN_OR_RETURN(auto steps, ListCommitted());
  const std::optional<int64_t> head = latest.ok() ? *latest : std::nullopt;
  std::vector<int64_t> order;
  for (auto it = steps.rbegin(); it != steps.rend(); ++it) {
    if (!head || *it <= *head) order.push_back(*it);  // newer than `latest` = never committed
  }
  if (head && (order.empty() || order.front() != *head)) {
    GANTRY_LOG(WARNING, "latest names a checkpoint without manifest; using an older one")
        .Field("store", Describe()).Field("checkpoint", DirName(*head));
  }
  Status newest_error;
  for (int64_t step : order) {
    auto ckpt = Load(step, check);
    if (ckpt.ok()) return ckpt;
    if (!IsCheckpointFault(ckpt.status())) return ckpt.status();
    if (newest_error.ok()) newest_error = ckpt.status();
    GANTRY_LOG(WARNING, "checkpoint refused; falling back to the previous one")
        .Field("store", Describe()).Field("checkpoint", DirName(step))
        .Field("error", ckpt.status().message());
  }
  if (order.empty()) return NotFoundError("no committed checkpoint in " + Describe());
  return DataLossError("all " + std::to_string(order.size()) + " committed checkpoints in " +
                       Describe() + " failed their checks; newest error: " +
                       newest_error.message());
}

}  // namespace gantry::storage
