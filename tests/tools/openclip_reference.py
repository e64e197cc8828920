#!/usr/bin/env python3
"""Reference embeddings of an OpenCLIP checkpoint, for tests/server/openclip_pretrained_test.cc.

Images: the image tower of benchmarks/openclip_torch_baseline.py (OpenCLIP's ViT graph in
Debian's PyTorch). Texts: OpenCLIP's text transformer as open_clip 3.2 builds it for a
built-in architecture (model.py CLIP.encode_text over transformer.py's TextTransformer,
ResidualAttentionBlock and text_global_pool), written out below. Both run in float32 with
GELU or QuickGELU, on weights read from open_clip_model.safetensors (the numpy reader of
tests/tools/cross_encoder_reference.py) or open_clip_pytorch_model.bin (torch.load), so a
.bin is read by PyTorch itself, not by the C++ reader under test.

Usage: openclip_reference.py WEIGHTS ARCH ACTIVATION [--pixels PIXELS.f32] [--tokens TOKENS.i64]
WEIGHTS: *.safetensors or a torch.save *.bin. ARCH: ViT-B-32 (the only shape wired here).
ACTIVATION: gelu or quick_gelu. PIXELS.f32: N x 3 x S x S little-endian float32 (already
preprocessed). TOKENS.i64: M x context little-endian int64, each row the ids open_clip's
tokenizer returns (start and end tokens included, padded with 0 to the context length).
Prints {"images": [N embeddings], "texts": [M embeddings]}, unnormalized (encode_* with
normalize=False).
"""

import argparse
import collections
import json
import os
import sys

import numpy as np
import torch
from torch import nn

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))

from openclip_torch_baseline import QuickGELU, VisionTower  # noqa: E402
from cross_encoder_reference import read_safetensors  # noqa: E402

SHAPES = {
    "ViT-B-32": dict(
        image=dict(image=224, patch=32, width=768, layers=12, heads=12, embed=512),
        text=dict(context=77, vocab=49408, width=512, heads=8, layers=12, embed=512),
    )
}


class TextBlock(nn.Module):
    """open_clip's ResidualAttentionBlock with its defaults for CLIP's text tower: pre-norm,
    batch-first nn.MultiheadAttention given the additive mask, no layer scale, an MLP of
    c_fc -> activation -> c_proj at 4x width."""

    def __init__(self, width, heads, quick_gelu):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(collections.OrderedDict([
            ("c_fc", nn.Linear(width, 4 * width)),
            ("gelu", QuickGELU() if quick_gelu else nn.GELU()),
            ("c_proj", nn.Linear(4 * width, width)),
        ]))

    def forward(self, x, mask):
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class Resblocks(nn.Module):
    """Holds the blocks under open_clip's names (transformer.resblocks.N.*)."""

    def __init__(self, width, heads, layers, quick_gelu):
        super().__init__()
        self.resblocks = nn.ModuleList([TextBlock(width, heads, quick_gelu) for _ in range(layers)])


class TextTower(nn.Module):
    """CLIP.encode_text: token embedding + positional embedding, the causal transformer over
    the whole context, ln_final, the features at argmax(ids) (the first end token: it is the
    highest id), then @ text_projection. Parameter names are the checkpoint's."""

    def __init__(self, context, vocab, width, heads, layers, embed, quick_gelu=False):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, width)
        self.positional_embedding = nn.Parameter(torch.empty(context, width))
        self.transformer = Resblocks(width, heads, layers, quick_gelu)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, embed))
        # TextTransformer.build_causal_mask: -inf above the diagonal, 0 elsewhere.
        mask = torch.empty(context, context).fill_(float("-inf")).triu_(1)
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, ids):
        x = self.token_embedding(ids) + self.positional_embedding
        for block in self.transformer.resblocks:
            x = block(x, self.attn_mask)
        x = self.ln_final(x)
        pooled = x[torch.arange(x.shape[0]), ids.argmax(dim=-1)]
        return pooled @ self.text_projection


def read_weights(path):
    if path.endswith(".safetensors"):
        return read_safetensors(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except TypeError:  # a torch without weights_only
        state = torch.load(path, map_location="cpu")
    if "state_dict" in state:  # open_clip's training checkpoint format
        state = state["state_dict"]
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def vision_state(weights):
    """OpenCLIP's visual.* keys renamed to the baseline module's."""
    state = {}
    for key, value in weights.items():
        if not key.startswith("visual."):
            continue
        name = key[len("visual."):].replace("transformer.resblocks.", "blocks.")
        name = name.replace("mlp.c_fc.", "mlp.0.").replace("mlp.c_proj.", "mlp.2.")
        state[name] = value.float()
    return state


def text_state(weights):
    """Everything outside visual.* but the logit scale (and bias), named as TextTower's."""
    return {k: v.float() for k, v in weights.items()
            if not k.startswith("visual.") and k not in ("logit_scale", "logit_bias")
            and not k.endswith("attn_mask")}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("weights")
    parser.add_argument("arch", choices=sorted(SHAPES))
    parser.add_argument("activation", choices=["gelu", "quick_gelu"])
    parser.add_argument("--pixels")
    parser.add_argument("--tokens")
    args = parser.parse_args()
    shape = SHAPES[args.arch]
    quick = args.activation == "quick_gelu"
    torch.set_num_threads(1)
    weights = read_weights(args.weights)
    out = {"images": [], "texts": []}
    with torch.inference_mode():
        if args.pixels:
            tower = VisionTower(**shape["image"], quick_gelu=quick).eval()
            tower.load_state_dict(vision_state(weights), strict=True)
            side = shape["image"]["image"]
            pixels = np.fromfile(args.pixels, dtype="<f4")
            pixels = pixels.reshape(-1, 3, side, side)
            out["images"] = tower(torch.from_numpy(pixels.copy())).double().tolist()
        if args.tokens:
            tower = TextTower(**shape["text"], quick_gelu=quick).eval()
            tower.load_state_dict(text_state(weights), strict=True)
            context = shape["text"]["context"]
            ids = np.fromfile(args.tokens, dtype="<i8").reshape(-1, context)
            out["texts"] = tower(torch.from_numpy(ids.copy())).double().tolist()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
