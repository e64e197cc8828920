// Runs tests/tools/cross_encoder_reference.py (the independent PyTorch cross-encoder, in
// Debian's /usr/bin/python3) on token ids, for the model tests and the end-to-end tests.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "server/models/model.h"

namespace embedserve::testing {

// The reference's {"single": [logit per input, alone], "batched": [logits of one padded
// batch]} for `inputs` (ids with special tokens, and each pair's second segment start) on
// the checkpoint in `dir`. Fails the current test if the script fails.
nlohmann::json RunCrossEncoderReference(const std::string& dir,
                                        const std::vector<models::TextInput>& inputs);

// float32 against the float64 reference: a tiny model's logits are O(1) and its float32
// rounding stays near 1e-6 relative; 1e-5 relative with a 1e-5 absolute floor leaves a
// margin without hiding a wrong position, type or mask (those move logits by > 1e-2).
void CheckCloseToReference(const std::vector<float>& got, const std::vector<double>& want);

}  // namespace embedserve::testing
