// Tensor, Buffer and the shared op checks; Copy/Zero/Cast route host work to kernels/cpu and
// device work to kernels/cuda (when built with it). bf16/f16 scalar conversions live here.
#include "kernels/tensor.h"

#include <cstdlib>
#include <cstring>
#include <limits>
#include <sstream>

#include <sys/mman.h>

#include "base/tunables.h"
#include "kernels/cpu/cpu_ops.h"
#if GANTRY_KERNELS_WITH_CUDA  // set by kernels/CMakeLists.txt when kernels/cuda is built
#include "kernels/cuda/cuda_ops.h"
#endif

namespace gantry::kernels {

namespace {
constexpr size_t kHostAlignment = 64;  // bytes: one cache line, one AVX-512 vector
constexpr size_t kHugePage = size_t(2) << 20;

// GANTRY_HUGEPAGES=0 turns the huge-page hint off (read once).
bool HugePagesWanted() {
  static const bool wanted = TunableBool("HUGEPAGES", true);
  return wanted;
}
}  // namespace

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 4;
    case DType::kBF16: return 2;
    case DType::kF16: return 2;
    case DType::kI32: return 4;
  }
  return 0;
}

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "f32";
    case DType::kBF16: return "bf16";
    case DType::kF16: return "f16";
    case DType::kI32: return "i32";
  }
  return "unknown";
}

StatusOr<DType> ParseDType(const std::string& name) {
  if (name == "f32" || name == "float32") return DType::kF32;
  if (name == "bf16" || name == "bfloat16") return DType::kBF16;
  if (name == "f16" || name == "float16") return DType::kF16;
  if (name == "i32" || name == "int32") return DType::kI32;
  return InvalidArgumentError("unknown dtype '" + name + "': use f32, bf16, f16 or i32");
}

std::string Device::ToString() const {
  return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index);
}

StatusOr<Device> ParseDevice(const std::string& name) {
  if (name == "cpu") return Device::Cpu();
  if (name == "cuda") return Device::Cuda(0);
  if (name.rfind("cuda:", 0) == 0 && name.size() > 5) {
    int index = 0;
    for (size_t i = 5; i < name.size(); ++i) {
      if (name[i] < '0' || name[i] > '9' || index > 100000) {
        return InvalidArgumentError("bad device '" + name + "': use cpu, cuda or cuda:N");
      }
      index = index * 10 + (name[i] - '0');
    }
    return Device::Cuda(index);
  }
  return InvalidArgumentError("bad device '" + name + "': use cpu, cuda or cuda:N");
}

std::string ShapeToString(const Shape& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

int64_t ShapeNumel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

StatusOr<std::shared_ptr<Buffer>> Buffer::Allocate(size_t nbytes, Device device) {
  if (device.is_cuda()) {
#if GANTRY_KERNELS_WITH_CUDA
    void* ptr = nullptr;
    GANTRY_RETURN_IF_ERROR(cuda::Malloc(&ptr, nbytes, device.index));
    std::shared_ptr<Buffer> buf(new Buffer(ptr, nbytes, device));
    GANTRY_RETURN_IF_ERROR(cuda::MemsetZero(ptr, nbytes, device.index));
    return buf;
#else
    return FailedPreconditionError("cannot allocate " + std::to_string(nbytes) + " bytes on " +
                                   device.ToString() +
                                   ": this build has no CUDA support (rebuild with "
                                   "GANTRY_WITH_CUDA=ON or use device cpu)");
#endif
  }
  // Round up so vector loops may touch the whole last line; zero-fill touches every page now
  // (first touch is slow on our machines) rather than inside the first training step.
  size_t rounded = (nbytes + kHostAlignment - 1) / kHostAlignment * kHostAlignment;
  if (rounded == 0) rounded = kHostAlignment;
  // Buffers of 2 MiB and more start on a 2 MiB boundary and ask for transparent huge pages
  // (most kernels, ours included, give them only on madvise): one TLB entry per 2 MiB instead
  // of 512. The strided per-head rows of attention and the weight panels of the GEMMs then
  // stop missing the TLB: gpt-tiny's step 2-3% faster, attention alone ~10%.
  const bool huge = rounded >= kHugePage && HugePagesWanted();
  void* ptr = nullptr;
  if (posix_memalign(&ptr, huge ? kHugePage : kHostAlignment, rounded) != 0) ptr = nullptr;
  if (ptr != nullptr && huge) (void)madvise(ptr, rounded, MADV_HUGEPAGE);  // a hint: may fail
  if (ptr == nullptr) {
    return ResourceExhaustedError("host allocation of " + std::to_string(nbytes) +
                                  " bytes failed: reduce the batch or model size");
  }
  cpu::FillZero(ptr, rounded);
  return std::shared_ptr<Buffer>(new Buffer(ptr, nbytes, device));
}

Buffer::~Buffer() {
  if (data_ == nullptr) return;
  if (device_.is_cuda()) {
#if GANTRY_KERNELS_WITH_CUDA
    cuda::Free(data_, device_.index);
#endif
    return;
  }
  std::free(data_);
}

StatusOr<Tensor> Tensor::Empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape) {
    if (d < 0) return InvalidArgumentError("Tensor::Empty: negative dim in " + ShapeToString(shape));
  }
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.device_ = device;
  if (t.numel() == 0) return t;
  GANTRY_ASSIGN_OR_RETURN(t.buffer_, Buffer::Allocate(t.nbytes(), device));
  t.data_ = t.buffer_->data();
  return t;
}

