// The safetensors header parser on bytes in memory (the path SafetensorsFile and the fuzz
// target share): every malformed entry is an Error naming the file and the tensor.
#include "loader/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "fp6serve/error.h"
#include "tests/support/fixture.h"

namespace fp6serve::loader {
namespace {

// A file: the 8-byte header length, `header` as it is (no padding), then `data`.
std::vector<uint8_t> file_of(const std::string& header, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> out(8 + header.size() + data.size());
  for (int i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(static_cast<uint64_t>(header.size()) >> (8 * i));
  std::copy(header.begin(), header.end(), out.begin() + 8);
  std::copy(data.begin(), data.end(), out.begin() + 8 + static_cast<std::ptrdiff_t>(header.size()));
  return out;
}

// The error parsing `file` gives; fails the test when it parses.
std::string error_of(const std::vector<uint8_t>& file) {
  try {
    parse_safetensors(file.data(), file.size(), "dir/model.safetensors");
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kBadInput) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "parsed";
  return "";
}

void expect_mentions(const std::string& message, std::initializer_list<const char*> parts) {
  for (const char* p : parts) EXPECT_NE(message.find(p), std::string::npos) << "'" << p << "' not in: " << message;
}

TEST(ParseSafetensors, AValidFile) {
  const std::string header =
      R"({"__metadata__": {"k": "v"}, "a": {"dtype": "F16", "shape": [2, 2], "data_offsets": [0, 8]}})";
  // Padded to 8 as writers do, so the data and the F16 tensor start aligned.
  const auto file = file_of(header + std::string((8 - header.size() % 8) % 8, ' '), std::vector<uint8_t>(8, 1));
  const SafetensorsContents c = parse_safetensors(file.data(), file.size(), "x.safetensors");
  ASSERT_EQ(c.tensors.size(), 1u);
  const TensorInfo& a = c.tensors.at("a");
  EXPECT_EQ(a.dtype, StDType::kF16);
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(a.bytes, 8u);
  EXPECT_EQ(a.data, file.data() + file.size() - 8);
  EXPECT_EQ(c.metadata.at("k"), "v");
}

// [2^32, 2^32, 96] F16 is 2 * 96 * 2^64 bytes, which wrapped to 0 and matched an empty range.
TEST(ParseSafetensors, AShapeWhoseSizeOverflowsIsAnError) {
  const std::string header =
      R"({"t": {"dtype": "F16", "shape": [4294967296, 4294967296, 96], "data_offsets": [0, 0]}})";
  expect_mentions(error_of(file_of(header, {})), {"dir/model.safetensors", "'t'", "2^64"});
  // The element count fits int64, the byte count does not.
  const std::string bytes_overflow =
      R"({"u": {"dtype": "F64", "shape": [1099511627775, 1099511627775], "data_offsets": [0, 0]}})";
  expect_mentions(error_of(file_of(bytes_overflow, {})), {"dir/model.safetensors", "'u'"});
}

TEST(ParseSafetensors, AMisalignedTensorIsAnError) {
  // An F16 tensor at the odd data offset 1.
  std::string header =
      R"({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},
          "b": {"dtype": "F16", "shape": [2], "data_offsets": [1, 5]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  expect_mentions(error_of(file_of(header, std::vector<uint8_t>(5))),
                  {"dir/model.safetensors", "'b'", "F16", "data offset 1", "2-byte element size"});
  // Offset 0, but an unpadded header of odd length puts the data at an odd position.
  std::string odd = R"({"c": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})";
  while ((8 + odd.size()) % 4 != 3) odd += ' ';
  expect_mentions(error_of(file_of(odd, std::vector<uint8_t>(4))), {"dir/model.safetensors", "'c'", "4-byte"});
}

TEST(ParseSafetensors, MalformedEntriesNameTheFileAndTheTensor) {
  struct Case {
    const char* header;
    std::vector<const char*> parts;
  };
  const Case cases[] = {
      {R"([1, 2])", {"not an object"}},
      {R"({"t": 5})", {"'t'", "not an object"}},
      {R"({"t": {"dtype": "F16", "shape": [1]}})", {"'t'", "data_offsets"}},
      {R"({"t": {"dtype": "F17", "shape": [1], "data_offsets": [0, 2]}})", {"'t'", "F17"}},
      {R"({"t": {"dtype": 3, "shape": [1], "data_offsets": [0, 2]}})", {"'t'", "dtype"}},
      {R"({"t": {"dtype": "F16", "shape": [-1], "data_offsets": [0, 2]}})", {"'t'", "dimension -1"}},
      {R"({"t": {"dtype": "F16", "shape": [1.5], "data_offsets": [0, 2]}})", {"'t'", "dimension 1.5"}},
      {R"({"t": {"dtype": "F16", "shape": "1", "data_offsets": [0, 2]}})", {"'t'", "shape"}},
      {R"({"t": {"dtype": "F16", "shape": [1], "data_offsets": [0]}})", {"'t'", "data_offsets"}},
      {R"({"t": {"dtype": "F16", "shape": [1], "data_offsets": [-2, 0]}})", {"'t'", "data_offsets"}},
      {R"({"t": {"dtype": "F16", "shape": [1], "data_offsets": [2, 0]}})", {"'t'", "outside"}},
      {R"({"t": {"dtype": "F16", "shape": [1], "data_offsets": [0, 18446744073709551615]}})", {"'t'", "outside"}},
      {R"({"t": {"dtype": "F16", "shape": [2], "data_offsets": [0, 2]}})", {"'t'", "needs 4 bytes but has 2"}},
      {R"({"__metadata__": {"k": 1}})", {"__metadata__", "'k'"}},
      {R"({"__metadata__": []})", {"__metadata__"}},
      {R"({"t": {"dtype": "F16")", {"malformed JSON"}},
  };
  for (const Case& c : cases) {
    std::string header = c.header;
    header.append((8 - header.size() % 8) % 8, ' ');
    const std::string message = error_of(file_of(header, std::vector<uint8_t>(8)));
    EXPECT_NE(message.find("dir/model.safetensors"), std::string::npos) << message;
    for (const char* p : c.parts) EXPECT_NE(message.find(p), std::string::npos) << "'" << p << "' not in: " << message;
  }
  expect_mentions(error_of(std::vector<uint8_t>(5)), {"dir/model.safetensors", "truncated"});
  std::vector<uint8_t> long_header = file_of("{}      ", {});
  long_header[7] = 1;  // 2^56 bytes of header
  expect_mentions(error_of(long_header), {"dir/model.safetensors", "header length"});
  // Nesting beyond what any header has is refused before it can exhaust the stack.
  expect_mentions(error_of(file_of(std::string(100000, '['), {})), {"dir/model.safetensors", "nested"});
}

// The fixtures parse from memory exactly as from their mapping.
TEST(ParseSafetensors, TheFixturesParseInMemoryAsMapped) {
  for (const char* name : testing::kFixtures) {
    const std::string path = testing::fixture_dir(name) + "/model.safetensors";
    const SafetensorsFile mapped(path);
    std::ifstream in(path, std::ios::binary);
    const std::vector<uint8_t> bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    const SafetensorsContents c = parse_safetensors(bytes.data(), bytes.size(), path);
    ASSERT_EQ(c.tensors.size(), mapped.tensors().size()) << name;
    for (const auto& [n, t] : mapped.tensors()) {
      const TensorInfo& m = c.tensors.at(n);
      EXPECT_EQ(m.shape, t.shape) << n;
      EXPECT_EQ(m.bytes, t.bytes) << n;
      EXPECT_EQ(std::memcmp(m.data, t.data, t.bytes), 0) << n;
    }
  }
}

}  // namespace
}  // namespace fp6serve::loader
