// aulactl: every admin and teacher task over the broker's API. The command
// table (resources, their fields and columns) is data; this runs it.
#pragma once

#include <string>
#include <vector>

namespace aula::ctl {

// Runs aulactl with these arguments (without argv[0]); returns the exit code.
// Output goes to stdout, errors to stderr.
int run(const std::vector<std::string>& args);

}  // namespace aula::ctl
