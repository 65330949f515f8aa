// train_parity_tool: the Gantry half of the PyTorch parity test. For one named case it builds
// our model, initialises it from a seed, makes a deterministic batch, runs Forward/Backward and
// N optimizer steps, and writes every tensor (f32/i32 raw, one blob) plus a JSON index that
// tests/integration/train_parity.py reads to rebuild the same model in torch and compare.
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/status.h"
#include "kernels/runtime.h"
#include "kernels/tensor.h"
#include "train/model.h"
#include "train/optimizer.h"
#include "train/rng.h"

namespace gantry::train {
namespace {

using kernels::DType;
using kernels::Tensor;
using nlohmann::json;

struct ParityCase {
  std::string name;
  ModelSpec model;
  OptimizerSpec optimizer;
  int batch = 4;
  int steps = 10;         // optimizer steps on the same batch (0: forward/backward only)
  bool backward = true;   // false: forward only (logits, loss)
};

ModelSpec Mlp(std::vector<int> widths, std::string act, std::string loss) {
  ModelSpec s;
  s.type = "mlp";
  s.widths = std::move(widths);
  s.activation = std::move(act);
  s.loss = std::move(loss);
  return s;
}

ModelSpec Cnn(std::string pool) {
  ModelSpec s;
  s.type = "cnn";
  s.input = {1, 28, 28};
  s.channels = {4, 8};
  s.kernel = 3;
  s.pool = std::move(pool);
  s.classes = 10;
  return s;
}

ModelSpec Gpt(int vocab, int context, int d_model, int layers, int heads, int mlp) {
  ModelSpec s;
  s.type = "gpt";
  s.vocab = vocab;
  s.context = context;
  s.d_model = d_model;
  s.layers = layers;
  s.heads = heads;
  s.mlp = mlp;
  return s;
}

OptimizerSpec AdamW() {
  OptimizerSpec o;
  o.type = "adamw";
  o.lr = 1e-3;
  o.weight_decay = 0.01;
  return o;
}

OptimizerSpec Momentum() {
  OptimizerSpec o;
  o.type = "momentum";
  o.lr = 0.01;
  o.momentum = 0.9;
  o.weight_decay = 0.01;
  return o;
}

std::vector<ParityCase> AllCases() {
  const std::vector<int> w = {784, 64, 32, 10};
  std::vector<ParityCase> c = {
      {"mlp_relu_ce", Mlp(w, "relu", "cross_entropy"), AdamW(), 8},
      {"mlp_tanh_ce", Mlp(w, "tanh", "cross_entropy"), AdamW(), 8},
      {"mlp_gelu_ce", Mlp(w, "gelu", "cross_entropy"), AdamW(), 8},
      {"mlp_sigmoid_ce", Mlp(w, "sigmoid", "cross_entropy"), AdamW(), 8},
      {"mlp_relu_mse", Mlp(w, "relu", "mse"), AdamW(), 8},
      {"mlp_relu_hinge", Mlp(w, "relu", "hinge"), AdamW(), 8},
      {"mlp_relu_sgd_momentum", Mlp(w, "relu", "cross_entropy"), Momentum(), 8},
      {"cnn_max", Cnn("max"), AdamW(), 4},
      {"cnn_avg", Cnn("avg"), AdamW(), 4},
      {"gpt_small", Gpt(64, 16, 32, 2, 2, 128), AdamW(), 4},
      {"gpt_tiny", Gpt(8192, 128, 256, 4, 4, 1024), AdamW(), 2, 0},  // no steps: big
  };
  return c;
}

// Collects tensors into one blob with a JSON index (name, dtype, shape, byte offset).
class TensorWriter {
 public:
  Status Add(const std::string& name, const Tensor& t) {
    Tensor host = t;
    if (!t.device().is_cpu()) {
      GANTRY_ASSIGN_OR_RETURN(host, Tensor::Empty(t.shape(), t.dtype()));
      GANTRY_RETURN_IF_ERROR(kernels::Copy(t, host));
    }
    if (t.dtype() != DType::kF32 && t.dtype() != DType::kI32) {
      return InvalidArgumentError("parity tool: tensor '" + name + "' has unsupported dtype " +
                                  kernels::DTypeName(t.dtype()));
    }
    const size_t offset = blob_.size();
    blob_.resize(offset + host.nbytes());
    std::memcpy(blob_.data() + offset, host.raw(), host.nbytes());
    index_.push_back({{"name", name},
                      {"dtype", kernels::DTypeName(t.dtype())},
                      {"shape", t.shape()},
                      {"offset", offset}});
    return OkStatus();
  }
  Status AddScalar(const std::string& name, float v) {
    return Add(name, Tensor::Wrap(&v, {1}));
  }
  Status Write(const std::filesystem::path& dir, json meta) {
    std::ofstream bin(dir / "tensors.bin", std::ios::binary);
    bin.write(blob_.data(), std::streamsize(blob_.size()));
    meta["tensors"] = index_;
    std::ofstream idx(dir / "index.json");
    idx << meta.dump(1) << "\n";
    if (!bin || !idx) {
      return ErrnoError("parity tool: writing " + (dir / "tensors.bin").string(), errno);
    }
    return OkStatus();
  }

