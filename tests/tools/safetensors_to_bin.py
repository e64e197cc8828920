# Converts a safetensors file to a torch.save checkpoint (pytorch_model.bin) the way a
# Hugging Face repo ships one: an OrderedDict of tensors, 2-D ones saved as transposed
# (non-contiguous) views, plus an int64 position_ids buffer where a name is given. The
# safetensors file is parsed with numpy alone (8-byte LE header length, JSON header, data).
# Usage: safetensors_to_bin.py IN.safetensors OUT.bin [POSITION_IDS_NAME]
import collections
import json
import struct
import sys

import numpy as np
import torch

src, dst = sys.argv[1], sys.argv[2]
with open(src, "rb") as f:
    raw = f.read()
(header_len,) = struct.unpack("<Q", raw[:8])
header = json.loads(raw[8:8 + header_len])
data = raw[8 + header_len:]
NUMPY = {"F32": np.float32, "F16": np.float16, "BF16": np.int16, "I64": np.int64}
state = collections.OrderedDict()
for name, info in header.items():
    if name == "__metadata__":
        continue
    begin, end = info["data_offsets"]
    array = np.frombuffer(data[begin:end], dtype=NUMPY[info["dtype"]]).reshape(info["shape"])
    t = torch.from_numpy(array.copy())
    if info["dtype"] == "BF16":
        t = t.view(torch.bfloat16)
    if t.dim() == 2:
        t = t.t().contiguous().t()  # same values, strides (1, rows)
    state[name] = t
if len(sys.argv) > 3:
    state[sys.argv[3]] = torch.arange(64).unsqueeze(0)
torch.save(state, dst)
