#!/usr/bin/env python3
"""In-process PyTorch baseline for benchmarks/rerank_bench.cc: a cross-encoder checkpoint
scored in float32 under torch.inference_mode, batched as FlagReranker.compute_score does it.

The model is tests/tools/cross_encoder_reference.py's Reference (imported, not copied): its
config/weight loading and its forward. That forward builds the attention mask in float64
(`.double()` and `torch.finfo(torch.float64).min`), which promotes a float32 forward to
float64 and then fails in the next matmul; until the reference computes the mask in the
activations' dtype, the one mask line is rewritten at import to do so (x.dtype, as
transformers' get_extended_attention_mask does) and the rest of the forward is used as it is.
If that line changes, this script stops with an error instead of guessing.

Usage (driven by rerank_bench over stdin/stdout, one JSON object per line):
  cross_encoder_torch_baseline.py --model-dir DIR --pairs PAIRS.json [--threads 2] [--batch 0]
PAIRS.json: {"calls": [[{"ids": [...], "second_segment_start": N}, ...], ...]}: the pairs of each
Rerank call, ids with special tokens, exactly as the server tokenizes them.
--batch 0: each call's candidates are one compute_score (sorted by length, one batch when
there are at most 128 = FlagReranker's default batch_size); --batch N: all pairs of a round in
one compute_score with batch_size N (sorted by length over the whole round).
After loading it prints {"ready": ...}; then each stdin line is a command:
  "warmup"  runs the first call once, prints {"seconds": ...}
  "ceiling M K N"  best time of a float32 [M x K] x [K x N] torch.mm (about 2 s), prints
            {"gflops": ..., "reps": ...}
  "round"   scores every call once, prints {"seconds": s, "pairs": n, "padded_tokens": t,
            "logits": [[logit per candidate, in candidate order] per call]}
EOF ends it.
"""

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "tools"))
import cross_encoder_reference as reference  # noqa: E402

class Baseline:
    def __init__(self, model_dir):
        self.ref = reference.Reference(model_dir)  # weights read as float64
        for name in list(self.ref.w):
            self.ref.w[name] = self.ref.w[name].float().contiguous()
        self.forward = self.ref.forward

    def compute_score(self, items, batch_size):
        """FlagReranker.compute_score on tokenized pairs: sort by length (longest first), pad
        each batch to its longest (right padding with pad_token_id, mask 0 on pads), raw
        logits back in input order. Returns (logits, padded tokens)."""
        order = sorted(range(len(items)), key=lambda i: -len(items[i]["ids"]))
        scores = [0.0] * len(items)
        padded = 0
        for start in range(0, len(order), batch_size):
            batch = [items[i] for i in order[start:start + batch_size]]
            longest = max(len(item["ids"]) for item in batch)
            ids, types, mask = [], [], []
            for item in batch:
                n = len(item["ids"])
                ids.append(item["ids"] + [self.ref.pad] * (longest - n))
                types.append(self.ref.types_of(item, longest))
                mask.append([1] * n + [0] * (longest - n))
            logits = self.forward(torch.tensor(ids), torch.tensor(types), torch.tensor(mask))
            for i, value in zip(order[start:start + batch_size], logits.view(-1).float().tolist()):
                scores[i] = value
            padded += longest * len(batch)
        return scores, padded


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--pairs", required=True)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--batch", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with open(args.pairs) as f:
        calls = json.load(f)["calls"]
    start = time.perf_counter()
    with torch.inference_mode():
        baseline = Baseline(args.model_dir)
    print(json.dumps({"ready": True, "load_s": time.perf_counter() - start,
                      "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "dtype": str(baseline.ref.w["embeddings.word_embeddings.weight"].dtype),
                      "batch": args.batch}), flush=True)
    for line in sys.stdin:
        command = line.strip()
        with torch.inference_mode():
            if command == "warmup":
                t0 = time.perf_counter()
                baseline.compute_score(calls[0], 128)
                print(json.dumps({"seconds": time.perf_counter() - t0}), flush=True)
            elif command.startswith("ceiling"):
                m, k, n = (int(v) for v in command.split()[1:])
                a, b = torch.randn(m, k), torch.randn(k, n)
                torch.mm(a, b)
                best, reps, t_end = float("inf"), 0, time.perf_counter() + 2.0
                while reps < 5 or (time.perf_counter() < t_end and reps < 50):
                    t0 = time.perf_counter()
                    torch.mm(a, b)
                    best = min(best, time.perf_counter() - t0)
                    reps += 1
                print(json.dumps({"gflops": 2.0 * m * k * n / best / 1e9, "reps": reps}), flush=True)
            elif command == "round":
                t0 = time.perf_counter()
                if args.batch > 0:
                    flat = [item for call in calls for item in call]
                    scores, padded = baseline.compute_score(flat, args.batch)
                    logits, k = [], 0
                    for call in calls:
                        logits.append(scores[k:k + len(call)])
                        k += len(call)
                else:
                    logits, padded = [], 0
                    for call in calls:
                        scores, p = baseline.compute_score(call, 128)
                        logits.append(scores)
                        padded += p
                seconds = time.perf_counter() - t0
                print(json.dumps({"seconds": seconds, "pairs": sum(len(c) for c in calls),
                                  "padded_tokens": padded, "logits": logits}), flush=True)
            elif command:
                sys.exit(f"unknown command {command!r}")


if __name__ == "__main__":
    main()
