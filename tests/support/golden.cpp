// Golden files (see golden.hpp).
#include "support/golden.hpp"

#include <cstdlib>
#include <iostream>
#include <string_view>

#include <gtest/gtest.h>

#include "support/temp_dir.hpp"

namespace aula::test {

void expectMatchesGolden(const std::string& actual, const std::filesystem::path& dir,
                         const std::string& fileName) {
  std::filesystem::path path = dir / fileName;
  const char* regenerate = std::getenv("AULA_REGENERATE_GOLDEN");
  if (regenerate != nullptr && std::string_view(regenerate) == "1") {
    std::filesystem::create_directories(dir);
    writeFile(path, actual);
    std::cout << "AULA_REGENERATE_GOLDEN=1: wrote " << path.native() << "\n";
    return;
  }
  ASSERT_TRUE(std::filesystem::exists(path))
      << "There is no golden file " << path.native()
      << "; run the test with AULA_REGENERATE_GOLDEN=1 to write it.";
  EXPECT_EQ(actual, readFile(path))
      << "The output differs from " << path.native()
      << "; if the change is intended, regenerate with AULA_REGENERATE_GOLDEN=1.";
}

}  // namespace aula::test
