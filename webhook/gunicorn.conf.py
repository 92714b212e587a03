"""gunicorn settings for running the webhook directly:

    VMHEALTH_CONFIG=/etc/vmhealth/vmhealth.yml \
        gunicorn -c webhook/gunicorn.conf.py 'vmhealth.webhook:create_app()'

One worker process with threads; more replicas (processes or machines) share one PostgreSQL, which
is what keeps them from acting twice.
"""

from vmhealth.webhook.server import WEBHOOK

globals().update(WEBHOOK.gunicorn_conf())  # listen, threads, limits, TLS: as `vmhealth webhook` uses them
