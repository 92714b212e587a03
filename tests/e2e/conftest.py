"""The whole product at once: the simulator over HTTPS, `vmhealth exporter` and `vmhealth webhook` as real
processes, the real Prometheus and Alertmanager (tests.helpers.e2e). The slowest folder: run it last
when iterating (`pytest tests/e2e`)."""
