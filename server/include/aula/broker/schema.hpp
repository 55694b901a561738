// The broker's schema migrations (see src/schema.cpp).
#pragma once

#include <vector>

#include "aula/broker/database.hpp"

namespace aula::broker {

const std::vector<db::Migration>& migrations();

}  // namespace aula::broker
