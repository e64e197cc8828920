"""EmbedServeError: the one exception the embedserve client raises for a failed call."""
import grpc


class EmbedServeError(Exception):
    """A call failed. `code` is the grpc.StatusCode (e.g. NOT_FOUND for an unknown model,
    INVALID_ARGUMENT naming the field and the limit, RESOURCE_EXHAUSTED when the server's
    queues were still full after the client's retries, UNAVAILABLE, DEADLINE_EXCEEDED)."""

    def __init__(self, code, message, method=""):
        self.code = code
        self.message = message
        self.method = method
        name = code.name if isinstance(code, grpc.StatusCode) else str(code)
        super().__init__("%s: %s" % (name, message) + (" (%s)" % method if method else ""))

    @classmethod
    def from_rpc_error(cls, err, method=""):
        code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
        details = err.details() if hasattr(err, "details") else str(err)
        return cls(code, details or "", method)

    def __reduce__(self):
        # Picklable (crosses RQ/Celery/multiprocessing boundaries): the code by name.
        name = self.code.name if isinstance(self.code, grpc.StatusCode) else self.code
        return (_rebuild, (name, self.message, self.method))


def _rebuild(name, message, method):
    code = getattr(grpc.StatusCode, name, name) if isinstance(name, str) else name
    return EmbedServeError(code, message, method)
