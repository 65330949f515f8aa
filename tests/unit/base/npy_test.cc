// The .npy header parser: files NumPy itself wrote (when /usr/bin/python3 has numpy), and
// damaged or hostile headers, each an error naming the file (never an exception, an overflowed
// size or a read past the data).
#include "base/npy.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace gantry {
namespace {

// A .npy file of format `major` with header dict `dict` (padded as NumPy pads) and `data`.
std::string Npy(const std::string& dict, const std::string& data, int major = 1) {
  const size_t pre = major == 1 ? 10 : 12;
  std::string header = dict;
  while ((pre + header.size() + 1) % 64 != 0) header.push_back(' ');
  header.push_back('\n');
  std::string out = "\x93NUMPY";
  out.push_back(static_cast<char>(major));
  out.push_back(0);
  for (size_t i = 0; i < pre - 8; ++i) out.push_back(static_cast<char>(header.size() >> (8 * i)));
  return out + header + data;
}
std::string Dict(const std::string& descr, const std::string& shape,
                 const std::string& fortran = "False") {
  return "{'descr': '" + descr + "', 'fortran_order': " + fortran + ", 'shape': " + shape + ", }";
}
StatusOr<NpyHeader> Parse(const std::string& file) {
  const auto* p = reinterpret_cast<const uint8_t*>(file.data());
  return ParseNpyHeader({p, file.size()}, file.size(), "x.npy");
}

TEST(NpyTest, ParsesWhatNumPyWrites) {
  const std::string f4 = Npy(Dict("<f4", "(2, 3)"), std::string(24, '\0'));
  auto h = Parse(f4);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->descr, "<f4");
  EXPECT_EQ(h->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(h->elements, 6u);
  EXPECT_EQ(h->data_bytes, 24u);
  EXPECT_EQ(h->data_offset, f4.size() - 24);
  EXPECT_EQ(h->data_offset % 64, 0u);
  const std::string u1 = Npy(Dict("|u1", "(5,)"), "hello", 2);
  h = Parse(u1);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->descr, "<u1");
  EXPECT_EQ(h->data_offset, u1.size() - 5);
  h = Parse(Npy(Dict("<i8", "(0, 4)"), ""));
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->elements, 0u);

  if (std::system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "no numpy for /usr/bin/python3";
  const std::string path = std::filesystem::temp_directory_path() /
                           ("npy-test-" + std::to_string(getpid()) + ".npy");
  ASSERT_EQ(std::system(("/usr/bin/python3 -c \"import numpy as np; "
                         "np.save('" + path + "', np.arange(60, dtype='<i2').reshape(3, 4, 5))\"")
                            .c_str()),
            0);
  auto real = ReadNpyHeader(path);
  std::filesystem::remove(path);
  ASSERT_TRUE(real.ok()) << real.status().ToString();
  EXPECT_EQ(real->descr, "<i2");
  EXPECT_EQ(real->shape, (std::vector<int64_t>{3, 4, 5}));
  EXPECT_EQ(real->data_bytes, 120u);
}

TEST(NpyTest, DamagedHeadersAreErrorsNamingTheFile) {
  const std::string data(64, '\0');
  struct Case {
    std::string file;
    StatusCode code;
    const char* says;
  };
  const std::vector<Case> cases = {
      {"not numpy at all", StatusCode::kInvalidArgument, "bad magic"},
      {Npy(Dict("<f4", "(2,)"), data, 9), StatusCode::kInvalidArgument, "version 9"},
      {Npy(Dict("<f4", "(2,)"), data).substr(0, 30), StatusCode::kInvalidArgument, "truncated"},
      {Npy(Dict(">f4", "(2,)"), data), StatusCode::kInvalidArgument, "'>f4'"},
      {Npy(Dict("<i16", "(2,)"), data), StatusCode::kInvalidArgument, "'<i16'"},
      {Npy(Dict("<c8", "(2,)"), data), StatusCode::kInvalidArgument, "'<c8'"},
      {Npy(Dict("<f4", "(2,)", "True"), data), StatusCode::kInvalidArgument, "Fortran"},
      {Npy(Dict("<f4", "(-3, 2)"), data), StatusCode::kInvalidArgument, "non-negative"},
      {Npy(Dict("<f4", "(99999999999999999999999,)"), data), StatusCode::kInvalidArgument,
       "non-negative"},
      {Npy(Dict("<f4", "(4294967296, 4294967296)"), data), StatusCode::kInvalidArgument,
       "too large"},
      {Npy(Dict("<f4", "(2x,)"), data), StatusCode::kInvalidArgument, "tuple of integers"},
      {Npy(Dict("<f4", "()"), data), StatusCode::kInvalidArgument, "scalar"},
      {Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,", data),
       StatusCode::kInvalidArgument, "shape"},
      {Npy("{'fortran_order': False, 'shape': (2,), }", data), StatusCode::kInvalidArgument,
       "dtype"},
      {Npy(Dict("<f4", "(100,)"), data), StatusCode::kDataLoss, "shorter"},
  };
  for (const Case& c : cases) {
    auto h = Parse(c.file);
    ASSERT_FALSE(h.ok()) << c.says;
    EXPECT_EQ(h.status().code(), c.code) << h.status().ToString();
    EXPECT_NE(h.status().message().find("x.npy"), std::string::npos) << h.status().ToString();
    EXPECT_NE(h.status().message().find(c.says), std::string::npos) << h.status().ToString();
  }
  // A version-2 header length of 4 GiB - 1: refused before anything is allocated.
  std::string huge = Npy(Dict("<f4", "(2,)"), data, 2);
  huge[8] = huge[9] = huge[10] = huge[11] = '\xff';
  EXPECT_NE(Parse(huge).status().message().find("damaged"), std::string::npos);
}

}  // namespace
}  // namespace gantry
