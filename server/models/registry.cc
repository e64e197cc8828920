// The registry: one line per family.
#include "server/models/registry.h"

#include "server/models/colpali/colpali_model.h"
#include "server/models/cross_encoder/cross_encoder_model.h"
#include "server/models/openclip/openclip_model.h"

namespace embedserve::models {

const std::vector<const ModelFamily*>& ModelFamilies() {
  static const std::vector<const ModelFamily*> families = {
      &openclip::OpenClipFamily(),
      &colpali::ColPaliFamily(),
      &cross_encoder::CrossEncoderFamily(),
  };
  return families;
}

}  // namespace embedserve::models
