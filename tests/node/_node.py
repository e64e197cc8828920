"""Helpers of the Node client tests: run one of tests/node/*.cjs with a JSON job (Node and the
clients that scripts/install-deps put in build/tools/node, found by CMake), start embedserve
with an HTTP listener and a bearer token, the Python client's reference embeddings, and the
comparisons every test makes (cosine >= 0.99999 and max abs diff <= 1e-5 per row)."""
import base64
import json
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import numpy as np

import embedserve
from _servers import MODEL, Server, free_port

HERE = os.path.dirname(os.path.abspath(__file__))
NODE = os.environ.get("EMBEDSERVE_NODE", "node")
NODE_MODULES = os.environ.get("EMBEDSERVE_NODE_MODULES", "")
IMAGES_DIR = os.environ.get("EMBEDSERVE_TEST_IMAGES", "")
DIM = 32  # the demo model's embed_dim (tests/data/openclip-reference/model)
TOKEN = "node-s3cret"

# Texts with non-ASCII characters, and one longer than the demo model's 77-token context.
TEXTS = ["a photo of a dog", "a photo of a cat", "Größe, naïve café — 東京 🐕",
         " ".join(["word"] * 120)]
LONG_TEXT_INDEX = 3
IMAGES = ["photo_800x600.jpg", "webp_512x384.webp", "exact_224.png"]


def image_paths():
    return [os.path.join(IMAGES_DIR, name) for name in IMAGES]


def data_url(path):
    kind = {".jpg": "jpeg", ".png": "png", ".webp": "webp"}[os.path.splitext(path)[1]]
    with open(path, "rb") as f:
        return "data:image/%s;base64,%s" % (kind, base64.b64encode(f.read()).decode("ascii"))


def run_node(script, job, timeout=60):
    """Runs tests/node/SCRIPT with JOB (a dict, written to a JSON file) and returns the JSON
    object it prints. A missing install is a failure that says how to fix it."""
    marker = os.path.join(NODE_MODULES, "@grpc", "grpc-js", "package.json")
    if not NODE_MODULES or not os.path.exists(marker):
        raise RuntimeError("the Node test clients are not installed at %r: run scripts/install-deps "
                           "(it runs scripts/install-node-clients)" % NODE_MODULES)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(job, f)
    try:
        env = dict(os.environ, NODE_PATH=NODE_MODULES)
        # The openai client reads these; the tests give everything explicitly.
        for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID",
                     "OPENAI_LOG", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            env.pop(name, None)
        done = subprocess.run([NODE, os.path.join(HERE, script), f.name], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    finally:
        os.unlink(f.name)
    stderr = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 0, "%s failed (exit %d):\n%s" % (script, done.returncode, stderr)
    return json.loads(done.stdout)


def token_file():
    path = os.path.join(tempfile.mkdtemp(prefix="embedserve-node-"), "tokens")
    with open(path, "w") as f:
        f.write(TOKEN + "\n")
    return path


class HttpServer(Server):
    """The demo model served on gRPC (unix socket and TCP) and on HTTP at 127.0.0.1:PORT."""

    def __init__(self, *extra_args, token=None):
        self.http_port = free_port()
        args = ["--http-listen", "127.0.0.1:%d" % self.http_port]
        if token:
            args += ["--auth-token-file", token_file()]
        super().__init__(*args, *extra_args, token=token)
        self.base_url = "http://127.0.0.1:%d/v1" % self.http_port
        self.wait_http()

    def wait_http(self, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/health" % self.http_port,
                                            timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("embedserve's HTTP listener did not answer /health with 200")
            time.sleep(0.05)


def python_texts(target, texts, token=None):
    """The Python client's embeddings (gRPC, float32, normalized): the reference."""
    with embedserve.Client(target, timeout=30, token=token) as client:
        return np.asarray(client.embed_texts(MODEL, texts), dtype=np.float32)


def python_images(target, paths, token=None):
    with embedserve.Client(target, timeout=30, token=token) as client:
        return np.asarray(client.embed_images(MODEL, paths), dtype=np.float32)


def decode_base64_floats(text):
    """An OpenAI base64 embedding: little-endian float32, decoded here independently."""
    return np.frombuffer(base64.b64decode(text), dtype="<f4").astype(np.float32)


def assert_rows_match(actual, reference, what):
    """Each row equal to the reference row: cosine >= 0.99999 and max abs diff <= 1e-5."""
    actual = np.asarray(actual, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    assert actual.shape == reference.shape, "%s: shape %s, reference %s" % (
        what, actual.shape, reference.shape)
    for i, (a, r) in enumerate(zip(actual, reference)):
        cosine = float(a @ r / (np.linalg.norm(a) * np.linalg.norm(r)))
        diff = float(np.max(np.abs(a - r)))
        assert cosine >= 0.99999 and diff <= 1e-5, "%s row %d: cosine %.8f, max abs diff %.3g" % (
            what, i, cosine, diff)