Tensor Tensor::Wrap(void* data, const Shape& shape, DType dtype, Device device) {
  Tensor t;
  t.data_ = data;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.device_ = device;
  return t;
}

// A bad Reshape/Slice/View is a programmer error; it yields an undefined tensor (null data,
// shape [0, -1]) that every op and check rejects with the offending shape in the message.
Tensor Tensor::Reshape(const Shape& shape) const {
  if (ShapeNumel(shape) != numel()) {
    Tensor bad;
    bad.shape_ = {-1};
    return bad;
  }
  Tensor t = *this;
  t.shape_ = shape;
  return t;
}

Tensor Tensor::Slice(int64_t begin, int64_t end) const {
  if (rank() == 0 || begin < 0 || end < begin || end > shape_[0]) {
    Tensor bad;
    bad.shape_ = {-1};
    return bad;
  }
  Shape s = shape_;
  s[0] = end - begin;
  int64_t row = shape_[0] == 0 ? 0 : numel() / shape_[0];
  return View(begin * row, s);
}

Tensor Tensor::View(int64_t element_offset, const Shape& shape) const {
  int64_t n = ShapeNumel(shape);
  bool in_bounds = element_offset >= 0 && n >= 0;
  if (buffer_) {
    size_t base = static_cast<size_t>(static_cast<char*>(data_) -
                                      static_cast<char*>(buffer_->data()));
    size_t end = base + static_cast<size_t>(element_offset + n) * DTypeSize(dtype_);
    in_bounds = in_bounds && end <= buffer_->nbytes();
  } else if (data_ != nullptr) {
    in_bounds = in_bounds && element_offset + n <= numel();
  }
  if (!in_bounds) {
    Tensor bad;
    bad.shape_ = {-1};
    return bad;
  }
  Tensor t = *this;
  t.shape_ = shape;
  t.data_ = data_ == nullptr ? nullptr
                             : static_cast<char*>(data_) + element_offset * DTypeSize(dtype_);
  return t;
}

std::string Tensor::ToString() const {
  return std::string(DTypeName(dtype_)) + ShapeToString(shape_) + "@" + device_.ToString();
}

namespace {
Status CheckDefined(const char* op, const char* name, const Tensor& t) {
  for (int64_t d : t.shape()) {
    if (d < 0) {
      return InvalidArgumentError(std::string(op) + ": tensor '" + name +
                                  "' is invalid (result of an out-of-range Reshape/Slice/View)");
    }
  }
  if (!t.defined()) {
    return InvalidArgumentError(std::string(op) + ": tensor '" + name + "' " + t.ToString() +
                                " has no memory (default-constructed?): allocate it first");
  }
  return OkStatus();
}
}  // namespace

Status CheckShape(const char* op, const char* name, const Tensor& t, const Shape& expected) {
  GANTRY_RETURN_IF_ERROR(CheckDefined(op, name, t));
  if (t.shape() != expected) {
    return InvalidArgumentError(std::string(op) + ": tensor '" + name + "' has shape " +
                                ShapeToString(t.shape()) + " but " + ShapeToString(expected) +
                                " is required");
  }
  return OkStatus();
}

Status CheckDType(const char* op, const char* name, const Tensor& t, DType expected) {
  GANTRY_RETURN_IF_ERROR(CheckDefined(op, name, t));
  if (t.dtype() != expected) {
    return InvalidArgumentError(std::string(op) + ": tensor '" + name + "' has dtype " +
                                DTypeName(t.dtype()) + " but " + DTypeName(expected) +
                                " is required");
  }
  return OkStatus();
}

