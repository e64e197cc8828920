"""The `embedserve` Python client (client/python) against the real server: health, models,
embed texts/images, rerank, classify, tokenize, errors as EmbedServeError with the gRPC code,
deadlines, auth and client-id metadata, retries with backoff (a scripted fake server and the
real server's per-client limit), fork safety (os.fork, multiprocessing fork and spawn),
pickling, asyncio, and `pip install` of the package. Tests marked `model` need the test
OpenCLIP model to load (they fail, not skip, where it does not)."""
# embedserve is imported before grpc, so that it can turn on gRPC's fork support (which gRPC
# reads once, at its first import): what users are told to do (or set GRPC_ENABLE_FORK_SUPPORT=1).
import embedserve  # noqa: I001  (first on purpose)

import asyncio
import gc
import math
import multiprocessing as mp
import os
import pathlib
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures

import grpc
import numpy as np
import pytest
from PIL import Image

from embedserve import EmbedServeError
from embedserve._proto import embed_pb2, models_pb2, types_pb2

import _servers
from _servers import MODEL, Server, image_paths

DIM = 32


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    assert s.stop() == 0
    assert not os.path.exists(s.socket)


@pytest.fixture
def client(server):
    with embedserve.Client(server.unix_target, timeout=30) as c:
        yield c


@pytest.fixture
def ready(client):
    """The test model must be READY: these tests assert real inference."""
    info = client.model(MODEL)
    assert info.state == "ready", "model %s is %s: %s" % (MODEL, info.state, info.state_message)
    return client


def direct_embed(server, inputs, normalize=True):
    """One plain gRPC Embed call (float list encoding): the reference the client must match."""
    with grpc.insecure_channel(server.unix_target) as ch:
        call = ch.unary_unary("/embedserve.v1.EmbedService/Embed",
                              request_serializer=embed_pb2.EmbedRequest.SerializeToString,
                              response_deserializer=embed_pb2.EmbedResponse.FromString)
        res = call(embed_pb2.EmbedRequest(
            model=MODEL, inputs=inputs,
            options=embed_pb2.EmbedOptions(normalize=normalize,
                                           encoding=embed_pb2.ENCODING_FLOAT_LIST)), timeout=30)
    return np.array([list(e.vector.values) for e in res.embeddings], dtype=np.float32)


def img_input(path):
    with open(path, "rb") as f:
        return types_pb2.Input(image=f.read())


# ---- health, models, transport --------------------------------------------------------------

def test_health_and_models_over_unix_and_tcp(server):
    for target in (server.unix_target, server.tcp_target, server.socket):
        with embedserve.Client(target, timeout=10) as c:
            assert c.health() == "SERVING"
            assert c.health("embedserve.v1.EmbedService") in ("SERVING", "NOT_SERVING")
            models = c.models()
            assert [m.name for m in models] == [MODEL]
            assert c.model(MODEL).name == MODEL
            assert models[0].state in ("ready", "failed")
            assert c.health(MODEL) == ("SERVING" if models[0].ready else "NOT_SERVING")


def test_unknown_health_service_and_model_are_not_found(client):
    with pytest.raises(EmbedServeError) as err:
        client.health("no-such-model")
    assert err.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(EmbedServeError) as err:
        client.model("no-such-model")
    assert err.value.code == grpc.StatusCode.NOT_FOUND


def test_model_info_of_the_test_model(ready):
    info = ready.model(MODEL)
    assert info.family == "openclip"
    assert info.embedding_dim == DIM
    assert info.image_size == 64
    assert info.context_length == 77
    assert not info.multi_vector
    assert set(info.modalities) == {"text", "image"}
    assert info.logit_scale > 0
    assert ready.health(MODEL) == "SERVING"
    # The default serves OpenCLIP's exact float32, and says so.
    assert info.dtype == "float32" and info.dtype_reason == "requested (--dtype float32)"
    # Its open_clip_config.json sets no quick_gelu: exact GELU, as open_clip builds it.
    assert info.activation == "gelu"


def cpu_flags():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def test_dtype_auto_reports_the_dtype_it_chose_and_why():
    # --dtype auto on this CPU: bfloat16 where the kernel lists a native bfloat16 instruction
    # (AVX512_BF16, AMX-BF16), else decided by a measured matmul; either way ModelInfo names
    # the dtype actually used and the reason.
    s = Server("--dtype", "auto")
    try:
        with embedserve.Client(s.unix_target, timeout=60) as c:
            info = c.model(MODEL)
            assert info.state == "ready", info.state_message
            assert info.dtype in ("float32", "bfloat16")
            assert info.dtype_reason.startswith("auto: " + info.dtype)
            flags = cpu_flags()
            if "avx512_bf16" in flags or {"amx_bf16", "amx_tile"} <= flags:
                assert info.dtype == "bfloat16" and "natively" in info.dtype_reason
            else:
                assert "GFLOP/s" in info.dtype_reason  # measured, with the figures
            vectors = c.embed_texts(MODEL, ["a photo of a dog"])
            assert np.all(np.isfinite(vectors))
    finally:
        assert s.stop() == 0


# ---- embed ---------------------------------------------------------------------------------

def test_embed_texts(server, ready):
    texts = ["a photo of a dog", "a photo of a cat", "a diagram"]
    out = ready.embed_texts(MODEL, texts)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (3, DIM)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-4)
    ref = direct_embed(server, [types_pb2.Input(text=t) for t in texts])
    np.testing.assert_allclose(out, ref, atol=1e-6)
    # Each row equals a single-text call (batching changes nothing).
    for i, t in enumerate(texts):
        np.testing.assert_allclose(ready.embed_texts(MODEL, [t])[0], out[i], atol=1e-5)


