"""LangChain's OpenAIEmbeddings (@langchain/openai, tests/node/langchain_client.cjs) pointed at
embedserve's OpenAI-shaped HTTP API (--http-listen, base URL http://127.0.0.1:PORT/v1):
embedQuery and embedDocuments (in batches, base64 by default and float) equal the Python
client's gRPC embeddings of the same texts; a wrong key is refused with 401."""
import pytest

import _node
from _node import DIM, MODEL, TEXTS, TOKEN, HttpServer, assert_rows_match

QUERY = "a photo of a dog"
# LangChain replaces newlines with spaces before sending (stripNewLines, on by default).
DOCUMENTS = TEXTS + ["a dog\non the grass"]
SENT_DOCUMENTS = [d.replace("\n", " ") for d in DOCUMENTS]


@pytest.fixture(scope="module")
def server():
    s = HttpServer()
    yield s
    assert s.stop() == 0


def job(server, **extra):
    return dict(base_url=server.base_url, model=MODEL, dim=DIM, query=QUERY,
                documents=DOCUMENTS, batch_size=2, **extra)


def test_langchain_embeddings_match_the_python_client(server):
    reference = _node.python_texts(server.unix_target, [QUERY] + SENT_DOCUMENTS)
    got = _node.run_node("langchain_client.cjs", job(server, api_key="unused-without-a-token-file"))
    assert_rows_match([got["query"]], reference[:1], "embedQuery")
    assert_rows_match(got["documents"], reference[1:], "embedDocuments, batches of 2")
    assert_rows_match(got["documents_float"], reference[1:], "embedDocuments, float")
    assert_rows_match(got["documents_dimensions"], reference[1:], "embedDocuments, dimensions")


def test_langchain_bearer_key():
    s = HttpServer(token=TOKEN)
    try:
        reference = _node.python_texts(s.unix_target, [QUERY], token=TOKEN)
        got = _node.run_node("langchain_client.cjs", job(s, api_key=TOKEN, wrong_key="not-" + TOKEN))
        assert_rows_match([got["right_key"]], reference, "embedQuery with the right key")
        assert got["wrong_key"].get("status") == 401, got["wrong_key"]
    finally:
        assert s.stop() == 0
