// Golden files: generated text (domain XML, protocol JSON, iPXE scripts)
// compared with a reviewed copy in tests/golden/. AULA_REGENERATE_GOLDEN=1
// rewrites the copies from the current output; review the diff before
// committing it (libvirt's VIR_TEST_REGENERATE_OUTPUT).
#pragma once

#include <filesystem>
#include <string>

namespace aula::test {

// Compares `actual` with the file `dir`/`fileName` (a GoogleTest failure
// when it differs or is missing), or rewrites it when regenerating.
void expectMatchesGolden(const std::string& actual, const std::filesystem::path& dir,
                         const std::string& fileName);

}  // namespace aula::test
