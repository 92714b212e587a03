"""A Proxmox VE cluster simulator over HTTPS, for the demo, end-to-end tests and benchmarks."""
