#!/usr/bin/env python3
"""Reference logits of a cross-encoder checkpoint, for tests/models/cross_encoder_test.cc.

An independent PyTorch implementation of XLMRobertaForSequenceClassification and
BertForSequenceClassification at inference, written from the transformers model
definitions as server/models/cross_encoder/NOTES.md describes them (sections 4 and 5). It
needs only torch and numpy (Debian's /usr/bin/python3): config.json is read with json,
model.safetensors (or its index) with numpy.

Usage: cross_encoder_reference.py MODEL_DIR INPUTS.json
INPUTS.json: [{"ids": [...], "second_segment_start": N}, ...] (ids with special tokens).
Prints {"single": [logit per input, each run alone], "batched": [logits of one padded batch,
as FlagReranker pads: right padding with pad_token_id, attention mask 0 on pads]}.
"""

import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F


def read_safetensors(path):
    """name -> float64 torch tensor, parsed with numpy (8-byte LE header length, JSON, data)."""
    with open(path, "rb") as f:
        raw = f.read()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + header_len])
    data = raw[8 + header_len:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        chunk = data[start:end]
        dtype = info["dtype"]
        if dtype == "F32":
            arr = np.frombuffer(chunk, dtype="<f4")
        elif dtype == "F16":
            arr = np.frombuffer(chunk, dtype="<f2")
        elif dtype == "F64":
            arr = np.frombuffer(chunk, dtype="<f8")
        elif dtype == "BF16":
            bits = np.frombuffer(chunk, dtype="<u2").astype(np.uint32) << 16
            arr = bits.view(np.float32)
        elif dtype == "I64":
            arr = np.frombuffer(chunk, dtype="<i8")
        else:
            raise ValueError(f"{path}: tensor {name}: dtype {dtype} not handled")
        out[name] = torch.from_numpy(arr.astype(np.float64).reshape(info["shape"]))
    return out


def read_weights(model_dir):
    single = os.path.join(model_dir, "model.safetensors")
    if os.path.exists(single):
        return read_safetensors(single)
    with open(single + ".index.json") as f:
        index = json.load(f)
    weights = {}
    for shard in sorted(set(index["weight_map"].values())):
        weights.update(read_safetensors(os.path.join(model_dir, shard)))
    return weights


class Reference:
    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "config.json")) as f:
            self.config = json.load(f)
        arch = self.config["architectures"][0]
        self.is_xlmr = arch == "XLMRobertaForSequenceClassification"
        assert self.is_xlmr or arch == "BertForSequenceClassification", arch
        assert self.config.get("hidden_act", "gelu") == "gelu"
        self.pad = self.config.get("pad_token_id", 1 if self.is_xlmr else 0)
        self.eps = self.config.get("layer_norm_eps", 1e-12)
        self.heads = self.config["num_attention_heads"]
        self.layers = self.config["num_hidden_layers"]
        w = read_weights(model_dir)
        base = "roberta." if self.is_xlmr else "bert."
        self.w = {}
        for name, t in w.items():
            if name.endswith("position_ids") or name.endswith("token_type_ids"):
                continue
            self.w[name[len(base):] if name.startswith(base) else name] = t

    def layer_norm(self, x, prefix):
        return F.layer_norm(x, (x.shape[-1],), self.w[prefix + ".weight"], self.w[prefix + ".bias"],
                            self.eps)

    def linear(self, x, prefix):
        return F.linear(x, self.w[prefix + ".weight"], self.w[prefix + ".bias"])

    def position_ids(self, ids):
        if self.is_xlmr:
            # create_position_ids_from_input_ids: cumsum over non-pad ids, offset by padding_idx.
            mask = (ids != self.pad).long()
            return torch.cumsum(mask, dim=1) * mask + self.pad
        return torch.arange(ids.shape[1]).unsqueeze(0).expand_as(ids)

    def forward(self, ids, types, attention_mask):
        """ids, types, attention_mask: [B, L] int64 -> logits [B, num_labels] in the weights'
        dtype (float64 as read; the benchmark's baseline casts them to float32)."""
        x = (F.embedding(ids, self.w["embeddings.word_embeddings.weight"]) +
             F.embedding(types, self.w["embeddings.token_type_embeddings.weight"]) +
             F.embedding(self.position_ids(ids), self.w["embeddings.position_embeddings.weight"]))
        x = self.layer_norm(x, "embeddings.LayerNorm")
        # get_extended_attention_mask: (1 - mask) * dtype min, broadcast over heads and queries.
        additive = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        batch, length, hidden = x.shape
        head_dim = hidden // self.heads
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def heads(t):
                return t.view(batch, length, self.heads, head_dim).permute(0, 2, 1, 3)

            q = heads(self.linear(x, p + "attention.self.query"))
            k = heads(self.linear(x, p + "attention.self.key"))
            v = heads(self.linear(x, p + "attention.self.value"))
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(head_dim) + additive
            context = torch.matmul(torch.softmax(scores, dim=-1), v)
            context = context.permute(0, 2, 1, 3).reshape(batch, length, hidden)
            a = self.layer_norm(self.linear(context, p + "attention.output.dense") + x,
                                p + "attention.output.LayerNorm")
            inter = F.gelu(self.linear(a, p + "intermediate.dense"))  # exact erf GELU
            x = self.layer_norm(self.linear(inter, p + "output.dense") + a, p + "output.LayerNorm")
        first = x[:, 0, :]
        if self.is_xlmr:
            # XLMRobertaClassificationHead (dropout is identity at inference).
            return self.linear(torch.tanh(self.linear(first, "classifier.dense")), "classifier.out_proj")
        # BertPooler, then the classifier.
        return self.linear(torch.tanh(self.linear(first, "pooler.dense")), "classifier")

    def types_of(self, item, length):
        types = [0] * length
        start = item.get("second_segment_start", 0)
        if not self.is_xlmr and start > 0:
            for i in range(start, len(item["ids"])):
                types[i] = 1
        return types

    def score(self, items):
        single = []
        for item in items:
            n = len(item["ids"])
            ids = torch.tensor([item["ids"]], dtype=torch.long)
            types = torch.tensor([self.types_of(item, n)], dtype=torch.long)
            mask = torch.ones(1, n, dtype=torch.long)
            single.append(self.forward(ids, types, mask)[0, 0].item())
        longest = max(len(item["ids"]) for item in items)
        ids, types, mask = [], [], []
        for item in items:
            n = len(item["ids"])
            ids.append(item["ids"] + [self.pad] * (longest - n))
            types.append(self.types_of(item, longest))
            mask.append([1] * n + [0] * (longest - n))
        batched = self.forward(torch.tensor(ids), torch.tensor(types), torch.tensor(mask))
        return {"single": single, "batched": batched[:, 0].tolist()}


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[2]) as f:
        items = json.load(f)
    torch.set_grad_enabled(False)
    print(json.dumps(Reference(sys.argv[1]).score(items)))


if __name__ == "__main__":
    main()
