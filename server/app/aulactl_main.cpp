// aulactl: start-up only; the commands live in server/cli/.
#include "aula/broker/aulactl.hpp"

int main(int argc, char** argv) {
  return aula::ctl::run(std::vector<std::string>(argv + 1, argv + argc));
}
