// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The CUDA runtime behind typed errors: a failed call throws rtb::cuda::CudaError naming the
/// call and the runtime's message, no visible device throws NoDeviceError, an allocation the
/// device cannot satisfy throws DeviceMemoryError naming the bytes asked and the bytes free.
/// DeviceBuffer<T> owns one allocation (move-only) and copies to and from host spans.

#include <cuda_runtime.h>

#include <cstddef>
#include <span>
#include <string>
#include <utility>

#include "rtb/error.hpp"

namespace rtb::cuda {

/// A CUDA runtime call failed.
class CudaError : public Error {
 public:
  using Error::Error;
};

/// No CUDA device is visible to the process.
class NoDeviceError : public CudaError {
 public:
  using CudaError::CudaError;
};

/// The device could not allocate what was asked; the message names the bytes.
class DeviceMemoryError : public CudaError {
 public:
  using CudaError::CudaError;
};

/// Throws CudaError if `status` is not cudaSuccess; `what` names the call.
inline void check(cudaError_t status, const char* what) {
  if (status == cudaSuccess) return;
  (void)cudaGetLastError();  // reset the runtime's last-error state, so the next check sees only its own call
  throw CudaError(rtb::detail::message("rtb::cuda: ", what, " failed: ", cudaGetErrorName(status), " (",
                                       cudaGetErrorString(status), ")"));
}

/// Number of visible devices; 0 when there is none or no driver (never throws).
inline int device_count() noexcept {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

/// Throws NoDeviceError unless a device is visible.
inline void require_device() {
  int n = 0;
  const cudaError_t status = cudaGetDeviceCount(&n);
  if (status == cudaSuccess && n > 0) return;
  (void)cudaGetLastError();
  throw NoDeviceError(rtb::detail::message(
      "rtb::cuda: no CUDA device is visible (cudaGetDeviceCount: ",
      status == cudaSuccess ? "0 devices" : cudaGetErrorString(status),
      "); run on a machine with an NVIDIA GPU and driver, check CUDA_VISIBLE_DEVICES, or use the CPU backend"));
}

/// One device allocation of `size` elements of T.
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t size) : size_(size) {
    if (size == 0) return;
    const std::size_t bytes = size * sizeof(T);
    const cudaError_t status = cudaMalloc(reinterpret_cast<void**>(&data_), bytes);
    if (status == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      std::size_t free_bytes = 0, total_bytes = 0;
      (void)cudaMemGetInfo(&free_bytes, &total_bytes);
      data_ = nullptr;
      size_ = 0;
      throw DeviceMemoryError(rtb::detail::message("rtb::cuda: cudaMalloc of ", bytes, " bytes (", size,
                                                   " elements of ", sizeof(T), " bytes) failed: the device has ",
                                                   free_bytes, " of ", total_bytes,
                                                   " bytes free; use a smaller batch or block"));
    }
    if (status != cudaSuccess) {
      data_ = nullptr;
      size_ = 0;
      check(status, "cudaMalloc");
    }
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      release();
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  ~DeviceBuffer() { release(); }

  T* data() { return data_; }
  const T* data() const { return data_; }
  std::size_t size() const { return size_; }

  /// Copies host → device; `host.size()` must equal size().
  void upload(std::span<const T> host) {
    require_size(host.size(), "upload");
    if (size_ > 0)
      check(cudaMemcpy(data_, host.data(), size_ * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy (upload)");
  }
  /// Copies device → host; `host.size()` must equal size(). Synchronises with the device.
  void download(std::span<T> host) const {
    require_size(host.size(), "download");
    if (size_ > 0)
      check(cudaMemcpy(host.data(), data_, size_ * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy (download)");
  }

 private:
  void require_size(std::size_t n, const char* what) const {
    if (n != size_)
      throw ShapeError(rtb::detail::message("rtb::cuda::DeviceBuffer::", what, ": the host span has ", n,
                                            " elements, the buffer ", size_, "; pass a span of the buffer's size"));
  }
  void release() noexcept {
    if (data_ != nullptr) (void)cudaFree(data_);
    data_ = nullptr;
  }

  T* data_ = nullptr;
  std::size_t size_ = 0;
};

/// Launch configuration: `threads` per block, enough blocks for `n` items.
inline unsigned blocks_for(std::size_t n, unsigned threads) {
  return static_cast<unsigned>((n + threads - 1) / threads);
}

}  // namespace rtb::cuda
