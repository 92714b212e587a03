"""gunicorn settings for running the exporter directly:

    VMHEALTH_CONFIG=/etc/vmhealth/vmhealth.yml \
        gunicorn -c exporter/gunicorn.conf.py 'vmhealth.exporter:create_app()'

One worker process: the exporter's state lives in memory and is written behind to the database.
"""

from vmhealth.exporter.server import stop_app
from vmhealth.gunicorn_runner import load_from_environment, section_settings

_section = load_from_environment("exporter").exporter  # listen, threads, limits: as `vmhealth exporter` uses them
globals().update(section_settings(_section, _section.max_body_bytes))


def worker_exit(server, worker):
    app = getattr(worker, "wsgi", None)
    if app is not None:
        stop_app(app)
