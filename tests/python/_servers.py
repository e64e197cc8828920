"""Helpers of the Python client tests: start/stop the real embedserve binary on a temp unix
socket and a free loopback TCP port, free ports, test data paths, and module-level worker
functions (importable by multiprocessing 'spawn' children)."""
import os
import signal
import socket
import subprocess
import tempfile
import time

import embedserve

BINARY = os.environ.get("EMBEDSERVE_BINARY", "")
MODEL_DIR = os.environ.get("EMBEDSERVE_TEST_MODEL_DIR", "")
IMAGES_DIR = os.environ.get("EMBEDSERVE_TEST_IMAGES", "")
MODEL = "demo"


def require_env():
    missing = [k for k in ("EMBEDSERVE_BINARY", "EMBEDSERVE_TEST_MODEL_DIR",
                           "EMBEDSERVE_TEST_IMAGES") if not os.environ.get(k)]
    if missing:
        raise RuntimeError("set %s (ctest sets them: see tests/python/CMakeLists.txt)"
                           % ", ".join(missing))


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def image_paths():
    return sorted(os.path.join(IMAGES_DIR, n) for n in os.listdir(IMAGES_DIR))


class Server:
    """The embedserve binary serving the test model as `demo` (--continue-on-model-failure,
    so health and models answer even where the model cannot load)."""

    def __init__(self, *extra_args, model=True, socket_path=None, wait=True, token=None):
        require_env()
        self.dir = tempfile.mkdtemp(prefix="embedserve-pyc-")
        self.socket = socket_path or os.path.join(self.dir, "embedserve.sock")
        self.port = free_port()
        self.unix_target = "unix:" + self.socket
        self.tcp_target = "127.0.0.1:%d" % self.port
        args = [BINARY, "--listen", self.unix_target, "--listen", self.tcp_target,
                "--log-level", "warning", "--continue-on-model-failure"]
        if model:
            args += ["--model", "%s=%s" % (MODEL, MODEL_DIR)]
        args += list(extra_args)
        self.token = token
        self.proc = subprocess.Popen(args)
        if wait:
            self.wait_healthy()

    def wait_healthy(self, timeout=60):
        client = embedserve.Client(self.unix_target, timeout=2, retries=0, token=self.token)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError("embedserve exited with %s" % self.proc.returncode)
                try:
                    client.wait_until_serving(timeout=1)
                    break
                except embedserve.EmbedServeError:
                    pass
            else:
                raise RuntimeError("embedserve did not become healthy in %ss" % timeout)
            # The model: READY or FAILED, not LOADING.
            while time.monotonic() < deadline:
                models = client.models()
                if all(m.state != "loading" for m in models):
                    return
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None
        return self.proc.returncode


# ---- functions run in child processes -------------------------------------------------

def child_models(client):
    """(pid, health, model names) seen from a child process through an inherited client."""
    return os.getpid(), client.health(), [m.name for m in client.models()]


def child_embed(client):
    """Embeddings of fixed texts and images from a child process, as lists."""
    texts = client.embed_texts(MODEL, ["a photo of a dog", "a photo of a cat"])
    images = client.embed_images(MODEL, image_paths()[:3])
    return os.getpid(), [list(map(float, r)) for r in texts], [list(map(float, r)) for r in images]


def fixed_inputs():
    return ["a photo of a dog", "a photo of a cat"], image_paths()[:3]
