"""The commands of the README and the docs/ pages work as written on Debian 12 after ./setup.sh, and their
contracts match the code.

Debian 12 has no `python`, and its `/usr/bin/python3` lacks the suite's dependencies: every command shown, on
every page, must go through `.venv/bin/tox` or a program tox installed under `.tox/`.
"""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conformance.backends.emulated import sidecar

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
# The README and the reference pages it links to: every check of a command runs over all of them.
PAGES = {"README.md": README} | {f"docs/{path.name}": path.read_text() for path in sorted((REPO / "docs").glob("*.md"))}
ALL_PAGES = "\n".join(PAGES.values())


def _page(name: str) -> str:
    return PAGES[f"docs/{name}"]


def _shell_lines(text: str) -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def _tox_envs() -> set[str]:
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(REPO / "tox.ini")
    return {section.removeprefix("testenv:") for section in ini.sections() if section.startswith("testenv:")}


def test_the_reference_pages_exist() -> None:
    assert {"docs/running.md", "docs/spec.md", "docs/emulated.md", "docs/kind.md", "docs/nightly.md"} <= set(PAGES)


@pytest.mark.parametrize("page", sorted(PAGES))
def test_no_command_needs_a_python_the_machine_lacks(page: str) -> None:
    text = PAGES[page]
    commands = _shell_lines(text) + re.findall(r"`([^`\n]+)`", text)
    for command in commands:
        assert not re.match(r"(sudo )?python3? ", command), f"{page}: {command}"


def test_the_two_commands_open_the_readme() -> None:
    first = [line.split("#", 1)[0].strip() for line in _shell_lines(README)[:2]]
    assert first == ["./setup.sh && .venv/bin/tox -e conformance", "./setup.sh && .venv/bin/tox -e lint,unit"]


def test_every_tox_environment_the_pages_name_exists() -> None:
    named = set(re.findall(r"tox (?:-qq )?-e ([a-z,]+)", ALL_PAGES))
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
    running = _page("running.md")
    for text in (README, running):
        assert '-k "PodIPFromPlainClient and passthrough"' in text
        assert "not selected" in text
    assert "`reports/<family>/`" in running
    assert "`<artifacts-dir>/<profile>/<Case>/`" in running


def test_the_sidecar_contract_says_both_families_and_what_sniff_does() -> None:
    emulated = _page("emulated.md")
    assert "It must listen on 15006 (inbound) and 15001 (outbound), each **on both families**" in emulated
    # No detection timeout by default (Istio's protocolDetectionTimeout 0s): the sidecar's config says so.
    assert "waiting at most `detection_timeout_s` (with `null`, Istio's default, for ever)" in emulated
    assert '"detection_timeout_s": null' in emulated
    assert "503 Service Unavailable" in emulated
    assert sidecar.RESPONSE_503.startswith(b"HTTP/1.1 503 Service Unavailable")
    assert "sees as `reset/EOF`" in emulated


def _map() -> tuple[set[str], set[str]]:
    """The README's folder map: the entries at the top of the repository, and those inside `conformance/`."""
    block = re.search(r"### The folders\n\n```\n(.*?)```", README, flags=re.S)
    assert block is not None
    top, package = set(), set()
    for line in block[1].splitlines():
        entry = re.match(r"( {0,2})((?:\S+, )*\S+)", line)
        if entry is None:  # a continuation line, indented further
            continue
        names = entry[2].split(", ")
        (package if entry[1] else top).update(names)
    return top, package


def test_the_map_names_every_part_of_the_package_and_nothing_else() -> None:
    top, package = _map()
    assert all((REPO / name).exists() for name in top), top
    root = REPO / "conformance"
    parts = {f"{p.name}/" for p in root.iterdir() if (p / "__init__.py").exists()}
    parts |= {p.name for p in root.glob("*.py") if p.name != "__init__.py"}
    assert package == parts
    assert {"conformance/", "workloads/echo/", "fixtures/", "tests/", "benchmarks/", ".github/"} <= top


# What "From a cell to its verdict" names, and where: each must still be defined there.
CELL_TO_VERDICT = [
    ("conformance/suite/test_reachability.py", "CASES"),
    ("conformance/plugin.py", "pytest_generate_tests"),
    ("conformance/suite/checks.py", "ConformanceRun.check_cells"),
    ("conformance/engine/probe.py", "Prober.observe"),
    ("conformance/backends/base.py", "Cluster.probe"),
    ("conformance/spec/semantics.py", "expect"),
    ("conformance/engine/probe.py", "judge"),
]


def _defined(path: Path) -> set[str]:
    import ast

    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.add(node.name)
            names |= {f"{node.name}.{f.name}" for f in node.body if isinstance(f, ast.FunctionDef)}
    return names


@pytest.mark.parametrize(("path", "name"), CELL_TO_VERDICT, ids=[f"{p}:{n}" for p, n in CELL_TO_VERDICT])
def test_the_path_of_a_cell_names_what_the_code_defines(path: str, name: str) -> None:
    assert f"`{path}`" in README
    assert f"`{name}" in README
    if path == "conformance/suite/checks.py" and not (REPO / path).exists():
        pytest.skip("ConformanceRun moves beside the cases in another branch of issue 21")
    assert name in _defined(REPO / path)


def test_arguments_to_the_unit_environment_choose_the_tests() -> None:
    """`tox -e unit -- tests/test_spec.py` must run that file, not that file and then the whole folder (10 minutes)."""
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(REPO / "tox.ini")
    command = ini["testenv:unit"]["commands"].split()
    assert command[-1] == "{posargs:tests}", command
