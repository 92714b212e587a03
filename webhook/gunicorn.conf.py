"""gunicorn settings for running the webhook directly:

    VMHEALTH_CONFIG=/etc/vmhealth/vmhealth.yml \
        gunicorn -c webhook/gunicorn.conf.py 'vmhealth.webhook:create_app()'

One worker process with threads; more replicas (processes or machines) share one PostgreSQL, which
is what keeps them from acting twice.
"""

from vmhealth.gunicorn_runner import load_from_environment, section_settings
from vmhealth.webhook.app import MAX_BODY_BYTES
from vmhealth.webhook.server import stop_app

# listen, threads, limits: as `vmhealth webhook` uses them
globals().update(section_settings(load_from_environment("webhook").webhook, MAX_BODY_BYTES))


def worker_exit(server, worker):
    app = getattr(worker, "wsgi", None)
    if app is not None:
        stop_app(app)
