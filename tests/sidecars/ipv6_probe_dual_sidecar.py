"""A deliberately wrong sidecar: on a dual-stack pod its status port probes the IPv6 pod IP.

pilot-agent sends a rewritten probe to INSTANCE_IP, the pod's primary address, from the passthrough bind of its
family: on a dual-stack pod whose primary is IPv4, the IPv4 pod IP from 127.0.0.6 (settings-dualstack.md §4,
server.go HEAD L215-222). This one takes the pod's last address instead, the IPv6 one on a dual-stack pod, so the
app sees its probes from ::6 (and, with the legacy destination, they go to ::1 from ::6). Every bind of a dual-stack
pod admits both families, so readiness does not change: only who the app saw probing it does, in the rewritten
probe cells where the probe reaches the app. Single-stack pods have one address: nothing changes there.
It is the reference sidecar with its status configuration changed. Run it as
`python3 ipv6_probe_dual_sidecar.py CONFIG`.
"""

import dataclasses
import sys

from reference import load


def main() -> int:
    sidecar = load("sidecar")
    status_of = sidecar._status

    def last_address(data):  # type: ignore[no-untyped-def]
        status = status_of(data)
        return status and dataclasses.replace(status, pod_ip=str(data["pod"]["ips"][-1]))

    sidecar._status = last_address
    return int(sidecar.main(sys.argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
