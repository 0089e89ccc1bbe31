"""The emulated backend says in one line what a machine lacks, instead of failing obscurely later."""

from __future__ import annotations

import pytest

from conformance.backends.base import PrerequisiteError
from conformance.backends.emulated import cluster


def test_not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster.os, "geteuid", lambda: 1000)
    with pytest.raises(PrerequisiteError) as info:
        cluster.check_prerequisites()
    assert str(info.value) == (
        "the emulated backend needs root (network namespaces, iptables): run as root, e.g. sudo tox -e conformance"
    )


def test_no_iptables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster.os, "geteuid", lambda: 0)
    monkeypatch.setattr(cluster.shutil, "which", lambda tool: None if "tables" in tool else f"/usr/sbin/{tool}")
    with pytest.raises(PrerequisiteError) as info:
        cluster.check_prerequisites()
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("the emulated backend needs iptables-restore, ip6tables-restore, iptables-save:")
    assert "apt-get install -y iptables" in str(info.value)
