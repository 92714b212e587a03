"""The remediation webhook: Alertmanager receiver, reset policy, Proxmox actions and history."""