def test_embed_options_normalize_and_dtypes(server, ready):
    texts = ["a photo of a dog", "a photo of a cat"]
    f32 = ready.embed_texts(MODEL, texts)
    raw = ready.embed_texts(MODEL, texts, normalize=False)
    np.testing.assert_allclose(raw, direct_embed(server, [types_pb2.Input(text=t) for t in texts],
                                                 normalize=False), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), f32, atol=1e-5)
    f16 = ready.embed_texts(MODEL, texts, dtype="float16")
    assert f16.dtype == np.float16 and f16.shape == (2, DIM)
    np.testing.assert_allclose(f16.astype(np.float32), f32, atol=2e-3)
    bf16 = ready.embed_texts(MODEL, texts, dtype="bfloat16")
    assert bf16.dtype == np.float32 and bf16.shape == (2, DIM)
    np.testing.assert_allclose(bf16, f32, atol=1e-2)
    assert ready.embed_texts(MODEL, texts, dtype=np.float16).dtype == np.float16
    with pytest.raises(ValueError):
        ready.embed_texts(MODEL, texts, dtype="int8")


def test_embed_results_as_lists(server, ready):
    with embedserve.Client(server.unix_target, as_numpy=False) as c:
        for dtype in ("float32", "float16", "bfloat16"):
            out = c.embed_texts(MODEL, ["a dog", "a cat"], dtype=dtype)
            assert isinstance(out, list) and len(out) == 2
            assert all(isinstance(r, list) and len(r) == DIM for r in out)
            ref = ready.embed_texts(MODEL, ["a dog", "a cat"], dtype=dtype).astype(np.float32)
            np.testing.assert_allclose(np.array(out, dtype=np.float32), ref, atol=1e-6)


def test_embed_images_from_bytes_paths_files_and_pil(server, ready):
    paths = image_paths()
    out = ready.embed_images(MODEL, paths)
    assert out.shape == (len(paths), DIM)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(out, direct_embed(server, [img_input(p) for p in paths]),
                               atol=1e-6)
    for i, p in enumerate(paths[:3]):
        single = ready.embed_images(MODEL, [p])[0]
        np.testing.assert_allclose(single, out[i], atol=1e-5)
        as_bytes = pathlib.Path(p).read_bytes()
        with open(p, "rb") as f:
            forms = ready.embed_images(MODEL, [as_bytes, pathlib.Path(p), f])
        np.testing.assert_allclose(forms, np.stack([out[i]] * 3), atol=1e-5)
    # A PIL image goes as PNG (lossless): equal to the PNG file it was read from.
    png = [p for p in paths if p.endswith(".png")][0]
    np.testing.assert_allclose(ready.embed_images(MODEL, [Image.open(png)])[0],
                               out[paths.index(png)], atol=1e-4)


def test_embed_mixed_texts_and_images(ready):
    p = image_paths()[0]
    mixed = ready.embed(MODEL, ["a photo of a dog", pathlib.Path(p)])
    np.testing.assert_allclose(mixed[0], ready.embed_texts(MODEL, ["a photo of a dog"])[0],
                               atol=1e-5)
    np.testing.assert_allclose(mixed[1], ready.embed_images(MODEL, [p])[0], atol=1e-5)


# ---- rerank, classify, tokenize ------------------------------------------------------------

def test_rerank_texts_and_vectors(ready):
    query = "a photo of a dog"
    cands = ["a photo of a cat", "a photo of a dog", "a red car", "a diagram"]
    results = ready.rerank(MODEL, query, cands)
    assert sorted(r.index for r in results) == list(range(len(cands)))
    scores = [r.score for r in results]
    assert scores == sorted(scores, reverse=True)
    q = ready.embed_texts(MODEL, [query])[0]
    c = ready.embed_texts(MODEL, cands)
    for r in results:
        assert r.score == pytest.approx(float(c[r.index] @ q), abs=1e-4)
    assert results[0].index == 1  # the identical text
    top = ready.rerank(MODEL, query, cands, top_k=2)
    assert top == results[:2]
    by_vector = ready.rerank(MODEL, q, list(c))
    assert [r.index for r in by_vector] == [r.index for r in results]
    images = ready.rerank(MODEL, query, [pathlib.Path(p) for p in image_paths()[:4]])
    assert len(images) == 4


def test_classify(ready):
    paths = image_paths()[:3]
    labels = ["dog", "cat", "car"]
    out = ready.classify(MODEL, paths, labels, prompt_template="a photo of a {}.")
    assert len(out) == 3
    info = ready.model(MODEL)
    img = ready.embed_images(MODEL, paths)
    txt = ready.embed_texts(MODEL, ["a photo of a %s." % l for l in labels])
    for i, scores in enumerate(out):
        assert sorted(s.index for s in scores) == [0, 1, 2]
        assert [s.label for s in scores] == [labels[s.index] for s in scores]
        probs = [s.probability for s in scores]
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1, abs=1e-4)
        logits = info.logit_scale * (txt @ img[i])
        for s in scores:
            assert s.logit == pytest.approx(float(logits[s.index]), rel=1e-3, abs=1e-3)
    plain = ready.classify(MODEL, paths[:1], labels)
    assert len(plain) == 1 and len(plain[0]) == 3


def test_tokenize(ready):
    toks = ready.tokenize(MODEL, ["Hello world", "a " * 200])
    assert toks[0].ids[0] == 49406 and toks[0].ids[-1] == 49407
    assert len(toks[0].tokens) == len(toks[0].ids) and not toks[0].truncated
    assert len(toks[1].ids) == 77 and toks[1].truncated and toks[1].ids[-1] == 49407
    with pytest.raises(EmbedServeError) as err:
        ready.tokenize(MODEL, ["a " * 200], truncate=False)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(EmbedServeError) as err:
        ready.embed_texts(MODEL, ["a " * 200], truncate=False)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT


# ---- errors, deadlines, metadata, auth -----------------------------------------------------

def test_errors_raise_embedserve_error_with_the_code(client):
    with pytest.raises(EmbedServeError) as err:
        client.embed_texts("no-such-model", ["a"])
    assert err.value.code == grpc.StatusCode.NOT_FOUND and "no-such-model" in err.value.message
    with pytest.raises(EmbedServeError) as err:
        client.embed_texts("", ["a"])
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and "model" in err.value.message
    with pytest.raises(TypeError):
        client.embed_texts(MODEL, "a single string")
    # Picklable with its code (crosses process boundaries in job queues).
    again = pickle.loads(pickle.dumps(err.value))
    assert again.code == grpc.StatusCode.INVALID_ARGUMENT and again.message == err.value.message


