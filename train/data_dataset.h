// DatasetSource: the DataSource over a dataset made by `gantry dataset put` (storage/dataset.h),
// read by the distributed storage::DatasetLoader from ceph:// or file:// (a directory holding
// index.json). Order, rank sharding and equal batch counts per rank are the loader's, fixed by
// (seed, epoch, rank, world); position() is the loader's (epoch, batch), restored with Seek.
// Token records must be windows of context + 1; tensor records must match the model's input.
#pragma once

#include <memory>
#include <string>

#include "base/job_spec.h"
#include "base/status.h"
#include "train/data.h"

namespace gantry::train {

// True for ceph:// URIs and for file:// URIs or paths naming a directory with an index.json.
bool IsDatasetUri(const std::string& uri);

// kInvalidArgument when the dataset's record layout does not fit `model`.
StatusOr<std::unique_ptr<DataSource>> OpenDatasetSource(const std::string& uri,
                                                        const ModelSpec& model,
                                                        const DataOptions& options);

}  // namespace gantry::train
