"""A second, independent gRPC implementation against the real server: @grpc/grpc-js with
@grpc/proto-loader (tests/node/grpc_js_client.cjs) calls Embed in every wire encoding,
EmbedStream (bidi) and grpc.health.v1 over the unix socket and over TCP; each vector must equal
the Python client's for the same input, and each error carry the documented gRPC code."""
import os

import numpy as np
import pytest

import _node
from _node import DIM, LONG_TEXT_INDEX, MODEL, TEXTS, TOKEN, Server, assert_rows_match

PROTO_DIR = os.environ.get("EMBEDSERVE_PROTO_DIR", "")
HEALTH_PROTO = os.environ.get("EMBEDSERVE_HEALTH_PROTO", "/usr/share/grpc-proto/grpc/health/v1/health.proto")
NOT_FOUND, INVALID_ARGUMENT, UNAUTHENTICATED = 5, 3, 16


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def reference(server):
    return {"texts": _node.python_texts(server.unix_target, TEXTS),
            "images": _node.python_images(server.unix_target, _node.image_paths())}


def job(target, **extra):
    return dict(target=target, proto_dir=PROTO_DIR, health_proto=HEALTH_PROTO, model=MODEL,
                texts=TEXTS, images=_node.image_paths(), **extra)


def values(embeddings):
    return [e["values"] for e in embeddings]


def check_plain(embeddings, reference, encoding, what):
    """float32 rows: shape [DIM], the encoding the request asked for, the reference values."""
    assert [e["shape"] for e in embeddings] == [[DIM]] * len(reference), what
    assert {e["encoding"] for e in embeddings} == {encoding}, what
    assert {e["dtype"] for e in embeddings} == {"DTYPE_FLOAT32"}, what
    assert_rows_match(values(embeddings), reference, what)


def check_rounded(embeddings, reference, dtype, what):
    """float16/bfloat16 rows: every value representable in the type and within its rounding
    (round to nearest: relative error <= 2^-(mantissa bits + 1)) of the float32 reference."""
    got = np.array(values(embeddings), dtype=np.float64)
    assert got.shape == reference.shape and {e["dtype"] for e in embeddings} == {dtype}, what
    assert {e["encoding"] for e in embeddings} == {"packed"}, what
    as32 = got.astype(np.float32)
    assert np.array_equal(as32.astype(np.float64), got), what
    if dtype == "DTYPE_FLOAT16":
        assert np.array_equal(as32.astype(np.float16).astype(np.float64), got), what + ": not float16"
        bound = np.abs(reference) * 2.0 ** -11 + 2.0 ** -25 + 1e-6
    else:
        assert not np.any(as32.view(np.uint32) & 0xFFFF), what + ": not bfloat16"
        bound = np.abs(reference) * 2.0 ** -8 + 1e-6
    excess = np.abs(got - reference) - bound
    assert np.all(excess <= 0), "%s: worst excess over the rounding bound %.3g" % (what, excess.max())


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_grpc_js_calls_match_the_python_client(server, reference, transport):
    target = server.unix_target if transport == "unix" else server.tcp_target
    got = _node.run_node("grpc_js_client.cjs", job(target))
    texts, images = reference["texts"], reference["images"]

    assert got["health"] == {"": "SERVING", "embedserve.v1.EmbedService": "SERVING", MODEL: "SERVING"}
    assert got["health_unknown"]["code"] == NOT_FOUND
    assert got["models"] == [{"name": MODEL, "state": "MODEL_STATE_READY"}]

    check_plain(got["texts_float_list"], texts, "values", "Embed texts, ENCODING_FLOAT_LIST")
    # Unspecified encoding with float32 is the float list (embed.proto).
    check_plain(got["texts_default"], texts, "values", "Embed texts, no options")
    check_plain(got["texts_packed_float32"], texts, "packed", "Embed texts, packed float32")
    check_plain(got["images_packed_float32"], images, "packed", "Embed images, packed float32")
    check_plain(got["mixed_float_list"], np.stack([texts[0], images[0]]), "values",
                "Embed a text and an image in one call")
    check_rounded(got["texts_packed_float16"], texts, "DTYPE_FLOAT16", "Embed texts, float16")
    check_rounded(got["texts_packed_bfloat16"], texts, "DTYPE_BFLOAT16", "Embed texts, bfloat16")

    # Truncation is reported per input: only the long text was cut.
    assert [e["truncated"] for e in got["texts_float_list"]] == [
        i == LONG_TEXT_INDEX for i in range(len(TEXTS))]
    assert got["texts_float_list"][LONG_TEXT_INDEX]["token_count"] == 77
    assert all(0 < e["token_count"] < 77 for i, e in enumerate(got["texts_float_list"])
               if i != LONG_TEXT_INDEX)

    assert got["unknown_model"]["code"] == NOT_FOUND
    assert "no-such-model" in got["unknown_model"]["details"]
    assert got["no_inputs"]["code"] == INVALID_ARGUMENT
    assert "inputs" in got["no_inputs"]["details"]

    stream = got["stream"]
    assert [r["id"] for r in stream] == ["texts", "bad", "images"] + [
        "text-%d" % i for i in range(len(TEXTS))]
    assert stream[1]["error"]["code"] == NOT_FOUND and stream[1]["embeddings"] == []
    assert all(r["error"] is None for i, r in enumerate(stream) if i != 1)
    check_plain(stream[0]["embeddings"], texts, "packed", "EmbedStream texts")
    check_plain(stream[2]["embeddings"], images, "values", "EmbedStream images")
    for i in range(len(TEXTS)):
        check_plain(stream[3 + i]["embeddings"], texts[i:i + 1], "values", "EmbedStream text %d" % i)


def test_grpc_js_bearer_token():
    s = Server("--auth-token-file", _node.token_file(), token=TOKEN)
    try:
        reference = _node.python_texts(s.tcp_target, TEXTS, token=TOKEN)
        got = _node.run_node("grpc_js_client.cjs", job(s.tcp_target, token=TOKEN,
                                                           wrong_token="not-" + TOKEN))
        # Health needs no token; everything else was called with the right one.
        assert got["health"][""] == "SERVING"
        check_plain(got["texts_float_list"], reference, "values", "Embed with the right token")
        assert got["wrong_token"]["code"] == UNAUTHENTICATED
        assert got["no_token"]["code"] == UNAUTHENTICATED
    finally:
        assert s.stop() == 0

