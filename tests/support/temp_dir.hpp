// Temporary directories and small file helpers for tests.
//
// These helpers fail the way test code should: by throwing, which GoogleTest
// reports as a failure of the running test with the message, instead of
// returning an error every caller would have to assert on.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

namespace aula::test {

// A new empty directory under $TMPDIR (or /tmp), removed with everything in
// it when the object goes away.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  // A path inside the directory (not created).
  std::filesystem::path operator/(std::string_view name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// Writes `content` to `path`, replacing the file; throws std::system_error.
void writeFile(const std::filesystem::path& path, std::string_view content);
// The whole content of `path`; throws std::system_error.
std::string readFile(const std::filesystem::path& path);

// The last `lines` lines of a log file, or "(no log)": what a failed daemon
// start shows the reader.
std::string fileTail(const std::filesystem::path& path, int lines = 20);

// Binds port 0 on 127.0.0.1 and returns the port the kernel chose. Another
// process could take it before the caller binds it, so callers retry a start
// that fails on it; throws std::system_error.
int freeLoopbackPort();

}  // namespace aula::test
