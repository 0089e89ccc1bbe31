"""The expected inbound semantics: the suite's one oracle.

`dimensions` names the axes of a cell, `cells` says which combinations exist, `semantics` holds the rules
(each citing Istio's source) and `expect()` (`outcome` what an expectation is made of, `dualstack` the dual-stack
family's rules and `expect_dual()`), `capabilities` says which Istio version can do what, and
`render` prints the spec as versioned JSON or Markdown. Backends never import this package: their outcomes
come from sockets and the kernel.
"""

from conformance.spec.cells import all_cells, iter_cells
from conformance.spec.dimensions import (
    Bind,
    CellKey,
    Client,
    DefaultEndpoint,
    Failure,
    Interception,
    IpFamily,
    Path,
    PortKind,
    Profile,
    Protocol,
    Source,
)
from conformance.spec.outcome import Expectation
from conformance.spec.semantics import RULES, expect

__all__ = [
    "RULES",
    "Bind",
    "CellKey",
    "Client",
    "DefaultEndpoint",
    "Expectation",
    "Failure",
    "Interception",
    "IpFamily",
    "Path",
    "PortKind",
    "Profile",
    "Protocol",
    "Source",
    "all_cells",
    "expect",
    "iter_cells",
]
