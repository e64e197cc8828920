"""Our main users are Python workers: Debian's python3-grpcio with stubs generated from
proto/ calls the real server over the unix socket."""
import os
import socket
import subprocess
import tempfile
import time

import grpc
import pytest

from embedserve.v1 import embed_pb2, embed_pb2_grpc, models_pb2, models_pb2_grpc, types_pb2
import health_pb2
import health_pb2_grpc

SERVER = os.environ["EMBEDSERVE_BINARY"]
MODEL = os.environ.get("EMBEDSERVE_TEST_MODEL", "")


@pytest.fixture(scope="module")
def server():
    tmp = tempfile.mkdtemp(prefix="embedserve-py-")
    sock = os.path.join(tmp, "s.sock")
    args = [SERVER, "--listen", "unix:" + sock, "--log-level", "warning"]
    if MODEL:
        args += ["--model", MODEL]
    proc = subprocess.Popen(args)
    target = "unix:" + sock
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with grpc.insecure_channel(target) as channel:
                status = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1).status
            if status == health_pb2.HealthCheckResponse.SERVING:
                break
        except grpc.RpcError:
            pass
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("server did not become healthy")
    yield target
    proc.terminate()
    assert proc.wait(timeout=30) == 0
    assert not os.path.exists(sock)


def test_health_and_models_over_the_unix_socket(server):
    with grpc.insecure_channel(server) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        models = models_pb2_grpc.ModelServiceStub(channel).ListModels(
            models_pb2.ListModelsRequest())
        names = [m.name for m in models.models]
        if MODEL:
            assert names == [MODEL.split("=")[0]]
            assert models.models[0].state == models_pb2.MODEL_STATE_READY


def test_errors_carry_the_grpc_code_and_the_field(server):
    with grpc.insecure_channel(server) as channel:
        stub = embed_pb2_grpc.EmbedServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.Embed(embed_pb2.EmbedRequest(model="nope", inputs=[types_pb2.Input(text="a")]))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as err:
            stub.Embed(embed_pb2.EmbedRequest())
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "model" in err.value.details()


@pytest.mark.skipif(not MODEL, reason="needs a model")
def test_embed_texts_from_python(server):
    name = MODEL.split("=")[0]
    with grpc.insecure_channel(server) as channel:
        stub = embed_pb2_grpc.EmbedServiceStub(channel)
        response = stub.Embed(embed_pb2.EmbedRequest(
            model=name, inputs=[types_pb2.Input(text="a photo of a dog"),
                                types_pb2.Input(text="a photo of a cat")]))
        assert len(response.embeddings) == 2
        for e in response.embeddings:
            assert len(e.vector.values) == e.vector.shape[-1] > 0
            norm = sum(v * v for v in e.vector.values) ** 0.5
            assert abs(norm - 1.0) < 1e-4
