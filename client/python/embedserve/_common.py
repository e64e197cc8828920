"""What the sync and async clients share: request building (inputs from texts, bytes, paths,
PIL images, vectors), response decoding (packed float32/float16/bfloat16 tensors to numpy
arrays or lists), result types, the health codec, metadata and the retry policy."""
import array
import dataclasses
import io
import os
import random
import socket
import struct
import sys
from typing import Any, List, Optional, Sequence, Tuple

import grpc

try:  # numpy is optional: results are lists without it.
    import numpy as np
except ImportError:  # pragma: no cover - exercised only where numpy is missing
    np = None

try:
    from ._proto import embed_pb2, models_pb2, types_pb2
except ImportError as e:  # pragma: no cover
    raise ImportError(
        "embedserve: the generated protobuf modules (embedserve/_proto) are missing; "
        "install with `pip install ./client/python` or run "
        "`python client/python/embedserve/_gen.py` (%s)" % e) from e

RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)
# The server's retry advice (trailing metadata): milliseconds to wait before a retry that may
# succeed, or a negative value where a retry cannot (server/rpc/retry_advice.h).
RETRY_AFTER_KEY = "retry-after-ms"
# Retries when the call has no deadline and `retries` was not given.
RETRIES_WITHOUT_DEADLINE = 3
CLIENT_HEADER = "x-embedserve-client"
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024

_DTYPES = {"float32": types_pb2.DTYPE_FLOAT32, "float16": types_pb2.DTYPE_FLOAT16,
           "bfloat16": types_pb2.DTYPE_BFLOAT16, "fp32": types_pb2.DTYPE_FLOAT32,
           "fp16": types_pb2.DTYPE_FLOAT16, "half": types_pb2.DTYPE_FLOAT16,
           "bf16": types_pb2.DTYPE_BFLOAT16}
_HEALTH = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
_STATES = {0: "unspecified", 1: "loading", 2: "ready", 3: "failed"}
_MODALITIES = {1: "text", 2: "image", 3: "pair"}


@dataclasses.dataclass(frozen=True)
class RerankResult:
    index: int  # into the candidates given
    score: float
    truncated: bool = False  # the candidate (or, for a cross-encoder, its pair) was cut


@dataclasses.dataclass(frozen=True)
class LabelScore:
    index: int  # into the labels given
    label: str
    probability: float  # softmax(logit_scale * cosine) over the labels
    logit: float


@dataclasses.dataclass(frozen=True)
class TokenizedText:
    ids: List[int]
    tokens: List[str]
    truncated: bool


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str
    architecture: str
    modalities: Tuple[str, ...]
    embedding_dim: int
    multi_vector: bool
    context_length: int
    image_size: int
    dtype: str
    device: str
    state: str  # "loading" | "ready" | "failed"
    state_message: str
    scoring: str
    logit_scale: float
    source: str
    dtype_reason: str = ""  # why `dtype`: requested, or what the server's --dtype auto weighed
    activation: str = ""  # OpenCLIP: "gelu" or "quick_gelu" (what the model computes)

    @property
    def ready(self) -> bool:
        return self.state == "ready"


# ---- methods: path, request serializer, response parser -----------------------------------

class Method:
    def __init__(self, path, response_cls=None, deserializer=None, serializer=None):
        self.path = path
        self.serializer = serializer or (lambda m: m.SerializeToString())
        self.deserializer = deserializer or response_cls.FromString


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _health_request(service):
    # grpc.health.v1.HealthCheckRequest { string service = 1; } written by hand, so that the
    # client needs no health stubs (and cannot clash with grpcio-health-checking's).
    data = service.encode("utf-8")
    return (b"\x0a" + _varint(len(data)) + data) if data else b""


def _health_response(data):
    # HealthCheckResponse { ServingStatus status = 1; } (varint, field 1).
    status, i = 0, 0
    while i < len(data):
        key = data[i]
        i += 1
        if key == 0x08:
            shift, value = 0, 0
            while True:
                b = data[i]
                i += 1
                value |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
            status = value
        else:  # unknown field: give up on the rest, the status is what matters
            break
    return _HEALTH.get(status, "UNKNOWN")


