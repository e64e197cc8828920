"""Client: the synchronous embedserve client (grpc channel per process, deadlines, retries
with backoff, fork safety, client-id and bearer-token metadata)."""
import os
import threading
import time
import warnings
import weakref
from typing import Any, Iterable, List, Optional, Sequence

import grpc

from . import _common as c
from .errors import EmbedServeError

_live_clients = weakref.WeakSet()
# Channels inherited from a parent process: never used nor closed in the child (their gRPC
# state belongs to the parent), and kept referenced so that no finalizer touches them.
_inherited = []


def _fork_support():
    try:
        from grpc._cython import cygrpc
        return bool(cygrpc.is_fork_support_enabled())
    except (ImportError, AttributeError):  # other gRPC versions: assume it is on
        return True


def _after_fork_in_child():
    for client in list(_live_clients):
        client._reset_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Client(c.ClientOptions):
    """A thin typed client of an embedserve server.

    target: "unix:/path/to.sock" (or just "/path/to.sock") or "host:port".
    timeout: the deadline of each call in seconds, retries included (None: no deadline).
    token: sent as `authorization: Bearer <token>` when given.
    retries: how many times a failed call that can succeed later is tried again, after
      exponential backoff with jitter (at least the server's `retry-after-ms` advice); None
      (the default): as many times as the deadline allows (3 without a deadline). Retried:
      UNAVAILABLE (unless the server says a retry cannot succeed, as for a model that failed
      to load) and RESOURCE_EXHAUSTED that the server marks retryable (a full queue, the
      per-client limit), never a message over a size limit. A retry waits for the connection
      (gRPC's wait_for_ready) until the deadline, so a server that is still starting or
      restarting is reached within `timeout` rather than after a count of connection
      attempts.
    client_id: the `x-embedserve-client` header (the server's per-client limits key on it);
      default "py-<hostname>-<pid>", re-derived in forked children.
    credentials: grpc.ChannelCredentials for TLS (TCP targets), else plaintext.

    Safe to create before fork(): the child makes its own channel on first use. Results are
    numpy arrays when numpy is installed (as_numpy=False for lists)."""

    def __init__(self, target: str, *args, **options):
        """`options`: see embedserve._common.ClientOptions (timeout, token, retries,
        client_id, credentials, max_message_bytes, as_numpy, backoff, priority: "bulk", "normal" or "interactive" for every call unless a call says otherwise)."""
        super().__init__(target, *args, **options)
        self._lock = threading.Lock()
        self._pid = None
        self._channel = None
        self._callables = {}
        self._closed = False
        _live_clients.add(self)

    # -- plumbing ------------------------------------------------------------------------

    def _reset_after_fork(self):
        self._lock = threading.Lock()  # another thread may have held it at fork time
        if self._channel is not None:
            _inherited.append(self._channel)
        self._channel = None
        self._callables = {}
        self._pid = None

    def _get_channel(self):
        pid = os.getpid()
        channel = self._channel
        if channel is not None and self._pid == pid:
            return channel
        with self._lock:
            if self._closed:
                raise ValueError("the embedserve Client is closed")
            if self._channel is not None and self._pid != pid:
                _inherited.append(self._channel)  # fork without register_at_fork
                self._channel = None
            if self._channel is None:
                if _inherited and not _fork_support():
                    warnings.warn(
                        "embedserve: gRPC fork support is off (grpc was imported before "
                        "embedserve without GRPC_ENABLE_FORK_SUPPORT=1); calls from this "
                        "forked child may fail with UNAVAILABLE", RuntimeWarning, stacklevel=4)
                opts = c.channel_options(self.max_message_bytes)
                if self.credentials is not None:
                    self._channel = grpc.secure_channel(self.target, self.credentials, opts)
                else:
                    self._channel = grpc.insecure_channel(self.target, opts)
                self._callables = {}
                self._pid = pid
            return self._channel

    def _callable(self, method):
        channel = self._get_channel()
        fn = self._callables.get(method.path)
        if fn is None:
            fn = channel.unary_unary(method.path, request_serializer=method.serializer,
                                     response_deserializer=method.deserializer)
            self._callables[method.path] = fn
        return fn

    def _metadata(self):
        return c.metadata(self.client_id, self.token)

    def call(self, method: c.Method, request: Any, timeout: Optional[float] = None,
             retries: Optional[int] = None):
        """One unary call with the client's deadline, retries and metadata."""
        timeout = self.timeout if timeout is None else timeout
        retries = self.retries if retries is None else retries
        deadline = None if timeout is None else time.monotonic() + timeout
        attempt = 0
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise EmbedServeError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                      "deadline of %.3gs exceeded after %d attempts"
                                      % (timeout, attempt), method.path)
            try:
                # A retry waits for the channel to connect (wait_for_ready), within the
                # deadline: a server still starting is reached however many connection
                # attempts that takes. The first attempt fails fast, so retries=0 still
                # reports an unreachable server at once.
                return self._callable(method)(request, timeout=remaining,
                                              metadata=self._metadata(),
                                              wait_for_ready=attempt > 0)
            except grpc.RpcError as e:
                delay = c.next_attempt_delay(e, attempt, retries, self.backoff, deadline,
                                             time.monotonic())
                if delay is not None:
                    time.sleep(delay)
                    attempt += 1
                    continue
                raise EmbedServeError.from_rpc_error(e, method.path) from None

    # -- the API -------------------------------------------------------------------------

    def embed(self, model: str, inputs: Sequence[Any], normalize: bool = True,
              dtype: Any = "float32", truncate: bool = True, timeout: Optional[float] = None,
              priority: Optional[str] = None):
        """Mixed inputs: str is a text; bytes, os.PathLike, file objects and PIL images are
        images. Returns [n, dim] (numpy) or one row per input."""
        req = c.embed_request(model, inputs, normalize, dtype, truncate, "text",
                              self._priority(priority))
        return c.embeddings_result(self.call(c.EMBED, req, timeout), self.as_numpy)

    def embed_texts(self, model: str, texts: Sequence[str], normalize: bool = True,
                    dtype: Any = "float32", truncate: bool = True,
                    timeout: Optional[float] = None,
                    priority: Optional[str] = None):
        """Texts -> [n, dim] float32 array (float16 for dtype="float16"), or lists."""
        req = c.embed_request(model, texts, normalize, dtype, truncate, "text",
                              self._priority(priority))
        return c.embeddings_result(self.call(c.EMBED, req, timeout), self.as_numpy)

    def embed_images(self, model: str, images: Sequence[Any], normalize: bool = True,
                     dtype: Any = "float32", timeout: Optional[float] = None,
                     priority: Optional[str] = None):
        """Images as encoded bytes, paths (str or os.PathLike), file objects or PIL images."""
        req = c.embed_request(model, images, normalize, dtype, True, "path",
                              self._priority(priority))
        return c.embeddings_result(self.call(c.EMBED, req, timeout), self.as_numpy)

    def rerank(self, model: str, query: Any, candidates: Sequence[Any],
               top_k: Optional[int] = None, truncate: bool = True,
               timeout: Optional[float] = None,
               sigmoid: Optional[bool] = None,
               priority: Optional[str] = None) -> List[c.RerankResult]:
        """query and candidates: str (text), image (bytes, os.PathLike, PIL) or a vector
        (list of floats, numpy array; [tokens, dim] for multi-vector); texts only for a
        cross-encoder, where sigmoid=True maps its logits into (0, 1). Best first."""
        req = c.rerank_request(model, query, list(candidates), top_k, truncate, sigmoid,
                               self._priority(priority))
        return c.rerank_result(self.call(c.RERANK, req, timeout))

    def classify(self, model: str, images: Sequence[Any], labels: Sequence[str],
                 prompt_template: Optional[str] = None,
                 timeout: Optional[float] = None,
                 priority: Optional[str] = None) -> List[List[c.LabelScore]]:
        """Zero-shot: per image, every label most probable first."""
        req = c.classify_request(model, list(images), labels, prompt_template,
                                 self._priority(priority))
        return c.classify_result(self.call(c.CLASSIFY, req, timeout))

    def tokenize(self, model: str, texts: Sequence[str], truncate: bool = True,
                 timeout: Optional[float] = None) -> List[c.TokenizedText]:
        req = c.tokenize_request(model, texts, truncate)
        return c.tokenize_result(self.call(c.TOKENIZE, req, timeout))

    def models(self, timeout: Optional[float] = None) -> List[c.ModelInfo]:
        return c.models_result(self.call(c.LIST_MODELS, c.models_pb2.ListModelsRequest(),
                                         timeout))

    def model(self, name: str, timeout: Optional[float] = None) -> c.ModelInfo:
        res = self.call(c.GET_MODEL, c.models_pb2.GetModelRequest(name=name), timeout)
        return c.model_info(res.model)

    def health(self, model: str = "", timeout: Optional[float] = None) -> str:
        """"SERVING", "NOT_SERVING", "SERVICE_UNKNOWN" or "UNKNOWN" for the server ("") or a
        model name. Not retried: a health check reports what is now."""
        return self.call(c.HEALTH, model, timeout, retries=0)

    def wait_until_serving(self, model: str = "", timeout: float = 60.0,
                           interval: float = 0.05) -> None:
        """Polls health until SERVING; EmbedServeError(DEADLINE_EXCEEDED) after timeout."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                last = self.health(model, timeout=max(0.1, min(1.0, deadline - time.monotonic())))
                if last == "SERVING":
                    return
            except EmbedServeError as e:
                last = str(e)
                # A channel that failed to connect backs off; a fresh one retries now.
                self._reset_channel()
            time.sleep(interval)
        raise EmbedServeError(grpc.StatusCode.DEADLINE_EXCEEDED,
                              "%s not SERVING after %.3gs: %s" % (model or "server", timeout, last))

    def _reset_channel(self):
        with self._lock:
            if self._channel is not None and self._pid == os.getpid():
                self._channel.close()
            self._channel = None
            self._callables = {}

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._channel is not None and self._pid == os.getpid():
                self._channel.close()
            self._channel = None
            self._callables = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # Picklable (e.g. handed to a worker): the connection is not part of the state.
    def __getstate__(self):
        state = self.__dict__.copy()
        for k in ("_lock", "_channel", "_callables", "_pid"):
            state.pop(k, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._channel = None
        self._callables = {}
        self._pid = None
        _live_clients.add(self)

    def __repr__(self):
        return "embedserve.Client(%r)" % self.target
