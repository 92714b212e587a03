"""Print a guest's own agent key: HMAC-SHA256(exporter.api_key, "<cluster>:<vmid>") in hex.

The exporter accepts only per-VM keys unless `exporter.per_vm_keys: false`: give each guest the key
this prints (in its agent's `api_key`, the shell agent's VMHEALTH_API_KEY, or the Windows install's
-ApiKey), and a guest can then report for itself and no other. Run it where the exporter's
configuration (with `exporter.api_key`) is, for example:

    vmhealth agent-key --config /etc/vmhealth/vmhealth.yml --cluster lab --vmid 104
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cluster", help="the guest's cluster (default: the only one configured)")
    parser.add_argument("--vmid", type=int, required=True, nargs="+", help="the guest's vmid (several: one line each)")


def run(args: argparse.Namespace) -> int:
    from vmhealth.keys import derive_vm_key
    from vmhealth.subcommand import load_config_or_exit

    config = load_config_or_exit(args, ("exporter",))
    names = [cluster.name for cluster in config.clusters]
    cluster = args.cluster
    if cluster is None:
        if len(names) != 1:
            print(f"vmhealth agent-key: --cluster is needed: the configuration has {len(names)} clusters "
                  f"({', '.join(names) or 'none'})", file=sys.stderr)
            return 2
        cluster = names[0]
    elif cluster not in names:
        print(f"vmhealth agent-key: no cluster {cluster!r} in the configuration (configured: {', '.join(names)})",
              file=sys.stderr)
        return 2
    for vmid in args.vmid:
        if vmid < 1:
            print(f"vmhealth agent-key: --vmid must be positive, got {vmid}", file=sys.stderr)
            return 2
    for vmid in args.vmid:
        key = derive_vm_key(config.exporter.api_key, cluster, vmid)
        print(key if len(args.vmid) == 1 else f"{vmid} {key}")
    return 0
