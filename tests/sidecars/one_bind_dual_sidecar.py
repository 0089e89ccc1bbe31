"""A deliberately wrong sidecar: on a dual-stack pod it binds 127.0.0.6 for upstreams of both families.

Istio gives a dual-stack proxy's passthrough clusters the source 127.0.0.6 and the extra source ::6, and Envoy picks
the one of the upstream's family (cluster_builder.go; envoy default_local_address_selector.cc). A build that drops
the extra source, or a proxy that ignores it, dials an IPv6 upstream from 127.0.0.6: the connection cannot be made,
so the IPv6-client passthrough cells of a dual run fail, and nothing else does (single-stack pods have one bind).
It is the reference sidecar with its bind choice replaced. Run it as `python3 one_bind_dual_sidecar.py CONFIG`.
"""

import sys

from reference import load


def main() -> int:
    sidecar = load("sidecar")

    def first_bind(bind, upstream):  # type: ignore[no-untyped-def]
        return bind[0] if isinstance(bind, tuple) else bind

    sidecar.pick_bind = first_bind
    return int(sidecar.main(sys.argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
