// CheckpointStore: data first, manifest last, compare-and-put of `latest`, keep-last-N.
#include "storage/checkpoint_store.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "base/logging.h"
#include "storage/checksum.h"

namespace gantry::storage {
namespace {

using nlohmann::json;
constexpr const char* kLatestKey = "latest";
constexpr const char* kManifestName = "manifest.json";

std::string StepDir(int64_t step) {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "step-%012lld", static_cast<long long>(step));
  return buf;
}

// "step-000000000200/..." -> 200; nullopt for other keys.
std::optional<int64_t> StepOfKey(std::string_view key) {
  if (!key.starts_with("step-") || key.size() < 17) return std::nullopt;
  int64_t v = 0;
  for (char c : key.substr(5, 12)) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + (c - '0');
  }
  return v;
}

bool ValidBlobName(std::string_view n) {
  return !n.empty() && n.size() <= 200 && std::all_of(n.begin(), n.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
  });
}

}  // namespace

StatusOr<std::unique_ptr<CheckpointStore>> CheckpointStore::Open(std::string_view uri,
                                                                 CheckpointStoreOptions options) {
  GANTRY_ASSIGN_OR_RETURN(auto store, OpenObjectStore(uri));
  return std::make_unique<CheckpointStore>(std::shared_ptr<ObjectStore>(std::move(store)), options);
}

CheckpointStore::CheckpointStore(std::shared_ptr<ObjectStore> store, CheckpointStoreOptions options)
    : store_(std::move(store)), options_(options) {
  options_.keep_last = std::max(1, options_.keep_last);
}

Status CheckpointStore::Save(int64_t step, const std::vector<CheckpointBlob>& blobs,
                             std::string_view metadata) {
  if (step < 0 || step > 999999999999) return InvalidArgumentError("checkpoint step " + std::to_string(step) + " is outside 0..999999999999");
  const std::string dir = StepDir(step);
  json manifest;
  manifest["format"] = "gantry-checkpoint";
  manifest["version"] = 1;
  manifest["step"] = step;
  manifest["metadata"] = std::string(metadata);
  manifest["blobs"] = json::array();
  std::set<std::string> names;
  for (const auto& b : blobs) {
    if (!ValidBlobName(b.name) || !names.insert(b.name).second) {
      return InvalidArgumentError("checkpoint blob name '" + b.name + "' is empty, repeated or has "
                                  "characters outside [A-Za-z0-9._-]");
    }
    const std::string key = dir + "/blob-" + b.name;
    GANTRY_RETURN_IF_ERROR(store_->Put(key, b.data).Prepend("checkpoint step " + std::to_string(step)));
    manifest["blobs"].push_back({{"name", b.name}, {"key", key}, {"bytes", b.data.size()},
                                 {"crc32c", Crc32cHex(Crc32c(b.data))}});
  }
  GANTRY_RETURN_IF_ERROR(store_->Put(dir + "/" + kManifestName, manifest.dump(1)));
  // Commit: move `latest` from what we saw to this step, unless someone moved it meanwhile.
  auto current = store_->GetAll(kLatestKey);
  if (!current.ok() && current.status().code() != StatusCode::kNotFound) return current.status();
  std::optional<std::string_view> expected;
  if (current.ok()) expected = *current;
  GANTRY_RETURN_IF_ERROR(store_->CompareAndPut(kLatestKey, expected, dir)
                             .Prepend("checkpoint step " + std::to_string(step) + " commit"));
  return Prune(step);
}

Status CheckpointStore::Prune(int64_t committed_step) {
  GANTRY_ASSIGN_OR_RETURN(auto keys, store_->List("step-"));
  std::map<int64_t, std::vector<std::string>> by_step;
  std::set<int64_t> committed;
  for (auto& k : keys) {
    auto step = StepOfKey(k);
    if (!step) continue;
    if (k.ends_with(std::string("/") + kManifestName)) committed.insert(*step);
    by_step[*step].push_back(k);
  }
  std::vector<int64_t> keep(committed.rbegin(), committed.rend());
  if (keep.size() > static_cast<size_t>(options_.keep_last)) keep.resize(options_.keep_last);
  keep.push_back(committed_step);
  for (auto& [step, step_keys] : by_step) {
    bool is_committed = committed.count(step) > 0;
    bool kept = std::find(keep.begin(), keep.end(), step) != keep.end();
    // Uncommitted dirs newer than this commit may be another writer in progress: leave them.
    if (kept || (!is_committed && step > committed_step)) continue;
    // Manifest first: a half-deleted checkpoint is then "incomplete", never "corrupt".
    std::sort(step_keys.begin(), step_keys.end(), [](const std::string& a, const std::string& b) {
      return a.ends_with(kManifestName) > b.ends_with(kManifestName);
    });
    for (auto& k : step_keys) {
      Status st = store_->Remove(k);
      if (!st.ok() && st.code() != StatusCode::kNotFound) return st.Prepend("prune old checkpoint");
    }
  }
  return OkStatus();
}

