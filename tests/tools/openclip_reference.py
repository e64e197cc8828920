#!/usr/bin/env python3
"""Reference image embeddings of an OpenCLIP checkpoint, for tests/server/openclip_pretrained_test.cc.

Runs the image tower of benchmarks/openclip_torch_baseline.py (OpenCLIP's graph in Debian's
PyTorch, with GELU or QuickGELU) on weights read from an open_clip_model.safetensors (with the
numpy reader of tests/tools/cross_encoder_reference.py), in float32.

Usage: openclip_reference.py WEIGHTS.safetensors PIXELS.f32 ARCH ACTIVATION
PIXELS.f32: N x 3 x S x S little-endian float32 (already preprocessed). ARCH: ViT-B-32 (the
only shape wired here). ACTIVATION: gelu or quick_gelu. Prints a JSON list of N embeddings.
"""

import json
import os
import sys

import numpy as np
import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))

from openclip_torch_baseline import VisionTower  # noqa: E402
from cross_encoder_reference import read_safetensors  # noqa: E402

SHAPES = {"ViT-B-32": dict(image=224, patch=32, width=768, layers=12, heads=12, embed=512)}


def tower_state(weights):
    """OpenCLIP's visual.* keys renamed to the baseline module's."""
    state = {}
    for key, value in weights.items():
        if not key.startswith("visual."):
            continue
        name = key[len("visual."):].replace("transformer.resblocks.", "blocks.")
        name = name.replace("mlp.c_fc.", "mlp.0.").replace("mlp.c_proj.", "mlp.2.")
        state[name] = value.float()
    return state


def main():
    weights_path, pixels_path, arch, activation = sys.argv[1:5]
    shape = SHAPES[arch]
    assert activation in ("gelu", "quick_gelu"), activation
    torch.set_num_threads(1)
    tower = VisionTower(**shape, quick_gelu=activation == "quick_gelu").eval()
    tower.load_state_dict(tower_state(read_safetensors(weights_path)), strict=True)
    side = shape["image"]
    pixels = np.fromfile(pixels_path, dtype="<f4").reshape(-1, 3, side, side)
    with torch.inference_mode():
        out = tower(torch.from_numpy(pixels.copy()))
    print(json.dumps(out.double().tolist()))


if __name__ == "__main__":
    main()
