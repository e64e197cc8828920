"""The Python peer of embedserve for benchmarks/peer_bench.cc: what a team would write instead
of embedserve, a Python gRPC server answering our embedserve.v1.EmbedService/Embed for images.

It owns: stubs generated from proto/ at start (client/python/embedserve/_gen.py, system protoc),
the OpenCLIP image tower of benchmarks/openclip_torch_baseline.py in Debian's PyTorch loaded
from an open_clip_model.safetensors (float32), OpenCLIP's preprocessing in PIL + numpy (convert
to RGB, bicubic resize of the shortest side, center crop, /255, mean/std from the checkpoint's
preprocess_cfg), and a dynamic batcher: one thread collects calls up to --max-batch images or
--max-wait-ms after the first one and runs one forward per batch. --no-batching runs one
forward per call under a lock instead. Responses use our encodings (float list, or packed
float32/float16/bfloat16), L2-normalized unless options.normalize is false, with Timing.

Threads: gRPC handler threads (--grpc-threads, 16) decode and preprocess concurrently (PIL
releases the GIL in decode and resize); the forward runs with torch.set_num_threads
(--torch-threads, default 1) over OpenBLAS's own pool (all cores unless OPENBLAS_NUM_THREADS):
the best float32 setting benchmarks/openclip_torch_baseline.py found, and what embedserve
itself runs for float32 (1 torch thread, OpenBLAS on every core).

  /usr/bin/python3 benchmarks/python_peer_server.py --model-dir DIR --listen unix:/tmp/peer.sock
      [--name bench] [--no-batching] [--max-batch 32] [--max-wait-ms 2] [--torch-threads 1]
      [--grpc-threads 16] [--control-stdin]

--control-stdin (peer_bench's protocol): prints one JSON line when serving, then answers one
JSON line per command line on stdin, and exits at EOF:
  mode batched|unbatched         switch the serving mode (between load phases)
  stats                          forwards and images since the last stats, then reset
  inprocess PATH BATCH SECONDS   the in-process end to end loop (no gRPC): BATCH copies of the
                                 image bytes decoded + preprocessed (a thread per core) and one
                                 forward, repeated for SECONDS after one warm-up: images/s
"""
import argparse
import concurrent.futures
import importlib.util
import io
import json
import os
import queue
import signal
import sys
import tempfile
import threading
import time

import numpy as np
import torch
from PIL import Image

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from openclip_torch_baseline import VisionTower  # noqa: E402


def load_stubs():
    """embed_pb2 and types_pb2, generated from proto/ into a temporary package."""
    spec = importlib.util.spec_from_file_location(
        "embedserve_gen", os.path.join(ROOT, "client", "python", "embedserve", "_gen.py"))
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    out = tempfile.mkdtemp(prefix="peer-proto-")
    gen.generate(os.path.join(out, "peer_proto"), proto_dir=os.path.join(ROOT, "proto"))
    sys.path.insert(0, out)
    from peer_proto import embed_pb2, types_pb2  # noqa: E402
    return embed_pb2, types_pb2


embed_pb2, types_pb2 = load_stubs()


# --- the model -----------------------------------------------------------------------------

def read_visual_weights(path):
    """The visual.* tensors of a safetensors file as float32 torch tensors, renamed to
    VisionTower's parameter names (as tests/tools/openclip_reference.py renames them)."""
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_len))
        base = 8 + header_len
        state = {}
        for key, info in header.items():
            if not key.startswith("visual."):
                continue
            start, end = info["data_offsets"]
            f.seek(base + start)
            raw = f.read(end - start)
            kind = info["dtype"]
            if kind == "F32":
                values = np.frombuffer(raw, dtype="<f4").astype(np.float32)
            elif kind == "F16":
                values = np.frombuffer(raw, dtype="<f2").astype(np.float32)
            elif kind == "BF16":
                values = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
            else:
                raise ValueError(f"{path}: tensor {key}: dtype {kind} not handled")
            name = key[len("visual."):].replace("transformer.resblocks.", "blocks.")
            name = name.replace("mlp.c_fc.", "mlp.0.").replace("mlp.c_proj.", "mlp.2.")
            state[name] = torch.from_numpy(values.reshape(info["shape"]).copy())
    return state


