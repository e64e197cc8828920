"""RQ example: a worker whose jobs embed a folder of images through embedserve (RQ forks a
work-horse per job; the embedserve client made before the fork keeps working in it).

    python3 examples/rq_app.py worker [--burst]     # a worker on the `embedserve` queue
    python3 examples/rq_app.py enqueue FOLDER       # enqueue one folder, wait, print sizes

Environment: REDIS_URL (default redis://127.0.0.1:6379/0), plus embed_jobs.py's."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import embed_jobs  # noqa: E402  (first: imports embedserve before grpc)
from redis import Redis  # noqa: E402
from rq import Queue, Worker  # noqa: E402

QUEUE = "embedserve"


def connection():
    return Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))


def queue():
    return Queue(QUEUE, connection=connection())


def run_worker(burst=False):
    # Use the client in the parent before RQ forks its work-horses.
    print("rq worker %d: embedserve %s" % (os.getpid(), embed_jobs.client.health()), flush=True)
    return Worker([QUEUE], connection=connection()).work(burst=burst)


def main(argv):
    if argv[:1] == ["worker"]:
        run_worker(burst="--burst" in argv)
    elif argv[:1] == ["enqueue"] and len(argv) == 2:
        job = queue().enqueue(embed_jobs.embed_folder, os.path.abspath(argv[1]))
        while job.get_status(refresh=True) not in ("finished", "failed"):
            time.sleep(0.2)
        if job.get_status() == "failed":
            sys.exit(job.exc_info)
        result = job.return_value() if hasattr(job, "return_value") else job.result
        for name, vec in sorted(result.items()):
            print(name, len(vec))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
