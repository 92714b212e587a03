"""Orchestration: the whole product on loopback for the demo, the tests and the benchmarks.

Nothing in the agent, the exporter or the webhook imports this package; it starts them as child
processes (`launcher`), beside the real Prometheus and Alertmanager binaries (`binaries`).
"""
