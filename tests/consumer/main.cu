// SPDX-License-Identifier: Apache-2.0
// A downstream .cu file using rtb::cuda (find_package(rtb COMPONENTS cuda) or add_subdirectory):
// the device's normals for a key, against the host's, where a GPU is visible.
#include <cstdio>
#include <cstring>
#include <rtb/cuda/random.cuh>
#include <vector>

int main() {
  if (rtb::cuda::device_count() == 0) {
    std::printf("consumer cuda ok: built and linked; no GPU visible, nothing run\n");
    return 0;
  }
  const rtb::math::NoiseKey key{5, rtb::math::Stream::Rollout, 0};
  rtb::cuda::DeviceBuffer<float> d(64);
  rtb::cuda::fill_normals(key, 0, 32, 1, 2, d.data());
  std::vector<float> gpu(64);
  d.download(gpu);
  for (int i = 0; i < 64; ++i) {
    const float cpu =
        rtb::math::normal<float>(key, static_cast<std::uint64_t>(i / 2), 1, static_cast<std::uint32_t>(i % 2));
    if (std::memcmp(&cpu, &gpu[i], sizeof cpu) != 0) return 1;
  }
  std::printf("consumer cuda ok: 64 normals equal to the host's\n");
  return 0;
}
