"""The in-VM agent: collects guest health with psutil and pushes heartbeats or serves /metrics."""
