// SampleGreedy: load a checkpoint, rebuild the gpt with batch 1, argmax one byte at a time.
#include "train/sample.h"

#include <sys/stat.h>

#include <algorithm>
#include <vector>

#include "kernels/runtime.h"
#include "train/checkpoint.h"
#include "train/model.h"

namespace gantry::train {
namespace {

bool FileExists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

StatusOr<LoadedCheckpoint> LoadForSampling(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  if (!FileExists(path)) return NotFoundError("checkpoint not found: " + path);
  if (FileExists(path + "/manifest.json")) {  // one checkpoint directory
    const size_t slash = path.rfind('/');
    const std::string root = slash == std::string::npos ? "." : path.substr(0, slash);
    GANTRY_ASSIGN_OR_RETURN(std::unique_ptr<Checkpointer> ck, Checkpointer::Open(root, 0));
    return ck->Read(path.substr(slash + 1));
  }
  GANTRY_ASSIGN_OR_RETURN(std::unique_ptr<Checkpointer> ck, Checkpointer::Open(path, 0));
  return ck->ReadNewestValid();
}

}  // namespace

StatusOr<std::string> SampleGreedy(const std::string& checkpoint, const SampleOptions& options) {
  if (options.tokens < 0) return InvalidArgumentError("--tokens must be >= 0");
  GANTRY_ASSIGN_OR_RETURN(LoadedCheckpoint ck, LoadForSampling(checkpoint));
  const ModelSpec& spec = ck.meta.model;
  if (spec.type != "gpt" || ck.meta.tokenizer != "bytes") {
    return InvalidArgumentError("checkpoint " + checkpoint + " holds a " + spec.type +
                                " model with tokenizer '" + ck.meta.tokenizer +
                                "'; gantry sample needs a byte-level gpt (data.format text)");
  }
  if (options.threads > 0) kernels::SetNumThreads(options.threads);
  GANTRY_ASSIGN_OR_RETURN(std::unique_ptr<Model> model,
                          Model::Create(spec, 1, kernels::Device::Cpu()));
  std::vector<NamedTensor> params;
  for (const ParamInfo& p : model->params()) params.push_back({p.name, model->Param(p)});
  GANTRY_RETURN_IF_ERROR(ck.Restore(params));

  const int64_t T = spec.context, V = spec.vocab;
  std::vector<int32_t> seq;
  for (unsigned char c : options.prompt.empty() ? std::string("\n") : options.prompt) {
    seq.push_back(c);
  }
  GANTRY_ASSIGN_OR_RETURN(kernels::Tensor tokens,
                          kernels::Tensor::Empty({1, T}, kernels::DType::kI32));
  Batch batch{tokens, kernels::Tensor()};  // no targets: logits only
  std::string out;
  for (int i = 0; i < options.tokens; ++i) {
    // Causal attention: positions after `n` do not affect the logits at n - 1 (zero-padded).
    const int64_t n = std::min<int64_t>(T, int64_t(seq.size()));
    std::fill(tokens.i32(), tokens.i32() + T, 0);
    std::copy(seq.end() - n, seq.end(), tokens.i32());
    GANTRY_RETURN_IF_ERROR(model->Forward(batch));
    const float* logits = model->Logits().f32() + (n - 1) * V;
    const int32_t next =
        int32_t(std::max_element(logits, logits + std::min<int64_t>(V, 256)) - logits);
    seq.push_back(next);
    out.push_back(char(next));
  }
  return out;
}

}  // namespace gantry::train
