"""The work the example job apps (rq_app.py, celery_app.py) share: one embedserve Client per
process, made at import (so before the worker forks: the client is fork-safe), and jobs
that embed a folder of images through the server over its unix socket.

Environment: EMBEDSERVE_TARGET (default unix:/tmp/embedserve.sock), EMBEDSERVE_MODEL
(default demo), EMBEDSERVE_TOKEN (optional bearer token)."""
import os

import embedserve  # before anything that imports grpc: turns on gRPC fork support

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")
TARGET = os.environ.get("EMBEDSERVE_TARGET", "unix:/tmp/embedserve.sock")
MODEL = os.environ.get("EMBEDSERVE_MODEL", "demo")
BATCH = 16

# One client per process; workers fork after this line and each child gets its own channel.
client = embedserve.Client(TARGET, timeout=120, token=os.environ.get("EMBEDSERVE_TOKEN"),
                           client_id="example-worker")


def list_images(folder):
    return sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))


def embed_folder(folder, model=None):
    """{file name: embedding as a list of floats} for every image in `folder`, in batches."""
    model = model or MODEL
    names = list_images(folder)
    out = {}
    for i in range(0, len(names), BATCH):
        chunk = names[i:i + BATCH]
        vectors = client.embed_images(model, [os.path.join(folder, n) for n in chunk])
        for name, vec in zip(chunk, vectors):
            out[name] = [float(x) for x in vec]
    return out


def server_info():
    """What this worker process sees: its pid, the server's health and its models' states."""
    return {"pid": os.getpid(), "health": client.health(),
            "models": {m.name: m.state for m in client.models()}}