def test_text_that_is_not_utf8_leaves_no_unstructured_log_line():
    """protobuf's own complaint about a string that is not UTF-8 is a debug event, not a
    free-form stderr line per request (a client could send thousands)."""
    def run(level):
        directory = tempfile.mkdtemp(prefix="embedserve-pblog-")
        target = "unix:" + os.path.join(directory, "s.sock")
        proc = subprocess.Popen([_servers.BINARY, "--listen", target, "--log-level", level,
                                 "--model", "%s=%s" % (MODEL, _servers.MODEL_DIR)],
                                stderr=subprocess.PIPE, text=True)
        try:
            with embedserve.Client(target, timeout=30) as c:
                c.wait_until_serving(timeout=60)
            inp = types_pb2.Input(text="X").SerializeToString().replace(b"X", b"\xff")
            raw = (embed_pb2.EmbedRequest(model=MODEL).SerializeToString()
                   + b"\x12" + bytes([len(inp)]) + inp)
            with grpc.insecure_channel(target) as ch:
                call = ch.unary_unary("/embedserve.v1.EmbedService/Embed")
                for _ in range(3):
                    with pytest.raises(grpc.RpcError) as err:
                        call(raw, timeout=30)
                    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                    assert err.value.details().startswith("inputs[0].text: not valid UTF-8")
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=60)
            shutil.rmtree(directory, ignore_errors=True)
        return stderr

    quiet = run("info")
    assert "libprotobuf" not in quiet and "event=protobuf" not in quiet
    assert quiet.count("code=INVALID_ARGUMENT") == 3  # the access log has each call
    debug = run("debug")
    assert "libprotobuf" not in debug
    events = [l for l in debug.splitlines() if "event=protobuf" in l]
    assert len(events) == 3 and all("level=debug" in l and "invalid UTF-8" in l for l in events)


def test_invalid_arguments_of_a_ready_model(ready):
    with pytest.raises(EmbedServeError) as err:
        ready.embed_texts(MODEL, [])
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(EmbedServeError) as err:
        ready.classify(MODEL, image_paths()[:1], ["only one label"])
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(EmbedServeError) as err:
        ready.embed_images(MODEL, [b"not an image"])
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(EmbedServeError) as err:
        ready.rerank(MODEL, "q", ["a", "b"], top_k=3)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_deadline(server):
    with embedserve.Client(server.unix_target, timeout=0) as c:
        with pytest.raises(EmbedServeError) as err:
            c.models()
        assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert [m.name for m in c.models(timeout=10)] == [MODEL]


def test_deadline_of_a_slow_call(ready):
    with pytest.raises(EmbedServeError) as err:
        ready.embed_images(MODEL, image_paths() * 8, timeout=1e-3)
    assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_bearer_token():
    tmp = tempfile.mkdtemp()
    tokens = os.path.join(tmp, "tokens")
    with open(tokens, "w") as f:
        f.write("s3cret\n")
    s = Server("--auth-token-file", tokens, model=False, token="s3cret")
    try:
        with embedserve.Client(s.unix_target) as c:
            assert c.health() == "SERVING"  # health stays open
            with pytest.raises(EmbedServeError) as err:
                c.models()
            assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
        with embedserve.Client(s.unix_target, token="wrong") as c:
            with pytest.raises(EmbedServeError) as err:
                c.models()
            assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
        with embedserve.Client(s.tcp_target, token="s3cret") as c:
            assert c.models() == []
    finally:
        assert s.stop() == 0


class ScriptedServer:
    """An in-process gRPC server answering ListModels with scripted failures (a code, or a
    (code, retry-after-ms advice) pair), recording the metadata and the time of every
    attempt."""

    def __init__(self, failures):
        self.failures = list(failures)
        self.calls = []
        handler = grpc.method_handlers_generic_handler("embedserve.v1.ModelService", {
            "ListModels": grpc.unary_unary_rpc_method_handler(
                self._list, models_pb2.ListModelsRequest.FromString,
                models_pb2.ListModelsResponse.SerializeToString)})
        self.server = grpc.server(futures.ThreadPoolExecutor(4), handlers=[handler])
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.target = "127.0.0.1:%d" % self.port

    def _list(self, request, context):
        self.calls.append((time.monotonic(), dict(context.invocation_metadata())))
        if self.failures:
            failure = self.failures.pop(0)
            code, advice = failure if isinstance(failure, tuple) else (failure, None)
            if advice is not None:
                context.set_trailing_metadata((("retry-after-ms", str(advice)),))
            context.abort(code, "scripted failure")
        return models_pb2.ListModelsResponse(models=[models_pb2.ModelInfo(name="m")])

    def stop(self):
        # Wait for the shutdown and drop the server: a grpc.Server (its core server and
        # completion queue) holds a gRPC core reference until it is freed, and this object is
        # in a reference cycle (the handler's bound method), so without this it lives until
        # some later garbage collection. gRPC's fork support (grpcio 1.51) closes only
        # channels in a forked child, then calls os._exit(64) ("Failed to shutdown gRPC Core
        # after fork()") when gRPC core is still initialized: the fork tests below would die.
        self.server.stop(0).wait()
        self.server = None
        gc.collect()


class PriorityRecorder:
    """An in-process gRPC server that records the priority each Embed, Rerank and Classify
    request carries (and answers with nothing)."""

    def __init__(self):
        self.seen = []
        ep = embed_pb2

        def record(priority, response):
            self.seen.append(ep.Priority.Name(priority))
            return response

        handler = grpc.method_handlers_generic_handler("embedserve.v1.EmbedService", {
            "Embed": grpc.unary_unary_rpc_method_handler(
                lambda r, ctx: record(r.options.priority, ep.EmbedResponse()),
                ep.EmbedRequest.FromString, ep.EmbedResponse.SerializeToString),
            "Rerank": grpc.unary_unary_rpc_method_handler(
                lambda r, ctx: record(r.priority, ep.RerankResponse()),
                ep.RerankRequest.FromString, ep.RerankResponse.SerializeToString),
            "Classify": grpc.unary_unary_rpc_method_handler(
                lambda r, ctx: record(r.priority, ep.ClassifyResponse()),
                ep.ClassifyRequest.FromString, ep.ClassifyResponse.SerializeToString)})
        self.server = grpc.server(futures.ThreadPoolExecutor(2), handlers=[handler])
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.target = "127.0.0.1:%d" % self.port

    def stop(self):
        self.server.stop(0).wait()  # see ScriptedServer.stop
        self.server = None
        gc.collect()


