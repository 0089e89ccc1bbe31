"""mesh-inbound-conformance: does a mesh build keep the inbound networking semantics of Istio 1.10?"""

__version__ = "0.1.0"
