"""The emulated backend: pods are network namespaces on a bridge, with Istio's capture rules and a sidecar.

It never imports the spec: every outcome comes from real sockets and the kernel.
"""
