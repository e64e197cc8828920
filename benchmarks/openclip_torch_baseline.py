"""The Python baseline for clip_forward_bench: OpenCLIP's ViT image tower as the OpenCLIP
package builds it (nn.MultiheadAttention, LayerNorm, GELU or QuickGELU, class token, ln_post,
proj), in PyTorch from Debian (python3-torch 1.13, the same libtorch and OpenBLAS the server
links), random weights, float32. The open_clip package itself is not installable here (no
PyPI); this is its compute graph (tests/tools/openclip_reference.py loads checkpoints into
it). Prints images/s at batch 1, 8, 32 (median of --reps) for torch's
default threads and for the best setting found for float32 (1 torch thread over OpenBLAS).

  /usr/bin/python3 benchmarks/openclip_torch_baseline.py [--reps 5]

On a GPU (--device cuda, with that machine's PyTorch): the tower in each of --dtypes
(weights cast, as OpenCLIP's precision="fp16"/"pure_bf16" do), the input copied from host
memory and the output read back inside the timing, as the server does.
"""
import argparse
import time

import torch
from torch import nn


class QuickGELU(nn.Module):
    """OpenCLIP's QuickGELU (the -quickgelu architectures): x * sigmoid(1.702 x)."""

    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class Block(nn.Module):
    def __init__(self, width, heads, mlp, quick_gelu=False):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads)  # OpenCLIP: batch_first=False
        self.ln_2 = nn.LayerNorm(width)
        act = QuickGELU() if quick_gelu else nn.GELU()
        self.mlp = nn.Sequential(nn.Linear(width, mlp), act, nn.Linear(mlp, width))

    def forward(self, x):
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class VisionTower(nn.Module):
    def __init__(self, image=224, patch=32, width=768, layers=12, heads=12, embed=512,
                 quick_gelu=False):
        super().__init__()
        grid = image // patch
        self.conv1 = nn.Conv2d(3, width, patch, patch, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(width) * 0.02)
        self.positional_embedding = nn.Parameter(torch.randn(grid * grid + 1, width) * 0.01)
        self.ln_pre = nn.LayerNorm(width)
        self.blocks = nn.ModuleList(
            [Block(width, heads, 4 * width, quick_gelu) for _ in range(layers)])
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.randn(width, embed) * width ** -0.5)

    def forward(self, x):
        x = self.conv1(x).flatten(2).permute(0, 2, 1)
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], 1) + self.positional_embedding
        x = self.ln_pre(x).permute(1, 0, 2)  # LND, as OpenCLIP 2.24
        for block in self.blocks:
            x = block(x)
        x = x.permute(1, 0, 2)
        return self.ln_post(x[:, 0]) @ self.proj


def images_per_second(model, batch, reps, device="cpu", dtype=torch.float32):
    x = torch.randn(batch, 3, 224, 224)
    with torch.inference_mode():
        model(x.to(device, dtype)).float().cpu()
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            model(x.to(device, dtype)).float().cpu()
            times.append(time.perf_counter() - start)
    times.sort()
    return batch / times[len(times) // 2]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtypes", default="float32,bfloat16,float16")
    parser.add_argument("--batches", default="1,8,32")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = VisionTower().eval()
    if args.device != "cpu":
        batches = [int(b) for b in args.batches.split(",")]
        for name in args.dtypes.split(","):
            dtype = getattr(torch, name)
            tower = VisionTower().eval().to(args.device, dtype)
            for batch in batches:
                rate = images_per_second(tower, batch, args.reps, args.device, dtype)
                print(f"python torch {torch.__version__} {name} {args.device} batch {batch}: "
                      f"{rate:.1f} images/s", flush=True)
        return
    default_threads = torch.get_num_threads()
    for threads in sorted({default_threads, 1}):
        torch.set_num_threads(threads)
        for batch in (1, 8, 32):
            rate = images_per_second(model, batch, args.reps)
            print(f"python torch {torch.__version__} float32 torch_threads={threads}"
                  f"{' (default)' if threads == default_threads else ''} batch {batch}: "
                  f"{rate:.1f} images/s", flush=True)


if __name__ == "__main__":
    main()
