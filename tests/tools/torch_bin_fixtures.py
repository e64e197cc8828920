# Writes torch.save checkpoints for tests/weights/torch_bin_test.cc into OUT_DIR, each good one
# with NAME.expect.json: every tensor's dtype, shape and contiguous little-endian bytes (hex),
# computed by torch itself (the expectation the C++ reader is held to).
# Usage: torch_bin_fixtures.py OUT_DIR   (/usr/bin/python3 with Debian's python3-torch)
import collections
import io
import json
import os
import pickle
import sys
import zipfile

import torch

out = sys.argv[1]
DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64"}


def expect(name, state):
    result = {}
    for key, t in state.items():
        flat = t.detach().contiguous().reshape(-1)
        raw = flat.view(torch.uint8) if flat.numel() else flat.to(torch.uint8)
        result[key] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape),
                       "hex": bytes(raw.numpy().tobytes()).hex()}
    with open(os.path.join(out, name + ".expect.json"), "w") as f:
        json.dump(result, f)


def path(name):
    return os.path.join(out, name + ".bin")


torch.manual_seed(0)
# A module's state dict (an OrderedDict with _metadata) plus views, dtypes and a Parameter.
state = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.LayerNorm(3)).state_dict()
base = torch.randn(6, 4)
state["view.transposed"] = base.t()                 # strides (1, 4)
state["view.rows"] = base[1:4]                      # storage offset 4
state["view.column"] = base[:, 2]                   # offset 2, stride 4
state["view.whole"] = base                          # the same storage again
state["half"] = torch.randn(2, 3).half()
state["bf16"] = torch.randn(7).bfloat16()
state["bf16.strided"] = torch.randn(3, 4).bfloat16()[:, ::2]
state["scalar"] = torch.tensor(2.5)
state["empty"] = torch.zeros(0, 3)
state["position_ids"] = torch.arange(6).unsqueeze(0)  # int64, as BERT checkpoints hold
state["param"] = torch.nn.Parameter(torch.randn(2, 2))  # _rebuild_parameter
torch.save(state, path("basic"))
expect("basic", state)

# OpenCLIP's training format: {"epoch", "name", "state_dict" (DDP "module." names), "optimizer"}.
inner = collections.OrderedDict([("module.proj", torch.randn(3, 2)),
                                 ("module.logit_scale", torch.tensor(4.6))])
torch.save({"epoch": 3, "name": "run", "state_dict": inner,
            "optimizer": {"state": {0: {"step": 10, "exp_avg": torch.randn(3, 2)}},
                          "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.98), "params": [0],
                                            "amsgrad": False, "eps": None}]}},
           path("wrapped"))
expect("wrapped", {"proj": inner["module.proj"], "logit_scale": inner["module.logit_scale"]})

# A plain dict written with pickle protocol 4 (STACK_GLOBAL, SHORT_BINUNICODE, MEMOIZE, FRAME).
plain = {"a": torch.randn(2, 2), "b": torch.randn(3).half()}
torch.save(plain, path("protocol4"), pickle_protocol=4)
expect("protocol4", plain)


class Custom:
    def __init__(self):
        self.value = 1


class Evil:
    def __reduce__(self):
        return (os.system, ("touch " + os.path.join(out, "pwned"),))


# Refusals.
torch.save({"w": torch.randn(2), "obj": Custom()}, path("custom_class"))
torch.save({"w": torch.randn(2), "evil": Evil()}, path("os_system"))
torch.save({"d": torch.randn(2).double()}, path("float64"))
torch.save({"w": torch.randn(2)}, path("legacy"), _use_new_zipfile_serialization=False)
torch.save({"outer": {"inner": torch.randn(2)}}, path("nested"))


def rewrite(source, target, replace):
    """Copies the zip `source` to `target` the way torch.save lays it out (stored entries),
    with replace(name, data) -> data for each entry."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, replace(info.filename, zin.read(info.filename)))


# A hand-built protocol-2 pickle whose REDUCE would call os.system, in place of data.pkl.
crafted = pickle.dumps({"w": Evil()}, protocol=2)
rewrite(path("basic"), path("crafted_pickle"),
        lambda name, data: crafted if name.endswith("/data.pkl") else data)
# The first storage's entry four bytes short of what its persistent id declares.
rewrite(path("basic"), path("short_storage"),
        lambda name, data: data[:-4] if name.endswith("/data/0") else data)