 private:
  std::vector<char> blob_;
  json index_ = json::array();
};

// Deterministic batch: normal inputs (gpt: uniform tokens), labels uniform in [0, classes).
Status FillBatch(const ModelSpec& spec, Batch& batch, uint64_t seed) {
  Rng rng(seed);
  Tensor in = batch.inputs, tg = batch.targets;
  if (!in.device().is_cpu()) {
    GANTRY_ASSIGN_OR_RETURN(in, Tensor::Empty(batch.inputs.shape(), batch.inputs.dtype()));
    GANTRY_ASSIGN_OR_RETURN(tg, Tensor::Empty(batch.targets.shape(), batch.targets.dtype()));
  }
  const int64_t classes = spec.type == "gpt" ? spec.vocab
                          : spec.type == "mlp" ? spec.widths.back()
                                               : spec.classes;
  for (int64_t i = 0; i < in.numel(); ++i) {
    if (in.dtype() == DType::kI32) {
      in.i32()[i] = int32_t(rng.Below(uint64_t(classes)));
    } else {
      in.f32()[i] = rng.Normal();
    }
  }
  for (int64_t i = 0; i < tg.numel(); ++i) {
    if (tg.dtype() == DType::kI32) {
      tg.i32()[i] = int32_t(rng.Below(uint64_t(classes)));
    } else {
      tg.f32()[i] = rng.Normal();
    }
  }
  if (!in.device().is_cpu()) {
    GANTRY_RETURN_IF_ERROR(kernels::Copy(in, batch.inputs));
    GANTRY_RETURN_IF_ERROR(kernels::Copy(tg, batch.targets));
  }
  return OkStatus();
}

json SpecJson(const ParityCase& c) {
  const ModelSpec& m = c.model;
  json model = {{"type", m.type}};
  if (m.type == "mlp") {
    model.update({{"widths", m.widths}, {"activation", m.activation}, {"loss", m.loss}});
  } else if (m.type == "cnn") {
    model.update({{"input", m.input}, {"channels", m.channels}, {"kernel", m.kernel},
                  {"pool", m.pool}, {"classes", m.classes}, {"loss", m.loss}});
  } else {
    model.update({{"vocab", m.vocab}, {"context", m.context}, {"d_model", m.d_model},
                  {"layers", m.layers}, {"heads", m.heads}, {"mlp", m.mlp}});
  }
  const OptimizerSpec& o = c.optimizer;
  json opt = {{"type", o.type},         {"lr", o.lr},       {"momentum", o.momentum},
              {"beta1", o.beta1},       {"beta2", o.beta2}, {"eps", o.eps},
              {"weight_decay", o.weight_decay}};
  return {{"case", c.name}, {"model", model},       {"optimizer", opt},
          {"batch", c.batch}, {"steps", c.steps}, {"backward", c.backward}};
}

Status RunCase(const ParityCase& c, kernels::Device device, const std::filesystem::path& out) {
  constexpr uint64_t kSeed = 1234;
  GANTRY_ASSIGN_OR_RETURN(std::unique_ptr<Model> model, Model::Create(c.model, c.batch, device));
  GANTRY_RETURN_IF_ERROR(model->InitParams(kSeed));
  GANTRY_ASSIGN_OR_RETURN(BatchLayout layout, BatchLayoutFor(c.model, c.batch));
  GANTRY_ASSIGN_OR_RETURN(Batch batch, AllocateBatch(layout, device));
  GANTRY_RETURN_IF_ERROR(FillBatch(c.model, batch, MixSeed(kSeed, 99)));
  TensorWriter w;
  for (const ParamInfo& p : model->params()) {
    GANTRY_RETURN_IF_ERROR(w.Add("init/" + p.name, model->Param(p)));
  }
  GANTRY_RETURN_IF_ERROR(w.Add("input", batch.inputs));
  GANTRY_RETURN_IF_ERROR(w.Add("target", batch.targets));
  GANTRY_RETURN_IF_ERROR(model->Forward(batch));
  GANTRY_RETURN_IF_ERROR(w.Add("logits", model->Logits()));
  GANTRY_ASSIGN_OR_RETURN(float loss, model->Loss());
  GANTRY_RETURN_IF_ERROR(w.AddScalar("loss", loss));
  if (c.backward) {
    GANTRY_RETURN_IF_ERROR(model->Backward(batch));
    for (const ParamInfo& p : model->params()) {
      GANTRY_RETURN_IF_ERROR(w.Add("grad/" + p.name, model->Grad(p)));
    }
  }
  if (c.steps > 0) {
    GANTRY_ASSIGN_OR_RETURN(std::unique_ptr<Optimizer> opt,
                            Optimizer::Create(c.optimizer, *model));
    for (int s = 0; s < c.steps; ++s) {
      if (s > 0) {  // step 0 reuses the forward/backward above
        GANTRY_RETURN_IF_ERROR(model->Forward(batch));
        GANTRY_RETURN_IF_ERROR(model->Backward(batch));
      }
      GANTRY_ASSIGN_OR_RETURN(float step_loss, model->Loss());
      GANTRY_RETURN_IF_ERROR(w.AddScalar("step_loss/" + std::to_string(s), step_loss));
      GANTRY_RETURN_IF_ERROR(opt->Step(s, float(c.optimizer.lr)));
    }
    for (const ParamInfo& p : model->params()) {
      GANTRY_RETURN_IF_ERROR(w.Add("final/" + p.name, model->Param(p)));
    }
  }
  GANTRY_RETURN_IF_ERROR(kernels::Synchronize(device));
  json meta = SpecJson(c);
  json decay = json::object();
  for (const ParamInfo& p : model->params()) decay[p.name] = p.decay;
  meta["decay"] = decay;  // informational: python derives param groups on its own
  meta["device"] = device.ToString();
  meta["precision"] =
      kernels::CpuMatmulPrecision() == kernels::MatmulPrecision::kBf16 ? "bf16" : "f32";
  return w.Write(out, meta);
}

constexpr int kSkipExitCode = 77;  // ctest SKIP_RETURN_CODE

int Main(int argc, char** argv) {
  std::string case_name, out_dir, device_name = "cpu", precision = "f32";
  bool list = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--list") {
      list = true;
    } else if ((a == "--case" || a == "--out" || a == "--device") && i + 1 < argc) {
      (a == "--case" ? case_name : a == "--out" ? out_dir : device_name) = argv[++i];
    } else if (a == "--precision" && i + 1 < argc && (std::string(argv[i + 1]) == "f32" ||
                                                      std::string(argv[i + 1]) == "bf16")) {
      precision = argv[++i];
    } else {
      std::cerr << "train_parity_tool: unknown or incomplete argument '" << a
                << "'\nusage: train_parity_tool --list | --case NAME --out DIR [--device cpu]"
                   " [--precision f32|bf16]\n";
      return 2;
    }
  }
  const std::vector<ParityCase> cases = AllCases();
  if (list) {
    for (const ParityCase& c : cases) std::cout << c.name << "\n";
    return 0;
  }
  StatusOr<kernels::Device> device = kernels::ParseDevice(device_name);
  if (!device.ok()) {
    std::cerr << "train_parity_tool: " << device.status().ToString() << "\n";
    return 2;
  }
  if (device->is_cuda() && kernels::CudaDeviceCount() <= device->index) {
    std::cout << "SKIP: " << device->ToString() << " is not available (built with CUDA: "
              << (kernels::BuiltWithCuda() ? "yes" : "no") << ", devices: "
              << kernels::CudaDeviceCount() << ")\n";
    return kSkipExitCode;
  }
  // bf16: every product in bf16, however small (these cases are small; by default products
  // under 4 MFLOP stay f32), so the comparison checks the bf16 path itself.
  if (Status s = kernels::SetCpuMatmulPrecision(precision == "bf16" ? kernels::MatmulPrecision::kBf16
                                                                    : kernels::MatmulPrecision::kF32,
                                                /*bf16_min_flops=*/0);
      !s.ok()) {
    std::cout << "SKIP: " << s.ToString() << "\n";
    return kSkipExitCode;
  }
  for (const ParityCase& c : cases) {
    if (c.name != case_name) continue;
    std::filesystem::create_directories(out_dir);
    Status s = RunCase(c, *device, out_dir);
    if (!s.ok()) {
      std::cerr << "train_parity_tool: case " << c.name << " failed: " << s.ToString() << "\n";
      return 1;
    }
    return 0;
  }
  std::cerr << "train_parity_tool: unknown case '" << case_name << "'; --list shows the cases\n";
  return 2;
}

}  // namespace
}  // namespace gantry::train

int main(int argc, char** argv) { return gantry::train::Main(argc, argv); }