class ClipImageModel:
    """OpenCLIP's image tower and preprocessing for one hub-layout checkpoint directory."""

    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "open_clip_config.json"), encoding="utf-8") as f:
            config = json.load(f)
        model_cfg = config["model_cfg"]
        vision = model_cfg["vision_cfg"]
        width = vision.get("width", 768)
        if vision.get("mlp_ratio", 4.0) != 4.0:
            raise ValueError(f"vision_cfg.mlp_ratio {vision['mlp_ratio']}: the peer's tower "
                             "(openclip_torch_baseline.VisionTower) has mlp_ratio 4 only")
        self.image_size = vision.get("image_size", 224)
        self.tower = VisionTower(image=self.image_size, patch=vision.get("patch_size", 32),
                                 width=width, layers=vision.get("layers", 12),
                                 heads=width // vision.get("head_width", 64),
                                 embed=model_cfg.get("embed_dim", 512),
                                 quick_gelu=bool(model_cfg.get("quick_gelu", False))).eval()
        self.tower.load_state_dict(
            read_visual_weights(os.path.join(model_dir, "open_clip_model.safetensors")),
            strict=True)
        pre = config.get("preprocess_cfg", {})
        self.mean = np.array(pre.get("mean", [0.48145466, 0.4578275, 0.40821073]),
                             dtype=np.float32).reshape(3, 1, 1)
        self.std = np.array(pre.get("std", [0.26862954, 0.26130258, 0.27577711]),
                            dtype=np.float32).reshape(3, 1, 1)
        self.dim = model_cfg.get("embed_dim", 512)

    def preprocess(self, data):
        """Encoded image bytes -> float32 [3, S, S]: OpenCLIP's Resize(S, BICUBIC) (shortest
        side S, the other int(S * long / short)), CenterCrop(S) (offsets rounded half to even,
        as Python's round), ToTensor, Normalize."""
        size = self.image_size
        image = Image.open(io.BytesIO(data)).convert("RGB")
        width, height = image.size
        short, long = min(width, height), max(width, height)
        new_long = int(size * long / short)
        resized = (size, new_long) if width <= height else (new_long, size)
        image = image.resize(resized, Image.BICUBIC)
        left = int(round((resized[0] - size) / 2.0))
        top = int(round((resized[1] - size) / 2.0))
        image = image.crop((left, top, left + size, top + size))
        pixels = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32)
        return (pixels / np.float32(255.0) - self.mean) / self.std

    def forward(self, pixels):
        """float32 [N, 3, S, S] numpy -> float32 [N, dim] torch (not normalized)."""
        with torch.inference_mode():
            return self.tower(torch.from_numpy(pixels))


# --- batching ------------------------------------------------------------------------------

class Work:
    """One call's images on their way through the batcher."""

    def __init__(self, pixels):
        self.pixels = pixels
        self.enqueued = time.perf_counter()
        self.done = threading.Event()
        self.output = None
        self.error = None
        self.queue_s = 0.0
        self.inference_s = 0.0


class Runner:
    """Runs forwards for the handlers: batched (a collector thread) or one per call under a
    lock. Thread-safe; the mode may change between load phases."""

    def __init__(self, model, batched, max_batch, max_wait_s):
        self.model = model
        self.batched = batched
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.queue = queue.Queue()
        self.lock = threading.Lock()
        self.stats_lock = threading.Lock()
        self.forwards = 0
        self.images = 0
        threading.Thread(target=self._collect, daemon=True).start()

    def run(self, pixels):
        """[N, 3, S, S] -> ([N, dim] torch, queue seconds, inference seconds)."""
        work = Work(pixels)
        if self.batched:
            self.queue.put(work)
            work.done.wait()
            if work.error is not None:
                raise work.error
            return work.output, work.queue_s, work.inference_s
        with self.lock:
            started = time.perf_counter()
            output = self.model.forward(pixels)
            ended = time.perf_counter()
        self._count(1, len(pixels))
        return output, started - work.enqueued, ended - started

    def take_stats(self):
        with self.stats_lock:
            stats = {"forwards": self.forwards, "images": self.images}
            self.forwards = self.images = 0
        return stats

    def _count(self, forwards, images):
        with self.stats_lock:
            self.forwards += forwards
            self.images += images

    def _collect(self):
        pending = None  # a call that did not fit the previous batch
        while True:
            first = pending if pending is not None else self.queue.get()
            pending = None
            batch, count = [first], len(first.pixels)
            deadline = time.perf_counter() + self.max_wait_s
            while count < self.max_batch:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    work = self.queue.get(timeout=remaining)
                except queue.Empty:
                    break
                if count + len(work.pixels) > self.max_batch:
                    pending = work
                    break
                batch.append(work)
                count += len(work.pixels)
            started = time.perf_counter()
            try:
                output = self.model.forward(np.concatenate([w.pixels for w in batch]))
                error = None
            except Exception as e:  # noqa: BLE001: handed to every caller of the batch
                output, error = None, e
            ended = time.perf_counter()
            self._count(1, count)
            offset = 0
            for work in batch:
                n = len(work.pixels)
                work.output = None if output is None else output[offset:offset + n]
                work.error = error
                work.queue_s = started - work.enqueued
                work.inference_s = ended - started
                offset += n
                work.done.set()


# --- the service ---------------------------------------------------------------------------

def encode(vector, options):
    """One output row as our Tensor: float list for float32 (the default), else packed."""
    tensor = types_pb2.Tensor(shape=[len(vector)])
    dtype = options.dtype or types_pb2.DTYPE_FLOAT32
    tensor.dtype = dtype
    values = vector.astype("<f4")
    if dtype == types_pb2.DTYPE_FLOAT16:
        packed = values.astype("<f2")
        values = packed.astype("<f4")
    elif dtype == types_pb2.DTYPE_BFLOAT16:
        bits = values.view("<u4").astype(np.uint64)
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")
        packed = rounded
        values = (rounded.astype(np.uint32) << 16).view("<f4")
    else:
        packed = values
    encoding = options.encoding
    if encoding == embed_pb2.ENCODING_UNSPECIFIED:
        encoding = (embed_pb2.ENCODING_FLOAT_LIST if dtype == types_pb2.DTYPE_FLOAT32
                    else embed_pb2.ENCODING_PACKED)
    if encoding == embed_pb2.ENCODING_PACKED:
        tensor.data = packed.tobytes()
    else:
        tensor.values.extend(values.tolist())
    return tensor