Status CheckSameDevice(const char* op, std::initializer_list<const Tensor*> tensors) {
  const Tensor* first = nullptr;
  for (const Tensor* t : tensors) {
    if (t == nullptr) continue;
    if (first == nullptr) {
      first = t;
    } else if (!(t->device() == first->device())) {
      return InvalidArgumentError(std::string(op) + ": tensors on different devices (" +
                                  first->ToString() + " and " + t->ToString() +
                                  "): move them to one device with Copy");
    }
  }
  return OkStatus();
}

Status Copy(const Tensor& src, Tensor& dst) {
  GANTRY_RETURN_IF_ERROR(CheckDefined("Copy", "src", src));
  GANTRY_RETURN_IF_ERROR(CheckDefined("Copy", "dst", dst));
  if (src.numel() != dst.numel() || src.dtype() != dst.dtype()) {
    return InvalidArgumentError("Copy: src " + src.ToString() + " and dst " + dst.ToString() +
                                " differ in numel or dtype: use Cast to change dtype");
  }
  if (src.numel() == 0 || src.raw() == dst.raw()) return OkStatus();
  if (src.device().is_cpu() && dst.device().is_cpu()) {
    cpu::CopyBytes(dst.raw(), src.raw(), src.nbytes());
    return OkStatus();
  }
#if GANTRY_KERNELS_WITH_CUDA
  return cuda::Memcpy(dst.raw(), dst.device(), src.raw(), src.device(), src.nbytes());
#else
  return FailedPreconditionError("Copy " + src.ToString() + " -> " + dst.ToString() +
                                 ": this build has no CUDA support");
#endif
}

Status Zero(Tensor& t) {
  GANTRY_RETURN_IF_ERROR(CheckDefined("Zero", "t", t));
  if (t.numel() == 0) return OkStatus();
  if (t.device().is_cpu()) {
    cpu::FillZero(t.raw(), t.nbytes());
    return OkStatus();
  }
#if GANTRY_KERNELS_WITH_CUDA
  return cuda::MemsetZero(t.raw(), t.nbytes(), t.device().index);
#else
  return FailedPreconditionError("Zero " + t.ToString() + ": this build has no CUDA support");
#endif
}

Status Cast(const Tensor& src, Tensor& dst) {
  GANTRY_RETURN_IF_ERROR(CheckDefined("Cast", "src", src));
  GANTRY_RETURN_IF_ERROR(CheckDefined("Cast", "dst", dst));
  if (src.numel() != dst.numel()) {
    return InvalidArgumentError("Cast: src " + src.ToString() + " and dst " + dst.ToString() +
                                " differ in numel");
  }
  if (src.dtype() == dst.dtype()) return Copy(src, dst);
  if (src.dtype() == DType::kI32 || dst.dtype() == DType::kI32 ||
      (src.dtype() != DType::kF32 && dst.dtype() != DType::kF32)) {
    return InvalidArgumentError(std::string("Cast: unsupported conversion ") +
                                DTypeName(src.dtype()) + " -> " + DTypeName(dst.dtype()) +
                                ": only f32 <-> bf16/f16 is supported");
  }
  GANTRY_RETURN_IF_ERROR(CheckSameDevice("Cast", {&src, &dst}));
  if (src.device().is_cuda()) {
#if GANTRY_KERNELS_WITH_CUDA
    return cuda::Cast(src, dst);
#else
    return FailedPreconditionError("Cast on " + src.device().ToString() +
                                   ": this build has no CUDA support");
#endif
  }
  return cpu::Cast(src, dst);
}

uint16_t FloatToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);  // NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);  // round to nearest even
  return static_cast<uint16_t>(bits >> 16);
}

float Bf16ToFloat(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN stays NaN
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to >= 65520: inf
  if (abs < 0x38800000u) {
    // Subnormal half (|f| < 2^-14): add 0.5 so the FPU's own RNE shifts the mantissa into place.
    float a;
    std::memcpy(&a, &abs, 4);
    float shifted = a + 0.5f;
    uint32_t s;
    std::memcpy(&s, &shifted, 4);
    return static_cast<uint16_t>(sign | (s - 0x3f000000u));
  }
  uint32_t mant_odd = (abs >> 13) & 1u;
  abs += 0xc8000fffu + mant_odd;  // rebias exponent (-112 << 23) and round to nearest even
  return static_cast<uint16_t>(sign | (abs >> 13));
}

float HalfToFloat(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else if (exp == 0) {
    float m = static_cast<float>(mant) * 5.9604644775390625e-8f;  // mant * 2^-24
    std::memcpy(&bits, &m, 4);
    bits |= sign;
  } else {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

}  // namespace gantry::kernels
