"""What ships around the code: docker-compose.yml, the Grafana dashboards, the Proxmox roles, the CI audit,
and the benchmark scripts in miniature."""