StatusOr<Checkpoint> CheckpointStore::Load(int64_t step) {
  const std::string dir = StepDir(step);
  const std::string where = store_->Describe() + "/" + dir;
  auto text = store_->GetAll(dir + "/" + kManifestName);
  if (!text.ok() && text.status().code() == StatusCode::kNotFound) {
    return NotFoundError("checkpoint " + where + " has no manifest (incomplete write)");
  }
  if (!text.ok()) return text.status();
  Checkpoint ckpt;
  ckpt.step = step;
  try {
    json m = json::parse(*text);
    if (m.value("format", "") != "gantry-checkpoint" || m.at("step").get<int64_t>() != step) {
      return DataLossError("checkpoint " + where + ": manifest is not a gantry checkpoint of this step");
    }
    ckpt.metadata = m.at("metadata").get<std::string>();
    for (const json& b : m.at("blobs")) {
      const std::string name = b.at("name"), key = b.at("key");
      const uint64_t bytes = b.at("bytes");
      auto& data = ckpt.blobs[name];
      data.resize(bytes + 1);  // one extra byte detects a longer object
      GANTRY_ASSIGN_OR_RETURN(uint64_t got, store_->Get(key, 0, data));
      data.resize(std::min(got, bytes));
      if (got != bytes || Crc32cHex(Crc32c(data)) != b.at("crc32c").get<std::string>()) {
        return DataLossError("checkpoint " + where + ": blob '" + name + "' (" + key + ") fails its "
                             "size/CRC-32C check (" + std::to_string(got) + " of " + std::to_string(bytes) + " bytes)");
      }
    }
  } catch (const json::exception& e) {
    return DataLossError("checkpoint " + where + ": manifest is not valid: " + e.what());
  }
  return ckpt;
}

StatusOr<std::vector<int64_t>> CheckpointStore::ListCommitted() {
  GANTRY_ASSIGN_OR_RETURN(auto keys, store_->List("step-"));
  std::vector<int64_t> steps;
  for (auto& k : keys) {
    auto step = StepOfKey(k);
    if (step && k == StepDir(*step) + "/" + kManifestName) steps.push_back(*step);
  }
  std::sort(steps.begin(), steps.end());
  return steps;
}

StatusOr<std::optional<int64_t>> CheckpointStore::LatestStep() {
  auto text = store_->GetAll(kLatestKey);
  if (!text.ok() && text.status().code() == StatusCode::kNotFound) return std::optional<int64_t>();
  if (!text.ok()) return text.status();
  auto step = StepOfKey(*text + "/");
  if (!step || *text != StepDir(*step)) {
    return DataLossError(store_->Describe() + "/latest holds '" + text->substr(0, 64) + "', not a step name");
  }
  return std::optional<int64_t>(*step);
}

StatusOr<Checkpoint> CheckpointStore::LoadLatest() {
  auto latest = LatestStep();
  if (!latest.ok()) {
    GANTRY_LOG(WARNING, "checkpoint pointer unreadable; scanning").Field("store", store_->Describe()).Field("error", latest.status());
  }
  GANTRY_ASSIGN_OR_RETURN(auto steps, ListCommitted());
  std::vector<int64_t> order;
  std::optional<int64_t> head = latest.ok() ? *latest : std::nullopt;
  if (head) order.push_back(*head);
  for (auto it = steps.rbegin(); it != steps.rend(); ++it) {
    if (!head || *it < *head) order.push_back(*it);  // newer than `latest` = never committed
  }
  for (int64_t step : order) {
    auto ckpt = Load(step);
    if (ckpt.ok()) return ckpt;
    GANTRY_LOG(WARNING, "skipping broken checkpoint").Field("store", store_->Describe())
        .Field("step", step).Field("error", ckpt.status());
  }
  return NotFoundError("no loadable checkpoint in " + store_->Describe() +
                       (order.empty() ? " (none committed)" : " (all failed their checks; see warnings)"));
}

}  // namespace gantry::storage
