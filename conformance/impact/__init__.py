"""`impact`: which apps the 1.10 inbound change (and the move to ambient) breaks, from any cluster, any image.

`analysis` is the pure part both sources share; `sources` is the one small interface (list pods and Services,
read a pod's listeners) with `kube_source` (the Kubernetes API) and `emulated_source` (the emulated backend)
behind it; `output` prints; `command` runs it all for the CLI.
"""
