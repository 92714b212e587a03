"""gunicorn settings for running the exporter directly:

    VMHEALTH_CONFIG=/etc/vmhealth/vmhealth.yml \
        gunicorn -c exporter/gunicorn.conf.py 'vmhealth.exporter:create_app()'

One worker process: the exporter's state lives in memory and is written behind to the database.
"""

import os

from vmhealth.exporter.server import stop_app
from vmhealth.gunicorn_runner import gunicorn_settings

_settings = gunicorn_settings(
    os.environ.get("VMHEALTH_EXPORTER_LISTEN", "127.0.0.1:9747"), int(os.environ.get("VMHEALTH_EXPORTER_THREADS", "8"))
)
globals().update(_settings)


def worker_exit(server, worker):
    app = getattr(worker, "wsgi", None)
    if app is not None:
        stop_app(app)
