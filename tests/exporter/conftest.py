"""The exporter (exporter/): heartbeat ingest, the Proxmox poller, /metrics, persistence, bounds per guest."""
