"""AsyncClient: the asyncio flavour of embedserve.Client, on grpc.aio (same methods,
awaitable; same deadlines, retries, metadata and results)."""
import asyncio
import os
import time
from typing import Any, List, Optional, Sequence

import grpc
import grpc.aio

from . import _common as c
from .errors import EmbedServeError


class AsyncClient(c.ClientOptions):
    """Like embedserve.Client, with `await` on every method. The grpc.aio channel belongs to
    the event loop and process that first use it; another loop or a forked child gets its
    own. Use `async with AsyncClient(...) as client:` or `await client.close()`."""

    def __init__(self, target: str, *args, **options):
        """`options`: see embedserve._common.ClientOptions (timeout, token, retries,
        client_id, credentials, max_message_bytes, as_numpy, backoff, priority: "bulk", "normal" or "interactive" for every call unless a call says otherwise)."""
        super().__init__(target, *args, **options)
        self._channel = None
        self._owner = None  # (pid, loop) the channel belongs to
        self._callables = {}

    def _get_channel(self):
        owner = (os.getpid(), asyncio.get_running_loop())
        if self._channel is None or self._owner != owner:
            # A channel of another loop or process is dropped, not closed from here.
            opts = c.channel_options(self.max_message_bytes)
            if self.credentials is not None:
                self._channel = grpc.aio.secure_channel(self.target, self.credentials, opts)
            else:
                self._channel = grpc.aio.insecure_channel(self.target, opts)
            self._owner = owner
            self._callables = {}
        return self._channel

    def _callable(self, method):
        channel = self._get_channel()
        fn = self._callables.get(method.path)
        if fn is None:
            fn = channel.unary_unary(method.path, request_serializer=method.serializer,
                                     response_deserializer=method.deserializer)
            self._callables[method.path] = fn
        return fn

    async def call(self, method: c.Method, request: Any, timeout: Optional[float] = None,
                   retries: Optional[int] = None):
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
                # Retries wait for the channel to connect within the deadline (see
                # Client.call); the first attempt fails fast.
                return await self._callable(method)(
                    request, timeout=remaining, metadata=c.metadata(self.client_id, self.token),
                    wait_for_ready=attempt > 0)
            except grpc.RpcError as e:
                delay = c.next_attempt_delay(e, attempt, retries, self.backoff, deadline,
                                             time.monotonic())
                if delay is not None:
                    await asyncio.sleep(delay)
                    attempt += 1
                    continue
                raise EmbedServeError.from_rpc_error(e, method.path) from None

    async def embed(self, model: str, inputs: Sequence[Any], normalize: bool = True,
                    dtype: Any = "float32", truncate: bool = True,
                    timeout: Optional[float] = None,
                    priority: Optional[str] = None):
        req = c.embed_request(model, inputs, normalize, dtype, truncate, "text",
                              self._priority(priority))
        return c.embeddings_result(await self.call(c.EMBED, req, timeout), self.as_numpy)

    async def embed_texts(self, model: str, texts: Sequence[str], normalize: bool = True,
                          dtype: Any = "float32", truncate: bool = True,
                          timeout: Optional[float] = None,
                          priority: Optional[str] = None):
        req = c.embed_request(model, texts, normalize, dtype, truncate, "text",
                              self._priority(priority))
        return c.embeddings_result(await self.call(c.EMBED, req, timeout), self.as_numpy)

    async def embed_images(self, model: str, images: Sequence[Any], normalize: bool = True,
                           dtype: Any = "float32", timeout: Optional[float] = None,
                           priority: Optional[str] = None):
        req = c.embed_request(model, images, normalize, dtype, True, "path",
                              self._priority(priority))
        return c.embeddings_result(await self.call(c.EMBED, req, timeout), self.as_numpy)

    async def rerank(self, model: str, query: Any, candidates: Sequence[Any],
                     top_k: Optional[int] = None, truncate: bool = True,
                     timeout: Optional[float] = None,
                     sigmoid: Optional[bool] = None,
                     priority: Optional[str] = None) -> List[c.RerankResult]:
        req = c.rerank_request(model, query, list(candidates), top_k, truncate, sigmoid,
                               self._priority(priority))
        return c.rerank_result(await self.call(c.RERANK, req, timeout))

    async def classify(self, model: str, images: Sequence[Any], labels: Sequence[str],
                       prompt_template: Optional[str] = None,
                       timeout: Optional[float] = None,
                       priority: Optional[str] = None) -> List[List[c.LabelScore]]:
        req = c.classify_request(model, list(images), labels, prompt_template,
                                 self._priority(priority))
        return c.classify_result(await self.call(c.CLASSIFY, req, timeout))

    async def tokenize(self, model: str, texts: Sequence[str], truncate: bool = True,
                       timeout: Optional[float] = None) -> List[c.TokenizedText]:
        req = c.tokenize_request(model, texts, truncate)
        return c.tokenize_result(await self.call(c.TOKENIZE, req, timeout))

    async def models(self, timeout: Optional[float] = None) -> List[c.ModelInfo]:
        return c.models_result(await self.call(c.LIST_MODELS, c.models_pb2.ListModelsRequest(),
                                               timeout))

    async def model(self, name: str, timeout: Optional[float] = None) -> c.ModelInfo:
        res = await self.call(c.GET_MODEL, c.models_pb2.GetModelRequest(name=name), timeout)
        return c.model_info(res.model)

    async def health(self, model: str = "", timeout: Optional[float] = None) -> str:
        return await self.call(c.HEALTH, model, timeout, retries=0)

    async def close(self) -> None:
        if self._channel is not None and self._owner == (os.getpid(),
                                                          asyncio.get_running_loop()):
            await self._channel.close()
        self._channel = None
        self._callables = {}

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    def __repr__(self):
        return "embedserve.AsyncClient(%r)" % self.target
