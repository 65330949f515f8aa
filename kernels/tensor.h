// Tensor: shape + dtype + device + buffer (owning, shared) or a view into another buffer.
// Tensors are cheap handles: copying one shares the buffer. Layout is always row-major and
// contiguous. Not thread-safe for concurrent writes to the same buffer (callers synchronise).
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"

namespace gantry::kernels {

enum class DType : uint8_t { kF32 = 0, kBF16 = 1, kF16 = 2, kI32 = 3 };
size_t DTypeSize(DType dtype);
const char* DTypeName(DType dtype);
StatusOr<DType> ParseDType(const std::string& name);  // "f32", "bf16", "f16", "i32"

struct Device {
  enum class Kind : uint8_t { kCpu = 0, kCuda = 1 };
  Kind kind = Kind::kCpu;
  int index = 0;

  static Device Cpu() { return {}; }
  static Device Cuda(int index = 0) { return {Kind::kCuda, index}; }
  bool is_cpu() const { return kind == Kind::kCpu; }
  bool is_cuda() const { return kind == Kind::kCuda; }
  bool operator==(const Device&) const = default;
  std::string ToString() const;  // "cpu", "cuda:0"
};
StatusOr<Device> ParseDevice(const std::string& name);

using Shape = std::vector<int64_t>;
std::string ShapeToString(const Shape& shape);  // "[2, 3]"
int64_t ShapeNumel(const Shape& shape);

// Memory block; frees itself (aligned host memory, or device memory through the CUDA backend).
class Buffer {
 public:
  static StatusOr<std::shared_ptr<Buffer>> Allocate(size_t nbytes, Device device);
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  Buffer(void* data, size_t nbytes, Device device) : data_(data), nbytes_(nbytes), device_(device) {}
  void* data_;
  size_t nbytes_;
  Device device_;
};

class Tensor {
 public:
  Tensor() = default;

  // Owning tensor; host memory is 64-byte aligned and zero-filled, device memory is zeroed.
  static StatusOr<Tensor> Empty(const Shape& shape, DType dtype = DType::kF32,
                                Device device = Device::Cpu());
  // Non-owning view of caller memory, which must outlive the tensor.
  static Tensor Wrap(void* data, const Shape& shape, DType dtype = DType::kF32,
                     Device device = Device::Cpu());

  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_[i < 0 ? shape_.size() + i : i]; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t numel() const { return ShapeNumel(shape_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * DTypeSize(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  bool defined() const { return data_ != nullptr || numel() == 0; }

  void* raw() const { return data_; }
  template <typename T>
  T* data() const { return static_cast<T*>(data_); }
  float* f32() const { return static_cast<float*>(data_); }
  int32_t* i32() const { return static_cast<int32_t*>(data_); }

  // View with another shape of the same numel (shares the buffer).
  Tensor Reshape(const Shape& shape) const;
  // View of rows [begin, end) along dim 0.
  Tensor Slice(int64_t begin, int64_t end) const;
  // View of `shape` starting `element_offset` elements into this tensor's memory.
  Tensor View(int64_t element_offset, const Shape& shape) const;

  std::string ToString() const;  // "f32[2, 3]@cpu"

 private:
  std::shared_ptr<Buffer> buffer_;  // null for wrapped memory
  void* data_ = nullptr;
  Shape shape_;
  DType dtype_ = DType::kF32;
  Device device_;
};

// Checks used by every op: the message names the op and the tensor.
Status CheckShape(const char* op, const char* name, const Tensor& t, const Shape& expected);
Status CheckDType(const char* op, const char* name, const Tensor& t, DType expected);
Status CheckSameDevice(const char* op, std::initializer_list<const Tensor*> tensors);

// Copies between any devices (host<->device via the CUDA backend). Same numel and dtype.
Status Copy(const Tensor& src, Tensor& dst);
// Fills with zeros.
Status Zero(Tensor& t);
// Converts between f32 and bf16/f16 (host or device); shapes must match in numel.
Status Cast(const Tensor& src, Tensor& dst);

// bf16/f16 <-> f32 scalar conversions (round-to-nearest-even), used by CPU code and tests.
uint16_t FloatToBf16(float f);
float Bf16ToFloat(uint16_t h);
uint16_t FloatToHalf(float f);
float HalfToFloat(uint16_t h);

}  // namespace gantry::kernels
