"""The simulated Proxmox VE cluster (simulator/): its API against the schema extracts, faults, agents, scale."""
