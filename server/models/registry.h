// The model families this build serves, in detection order. Adding a family is one line in
// registry.cc (and its folder).
#pragma once

#include <vector>

#include "server/models/family.h"

namespace embedserve::models {

const std::vector<const ModelFamily*>& ModelFamilies();

}  // namespace embedserve::models
