#!/usr/bin/env python3
"""Holds tests/tools/openclip_reference.py's text tower to the open_clip package itself: on the
tiny checkpoint of tests/data/openclip-reference (GELU), fed the token ids the real open_clip
tokenizer produced, its L2-normalized outputs must equal the text embeddings the real open_clip
computed (reference.json), every one of the 66 texts.

Usage: openclip_reference_check.py   (/usr/bin/python3 with Debian's python3-torch)
"""

import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import openclip_reference  # noqa: E402

DATA = os.path.join(HERE, "..", "data", "openclip-reference")
# model/open_clip_config.json's text_cfg and embed_dim.
TINY_TEXT = dict(context=77, vocab=49408, width=32, heads=2, layers=2, embed=32)


def main():
    with open(os.path.join(DATA, "reference.json")) as f:
        ref = json.load(f)
    weights = openclip_reference.read_weights(
        os.path.join(DATA, "model", "open_clip_model.safetensors"))
    tower = openclip_reference.TextTower(**TINY_TEXT).eval()
    tower.load_state_dict(openclip_reference.text_state(weights), strict=True)
    ids = torch.zeros(len(ref["token_ids"]), TINY_TEXT["context"], dtype=torch.long)
    for row, tokens in enumerate(ref["token_ids"]):  # padded with 0, as open_clip pads
        ids[row, :len(tokens)] = torch.tensor(tokens)
    with torch.inference_mode():
        got = torch.nn.functional.normalize(tower(ids).double(), dim=-1)
    want = torch.tensor(ref["text_embeddings"], dtype=torch.float64)
    cosines = (got * want).sum(-1)
    worst = (got - want).abs().max().item()
    print(f"{len(cosines)} texts: min cosine {cosines.min().item():.10f}, max abs diff {worst:.3g}")
    # Both sides are float32 forwards of the same graph; what is left is summation order.
    bad = [(i, ref["texts"][i], cosines[i].item()) for i in range(len(cosines))
           if cosines[i].item() < 0.999999]
    if bad or worst > 1e-6:
        print(f"{len(bad)} texts below 0.999999, first: {bad[:3]}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
