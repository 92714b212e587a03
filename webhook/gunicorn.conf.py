"""gunicorn settings for running the webhook directly:

    VMHEALTH_CONFIG=/etc/vmhealth/vmhealth.yml \
        gunicorn -c webhook/gunicorn.conf.py 'vmhealth.webhook:create_app()'

One worker process with threads; more replicas (processes or machines) share one PostgreSQL, which
is what keeps them from acting twice.
"""

import os

from vmhealth.gunicorn_runner import gunicorn_settings
from vmhealth.webhook.server import stop_app

_settings = gunicorn_settings(
    os.environ.get("VMHEALTH_WEBHOOK_LISTEN", "127.0.0.1:9749"), int(os.environ.get("VMHEALTH_WEBHOOK_THREADS", "8"))
)
globals().update(_settings)


def worker_exit(server, worker):
    app = getattr(worker, "wsgi", None)
    if app is not None:
        stop_app(app)
