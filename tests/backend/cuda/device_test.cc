#include "backend/cuda/device.h"

#include <gtest/gtest.h>

#include <vector>

#include "backend/cuda/device_buffer.h"

namespace fp6serve {
namespace {

TEST(CudaDevice, RoundTripsMemory) {
  if (cuda::device_count() == 0) GTEST_SKIP() << "no GPU";
  std::printf("%s\n", cuda::device_summary().c_str());
  std::vector<int> host(1000);
  for (int i = 0; i < 1000; ++i) host[i] = i * 7;
  cuda::DeviceBuffer d(host.size() * sizeof(int));
  d.upload(host.data(), d.size());
  std::vector<int> back(1000, -1);
  d.download(back.data(), d.size());
  EXPECT_EQ(back, host);
}

}  // namespace
}  // namespace fp6serve
