"""The official `openai` Node client (tests/node/openai_client.cjs) against embedserve's
OpenAI-shaped HTTP API (--http-listen): embeddings in float, base64 and the client's default
(base64 asked for and decoded by the client), a single string, the model's own `dimensions`,
images as data URLs (the `modality` extension), models.list, the typed errors (unknown model
404, other dimensions and remote image URLs 400) and the bearer key (right works, wrong 401).
Every vector must equal the Python client's gRPC result for the same input."""
import numpy as np
import pytest

import embedserve

import _node
from _node import DIM, MODEL, TEXTS, TOKEN, HttpServer, assert_rows_match, decode_base64_floats


@pytest.fixture(scope="module")
def server():
    s = HttpServer()
    yield s
    assert s.stop() == 0


def job(server, **extra):
    return dict(base_url=server.base_url, model=MODEL, dim=DIM, texts=TEXTS,
                image_data_urls=[_node.data_url(p) for p in _node.image_paths()], **extra)


def check_list(response, count, what, prompt_tokens=None):
    """The OpenAI list envelope: object, model, data items in input order, usage (for texts:
    the tokens the model saw, as Tokenize counts them)."""
    assert response["object"] == "list" and response["model"] == MODEL, what
    assert [item["index"] for item in response["data"]] == list(range(count)), what
    assert {item["object"] for item in response["data"]} == {"embedding"}, what
    usage = response["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] >= 0, what
    if prompt_tokens is not None:
        assert usage["prompt_tokens"] == prompt_tokens, what


def token_counts(target, texts):
    """Tokens per text as the Python client's Tokenize reports them (cut to the context)."""
    with embedserve.Client(target, timeout=30) as client:
        return [len(t.ids) for t in client.tokenize(MODEL, texts)]


def embeddings(response):
    return [item["embedding"] for item in response["data"]]


def test_openai_client_embeddings_match_the_python_client(server):
    texts = _node.python_texts(server.unix_target, TEXTS)
    images = _node.python_images(server.unix_target, _node.image_paths())
    got = _node.run_node("openai_client.cjs", job(server, api_key="unused-without-a-token-file"))

    tokens = token_counts(server.unix_target, TEXTS)
    for name in ("float", "base64", "default", "own_dimensions"):
        check_list(got[name], len(TEXTS), name, prompt_tokens=sum(tokens))
    assert_rows_match(embeddings(got["float"]), texts, "encoding_format float")
    # base64 asked for explicitly: the client hands back the server's string.
    assert {item["embedding_type"] for item in got["base64"]["data"]} == {"string"}
    assert_rows_match([decode_base64_floats(e) for e in embeddings(got["base64"])], texts,
                      "encoding_format base64")
    # No encoding_format: the client asked for base64 (see `sent` below) and decoded it to
    # arrays of numbers itself.
    assert {item["embedding_type"] for item in got["default"]["data"]} == {"Array"}
    assert_rows_match(embeddings(got["default"]), texts, "the client's default (base64)")
    assert_rows_match(embeddings(got["own_dimensions"]), texts, "dimensions = the model's")
    check_list(got["single"], 1, "a single string", prompt_tokens=tokens[0])
    assert_rows_match(embeddings(got["single"]), texts[:1], "a single string")
    check_list(got["images"], len(images), "images")
    assert_rows_match(embeddings(got["images"]), images, "images as data URLs")
    # Normalized, as gRPC's default.
    norms = np.linalg.norm(np.array(embeddings(got["float"]), dtype=np.float64), axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5)

    assert [m["id"] for m in got["models"]] == [MODEL]
    assert got["models"][0]["object"] == "model" and got["models"][0]["owned_by"] == "embedserve"

    unknown = got["unknown_model"]
    assert unknown["status"] == 404 and unknown["is_not_found"], unknown
    assert "no-such-model" in unknown["error"]["message"]
    other = got["other_dimensions"]
    assert other["status"] == 400 and other["is_bad_request"], other
    assert "dimensions" in other["error"]["message"] and other["error"]["param"] == "dimensions"
    remote = got["remote_image"]
    assert remote["status"] == 400 and remote["is_bad_request"], remote

    # What went over the wire: POST /v1/embeddings, the key as a bearer token, and the
    # client's default asking for base64.
    posts = [r for r in got["sent"] if r["path"] == "/v1/embeddings"]
    assert {r["method"] for r in posts} == {"POST"}
    assert {r["authorization"] for r in got["sent"]} == {"Bearer unused-without-a-token-file"}
    assert [r["body"].get("encoding_format") for r in posts[:3]] == ["float", "base64", "base64"]
    assert posts[5]["body"]["modality"] == "image"


def test_openai_client_bearer_key():
    s = HttpServer(token=TOKEN)
    try:
        texts = _node.python_texts(s.unix_target, TEXTS, token=TOKEN)
        got = _node.run_node("openai_client.cjs", job(s, api_key=TOKEN, auth_only=True,
                                                        wrong_key="not-" + TOKEN))
        check_list(got["right_key"], len(TEXTS), "the right key")
        assert_rows_match(embeddings(got["right_key"]), texts, "the right key")
        wrong = got["wrong_key"]
        assert wrong["status"] == 401 and wrong["is_authentication"], wrong
        assert [r["authorization"] for r in got["sent"]] == ["Bearer " + TOKEN, "Bearer not-" + TOKEN]
    finally:
        assert s.stop() == 0
