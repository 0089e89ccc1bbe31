"""The reference programs a wrong proxy here starts from: each loads one and changes one thing.

The wrong proxies run as standalone scripts (`python3 tests/sidecars/x.py CONFIG`, the script's folder on
sys.path), so they import this by its bare name. The reference sidecar and ztunnel are themselves standalone
files, not importable modules of an installed package: they are loaded from the checkout, under the name the
reference program would have, registered in sys.modules so its dataclasses resolve their own module.
"""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

EMULATED = Path(__file__).resolve().parents[2] / "conformance" / "backends" / "emulated"


def load(program: str) -> ModuleType:
    """The reference `sidecar` or `ztunnel` program of this checkout, as a module."""
    spec = importlib.util.spec_from_file_location(f"reference_{program}", EMULATED / f"{program}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
