// `gantry dataset put SRC URI | info URI | verify URI`: ingest local files into a dataset in
// a store (file:// or ceph://), print its index, check every checksum. Thin: storage/ does
// the work (storage/dataset_ingest.h, storage/dataset.h).
#include <filesystem>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "base/progress.h"
#include "cli/command.h"
#include "storage/dataset.h"
#include "storage/dataset_ingest.h"

namespace gantry::cli {
namespace {

struct DatasetFlags {
  std::string src, uri, format, labels;
  int64_t window = 129;
  double shard_mb = 64, chunk_kb = 0;
  bool json = false;
};

int Put(const DatasetFlags& f) {
  auto store = storage::OpenObjectStore(f.uri);
  if (!store.ok()) return ReportError(store.status());
  std::error_code ec;
  int64_t total = std::filesystem::is_regular_file(f.src, ec) ? std::filesystem::file_size(f.src, ec) : 0;
  Progress progress({.label = "ingest", .total = total, .unit = "B"});
  storage::IngestOptions o;
  o.format = f.format;
  o.window = f.window;
  o.labels = f.labels;
  o.shard_bytes = static_cast<uint64_t>(f.shard_mb * (1 << 20));
  o.chunk_bytes = static_cast<uint64_t>(f.chunk_kb * 1024);
  o.progress = [&](uint64_t done, uint64_t all) {
    if (total == 0) total = static_cast<int64_t>(all);
    progress.Update(static_cast<int64_t>(done * (total ? double(total) / std::max<uint64_t>(all, 1) : 1)));
  };
  auto index = storage::IngestDataset(f.src, **store, o);
  progress.Finish();
  if (!index.ok()) return ReportError(index.status());
  std::cout << "wrote " << index->TotalRecords() << " records (" << index->TotalBytes() << " bytes) in "
            << index->shards.size() << " shards to " << (*store)->Describe() << "\n";
  return kExitOk;
}

int Info(const DatasetFlags& f) {
  auto store = storage::OpenObjectStore(f.uri);
  if (!store.ok()) return ReportError(store.status());
  auto index = storage::ReadDatasetIndex(**store);
  if (!index.ok()) return ReportError(index.status());
  if (f.json) {
    std::cout << index->ToJson() << "\n";
    return kExitOk;
  }
  const auto& l = index->layout;
  std::cout << "dataset      " << (*store)->Describe() << "\n"
            << "format       gantry-dataset v" << index->version << "\n";
  if (l.kind == storage::RecordKind::kTokens) {
    std::cout << "layout       tokens " << storage::DTypeName(l.dtype) << ", window " << l.window
              << ", vocab " << l.vocab << "\n";
  } else {
    std::cout << "layout       tensors " << storage::DTypeName(l.dtype) << " [";
    for (size_t i = 0; i < l.shape.size(); ++i) std::cout << (i ? "," : "") << l.shape[i];
    std::cout << "] + i32 label, classes " << l.classes << "\n";
  }
  std::cout << "records      " << index->TotalRecords() << " (" << l.RecordBytes() << " bytes each)\n"
            << "shards       " << index->shards.size() << ", " << index->TotalBytes() << " bytes\n"
            << "chunk        " << index->chunk_records << " records\n"
            << "source       " << index->source << "\n";
  return kExitOk;
}

int Verify(const DatasetFlags& f) {
  auto store = storage::OpenObjectStore(f.uri);
  if (!store.ok()) return ReportError(store.status());
  auto index = storage::ReadDatasetIndex(**store);
  if (!index.ok()) return ReportError(index.status());
  Progress progress({.label = "verify", .total = static_cast<int64_t>(index->TotalBytes()), .unit = "B"});
  Status st = storage::VerifyDataset(**store, *index, [&](uint64_t done) { progress.Update(static_cast<int64_t>(done)); });
  progress.Finish();
  if (!st.ok()) return ReportError(st);
  std::cout << "ok: " << index->shards.size() << " shards, " << index->TotalRecords()
            << " records, every checksum matches\n";
  return kExitOk;
}

CommandRegistration kDataset("dataset", "Ingest, describe and verify datasets (put | info | verify)",
    [](CLI::App& app) -> CommandHandler {
      auto f = std::make_shared<DatasetFlags>();
      auto which = std::make_shared<std::string>();
      app.require_subcommand(1);
      auto* put = app.add_subcommand("put", "Ingest SRC (tokens, text, MNIST idx, .npy) into the dataset at URI");
      put->add_option("SRC", f->src, "source file (or MNIST directory)")->required();
      put->add_option("URI", f->uri, "dataset root: file:///dir, dir, or ceph://pool/prefix?...")->required();
      put->add_option("--format", f->format, "tokens_u16 | tokens_u32 | text | mnist | npy (default: from the name)");
      put->add_option("--window", f->window, "tokens per record (context + 1)")
          ->capture_default_str()
          ->check(CLI::Range(int64_t{2}, int64_t{1} << 24));
      put->add_option("--labels", f->labels, "labels file (.npy tensors; MNIST default: beside the images)");
      put->add_option("--shard-mb", f->shard_mb, "target shard size in MiB")
          ->capture_default_str()
          ->check(FiniteIn(0.001, 1 << 20));
      put->add_option("--chunk-kb", f->chunk_kb,
                      "checksum/shuffle chunk in KiB (default: size/64, 4 KiB..4 MiB)")
          ->check(FiniteIn(0, 1 << 20));
      put->callback([which] { *which = "put"; });
      auto* info = app.add_subcommand("info", "Print the dataset index");
      info->add_option("URI", f->uri, "dataset root")->required();
      info->add_flag("--json", f->json, "print the index JSON");
      info->callback([which] { *which = "info"; });
      auto* verify = app.add_subcommand("verify", "Read every shard and check its checksums");
      verify->add_option("URI", f->uri, "dataset root")->required();
      verify->callback([which] { *which = "verify"; });
      return [f, which]() -> int {
        if (*which == "put") return Put(*f);
        if (*which == "info") return Info(*f);
        return Verify(*f);
      };
    });

}  // namespace
}  // namespace gantry::cli
