"""gunicorn settings for running the exporter directly:

    VMHEALTH_CONFIG=/etc/vmhealth/vmhealth.yml \
        gunicorn -c exporter/gunicorn.conf.py 'vmhealth.exporter:create_app()'

One worker process: the exporter's state lives in memory and is written behind to the database.
"""

from vmhealth.exporter.server import EXPORTER

globals().update(EXPORTER.gunicorn_conf())  # listen, threads, limits, TLS: as `vmhealth exporter` uses them
