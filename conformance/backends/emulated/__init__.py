"""The emulated backend: pods are network namespaces on a bridge, with Istio's capture rules and a sidecar.

Pods enrolled in ambient get istio-cni's in-pod rules instead, served by one ztunnel in the node namespace.

It never imports the spec: every outcome comes from real sockets and the kernel.
"""