EMBED = Method("/embedserve.v1.EmbedService/Embed", embed_pb2.EmbedResponse)
RERANK = Method("/embedserve.v1.EmbedService/Rerank", embed_pb2.RerankResponse)
CLASSIFY = Method("/embedserve.v1.EmbedService/Classify", embed_pb2.ClassifyResponse)
TOKENIZE = Method("/embedserve.v1.EmbedService/Tokenize", embed_pb2.TokenizeResponse)
LIST_MODELS = Method("/embedserve.v1.ModelService/ListModels", models_pb2.ListModelsResponse)
GET_MODEL = Method("/embedserve.v1.ModelService/GetModel", models_pb2.GetModelResponse)
HEALTH = Method("/grpc.health.v1.Health/Check", deserializer=_health_response,
                serializer=_health_request)


# ---- channel and metadata ------------------------------------------------------------------

def channel_options(max_message_bytes):
    return [("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            # A server that restarts is found again within a second of answering.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000)]
    # Not grpc.min_reconnect_backoff_ms: gRPC core also takes it as the connect timeout, the
    # time one attempt has to connect AND receive the server's HTTP/2 SETTINGS (default 20 s).
    # At 100 ms, a server slowed by a busy machine never finished a handshake in time and the
    # channel fell back into backoff until the caller's retries ran out.


def normalize_target(target):
    if target.startswith("unix://") or target.startswith("unix:"):
        return target
    if target.startswith("/"):
        return "unix:" + target
    return target


def default_client_id():
    return "py-%s-%d" % (socket.gethostname(), os.getpid())


def metadata(client_id, token):
    md = [(CLIENT_HEADER, client_id or default_client_id())]
    if token:
        md.append(("authorization", "Bearer " + token))
    return tuple(md)


def retry_after(error) -> Optional[float]:
    """The server's retry advice on a failed call in seconds (negative: do not retry), or
    None where it gave none (a transport failure, an older server, a non-retryable code)."""
    try:
        trailing = error.trailing_metadata() or ()
    except Exception:  # noqa: BLE001 - an RpcError without a call (e.g. made by hand)
        return None
    for key, value in trailing:
        if key == RETRY_AFTER_KEY:
            try:
                return int(value) / 1000.0
            except (TypeError, ValueError):
                return None
    return None


def retry_delay(error, attempt, backoff) -> Optional[float]:
    """Seconds to wait before trying a failed call again, or None where a retry cannot
    succeed. RESOURCE_EXHAUSTED is retried only with the server's advice (a full queue, the
    per-client limit), never for a message over a size limit; UNAVAILABLE (a transport
    failure, a model still loading, a server draining) unless the server advised against it
    (a model that failed to load). The wait is the backoff's, at least the server's advice."""
    code = error.code() if hasattr(error, "code") else None
    advice = retry_after(error)
    if advice is not None and advice < 0:
        return None
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        if advice is None:
            return None
    elif code != grpc.StatusCode.UNAVAILABLE:
        return None
    return max(backoff.delay(attempt), advice or 0.0)


def next_attempt_delay(error, attempt, retries, backoff, deadline, now) -> Optional[float]:
    """How long to sleep before attempt `attempt + 1` of a call that failed with `error`, or
    None to give up. `retries` None: as many as the deadline allows (RETRIES_WITHOUT_DEADLINE
    without one). A wait that would pass the deadline is cut to half the time left, so the
    last attempts still use the deadline the caller gave."""
    delay = retry_delay(error, attempt, backoff)
    if delay is None:
        return None
    limit = retries if retries is not None else (
        None if deadline is not None else RETRIES_WITHOUT_DEADLINE)
    if limit is not None and attempt >= limit:
        return None
    if deadline is not None and now + delay >= deadline:
        delay = (deadline - now) / 2
        if delay < 0.005:  # too little left for another attempt to be worth it
            return None
    return delay


class Backoff:
    """Exponential backoff with jitter: attempt k sleeps in [d/2, d], d = min(cap, base*2^k)."""

    def __init__(self, base=0.05, cap=2.0):
        self.base = base
        self.cap = cap

    def delay(self, attempt):
        d = min(self.cap, self.base * (2 ** attempt))
        return d / 2 + random.uniform(0, d / 2)


# ---- inputs --------------------------------------------------------------------------------


class ClientOptions:
    """What Client and AsyncClient are configured with (their shared constructor)."""

    def __init__(self, target: str, timeout: Optional[float] = 30.0, token: Optional[str] = None,
                 retries: Optional[int] = None, client_id: Optional[str] = None,
                 credentials: Optional[grpc.ChannelCredentials] = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 as_numpy: Optional[bool] = None, backoff: Optional[Backoff] = None,
                 priority: Optional[str] = None):
        self.target = normalize_target(target)
        self.timeout = timeout
        self.token = token
        self.retries = retries
        self.client_id = client_id
        self.credentials = credentials
        self.max_message_bytes = max_message_bytes
        self.as_numpy = as_numpy
        self.backoff = backoff or Backoff()
        priority_enum(priority)  # a bad name fails here, not at the first call
        self.priority = priority

    def _priority(self, priority: Optional[str]) -> int:
        """A call's priority: its own, else the client's, else the server's default."""
        return priority_enum(priority if priority is not None else self.priority)

def image_bytes(image) -> bytes:
    """An encoded image from bytes, a path (str or os.PathLike), a file object, a PIL image or
    an HxW[xC] uint8 numpy array (the last two are written as PNG, lossless)."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, (str, os.PathLike)):
        with open(image, "rb") as f:
            return f.read()
    if hasattr(image, "read"):
        return image.read()
    if np is not None and isinstance(image, np.ndarray):
        from PIL import Image
        image = Image.fromarray(image)
    if hasattr(image, "save") and hasattr(image, "mode"):  # PIL.Image.Image
        buf = io.BytesIO()
        img = image if image.mode in ("RGB", "RGBA", "L") else image.convert("RGB")
        img.save(buf, format="PNG")
        return buf.getvalue()
    raise TypeError("not an image: %r (give bytes, a path, a file object or a PIL image)"
                    % type(image).__name__)


def tensor_from(vector) -> "types_pb2.Tensor":
    if np is not None:
        arr = np.asarray(vector, dtype=np.float32)
        return types_pb2.Tensor(shape=list(arr.shape), dtype=types_pb2.DTYPE_FLOAT32,
                                values=arr.reshape(-1).tolist())
    rows = list(vector)
    if rows and isinstance(rows[0], (list, tuple)):
        flat = [float(v) for r in rows for v in r]
        return types_pb2.Tensor(shape=[len(rows), len(rows[0])], values=flat,
                                dtype=types_pb2.DTYPE_FLOAT32)
    return types_pb2.Tensor(shape=[len(rows)], values=[float(v) for v in rows],
                            dtype=types_pb2.DTYPE_FLOAT32)


def to_input(item, strings_are="text") -> "types_pb2.Input":
    """str -> text (or a path when strings_are == "path"); a vector (list of numbers, numpy
    array) -> embedding; anything else -> an image."""
    if isinstance(item, types_pb2.Input):
        return item
    if isinstance(item, str):
        if strings_are == "text":
            return types_pb2.Input(text=item)
        return types_pb2.Input(image=image_bytes(item))
    if np is not None and isinstance(item, np.ndarray) and item.dtype.kind == "f":
        return types_pb2.Input(embedding=tensor_from(item))
    if isinstance(item, (list, tuple)) and item and not isinstance(item[0], (bytes, str)):
        return types_pb2.Input(embedding=tensor_from(item))
    return types_pb2.Input(image=image_bytes(item))


def dtype_enum(dtype) -> int:
    if isinstance(dtype, int):
        return dtype
    name = str(dtype)
    if np is not None and not isinstance(dtype, str):
        name = np.dtype(dtype).name
    try:
        return _DTYPES[name.lower()]
    except KeyError:
        raise ValueError("dtype must be float32, float16 or bfloat16, not %r" % (dtype,))


PRIORITIES = ("bulk", "normal", "interactive")


def priority_enum(priority: Optional[str]) -> int:
    """"bulk", "normal" or "interactive" -> the request field; None leaves it unset (the
    server then uses the embedserve-priority metadata, else normal)."""
    if priority is None:
        return embed_pb2.PRIORITY_UNSPECIFIED
    if priority not in PRIORITIES:
        raise ValueError("priority must be one of %s, not %r" % (", ".join(PRIORITIES), priority))
    return embed_pb2.Priority.Value("PRIORITY_" + priority.upper())


def truncation(truncate: bool) -> int:
    return embed_pb2.TRUNCATION_END if truncate else embed_pb2.TRUNCATION_ERROR


def embed_request(model, inputs, normalize, dtype, truncate, strings_are,
                  priority=embed_pb2.PRIORITY_UNSPECIFIED):
    if isinstance(inputs, (str, bytes)):
        raise TypeError("give a list of inputs, not a single %s" % type(inputs).__name__)
    inputs = list(inputs)
    return embed_pb2.EmbedRequest(
        model=model, inputs=[to_input(i, strings_are) for i in inputs],
        options=embed_pb2.EmbedOptions(normalize=normalize, dtype=dtype_enum(dtype),
                                       encoding=embed_pb2.ENCODING_PACKED,
                                       truncation=truncation(truncate),
                                       priority=priority))


def rerank_request(model, query, candidates, top_k, truncate, sigmoid=None,
                   priority=embed_pb2.PRIORITY_UNSPECIFIED):
    req = embed_pb2.RerankRequest(model=model, query=to_input(query),
                                  candidates=[to_input(c) for c in candidates],
                                  truncation=truncation(truncate), priority=priority)
    if top_k is not None:
        req.top_k = top_k
    if sigmoid is not None:
        req.sigmoid = sigmoid
    return req


def classify_request(model, images, labels, prompt_template,
                     priority=embed_pb2.PRIORITY_UNSPECIFIED):
    return embed_pb2.ClassifyRequest(model=model,
                                     inputs=[to_input(i, "path") for i in images],
                                     labels=list(labels), prompt_template=prompt_template or "",
                                     priority=priority)


def tokenize_request(model, texts, truncate):
    if isinstance(texts, str):
        raise TypeError("give a list of texts, not a single str")
    return embed_pb2.TokenizeRequest(model=model, texts=list(texts),
                                     truncation=truncation(truncate))


# ---- outputs -------------------------------------------------------------------------------

def _bf16_to_f32_list(data):
    halves = array.array("H")
    halves.frombytes(data)
    if sys.byteorder != "little":
        halves.byteswap()
    words = array.array("I", (h << 16 for h in halves))
    return list(struct.unpack("<%df" % len(words), struct.pack("<%dI" % len(words), *words)))


def decode_tensor(t, as_numpy=None):
    """A Tensor as a numpy array of its shape (float32; float16 stays float16; bfloat16 is
    widened to float32), or without numpy a flat list / list of rows of floats."""
    use_np = np is not None if as_numpy is None else as_numpy
    shape = list(t.shape)
    if t.data:
        if t.dtype == types_pb2.DTYPE_FLOAT16:
            if use_np:
                flat = np.frombuffer(t.data, dtype="<f2").astype(np.float16)
            else:
                flat = list(struct.unpack("<%de" % (len(t.data) // 2), t.data))
        elif t.dtype == types_pb2.DTYPE_BFLOAT16:
            if use_np:
                u = np.frombuffer(t.data, dtype="<u2").astype(np.uint32) << 16
                flat = u.view(np.float32)
            else:
                flat = _bf16_to_f32_list(t.data)
        else:
            if use_np:
                flat = np.frombuffer(t.data, dtype="<f4").astype(np.float32)
            else:
                flat = list(struct.unpack("<%df" % (len(t.data) // 4), t.data))
    else:
        flat = np.asarray(t.values, dtype=np.float32) if use_np else list(t.values)
    if not shape:
        shape = [len(flat)]
    if use_np:
        return flat.reshape(shape)
    if len(shape) == 2:
        n = shape[1]
        return [flat[i * n:(i + 1) * n] for i in range(shape[0])]
    return flat


def embeddings_result(response, as_numpy=None):
    """One row per input: an [n, dim] array when every input gives one vector of one size
    (numpy), else a list (of arrays, for multi-vector models, or of lists of floats)."""
    vecs = [decode_tensor(e.vector, as_numpy) for e in response.embeddings]
    use_np = np is not None if as_numpy is None else as_numpy
    if use_np and vecs and all(v.ndim == 1 for v in vecs) and len({v.shape for v in vecs}) == 1:
        return np.stack(vecs)
    return vecs


def rerank_result(response) -> List[RerankResult]:
    return [RerankResult(r.index, r.score, r.truncated) for r in response.results]


def classify_result(response) -> List[List[LabelScore]]:
    return [[LabelScore(s.index, s.label, s.probability, s.logit) for s in c.scores]
            for c in response.classifications]


def tokenize_result(response) -> List[TokenizedText]:
    return [TokenizedText(list(t.ids), list(t.tokens), t.truncated) for t in response.texts]


def model_info(m) -> ModelInfo:
    return ModelInfo(
        name=m.name, family=m.family, architecture=m.architecture,
        modalities=tuple(_MODALITIES.get(x, str(x)) for x in m.modalities),
        embedding_dim=m.embedding_dim, multi_vector=m.multi_vector,
        context_length=m.context_length, image_size=m.image_size, dtype=m.dtype,
        device=m.device, state=_STATES.get(m.state, str(m.state)),
        state_message=m.state_message, scoring=m.scoring, logit_scale=m.logit_scale,
        source=m.source, dtype_reason=m.dtype_reason, activation=m.activation)


def models_result(response) -> List[ModelInfo]:
    return [model_info(m) for m in response.models]