class EmbedService:
    def __init__(self, name, model, runner):
        self.name = name
        self.model = model
        self.runner = runner

    def embed(self, request, context):
        arrived = time.perf_counter()
        if request.model != self.name:
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"model: '{request.model}' is not served here (only '{self.name}')")
        if not request.inputs:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "inputs: at least one is required")
        pixels = []
        for i, item in enumerate(request.inputs):
            kind = item.WhichOneof("content")
            if kind != "image":
                context.abort(grpc.StatusCode.UNIMPLEMENTED,
                              f"inputs[{i}]: the Python peer embeds images only, got {kind}")
            try:
                pixels.append(self.model.preprocess(item.image))
            except Exception as e:  # noqa: BLE001: PIL raises many kinds for a bad file
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"inputs[{i}].image: cannot decode ({e})")
        preprocessed = time.perf_counter()
        output, queue_s, inference_s = self.runner.run(np.stack(pixels))
        options = request.options
        if not options.HasField("normalize") or options.normalize:
            output = torch.nn.functional.normalize(output, dim=-1)
        rows = output.numpy()
        response = embed_pb2.EmbedResponse(model=self.name)
        for row in rows:
            response.embeddings.add(vector=encode(row, options))
        response.timing.preprocess_us = int((preprocessed - arrived) * 1e6)
        response.timing.queue_us = int(queue_s * 1e6)
        response.timing.inference_us = int(inference_s * 1e6)
        response.timing.total_us = int((time.perf_counter() - arrived) * 1e6)
        return response


# --- in-process end to end -----------------------------------------------------------------

def in_process(model, pool, path, batch, seconds):
    """images/s of decode + preprocess + one forward per `batch` copies of the file's bytes."""
    with open(path, "rb") as f:
        data = f.read()

    def once():
        pixels = np.stack(list(pool.map(model.preprocess, [data] * batch)))
        torch.nn.functional.normalize(model.forward(pixels), dim=-1)

    once()  # warm-up
    images, started = 0, time.perf_counter()
    while images < 2 * batch or time.perf_counter() - started < seconds:
        once()
        images += batch
    elapsed = time.perf_counter() - started
    return {"images": images, "seconds": elapsed, "rate": images / elapsed}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--name", default="bench", help="the model name callers use")
    parser.add_argument("--listen", required=True, help="unix:PATH or HOST:PORT")
    parser.add_argument("--no-batching", action="store_true",
                        help="one forward per call under a lock")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--grpc-threads", type=int, default=16)
    parser.add_argument("--control-stdin", action="store_true")
    args = parser.parse_args()

    started = time.perf_counter()
    torch.set_num_threads(args.torch_threads)
    model = ClipImageModel(args.model_dir)
    runner = Runner(model, not args.no_batching, args.max_batch, args.max_wait_ms / 1000.0)
    service = EmbedService(args.name, model, runner)
    handler = grpc.method_handlers_generic_handler("embedserve.v1.EmbedService", {
        "Embed": grpc.unary_unary_rpc_method_handler(
            service.embed, request_deserializer=embed_pb2.EmbedRequest.FromString,
            response_serializer=embed_pb2.EmbedResponse.SerializeToString)})
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_workers=args.grpc_threads),
        handlers=[handler],
        options=[("grpc.max_receive_message_length", 64 << 20),
                 ("grpc.max_send_message_length", 64 << 20)])
    if server.add_insecure_port(args.listen) == 0:
        raise SystemExit(f"--listen {args.listen}: cannot bind")
    server.start()
    ready = {"ready": True, "load_s": time.perf_counter() - started, "torch": torch.__version__,
             "grpc": grpc.__version__, "torch_threads": torch.get_num_threads(),
             "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default (all cores)"),
             "grpc_threads": args.grpc_threads, "max_batch": args.max_batch,
             "max_wait_ms": args.max_wait_ms}
    if not args.control_stdin:
        print(json.dumps(ready), flush=True)
        signal.signal(signal.SIGTERM, lambda *_: server.stop(0))
        server.wait_for_termination()
        return
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1)
    out = sys.stdout
    sys.stdout = sys.stderr  # only protocol lines on the pipe
    out.write(json.dumps(ready) + "\n")
    out.flush()
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "mode" and len(words) == 2 and words[1] in ("batched", "unbatched"):
            runner.batched = words[1] == "batched"
            reply = {"mode": words[1]}
        elif words[0] == "stats":
            reply = runner.take_stats()
        elif words[0] == "inprocess" and len(words) == 4:
            reply = in_process(model, pool, words[1], int(words[2]), float(words[3]))
        else:
            reply = {"error": f"unknown command: {line.strip()}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    server.stop(0)


if __name__ == "__main__":
    main()
