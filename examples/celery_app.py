"""Celery example (prefork pool): tasks that embed a folder of images, or one image, through
embedserve. The worker's parent process checks the server before forking its pool; the
embedserve client made at import keeps working in every pool child.

    cd examples && celery -A celery_app worker --pool prefork --concurrency 4
    python3 -c "import celery_app; print(celery_app.embed_folder.delay('/data/imgs').get())"

Environment: REDIS_URL (default redis://127.0.0.1:6379/0) as broker and result backend,
plus embed_jobs.py's."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import embed_jobs  # noqa: E402  (first: imports embedserve before grpc)
from celery import Celery  # noqa: E402
from celery.signals import worker_init  # noqa: E402

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

app = Celery("embedserve_example", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                worker_prefetch_multiplier=1, task_acks_late=True,
                broker_connection_retry_on_startup=True)


@worker_init.connect
def check_server(**_):
    # In the worker's parent, before the prefork pool forks: the channel is live at fork time.
    print("celery worker %d: embedserve %s" % (os.getpid(), embed_jobs.client.health()),
          flush=True)


@app.task(name="embedserve.embed_folder")
def embed_folder(folder, model=None):
    return embed_jobs.embed_folder(folder, model)


@app.task(name="embedserve.embed_image")
def embed_image(path, model=None):
    vec = embed_jobs.client.embed_images(model or embed_jobs.MODEL, [path])[0]
    return [float(x) for x in vec]


@app.task(name="embedserve.server_info")
def server_info():
    return embed_jobs.server_info()
