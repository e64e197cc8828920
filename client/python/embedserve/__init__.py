"""embedserve: the Python client of the embedserve gRPC inference server (OpenCLIP/ColPali
embeddings, rerank, zero-shot classification). Public names are re-exported here.

Fork safety needs gRPC's fork support, which gRPC reads once, when `grpc` is first imported:
importing embedserve first turns it on (GRPC_ENABLE_FORK_SUPPORT=1 unless already set). If
`grpc` was imported before, set GRPC_ENABLE_FORK_SUPPORT=1 in the environment yourself."""
import os as _os
import sys as _sys

if "grpc" not in _sys.modules:
    _os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "1")
from ._common import (Backoff, LabelScore, ModelInfo, RerankResult, TokenizedText,
                      decode_tensor)
from .aio import AsyncClient
from .client import Client
from .errors import EmbedServeError

__all__ = ["Client", "AsyncClient", "EmbedServeError", "RerankResult", "LabelScore",
           "TokenizedText", "ModelInfo", "Backoff", "decode_tensor"]
__version__ = "0.1.0"
