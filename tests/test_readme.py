"""The README's commands work as written on Debian 12 after ./setup.sh, and its contracts match the code.

Debian 12 has no `python`, and its `/usr/bin/python3` lacks the suite's dependencies: every command shown must
go through `.venv/bin/tox` or a program tox installed under `.tox/`.
"""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
from pathlib import Path

from conformance.backends.emulated import sidecar

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _shell_lines() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", README, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def _tox_envs() -> set[str]:
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(REPO / "tox.ini")
    return {section.removeprefix("testenv:") for section in ini.sections() if section.startswith("testenv:")}


def test_no_command_needs_a_python_the_machine_lacks() -> None:
    commands = _shell_lines() + re.findall(r"`([^`\n]+)`", README)
    for command in commands:
        assert not re.match(r"(sudo )?python3? ", command), command


def test_every_tox_environment_the_readme_names_exists() -> None:
    named = set(re.findall(r"tox (?:-qq )?-e ([a-z,]+)", README))
    envs = {env for group in named for env in group.split(",")}
    assert envs >= {"conformance", "cli", "lint", "unit"}
    assert envs <= _tox_envs(), envs - _tox_envs()


def test_the_cli_environment_runs_the_installed_script() -> None:
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(REPO / "tox.ini")
    assert ini["testenv:cli"]["commands"].split()[0] == "mesh-inbound-conformance"
    script = Path(sys.executable).parent / "mesh-inbound-conformance"
    assert script.exists(), "the package installs the mesh-inbound-conformance script"
    out = subprocess.run([str(script), "spec", "--format", "json"], capture_output=True, text=True, check=True)
    assert '"format": "mesh-inbound-conformance/spec"' in out.stdout


def test_k_selection_and_outputs_are_documented() -> None:
    assert '-k "PodIPFromPlainClient and passthrough"' in README
    assert "`reports/<family>/`" in README
    assert "`<artifacts-dir>/<profile>/<Case>/`" in README
    assert "not selected" in README


def test_the_sidecar_contract_says_both_families_and_what_sniff_does() -> None:
    assert "It must listen on 15006 (inbound) and 15001 (outbound), each **on both families**" in README
    # No detection timeout by default (Istio's protocolDetectionTimeout 0s): the sidecar's config says so.
    assert "waiting at most `detection_timeout_s` (with `null`, Istio's default, for ever)" in README
    assert '"detection_timeout_s": null' in README
    assert "503 Service Unavailable" in README
    assert sidecar.RESPONSE_503.startswith(b"HTTP/1.1 503 Service Unavailable")
    assert "sees as `reset/EOF`" in README