def test_priority_per_call_and_per_client_sync_and_async():
    recorder = PriorityRecorder()
    try:
        with embedserve.Client(recorder.target) as c:
            c.embed_texts("m", ["a"])
            c.embed_texts("m", ["a"], priority="interactive")
            c.embed_images("m", [b"x"], priority="bulk")
            c.rerank("m", "q", ["a"], priority="normal")
            c.classify("m", [b"x"], ["a", "b"], priority="interactive")
        with embedserve.Client(recorder.target, priority="bulk") as c:
            c.embed("m", ["a"])
            c.embed("m", ["a"], priority="interactive")  # the call's own wins

        async def run():
            async with embedserve.AsyncClient(recorder.target, priority="interactive") as ac:
                await ac.embed_texts("m", ["a"])
                await ac.rerank("m", "q", ["a"], priority="bulk")
        asyncio.run(run())
        assert recorder.seen == [
            "PRIORITY_UNSPECIFIED", "PRIORITY_INTERACTIVE", "PRIORITY_BULK", "PRIORITY_NORMAL",
            "PRIORITY_INTERACTIVE", "PRIORITY_BULK", "PRIORITY_INTERACTIVE",
            "PRIORITY_INTERACTIVE", "PRIORITY_BULK"]
        # embedserve-cli --priority (and EMBEDSERVE_PRIORITY) on embed, rerank, classify.
        cli = os.environ["EMBEDSERVE_CLI"]
        recorder.seen.clear()
        for args, env in ((["--priority", "interactive", "embed", "-m", "m", "-t", "a"], {}),
                          (["rerank", "-m", "m", "--query-text", "q", "-t", "a"],
                           {"EMBEDSERVE_PRIORITY": "bulk"}),
                          (["--priority", "normal", "classify", "-m", "m", "-t", "a", "-l", "x",
                            "-l", "y"], {}),
                          (["embed", "-m", "m", "-t", "a"], {})):
            subprocess.run([cli, "--target", recorder.target] + args, check=True,
                           env=dict(os.environ, **env), capture_output=True, timeout=60)
        assert recorder.seen == ["PRIORITY_INTERACTIVE", "PRIORITY_BULK", "PRIORITY_NORMAL",
                                 "PRIORITY_UNSPECIFIED"]
        bad = subprocess.run([cli, "--target", recorder.target, "--priority", "urgent", "embed",
                              "-m", "m", "-t", "a"], capture_output=True, text=True, timeout=60)
        assert bad.returncode != 0 and "priority" in bad.stderr
        with pytest.raises(ValueError, match="priority"):
            embedserve.Client(recorder.target, priority="urgent")
        with embedserve.Client(recorder.target) as c:
            with pytest.raises(ValueError, match="urgent"):
                c.embed_texts("m", ["a"], priority="urgent")
    finally:
        recorder.stop()


