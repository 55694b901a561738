// Overloaded: a visitor made of lambdas, for std::visit over a variant.
#pragma once

namespace aula {

template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

}  // namespace aula
