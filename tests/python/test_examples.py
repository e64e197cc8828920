"""examples/ end to end: redis-server on a free loopback port, the embedserve server on a temp
unix socket, an RQ worker (burst, forking a work-horse per job) and a Celery worker (prefork
pool), jobs that embed a folder of images; results must equal direct client calls. Missing
redis-server, rq or celery fail the test with what to install (scripts/install-deps)."""
import embedserve  # noqa: I001  (before grpc: gRPC fork support)

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

from _servers import MODEL, Server, free_port

EXAMPLES = os.environ.get("EMBEDSERVE_EXAMPLES", "")
INSTALL = "run scripts/install-deps (Debian packages redis-server python3-rq python3-celery)"


def _require():
    if not EXAMPLES or not os.path.isfile(os.path.join(EXAMPLES, "rq_app.py")):
        pytest.fail("EMBEDSERVE_EXAMPLES must point at examples/ (ctest sets it)")
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is not installed: " + INSTALL)
    for mod in ("redis", "rq", "celery"):
        try:
            __import__(mod)
        except ImportError as e:
            pytest.fail("python module %s is missing (%s): %s" % (mod, e, INSTALL))


@pytest.fixture(scope="module")
def redis_url():
    _require()
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="embedserve-redis-")
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", tmp,
                             "--loglevel", "warning"], stdout=subprocess.DEVNULL)
    import redis
    url = "redis://127.0.0.1:%d/0" % port
    deadline = time.monotonic() + 20
    while True:
        try:
            if redis.Redis.from_url(url).ping():
                break
        except redis.exceptions.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("redis-server did not start on port %d" % port)
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(timeout=10)
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def env(redis_url, server):
    pythonpath = os.pathsep.join(p for p in (EXAMPLES, os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, REDIS_URL=redis_url, EMBEDSERVE_TARGET=server.unix_target,
                EMBEDSERVE_MODEL=MODEL, PYTHONPATH=pythonpath)


@pytest.fixture(scope="module")
def folder():
    """A folder of images (the test images, copied)."""
    tmp = tempfile.mkdtemp(prefix="embedserve-imgs-")
    src = os.environ["EMBEDSERVE_TEST_IMAGES"]
    for n in os.listdir(src):
        shutil.copy(os.path.join(src, n), tmp)
    yield tmp
    shutil.rmtree(tmp, ignore_errors=True)


def _direct(server, folder):
    names = sorted(os.listdir(folder))
    with embedserve.Client(server.unix_target) as c:
        vecs = c.embed_images(MODEL, [os.path.join(folder, n) for n in names])
    return dict(zip(names, vecs))


def _check_equal(result, expected):
    assert sorted(result) == sorted(expected)
    for name, vec in result.items():
        np.testing.assert_allclose(np.asarray(vec, dtype=np.float32), expected[name], atol=1e-6)


def _modules(env):
    sys.path.insert(0, EXAMPLES)
    os.environ["REDIS_URL"] = env["REDIS_URL"]
    os.environ["EMBEDSERVE_TARGET"] = env["EMBEDSERVE_TARGET"]
    import celery_app
    import rq_app
    return rq_app, celery_app


def test_rq_worker_embeds_folders(env, server, folder):
    rq_app, _ = _modules(env)
    q = rq_app.queue()
    info = q.enqueue("embed_jobs.server_info")
    jobs = [q.enqueue("embed_jobs.embed_folder", folder) for _ in range(3)]
    res = subprocess.run([sys.executable, os.path.join(EXAMPLES, "rq_app.py"), "worker",
                          "--burst"], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "embedserve SERVING" in res.stdout, res.stdout + res.stderr
    info.refresh()
    assert info.get_status() == "finished", info.exc_info
    assert info.return_value()["health"] == "SERVING" and info.return_value()["models"] == {MODEL: "ready"}, \
        info.return_value()
    for job in jobs:
        job.refresh()
        assert job.get_status() == "finished", job.exc_info
    expected = _direct(server, folder)
    for job in jobs:
        _check_equal(job.return_value(), expected)


def test_celery_prefork_worker_embeds_folders(env, server, folder):
    _, celery_app = _modules(env)
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "--pool", "prefork",
         "--concurrency", "2", "--loglevel", "warning", "--without-gossip", "--without-mingle",
         "--without-heartbeat", "-n", "embedserve-test@%h"],
        cwd=EXAMPLES, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        infos = [celery_app.server_info.delay() for _ in range(4)]
        folders = [celery_app.embed_folder.delay(folder) for _ in range(3)]
        names = sorted(os.listdir(folder))
        singles = [celery_app.embed_image.delay(os.path.join(folder, n)) for n in names]
        seen = [r.get(timeout=120) for r in infos]
        for i in seen:
            assert i["health"] == "SERVING" and i["models"] == {MODEL: "ready"}, i
        assert all(i["pid"] != worker.pid for i in seen)  # ran in pool children
        expected = _direct(server, folder)
        for r in folders:
            _check_equal(r.get(timeout=120), expected)
        _check_equal({n: r.get(timeout=120) for n, r in zip(names, singles)}, expected)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            out, _ = worker.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            out, _ = worker.communicate()
        print(out)
    assert "embedserve SERVING" in out, out