def test_priority_reaches_the_server_and_leaves_the_answer_unchanged(ready):
    texts = ["a photo of a dog", "a red car"]
    plain = ready.embed_texts(MODEL, texts)
    for priority in ("bulk", "normal", "interactive"):
        # Batches may form differently (an interactive item never waits for a batch to fill),
        # which moves float32 sums by an ulp or so, never more.
        np.testing.assert_allclose(ready.embed_texts(MODEL, texts, priority=priority), plain,
                                   rtol=0, atol=1e-6)
    # The server checks the metadata form, which this client never sends.
    with grpc.insecure_channel(ready.target) as ch:
        call = ch.unary_unary("/embedserve.v1.EmbedService/Embed",
                              request_serializer=embed_pb2.EmbedRequest.SerializeToString,
                              response_deserializer=embed_pb2.EmbedResponse.FromString)
        request = embed_pb2.EmbedRequest(model=MODEL, inputs=[types_pb2.Input(text="a")])
        assert len(call(request, metadata=(("embedserve-priority", "bulk"),),
                        timeout=30).embeddings) == 1
        with pytest.raises(grpc.RpcError) as err:
            call(request, metadata=(("embedserve-priority", "soon"),), timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "embedserve-priority" in err.value.details()


def test_retries_with_backoff_and_metadata():
    RE, UN = grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE
    # RESOURCE_EXHAUSTED as the server sends backpressure: with its retry advice.
    fake = ScriptedServer([(RE, 0), UN, (RE, 0)])
    try:
        c = embedserve.Client(fake.target, retries=3, token="tok", client_id="worker-7",
                              backoff=embedserve.Backoff(base=0.05, cap=1))
        assert [m.name for m in c.models()] == ["m"]
        assert len(fake.calls) == 4
        gaps = [b[0] - a[0] for a, b in zip(fake.calls, fake.calls[1:])]
        # attempt k waits in [d/2, d], d = 0.05 * 2^k
        for k, gap in enumerate(gaps):
            assert gap >= 0.05 * 2 ** k / 2 * 0.9, gaps
        md = fake.calls[0][1]
        assert md["x-embedserve-client"] == "worker-7"
        assert md["authorization"] == "Bearer tok"
        # Out of retries: the last code.
        fake.calls.clear()
        fake.failures = [(RE, 0)] * 3
        with pytest.raises(EmbedServeError) as err, \
                embedserve.Client(fake.target, retries=2) as c2:
            c2.models()
        assert err.value.code == RE and len(fake.calls) == 3
        assert fake.calls[0][1]["x-embedserve-client"].startswith("py-")
        assert "authorization" not in fake.calls[0][1]
        # Other codes are not retried.
        fake.calls.clear()
        fake.failures = [grpc.StatusCode.INVALID_ARGUMENT]
        with pytest.raises(EmbedServeError) as err:
            c.models()
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and len(fake.calls) == 1
        # Retries stop at the deadline.
        fake.failures = [UN] * 100
        t0 = time.monotonic()
        with pytest.raises(EmbedServeError) as err, \
                embedserve.Client(fake.target, retries=100, timeout=0.5) as c3:
            c3.models()
        assert time.monotonic() - t0 < 2.0
        assert err.value.code in (UN, grpc.StatusCode.DEADLINE_EXCEEDED)
        c.close()
    finally:
        fake.stop()


def test_only_failures_a_retry_can_fix_are_retried_until_the_deadline():
    RE, UN = grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE
    fake = ScriptedServer([])
    fast = embedserve.Backoff(base=0.001, cap=0.002)
    try:
        with embedserve.Client(fake.target, timeout=30, backoff=fast) as c:
            # RESOURCE_EXHAUSTED without the server's advice (a message over a size limit)
            # fails the same way every time: tried once.
            fake.failures = [RE]
            with pytest.raises(EmbedServeError) as err:
                c.models()
            assert err.value.code == RE and len(fake.calls) == 1
            # UNAVAILABLE that the server says a retry cannot fix (a model that failed to
            # load): tried once.
            fake.calls.clear()
            fake.failures = [(UN, -1)]
            with pytest.raises(EmbedServeError) as err:
                c.models()
            assert err.value.code == UN and len(fake.calls) == 1
            # Backpressure is retried as long as the deadline allows, not a fixed 3 times.
            fake.calls.clear()
            fake.failures = [(RE, 0)] * 12 + [UN] * 3
            assert [m.name for m in c.models()] == ["m"] and len(fake.calls) == 16
            # The server's advice is the least wait before the retry.
            fake.calls.clear()
            fake.failures = [(RE, 300)]
            assert [m.name for m in c.models()] == ["m"] and len(fake.calls) == 2
            assert fake.calls[1][0] - fake.calls[0][0] >= 0.3
        # Failing all along, the retries go on to the deadline the caller gave.
        fake.calls.clear()
        fake.failures = [UN] * 100000
        with embedserve.Client(fake.target, timeout=1.0,
                               backoff=embedserve.Backoff(base=0.02, cap=0.1)) as c:
            with pytest.raises(EmbedServeError):
                c.models()
        assert len(fake.calls) > 4
        assert fake.calls[-1][0] - fake.calls[0][0] >= 0.5
        # The asyncio client follows the same rules.
        fake.calls.clear()
        fake.failures = [RE, (RE, 0), (RE, 0)]

        async def run():
            async with embedserve.AsyncClient(fake.target, timeout=30, backoff=fast) as ac:
                with pytest.raises(EmbedServeError) as aerr:
                    await ac.models()
                assert aerr.value.code == RE and len(fake.calls) == 1
                assert [m.name for m in await ac.models()] == ["m"]
                assert len(fake.calls) == 4
        asyncio.run(run())
    finally:
        fake.stop()


def models_from_a_server_started_late(client, sock, delay):
    """client.models() while the server on `sock` starts `delay` seconds later."""
    holder = {}

    def start_late():
        time.sleep(delay)
        holder["server"] = Server(socket_path=sock, wait=False, model=False)

    t = threading.Thread(target=start_late)
    t.start()
    try:
        return client.models()
    finally:
        client.close()
        t.join()
        assert holder["server"].stop() == 0


def test_retry_unavailable_until_the_server_starts():
    tmp = tempfile.mkdtemp(prefix="embedserve-late-")
    sock = os.path.join(tmp, "late.sock")
    with pytest.raises(EmbedServeError) as err, \
            embedserve.Client("unix:" + sock, retries=0, timeout=5) as c0:
        c0.models()
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    c = embedserve.Client("unix:" + sock, retries=12, timeout=30)
    assert models_from_a_server_started_late(c, sock, 0.7) == []


def test_one_retry_waits_for_a_server_that_starts_late():
    # retries=1: the first attempt fails fast (no socket yet); the retry waits for the
    # connection within the deadline, however many connection attempts the server's start
    # takes. Before, each retry was one more fail-fast attempt, and a slow start outlasted
    # the count while most of the deadline was left.
    tmp = tempfile.mkdtemp(prefix="embedserve-late1-")
    sock = os.path.join(tmp, "late.sock")
    c = embedserve.Client("unix:" + sock, retries=1, timeout=60)
    assert models_from_a_server_started_late(c, sock, 2.0) == []


def test_the_server_answers_http2_from_the_moment_its_socket_exists():
    # The server side of a late start: the first connection the socket accepts (made while
    # the model is still loading) gets the server's HTTP/2 SETTINGS frame, not silence. The
    # 30 s socket timeout only keeps a broken server from hanging the test.
    import socket as socket_module
    tmp = tempfile.mkdtemp(prefix="embedserve-h2-")
    sock = os.path.join(tmp, "h2.sock")
    s = Server(socket_path=sock, wait=False)
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(sock):
            assert time.monotonic() < deadline and s.proc.poll() is None
            time.sleep(0.005)
        # bind() creates the file an instant before listen(): until then a connect is
        # refused (at once, never silently); the first accepted connection is the one tested.
        while True:
            conn = socket_module.socket(socket_module.AF_UNIX, socket_module.SOCK_STREAM)
            conn.settimeout(30)
            try:
                conn.connect(sock)
                break
            except ConnectionRefusedError:
                conn.close()
                assert time.monotonic() < deadline
                time.sleep(0.001)
        conn.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
        header = b""
        while len(header) < 9:
            chunk = conn.recv(9 - len(header))
            assert chunk, "the server closed the connection before its SETTINGS frame"
            header += chunk
        conn.close()
        frame_type, stream_id = header[3], int.from_bytes(header[5:9], "big") & 0x7FFFFFFF
        assert frame_type == 4 and stream_id == 0  # SETTINGS on the connection stream
    finally:
        assert s.stop() == 0
        shutil.rmtree(tmp, ignore_errors=True)


class SlowHandshakeProxy:
    """A unix socket that accepts at once but connects each connection through to the server
    only after `delay` seconds: a server whose HTTP/2 SETTINGS come late, as on a busy
    machine."""

    def __init__(self, backend_path, delay):
        import socket as socket_module
        self.socket_module = socket_module
        self.dir = tempfile.mkdtemp(prefix="embedserve-slowhs-")
        self.path = os.path.join(self.dir, "slow.sock")
        self.backend_path = backend_path
        self.delay = delay
        self.listener = socket_module.socket(socket_module.AF_UNIX, socket_module.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(16)
        self.accepted = 0
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _pipe(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(self.socket_module.SHUT_RDWR)
                except OSError:
                    pass

    def _serve(self, conn):
        time.sleep(self.delay)
        backend = self.socket_module.socket(self.socket_module.AF_UNIX,
                                            self.socket_module.SOCK_STREAM)
        backend.connect(self.backend_path)
        threading.Thread(target=self._pipe, args=(conn, backend), daemon=True).start()
        threading.Thread(target=self._pipe, args=(backend, conn), daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def close(self):
        self.closed = True
        self.listener.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def test_a_server_slow_to_finish_the_handshake_is_reached_without_retries(server):
    # The server's SETTINGS arrive 1 s after the connection is accepted. The client used to
    # set grpc.min_reconnect_backoff_ms=100, which gRPC core also uses as the connect
    # timeout: "connection attempt timed out before receiving SETTINGS frame", the failure
    # seen on a busy 2-core CI machine. Now one attempt, no retries, gets through.
    proxy = SlowHandshakeProxy(server.socket, delay=1.0)
    try:
        with embedserve.Client("unix:" + proxy.path, retries=0, timeout=20) as c:
            assert [m.name for m in c.models()] == [MODEL]
        assert proxy.accepted == 1
    finally:
        proxy.close()


def test_resource_exhausted_per_client_is_retried(ready):
    s = Server("--max-concurrent-per-client", "1")
    try:
        paths = image_paths()
        ref = ready.embed_images(MODEL, paths)

        def burst(retries, n=8):
            barrier = threading.Barrier(n)
            clients = [embedserve.Client(s.unix_target, retries=retries, client_id="same",
                                         backoff=embedserve.Backoff(0.01, 0.2))
                       for _ in range(n)]

            def one(c):
                barrier.wait()
                try:
                    return c.embed_images(MODEL, paths)
                except EmbedServeError as e:
                    return e
            with futures.ThreadPoolExecutor(n) as pool:
                return list(pool.map(one, clients))

        seen = False
        for _ in range(20):
            out = burst(0)
            errors = [r for r in out if isinstance(r, EmbedServeError)]
            assert all(e.code == grpc.StatusCode.RESOURCE_EXHAUSTED for e in errors), errors
            if errors:
                seen = True
                break
        assert seen, "8 concurrent calls with --max-concurrent-per-client 1 never collided"
        for r in burst(50):
            assert not isinstance(r, EmbedServeError), r
            np.testing.assert_allclose(r, ref, atol=1e-5)
    finally:
        assert s.stop() == 0


# ---- fork safety ---------------------------------------------------------------------------

def _os_fork_run(fn, client):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        code = 0
        try:
            payload = pickle.dumps(("ok", fn(client)))
        except BaseException as e:  # noqa: BLE001 - report anything to the parent
            payload = pickle.dumps(("error", repr(e)))
            code = 1
        with os.fdopen(w, "wb") as f:
            f.write(payload)
        os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    kind, value = pickle.loads(data)
    assert kind == "ok" and os.waitstatus_to_exitcode(status) == 0, value
    return value


def _run_in_children(how, fn, client, n=3):
    if how == "os.fork":
        return [_os_fork_run(fn, client) for _ in range(n)]
    with mp.get_context(how).Pool(2) as pool:
        return pool.map(fn, [client] * n)


@pytest.mark.parametrize("how", ["os.fork", "fork", "spawn"])
def test_client_made_before_fork_works_in_children(server, how):
    c = embedserve.Client(server.unix_target, timeout=30)
    assert c.health() == "SERVING"  # the parent's channel is live when the children start
    results = _run_in_children(how, _servers.child_models, c)
    for pid, health, names in results:
        assert pid != os.getpid() and health == "SERVING" and names == [MODEL]
    assert c.health() == "SERVING" and [m.name for m in c.models()] == [MODEL]
    c.close()


@pytest.mark.parametrize("how", ["os.fork", "fork", "spawn"])
def test_embeddings_in_forked_and_spawned_children_equal_the_parents(server, ready, how):
    c = embedserve.Client(server.unix_target, timeout=30)
    texts, paths = _servers.fixed_inputs()
    t_ref = c.embed_texts(MODEL, texts)
    i_ref = c.embed_images(MODEL, paths)
    for pid, t, i in _run_in_children(how, _servers.child_embed, c):
        assert pid != os.getpid()
        np.testing.assert_allclose(np.array(t), t_ref, atol=1e-6)
        np.testing.assert_allclose(np.array(i), i_ref, atol=1e-6)
    np.testing.assert_allclose(c.embed_texts(MODEL, texts), t_ref, atol=1e-6)


def test_client_pickles_without_its_channel(server):
    c = embedserve.Client(server.unix_target, token="t", client_id="x")
    c.health()
    again = pickle.loads(pickle.dumps(c))
    assert (again.target, again.token, again.client_id) == (c.target, "t", "x")
    assert again.health() == "SERVING"


# ---- asyncio -------------------------------------------------------------------------------

def test_async_client_health_models_errors(server):
    async def main():
        async with embedserve.AsyncClient(server.unix_target, timeout=10) as c:
            assert await c.health() == "SERVING"
            many = await asyncio.gather(*[c.models() for _ in range(20)])
            assert all([m.name for m in ms] == [MODEL] for ms in many)
            with pytest.raises(EmbedServeError) as err:
                await c.embed_texts("no-such-model", ["a"])
            assert err.value.code == grpc.StatusCode.NOT_FOUND
            with pytest.raises(EmbedServeError) as err:
                await c.models(timeout=0)
            assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    asyncio.run(main())
    asyncio.run(main())  # a second event loop gets its own channel


def test_async_client_equals_sync_client(server, ready):
    texts, paths = _servers.fixed_inputs()

    async def main():
        async with embedserve.AsyncClient(server.tcp_target) as c:
            t, i = await asyncio.gather(c.embed_texts(MODEL, texts), c.embed_images(MODEL, paths))
            rr = await c.rerank(MODEL, texts[0], texts)
            cl = await c.classify(MODEL, paths, ["dog", "cat"])
            tk = await c.tokenize(MODEL, texts)
            return t, i, rr, cl, tk
    t, i, rr, cl, tk = asyncio.run(main())
    np.testing.assert_allclose(t, ready.embed_texts(MODEL, texts), atol=1e-6)
    np.testing.assert_allclose(i, ready.embed_images(MODEL, paths), atol=1e-6)
    assert [r.index for r in rr] == [r.index for r in ready.rerank(MODEL, texts[0], texts)]
    assert [[s.index for s in x] for x in cl] == \
        [[s.index for s in x] for x in ready.classify(MODEL, paths, ["dog", "cat"])]
    assert tk == ready.tokenize(MODEL, texts)


# ---- cross-encoder rerank ------------------------------------------------------------------

@pytest.fixture(scope="module")
def reranker(tmp_path_factory):
    """A server holding a tiny random XLM-R cross-encoder as `rr` (written by our C++ tool)."""
    writer = os.environ.get("EMBEDSERVE_WRITE_CROSS_ENCODER")
    assert writer, "EMBEDSERVE_WRITE_CROSS_ENCODER is not set (ctest sets it)"
    model_dir = tmp_path_factory.mktemp("xlmr")
    subprocess.run([writer, str(model_dir), "xlm-roberta"], check=True)
    srv = _servers.Server("--model", "rr=%s" % model_dir, model=False)
    yield srv
    srv.stop()


def test_rerank_with_a_cross_encoder_sync_and_async(reranker):
    query = "what is a panda"
    cands = ["hi", "the giant panda is a bear", "pandas eat bamboo", " ".join(["bamboo"] * 700)]
    with embedserve.Client(reranker.unix_target) as c:
        info = {m.name: m for m in c.models()}["rr"]
        assert info.family == "cross_encoder" and info.modalities == ("pair",)
        raw = c.rerank("rr", query, cands)
        assert sorted(r.index for r in raw) == [0, 1, 2, 3]
        assert [r.score for r in raw] == sorted((r.score for r in raw), reverse=True)
        assert [r.truncated for r in sorted(raw, key=lambda r: r.index)] == \
            [False, False, False, True]
        mapped = c.rerank("rr", query, cands, sigmoid=True, top_k=2)
        assert [r.index for r in mapped] == [r.index for r in raw[:2]]
        for m, r in zip(mapped, raw):
            assert m.score == pytest.approx(1 / (1 + math.exp(-r.score)), rel=1e-6)
        with pytest.raises(EmbedServeError) as err:
            c.embed_texts("rr", ["a panda"])
        assert err.value.code == grpc.StatusCode.UNIMPLEMENTED

    async def main():
        async with embedserve.AsyncClient(reranker.unix_target) as c:
            return await c.rerank("rr", query, cands, sigmoid=True)
    by_async = asyncio.run(main())
    with embedserve.Client(reranker.unix_target) as c:
        assert by_async == c.rerank("rr", query, cands, sigmoid=True)


# ---- packaging -----------------------------------------------------------------------------

def test_pip_install_builds_the_package_with_its_protos(server, tmp_path):
    src = os.environ.get("EMBEDSERVE_CLIENT_SRC")
    assert src, "EMBEDSERVE_CLIENT_SRC (client/python) is not set"
    proto_dir = os.path.abspath(os.path.join(src, "..", "..", "proto"))
    work = tmp_path / "src"
    shutil.copytree(src, work, ignore=shutil.ignore_patterns("_proto", "build", "*.egg-info",
                                                              "__pycache__"))
    target = tmp_path / "site"
    env = dict(os.environ, EMBEDSERVE_PROTO_DIR=proto_dir, PIP_NO_INDEX="1")
    env.pop("PYTHONPATH", None)
    res = subprocess.run([sys.executable, "-m", "pip", "install", "--no-build-isolation",
                          "--no-deps", "--target", str(target), str(work)],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (target / "embedserve" / "_proto" / "embed_pb2.py").exists()
    probe = ("import embedserve, sys; c = embedserve.Client(sys.argv[1]); "
             "print(c.health(), [m.name for m in c.models()])")
    res = subprocess.run([sys.executable, "-c", probe, server.unix_target], capture_output=True,
                         text=True, env=dict(env, PYTHONPATH=str(target)), cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "SERVING ['%s']" % MODEL


# ---- what is retried, and what the server records ------------------------------------------

def metrics_page(metrics_port):
    import urllib.request
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % metrics_port, timeout=10) as r:
        return r.read().decode()


def requests_total(metrics_port, method, model):
    """{code: count} of embedserve_requests_total for one method and model."""
    page = metrics_page(metrics_port)
    prefix = 'embedserve_requests_total{method="%s",model="%s",code="' % (method, model)
    counts = {}
    for line in page.splitlines():
        if line.startswith(prefix):
            code, value = line[len(prefix):].split('"} ')
            counts[code] = int(float(value))
    return counts


def settled_total(metrics_port, method, model):
    """requests_total once it stops moving: a call is counted when gRPC is done with it, an
    instant after its client has the answer, so the last calls made may not be in yet."""
    last = requests_total(metrics_port, method, model)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = requests_total(metrics_port, method, model)
        if now == last:
            return now
        last = now
    return last


def counted_since(metrics_port, method, model, before, total, code=None):
    """The calls counted since `before` once there are `total` of them (of status `code`
    when given; a call is counted when gRPC is done with it, an instant after its client has
    the answer)."""
    deadline = time.monotonic() + 30
    while True:
        now = requests_total(metrics_port, method, model)
        delta = {k: v - before.get(k, 0) for k, v in now.items() if v != before.get(k, 0)}
        seen = delta.get(code, 0) if code else sum(delta.values())
        if seen >= total or time.monotonic() > deadline:
            return delta
        time.sleep(0.02)


def metered_server(*args):
    port = _servers.free_port()
    s = Server("--metrics-listen", "127.0.0.1:%d" % port, *args)
    s.metrics_port = port
    return s


@pytest.fixture(scope="module")
def metered():
    """A server with metrics and a queue of 2 items."""
    s = metered_server("--queue-capacity", "2", "--max-batch-size", "2")
    yield s
    assert s.stop() == 0


def priority_waits(metrics_port):
    """embedserve_priority_queue_seconds_count of the test model's texts, by class."""
    page = metrics_page(metrics_port)
    prefix = 'embedserve_priority_queue_seconds_count{model="%s",modality="text",priority="' % MODEL
    counts = {}
    for line in page.splitlines():
        if line.startswith(prefix):
            name, value = line[len(prefix):].split('"} ')
            counts[name] = int(float(value))
    return counts


def test_queue_wait_is_measured_per_priority_class(metered):
    before = priority_waits(metered.metrics_port)
    assert set(before) == {"bulk", "normal", "interactive"}
    with embedserve.Client(metered.unix_target, timeout=30) as c:
        for _ in range(2):
            c.embed_texts(MODEL, ["a query"], priority="interactive")
        for _ in range(3):
            c.embed_texts(MODEL, ["a document"], priority="bulk")
        c.embed_texts(MODEL, ["plain"])
    after = priority_waits(metered.metrics_port)
    # Observed when each item's batch was launched, before its call was answered.
    assert {k: after[k] - before[k] for k in after} == {"bulk": 3, "normal": 1, "interactive": 2}


def test_failures_a_retry_cannot_fix_are_tried_once_and_counted_as_they_ended(tmp_path):
    # A small message limit, and a model that failed to load (a directory holding no model).
    s = metered_server("--max-message-bytes", "1024", "--model", "broken=%s" % tmp_path)
    port = s.metrics_port
    try:
        with embedserve.Client(s.unix_target, timeout=30) as c:
            # 8 vectors do not fit in 1024 bytes. The server used to send it 4 times, log 4 OK
            # answers that never arrived, and the client saw gRPC's "Sent message larger than max".
            before = settled_total(port, "Embed", MODEL)
            with pytest.raises(EmbedServeError) as err:
                c.embed_texts(MODEL, ["a"] * 8)
            assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "over the limit of 1024 bytes (--max-message-bytes)" in err.value.message
            assert counted_since(port, "Embed", MODEL, before, 1) == {"RESOURCE_EXHAUSTED": 1}
            # What does fit is answered.
            assert c.embed_texts(MODEL, ["a"]).shape == (1, DIM)
            # A model that failed to load stays failed: one attempt, not four.
            assert c.model("broken").state == "failed"
            before = settled_total(port, "Embed", "broken")
            with pytest.raises(EmbedServeError) as err:
                c.embed_texts("broken", ["a"])
            assert err.value.code == grpc.StatusCode.UNAVAILABLE
            assert "failed to load" in err.value.message
            assert counted_since(port, "Embed", "broken", before, 1) == {"UNAVAILABLE": 1}
    finally:
        assert s.stop() == 0


def test_a_full_queue_is_retried_until_there_is_room(metered):
    # --queue-capacity 2 against 32 threads: before, the client's retries spanned about
    # 0.35 s of a 30 s deadline and most calls failed with RESOURCE_EXHAUSTED.
    paths = image_paths()
    with embedserve.Client(metered.unix_target, timeout=60) as c:
        reference = {p: c.embed_images(MODEL, [p])[0] for p in paths}
    n = 32
    clients = [embedserve.Client(metered.unix_target, timeout=60) for _ in range(n)]
    barrier = threading.Barrier(n)

    def work(i):
        barrier.wait()
        out = []
        for k in range(4):
            p = paths[(i + k) % len(paths)]
            try:
                out.append((p, clients[i].embed_images(MODEL, [p])[0]))
            except EmbedServeError as e:
                out.append((p, e))
        return out

    seen_full = False
    try:
        for _ in range(10):
            before = settled_total(metered.metrics_port, "Embed", MODEL)
            with futures.ThreadPoolExecutor(n) as pool:
                results = [r for rs in pool.map(work, range(n)) for r in rs]
            for p, r in results:
                assert not isinstance(r, EmbedServeError), r
                np.testing.assert_allclose(r, reference[p], atol=1e-5)
            counted = counted_since(metered.metrics_port, "Embed", MODEL, before, len(results),
                                    code="OK")
            assert counted.get("OK") == len(results)
            if counted.get("RESOURCE_EXHAUSTED", 0) > 0:
                seen_full = True
                break
    finally:
        for c in clients:
            c.close()
    assert seen_full, "32 threads against --queue-capacity 2 never found the queue full"


def test_streams_abandoned_by_a_killed_client_are_counted_cancelled(metered):
    # The client reads its answers, then dies without closing its side of its streams. A
    # stream whose failed read the server saw before the cancellation was ended as if the
    # client had closed it, and counted and logged OK (42 of 500 streams in one run).
    n = 64
    child = r'''
import os, signal, sys, threading
import grpc
from embedserve._proto import embed_pb2, types_pb2
channel = grpc.insecure_channel(sys.argv[1])
stream = channel.stream_stream("/embedserve.v1.EmbedService/EmbedStream",
                               request_serializer=embed_pb2.EmbedStreamRequest.SerializeToString,
                               response_deserializer=embed_pb2.EmbedStreamResponse.FromString)
never = threading.Event()
def requests(i):
    yield embed_pb2.EmbedStreamRequest(id=str(i), model=sys.argv[2],
                                       inputs=[types_pb2.Input(text="a dog")])
    never.wait()  # never closes its side
streams = [stream(requests(i), timeout=60) for i in range(int(sys.argv[3]))]
answered = [next(s).id for s in streams]
print(" ".join(answered), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
'''
    before = settled_total(metered.metrics_port, "EmbedStream", "")
    res = subprocess.run([sys.executable, "-c", child, metered.unix_target, MODEL, str(n)],
                         capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert res.returncode == -9, res.stderr
    assert res.stdout.split() == [str(i) for i in range(n)]
    assert counted_since(metered.metrics_port, "EmbedStream", "", before, n) == {"CANCELLED": n}


def test_an_existing_client_reaches_a_restarted_server_within_its_deadline():
    # The model loads for a while after the socket is back: "still loading" and a refused
    # connection are retried until the call's deadline (they used to end after 3 retries).
    s = Server()
    c = embedserve.Client(s.unix_target, timeout=60)
    try:
        first = c.embed_texts(MODEL, ["a photo of a dog"])
        assert s.stop() == 0
        s = Server(socket_path=s.socket, wait=False)
        np.testing.assert_allclose(c.embed_texts(MODEL, ["a photo of a dog"]), first, atol=1e-6)
    finally:
        c.close()
        assert s.stop() == 0
