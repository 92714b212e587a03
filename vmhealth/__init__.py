"""vmhealth: notices Proxmox guests that are running but hung, and resets them safely."""

__version__ = "0.1.0"
