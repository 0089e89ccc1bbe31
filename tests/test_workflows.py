"""The GitHub workflows (.github/workflows/ci.yml and nightly.yml), checked offline.

The jobs' shell steps are run here for real, in order and under their `if:` conditions, in a scratch directory
where `./setup.sh`, tox, sudo, curl, docker and kind are stand-ins that record what they were asked. The command
line a job hands to the suite is then given to the suite itself (`--plan` for the kind backend, `--collect-only`
for the emulated one), so an option the suite does not know, or a combination it refuses, fails here and not at
03:17 on a runner. The nightly matrix is the one .github/scripts/matrix.py computes from fixtures/versions.yaml,
compared with the rows the kind backend reads.

The checks that need jactionlint or check-jsonschema run where those are installed (tox -e lint).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from conformance.backends.kind.matrix import load_matrix, row_for

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / ".github" / "workflows"
MATRIX_SCRIPT = REPO / ".github" / "scripts" / "matrix.py"
BAD_WORKFLOWS = REPO / "tests" / "data" / "workflows"

EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
REFERENCE = re.compile(
    r"(inputs|matrix|github|steps\.[A-Za-z0-9_-]+\.outputs|needs\.[A-Za-z0-9_-]+\.outputs|needs\.[A-Za-z0-9_-]+)"
    r"\.([A-Za-z0-9_.-]+)"
)
STATUS = {"always()", "success()", "failure()", "!cancelled()"}

CUSTOM_INPUTS = {
    "hub": "ghcr.io/you/istio",
    "tag": "1.21.6-fix.1",
    "istio_version": "1.21.6",
    "install_values": "spec:\n  meshConfig:\n    accessLogFile: /dev/stdout\n",
    "image_archive": "https://example.invalid/istio-images.tar.gz",
    "ip_family": "ipv6",
}
LOADED_IMAGES = ["ghcr.io/you/istio/pilot:1.21.6-fix.1", "ghcr.io/you/istio/proxyv2:1.21.6-fix.1"]
GITHUB = {
    "event_name": "workflow_dispatch",
    "ref_name": "main",
    "event.repository.default_branch": "main",
    "token": "stub-token",
    "repository": "you/mesh-inbound-conformance",
}
"""The `github` context of a simulated job (a test overrides what it is about: event_name, ref_name)."""


# --- reading the workflows ---------------------------------------------------------------------------------------


@cache
def workflow(name: str) -> dict[str, Any]:
    """A workflow file as data (PyYAML reads the key `on` as True: put it back)."""
    data: dict[Any, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    if True in data:
        data["on"] = data.pop(True)
    return data


def steps_of(name: str, job: str) -> list[dict[str, Any]]:
    return list(workflow(name)["jobs"][job]["steps"])


def every_step() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (name, job_id, step)
        for name in ("ci.yml", "nightly.yml")
        for job_id, job in workflow(name)["jobs"].items()
        for step in job.get("steps", [])
    ]


def as_github_string(value: Any) -> str:
    """How GitHub turns a value into a string (env values, names)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass
class Context:
    """The contexts a job's expressions read: inputs, matrix, steps.<id>.outputs, github.<key>, needs.<job>.

    `github` is flat, by dotted key (`event.repository.default_branch`); `needs` is {job: {result, outputs}}.
    """

    inputs: dict[str, Any] = field(default_factory=dict)
    matrix: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)
    github: dict[str, Any] = field(default_factory=dict)
    needs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def lookup(self, expression: str) -> Any:
        """A plain reference; anything more elaborate fails the test (keep the workflows' expressions simple)."""
        match = REFERENCE.fullmatch(expression.strip())
        assert match, f"expression too elaborate for a script's env or a name: {expression!r}"
        scope, key = match[1], match[2]
        if scope == "inputs":
            return self.inputs.get(key)
        if scope == "matrix":
            assert key in self.matrix, f"matrix.{key} is not a key of the matrix entry {sorted(self.matrix)}"
            return self.matrix[key]
        if scope == "github":
            assert key in self.github, f"github.{key}: give it to the simulated job"
            return self.github[key]
        if scope.startswith("needs."):
            job = self.needs.get(scope.split(".")[1], {})
            return job.get("outputs", {}).get(key) if scope.endswith(".outputs") else job.get(key)
        return self.outputs.get(scope.split(".")[1], {}).get(key)

    def operand(self, text: str) -> str:
        """A side of `==`/`!=`: a quoted literal or a reference."""
        text = text.strip()
        if len(text) >= 2 and text[0] == text[-1] == "'":
            return text[1:-1]
        return as_github_string(self.lookup(text))

    def render(self, text: str) -> str:
        return EXPRESSION.sub(lambda m: as_github_string(self.lookup(m[1])), text)

    def condition(self, text: str | None, failed: bool) -> bool:
        """`if:` of the forms the workflows use: a status function, references, `a == b`, `a != b`, joined by &&."""
        if text is None:
            return not failed
        inner = EXPRESSION.fullmatch(text.strip())
        text = inner[1] if inner else text
        status, value = "success()", True
        for term in (t.strip() for t in text.split("&&")):
            if term in STATUS:
                status = term
            elif (compare := re.fullmatch(r"(\S+)\s*(==|!=)\s*(\S+)", term)) is not None:
                same = self.operand(compare[1]) == self.operand(compare[3])
                value = value and same == (compare[2] == "==")
            else:
                value = value and bool(self.lookup(term))
        return {"success()": not failed, "failure()": failed, "always()": True, "!cancelled()": True}[status] and value


# --- running a job's steps ------------------------------------------------------------------------------------------


STUB_RECORD = """#!{python}
import json, os, sys
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(json.dumps([{name!r}, *sys.argv[1:]]) + "\\n")
"""

PYTHON_STUB = """#!{python}
import json, os, sys
if sys.argv[1:3] == ["-m", "pip"]:
    with open(os.environ["STUB_LOG"], "a") as log:
        log.write(json.dumps(["python", *sys.argv[1:]]) + "\\n")
    sys.exit(0)
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""

# tox: records its arguments; given posargs it writes the report the suite would (or fails, when told to).
TOX_STUB = """args = sys.argv[1:]
if "--" in args:
    if os.environ.get("STUB_SUITE_FAILS"):
        sys.exit(1)
    post = args[args.index("--") + 1 :]
    report = post[post.index("--report-dir") + 1]
    os.makedirs(report, exist_ok=True)
    with open(os.path.join(report, "conformance-report.md"), "w") as out:
        out.write("REPORT of " + report + "\\n")
"""


GH_STUB = """import shutil
args = sys.argv[1:]
if args[:2] == ["run", "list"]:
    print("\\n".join(os.environ.get("STUB_GH_RUNS", "").split()))
elif args[:2] == ["run", "download"]:
    source = os.path.join(os.environ.get("STUB_GH_ARTIFACTS", "/nonexistent"), args[2], args[args.index("--name") + 1])
    if not os.path.isdir(source):
        sys.exit("no valid artifacts found to download")
    shutil.copytree(source, args[args.index("--dir") + 1], dirs_exist_ok=True)
else:
    sys.exit("gh stand-in: unexpected " + " ".join(args))
"""


@dataclass
class JobRun:
    """What a simulated job did: the steps that ran (by name) and their exit status, tool calls, outputs."""

    ran: dict[str, int]
    skipped: list[str]
    logs: str
    calls: list[list[str]]
    outputs: dict[str, dict[str, str]]
    summary: str
    workdir: Path
    runner_temp: Path

    def tox_posargs(self) -> list[str]:
        runs = [c[c.index("--") + 1 :] for c in self.calls if c[0] == "tox" and "--" in c]
        assert len(runs) == 1, f"expected one `tox -e conformance -- ARGS`, got {self.calls}"
        return runs[0]


class Runner:
    """A scratch checkout where the tools a job calls are stand-ins, and a way to run a job's steps in it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.workdir = root / "work"
        self.bin = root / "bin"
        self.temp = root / "runner-temp"
        for directory in (self.workdir / ".venv" / "bin", self.workdir / ".tox" / "conformance" / "bin", self.bin):
            directory.mkdir(parents=True)
        self.temp.mkdir()
        (self.workdir / ".github" / "scripts").mkdir(parents=True)
        shutil.copy(MATRIX_SCRIPT, self.workdir / ".github" / "scripts" / "matrix.py")
        shutil.copytree(REPO / "fixtures", self.workdir / "fixtures")
        self.log = root / "calls.jsonl"
        self.fake_kind = root / "tools" / "kind"
        python = sys.executable
        self._script(self.workdir / "setup.sh", "#!/bin/sh\nexit 0\n")
        self._script(self.workdir / ".venv" / "bin" / "tox", STUB_RECORD.format(python=python, name="tox") + TOX_STUB)
        # The suite's python in the tox env: asked for the row's tools, names the kind stand-in (the only tool the
        # job fetches: no kubectl, the suite talks to the API server with the Python client); asked for the images a
        # custom build's run pulls, runs the script for real against this repository's suite.
        self._script(
            self.workdir / ".tox" / "conformance" / "bin" / "python",
            STUB_RECORD.format(python=python, name="tox-python")
            + 'if "images" in sys.argv[1:3]:\n'
            + f"    os.environ['PYTHONPATH'] = {str(REPO)!r}\n"
            + f"    os.execv({python!r}, [{python!r}, *sys.argv[1:]])\n"
            + f"print('kind={self.fake_kind}')\n",
        )
        # gh: `run list` prints $STUB_GH_RUNS (run ids, newest first); `run download RUN --name N --dir D` copies
        # $STUB_GH_ARTIFACTS/RUN/N/ into D, or fails as gh does when the run has no such artifact.
        self._script(self.bin / "gh", STUB_RECORD.format(python=python, name="gh") + GH_STUB)
        # The installed command (tox -e cli --notest): the real one, from this checkout; `site` is a stand-in that
        # writes DIR/index.html naming its reports (the site's own tests are the site's; the arguments the job
        # hands it are checked against the real parser in tests/test_workflow_site.py).
        self._script(
            self.workdir / ".tox" / "cli" / "bin" / "mesh-inbound-conformance",
            STUB_RECORD.format(python=python, name="mesh-inbound-conformance")
            + 'if sys.argv[1] == "site":\n'
            + '    out = sys.argv[sys.argv.index("--out") + 1]\n'
            + "    os.makedirs(out, exist_ok=True)\n"
            + '    open(os.path.join(out, "index.html"), "w").write("\\n".join(sys.argv[2:]))\n'
            + "    sys.exit(0)\n"
            + f"os.environ['PYTHONPATH'] = {str(REPO)!r}\n"
            + f"os.execv({python!r}, [{python!r}, '-m', 'conformance', *sys.argv[1:]])\n",
        )
        kind = STUB_RECORD.format(python=python, name="kind") + "print(os.environ['STUB_CLUSTER'])\n"
        self._script(self.fake_kind, kind)
        self._script(self.bin / "sudo", '#!/bin/sh\n[ "$1" = "-E" ] && shift\nexec "$@"\n')
        self._script(self.bin / "modprobe", STUB_RECORD.format(python=python, name="modprobe"))
        self._script(self.bin / "sysctl", STUB_RECORD.format(python=python, name="sysctl"))
        self._script(
            self.bin / "curl",
            STUB_RECORD.format(python=python, name="curl")
            + "out = sys.argv[sys.argv.index('--output') + 1]\nopen(out, 'wb').write(b'tar')\n",
        )
        # docker: `load` prints the archive's images; `manifest inspect` finds those listed in $STUB_REGISTRY.
        self._script(
            self.bin / "docker",
            STUB_RECORD.format(python=python, name="docker")
            + 'if sys.argv[1:3] == ["manifest", "inspect"]:\n'
            + '    sys.exit(0 if sys.argv[3] in os.environ.get("STUB_REGISTRY", "").split() else 1)\n'
            + "".join(f"print('Loaded image: {image}')\n" for image in LOADED_IMAGES),
        )

    @staticmethod
    def _script(path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o755)

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def run_job(
        self,
        file: str,
        job_id: str,
        matrix: dict[str, Any],
        inputs: dict[str, Any],
        suite_fails: bool = False,
        registry: tuple[str, ...] = (),
        github: dict[str, Any] | None = None,
        needs: dict[str, dict[str, Any]] | None = None,
        stub_env: dict[str, str] | None = None,
    ) -> JobRun:
        """Run the job's `run:` steps as GitHub would (bash -eo pipefail, env rendered), skipping `uses:` steps.

        A job whose own `if:` is false runs no step (all are in `skipped`).
        """
        wf = workflow(file)
        assert wf["defaults"]["run"]["shell"] == "bash", f"{file}: every script should run as `shell: bash`"
        job = wf["jobs"][job_id]
        context = Context(inputs=inputs, matrix=matrix, github={**GITHUB, **(github or {})}, needs=needs or {})
        summary = self.root / "step-summary.md"
        summary.write_text("")
        job_env = {key: context.render(str(value)) for key, value in (job.get("env") or {}).items()}
        failed = False
        ran: dict[str, int] = {}
        skipped: list[str] = []
        logs: list[str] = []
        steps = job["steps"] if context.condition(job.get("if"), failed) else []
        skipped += [s.get("name") or s.get("uses") for s in job["steps"] if not steps]
        for index, step in enumerate(steps):
            label = step.get("name") or step.get("uses") or f"step {index}"
            if not context.condition(step.get("if"), failed):
                skipped.append(label)
                continue
            if "uses" in step:
                ran[label] = 0
                continue
            output = self.root / f"output-{index}"
            output.write_text("")
            env = {
                "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}",
                "HOME": str(self.root),
                "RUNNER_TEMP": str(self.temp),
                "GITHUB_OUTPUT": str(output),
                "GITHUB_STEP_SUMMARY": str(summary),
                "GITHUB_ACTIONS": "true",
                "STUB_LOG": str(self.log),
                "STUB_CLUSTER": f"mic-{matrix.get('name', '')}",
                **({"STUB_SUITE_FAILS": "1"} if suite_fails else {}),
                "STUB_REGISTRY": " ".join(registry),
                "GITHUB_RUN_ID": "1000",
                "GITHUB_SERVER_URL": "https://github.com",
                **(stub_env or {}),
                **job_env,
                **{key: context.render(str(value)) for key, value in (step.get("env") or {}).items()},
            }
            result = subprocess.run(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
                cwd=self.workdir,
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            ran[label] = result.returncode
            logs.append(result.stdout + result.stderr)
            failed = failed or result.returncode != 0
            if "id" in step:
                context.outputs[step["id"]] = dict(
                    line.split("=", 1) for line in output.read_text().splitlines() if "=" in line
                )
        return JobRun(
            ran, skipped, "".join(logs), self.calls(), context.outputs, summary.read_text(), self.workdir, self.temp
        )


def run_matrix_job(tmp_path: Path, inputs: dict[str, str]) -> tuple[JobRun, dict[str, Any] | None]:
    """The nightly `matrix` job, run for real (python is this interpreter, with PyYAML); its `rows` output."""
    runner = Runner(tmp_path)
    # `python -m pip install` is recorded, not run; anything else is this interpreter (it has PyYAML).
    runner._script(runner.bin / "python", PYTHON_STUB.format(python=sys.executable))
    job = runner.run_job("nightly.yml", "matrix", {}, inputs)
    rows = job.outputs.get("rows", {}).get("rows")
    return job, json.loads(rows) if rows else None


NO_PREREQUISITES = """import conformance.backends.emulated.cluster as cluster

cluster.check_prerequisites = lambda: None
"""


def suite_command(args: list[str], cwd: Path, root_checks: bool = True) -> subprocess.CompletedProcess[str]:
    """The suite's pytest with these arguments (its plugin loaded as tox loads it).

    `root_checks=False` stubs out the emulated backend's root/iptables check, so that a collection validates the
    options as non-root too (CI's lint job is not root).
    """
    plugin = any(ep.value == "conformance.plugin" for ep in importlib.metadata.entry_points(group="pytest11"))
    extra = [] if plugin else ["-p", "conformance.plugin"]
    path = [str(REPO), os.environ.get("PYTHONPATH")]
    if not root_checks:
        (cwd / "mic_no_prerequisites.py").write_text(NO_PREREQUISITES)
        path.insert(0, str(cwd))
        extra += ["-p", "mic_no_prerequisites"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *extra, "--pyargs", "conformance.suite", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def dashless(option: str) -> str:
    """pytest's help shows `--junitxml, --junit-xml` as `--junit-xml` alone: compare options without inner dashes."""
    return "--" + option.removeprefix("--").replace("-", "")


@cache
def suite_options() -> frozenset[str]:
    """Every long option `pytest --help` lists with the suite's plugin loaded (dashless)."""
    help_text = suite_command(["--help"], REPO).stdout
    return frozenset(dashless(o) for o in re.findall(r"^\s+(--[a-z][a-z0-9-]*)", help_text, flags=re.MULTILINE))


def matrix_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("workflow_matrix", MATRIX_SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# --- the nightly matrix ------------------------------------------------------------------------------------------


def test_nightly_matrix_is_the_rows_of_versions_yaml(tmp_path: Path) -> None:
    """Scheduled (no inputs): one entry per row of fixtures/versions.yaml, in order, with the row's cluster; then the
    current row (the newest Istio) once more in dual-stack (issue 23), named apart."""
    job, value = run_matrix_job(tmp_path, inputs={})
    assert value is not None, job
    expected = [
        {
            "name": row.name,
            "istio": row.istio,
            "kubernetes": row.kubernetes,
            "kind": row.kind,
            "node_image": row.node_image,
            "ip_family": "ipv4",
            "custom": False,
        }
        for row in load_matrix()
    ]
    current = max(load_matrix(), key=lambda r: r.minor)
    dual = {**next(e for e in expected if e["name"] == current.name), "ip_family": "dual"}
    dual["name"] = f"{current.name}-dual"
    assert value == {"include": [*expected, dual]}
    job_matrix = workflow("nightly.yml")["jobs"]["kind"]["strategy"]
    assert job_matrix["matrix"] == "${{ fromJSON(needs.matrix.outputs.rows) }}"
    assert job_matrix["fail-fast"] is False
    assert workflow("nightly.yml")["jobs"]["matrix"]["outputs"]["rows"] == "${{ steps.rows.outputs.rows }}"


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_dispatched_without_a_hub_runs_every_row_in_the_chosen_family(tmp_path: Path, family: str) -> None:
    _, value = run_matrix_job(tmp_path, inputs={"hub": "", "ip_family": family})
    assert value is not None
    assert [e["name"] for e in value["include"]] == [r.name for r in load_matrix()]
    assert {e["ip_family"] for e in value["include"]} == {family}


def test_dispatched_dual_stack_runs_the_rows_from_1_17(tmp_path: Path) -> None:
    """Dual-stack needs Istio 1.17+ (ISTIO_DUAL_STACK): an older row's run would stop at once with one line."""
    _, value = run_matrix_job(tmp_path, inputs={"hub": "", "ip_family": "dual"})
    assert value is not None
    since = [r.name for r in load_matrix() if (r.minor.major, r.minor.minor) >= (1, 17)]
    assert [e["name"] for e in value["include"]] == since
    assert len(since) < len(load_matrix())  # the older rows are left out
    assert {e["ip_family"] for e in value["include"]} == {"dual"}


def test_a_dual_stack_custom_build_is_one_dual_row(tmp_path: Path) -> None:
    (entry,) = nightly_entries(tmp_path, {**CUSTOM_INPUTS, "ip_family": "dual"})
    assert (entry["name"], entry["ip_family"], entry["custom"]) == ("custom", "dual", True)


@pytest.mark.parametrize("claimed", ["1.9.9", "1.10.0", "1.21.2", "1.31.1", "1.35.0-alpha.0", "v1.40-dev"])
def test_a_custom_build_is_one_row_on_the_cluster_of_the_version_it_claims(tmp_path: Path, claimed: str) -> None:
    inputs = {**CUSTOM_INPUTS, "istio_version": claimed}
    if not re.fullmatch(r"\d+\.\d+\.\d+", claimed):  # not a release: the build brings its istioctl
        inputs["istioctl_url"] = "https://builds.example/istioctl.tar.gz"
    _, value = run_matrix_job(tmp_path, inputs)
    assert value is not None
    row = row_for(claimed)
    assert value == {
        "include": [
            {
                "name": "custom",
                "istio": claimed,
                "kubernetes": row.kubernetes,
                "kind": row.kind,
                "node_image": row.node_image,
                "ip_family": "ipv6",
                "custom": True,
            }
        ]
    }


@pytest.mark.parametrize(
    ("inputs", "says"),
    [
        ({"tag": "x"}, "tag given without hub"),
        ({"install_values": "a: 1"}, "install_values given without hub"),
        ({"hub": "ghcr.io/you/istio", "istio_version": "1.21.6"}, "tag"),
        ({"hub": "ghcr.io/you/istio", "tag": "t"}, "istio_version"),
        ({"hub": "GHCR.io/You/Istio", "tag": "t", "istio_version": "1.21.6"}, "hub 'GHCR.io/You/Istio'"),
        ({"hub": "ghcr.io/you/istio", "tag": "--plan", "istio_version": "1.21.6"}, "tag '--plan'"),
        ({"hub": "ghcr.io/you/istio", "tag": "t", "istio_version": "1.8.5"}, "no known Kubernetes range"),
        ({"hub": "ghcr.io/you/istio", "tag": "t", "istio_version": "latest"}, "not an Istio version"),
        (
            {"hub": "ghcr.io/you/istio", "tag": "t", "istio_version": "1.21.6", "install_values": "values.yaml"},
            "mapping",
        ),
        ({"hub": "ghcr.io/you/istio", "tag": "t", "istio_version": "1.21.6", "install_values": "a: [1"}, "not YAML"),
        (
            {"hub": "ghcr.io/you/istio", "tag": "t", "istio_version": "1.21.6", "image_archive": "http://x/y.tar"},
            "https://",
        ),
        ({"ip_family": "ipv5"}, "ipv5"),
        (
            {"hub": "ghcr.io/you/istio", "tag": "t", "istio_version": "1.16.7", "ip_family": "dual"},
            "ip_family dual: Istio 1.16.7 has no dual-stack support (experimental from 1.17.0)",
        ),
    ],
)
def test_dispatch_mistakes_stop_the_matrix_job(tmp_path: Path, inputs: dict[str, str], says: str) -> None:
    job, value = run_matrix_job(tmp_path, inputs)
    assert value is None
    assert list(job.ran.values())[-1] == 1
    assert says in job.logs
    assert "::error title=nightly matrix::" in job.logs


def test_dispatch_mistakes_are_one_line_naming_the_input(capsys: pytest.CaptureFixture[str]) -> None:
    module = matrix_module()
    status = module.main(["rows", "--hub=ghcr.io/you/istio", "--tag=t", "--istio-version=1.21.6", "--install-values=x"])
    assert status == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("matrix.py: install_values: expected an IstioOperator overlay")


@pytest.mark.parametrize(
    "version",
    [
        "1.9.0",
        "1.9.9",
        "1.10.6",
        "1.11.0",
        "1.15.1",
        "1.20.8",
        "1.21.0",
        "1.22.0-beta.1",
        "1.27.2",
        "1.31.1",
        "1.32.0",
        "2.0.0",
        "1.8.5",
    ],
)
def test_the_script_picks_the_row_the_kind_backend_picks(version: str) -> None:
    module = matrix_module()
    rows = module.load_rows()
    try:
        expected = row_for(version).name
    except ValueError:
        with pytest.raises(module.MatrixError):
            module.row_for(version, rows)
        return
    assert module.row_for(version, rows)["name"] == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("rows:\n  - {name: a, istio: 1.21.6, kubernetes: '1.29', kind: v0.27.0, node_image: x}\n", "format"),
        (
            "format: mesh-inbound-conformance/versions\nversion: 1\nrows:\n"
            "  - {name: Bad Name, istio: 1.21.6, kubernetes: '1.29', kind: v0.27.0, node_image: x}\n",
            "row name",
        ),
        (
            "format: mesh-inbound-conformance/versions\nversion: 1\nrows:\n"
            "  - {name: custom, istio: 1.21.6, kubernetes: '1.29', kind: v0.27.0, node_image: x}\n",
            "row name",
        ),
        (
            "format: mesh-inbound-conformance/versions\nversion: 1\nrows:\n"
            "  - {name: a, istio: 1.21.6, kubernetes: '1.29', kind: v0.27.0, node_image: x}\n"
            "  - {name: a, istio: 1.10.6, kubernetes: '1.20', kind: v0.17.0, node_image: x}\n",
            "used twice",
        ),
        ("format: mesh-inbound-conformance/versions\nversion: 1\nrows:\n  - {name: a, istio: 1.21.6}\n", "lacks"),
        (
            "format: mesh-inbound-conformance/versions\nversion: 1\nrows:\n"
            "  - {name: a, istio: 1.21.6, kubernetes: '1.29', kind: v0.27.0, node_image: x, profiles: [baseline]}\n",
            "row a: no reader uses profiles",
        ),
    ],
)
def test_a_broken_versions_file_stops_the_matrix(tmp_path: Path, text: str, problem: str) -> None:
    module = matrix_module()
    path = tmp_path / "versions.yaml"
    path.write_text(text)
    with pytest.raises(module.MatrixError, match=problem):
        module.load_rows(path)


def test_the_tools_command_resolves_only_the_rows_pinned_kind(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Never the runner's kind: the suite's verified download of the row's kind. Nothing else (no kubectl)."""
    from conformance.backends.kind import tools

    asked: list[tuple[str, str | None, str, bool]] = []

    def fake_resolve(tool: str, explicit: str | None, version: str, *, use_path: bool = True) -> Path:
        asked.append((tool, explicit, version, use_path))
        return Path(f"/cache/{tool}/{version}/{tool}")

    monkeypatch.setattr(tools, "resolve_tool", fake_resolve)
    assert matrix_module().main(["tools", "--istio-version=1.10.6"]) == 0
    row = row_for("1.10.6")
    assert asked == [("kind", None, row.kind, False)]
    assert capsys.readouterr().out.splitlines() == [f"kind=/cache/kind/{row.kind}/kind"]


def test_a_tool_that_cannot_be_had_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from conformance.backends.kind import tools

    def unreachable(tool: str, explicit: str | None, version: str, *, use_path: bool = True) -> Path:
        raise tools.ToolError(f"cannot download {tool} {version} from https://example.invalid: ConnectError")

    monkeypatch.setattr(tools, "resolve_tool", unreachable)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    assert matrix_module().main(["tools", "--istio-version=1.31.1"]) == 1
    captured = capsys.readouterr()
    assert captured.err == "matrix.py: cannot download kind v0.32.0 from https://example.invalid: ConnectError\n"
    assert captured.out.startswith("::error title=nightly matrix::cannot download kind v0.32.0")


# --- the nightly kind job, run with stand-ins ------------------------------------------------------------------


def nightly_entries(tmp_path: Path, inputs: dict[str, str]) -> list[dict[str, Any]]:
    _, value = run_matrix_job(tmp_path / "matrix", inputs)
    assert value is not None
    return list(value["include"])


CURRENT_DUAL = f"{max(load_matrix(), key=lambda r: r.minor).name}-dual"
"""The scheduled dual-stack entry: the current row once more, in dual-stack."""


@pytest.mark.parametrize("row", [*(r.name for r in load_matrix()), CURRENT_DUAL])
def test_each_nightly_row_hands_the_suite_a_command_it_accepts(tmp_path: Path, row: str) -> None:
    entry = next(e for e in nightly_entries(tmp_path, {}) if e["name"] == row)
    runner = Runner(tmp_path / "job")
    job = runner.run_job("nightly.yml", "kind", entry, inputs={})
    assert set(job.ran.values()) == {0}, job
    assert "Check and load the custom build's images" in job.skipped
    assert "Write the install values" in job.skipped
    assert ["tox-python", ".github/scripts/matrix.py", "tools", f"--istio-version={entry['istio']}"] in job.calls
    assert job.outputs["tools"] == {"kind": str(runner.fake_kind)}  # the fetched tools: kind only
    args = job.tox_posargs()
    assert args == [
        "--backend", "kind",
        "--istio-version", entry["istio"],
        "--ip-family", "dual" if row == CURRENT_DUAL else "ipv4",
        "--cluster-name", f"mic-{row}",
        "--keep-cluster",
        "--kind-bin", str(runner.fake_kind),
        "--report-dir", f"reports/{row}",
        "--artifacts-dir", f"artifacts/{row}",
        "--junitxml", f"reports/{row}/junit.xml",
    ]  # fmt: skip
    assert job.summary == f"REPORT of reports/{row}\n"
    plan = suite_command([*args, "--plan"], job.workdir)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    # The dual-stack entry runs its row's cluster (the suite names the row of fixtures/versions.yaml).
    assert f"matrix row {row.removesuffix('-dual') if row == CURRENT_DUAL else row}" in plan.stdout
    assert f"--image {entry['node_image']}" in plan.stdout
    assert f"cluster: kind {entry['kind']}," in plan.stdout
    assert f"{runner.fake_kind} create cluster --name mic-{row} " in plan.stdout


def test_a_dispatched_build_is_loaded_installed_with_its_values_and_verified(tmp_path: Path) -> None:
    (entry,) = nightly_entries(tmp_path, CUSTOM_INPUTS)
    runner = Runner(tmp_path / "job")
    job = runner.run_job("nightly.yml", "kind", entry, inputs=CUSTOM_INPUTS)
    assert set(job.ran.values()) == {0}, job
    assert next(c for c in job.calls if c[0] == "curl")[-1] == CUSTOM_INPUTS["image_archive"]
    values = job.runner_temp / "install-values.yaml"
    assert values.read_text() == CUSTOM_INPUTS["install_values"] + "\n"
    args = job.tox_posargs()
    assert args[args.index("--istio-hub") + 1] == CUSTOM_INPUTS["hub"]
    assert args[args.index("--istio-tag") + 1] == CUSTOM_INPUTS["tag"]
    assert args[args.index("--istio-version") + 1] == CUSTOM_INPUTS["istio_version"]
    assert args[args.index("--ip-family") + 1] == "ipv6"
    assert args[args.index("--install-values") + 1] == str(values)
    assert [args[i + 1] for i, a in enumerate(args) if a == "--load-image"] == LOADED_IMAGES
    assert args[args.index("--report-dir") + 1] == "reports/custom"
    plan = suite_command([*args, "--plan"], job.workdir)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert f"custom build {CUSTOM_INPUTS['hub']}:{CUSTOM_INPUTS['tag']}" in plan.stdout
    assert f"matrix row {row_for(CUSTOM_INPUTS['istio_version']).name}" in plan.stdout
    assert f"-f {values} --set hub={CUSTOM_INPUTS['hub']} --set tag={CUSTOM_INPUTS['tag']}" in plan.stdout
    for image in LOADED_IMAGES:
        # docker save --platform + kind load image-archive: survives Docker 29's containerd image store (kind#3795)
        assert re.search(rf"docker save --platform linux/\w+ --output (\S+) {re.escape(image)}\n", plan.stdout)
    assert plan.stdout.count(" load image-archive ") == len(LOADED_IMAGES)


AMBIENT_BUILD = {"hub": "ghcr.io/you/istio", "tag": "1.24.0-fix.1", "istio_version": "1.24.0"}
DISTROLESS = [f"ghcr.io/you/istio/{n}:1.24.0-fix.1-distroless" for n in ("pilot", "proxyv2", "install-cni", "ztunnel")]


def test_a_dispatched_ambient_build_must_have_the_distroless_images_its_ambient_install_pulls(tmp_path: Path) -> None:
    """Issue 20, item 9: from 1.22 the run also installs the ambient profile, which pulls -distroless images. A build
    without them fails in seconds, naming each, rather than after the install's readiness timeout."""
    (entry,) = nightly_entries(tmp_path, AMBIENT_BUILD)
    default = [f"ghcr.io/you/istio/{n}:1.24.0-fix.1" for n in ("pilot", "proxyv2")]
    job = Runner(tmp_path / "no").run_job("nightly.yml", "kind", entry, inputs=AMBIENT_BUILD, registry=tuple(default))
    assert job.ran["Check and load the custom build's images"] == 1
    assert "tox -e conformance (kind backend)" not in job.ran
    for image in DISTROLESS:
        assert f"::error::{image} is in neither the image archive nor its registry" in job.logs
    assert "DOCKER_BUILD_VARIANTS" in job.logs
    assert [c for c in job.calls if c[:2] == ["docker", "manifest"]] == [
        ["docker", "manifest", "inspect", image] for image in [*default, *DISTROLESS]
    ]

    job = Runner(tmp_path / "yes").run_job(
        "nightly.yml", "kind", entry, inputs=AMBIENT_BUILD, registry=(*default, *DISTROLESS)
    )
    assert set(job.ran.values()) == {0}, job.logs
    assert "in its registry: ghcr.io/you/istio/ztunnel:1.24.0-fix.1-distroless" in job.logs


def test_a_dispatched_build_may_choose_the_default_variant(tmp_path: Path) -> None:
    inputs = {**AMBIENT_BUILD, "variant": "default"}
    (entry,) = nightly_entries(tmp_path, inputs)
    default = [f"ghcr.io/you/istio/{n}:1.24.0-fix.1" for n in ("pilot", "proxyv2", "install-cni", "ztunnel")]
    job = Runner(tmp_path / "job").run_job("nightly.yml", "kind", entry, inputs=inputs, registry=tuple(default))
    assert set(job.ran.values()) == {0}, job.logs
    args = job.tox_posargs()
    assert args[args.index("--istio-variant") + 1] == "default"
    plan = suite_command([*args, "--plan"], job.workdir)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "--set values.global.variant= " in plan.stdout
    assert "-distroless" not in plan.stdout


def test_the_variant_input_is_for_a_custom_build(capsys: pytest.CaptureFixture[str]) -> None:
    module = matrix_module()
    assert module.main(["rows", "--variant=default"]) == 1
    assert "variant given without hub" in capsys.readouterr().err
    assert module.main(["rows", "--variant=profile"]) == 0  # the schedule's value: nothing custom
    capsys.readouterr()
    assert module.main(["rows", "--hub=ghcr.io/you/istio", "--tag=t", "--istio-version=1.24.0", "--variant=slim"]) == 1
    assert "variant 'slim': expected profile, default or distroless" in capsys.readouterr().err


def test_a_failed_nightly_row_still_reports_and_keeps_its_diagnostics(tmp_path: Path) -> None:
    entry = nightly_entries(tmp_path, {})[0]
    runner = Runner(tmp_path / "job")
    job = runner.run_job("nightly.yml", "kind", entry, inputs={}, suite_fails=True)
    assert job.ran["tox -e conformance (kind backend)"] == 1
    assert "no conformance report" in job.summary
    assert job.ran["Export the kind cluster's logs"] == 0
    name = entry["name"]
    assert ["kind", "export", "logs", f"artifacts/{name}/kind-export-logs", "--name", f"mic-{name}"] in job.calls
    assert "Upload the report and JUnit XML" in job.ran
    assert "Upload the diagnostics" in job.ran
    upload = next(s for s in steps_of("nightly.yml", "kind") if s.get("name") == "Upload the diagnostics")
    assert upload["with"]["name"] == "diagnostics-${{ matrix.name }}"
    assert upload["with"]["path"] == "artifacts/${{ matrix.name }}/"


def test_a_passing_nightly_row_uploads_no_diagnostics(tmp_path: Path) -> None:
    job = Runner(tmp_path / "job").run_job("nightly.yml", "kind", nightly_entries(tmp_path, {})[0], inputs={})
    assert "Upload the diagnostics" in job.skipped
    assert "Export the kind cluster's logs" in job.skipped
    assert "Upload the report and JUnit XML" in job.ran


# --- ci.yml ------------------------------------------------------------------------------------------------------


def test_ci_runs_the_emulated_suite_for_every_family() -> None:
    job = workflow("ci.yml")["jobs"]["conformance"]
    assert job["strategy"]["matrix"] == {"ip_family": ["ipv4", "ipv6", "dual"]}
    assert job["strategy"]["fail-fast"] is False
    assert set(workflow("ci.yml")["on"]) == {"push", "pull_request"}
    assert workflow("ci.yml")["concurrency"]["cancel-in-progress"] is True
    assert set(workflow("ci.yml")["jobs"]) == {"lint", "unit", "conformance"}


@pytest.mark.parametrize("family", ["ipv4", "ipv6", "dual"])
def test_each_ci_family_hands_the_suite_a_command_it_accepts(tmp_path: Path, family: str) -> None:
    runner = Runner(tmp_path)
    job = runner.run_job("ci.yml", "conformance", {"ip_family": family}, inputs={})
    assert set(job.ran.values()) == {0}, job
    args = job.tox_posargs()
    assert args == [
        "--ip-family", family,
        "--report-dir", f"reports/{family}",
        "--artifacts-dir", f"artifacts/{family}",
        "--junitxml", f"reports/{family}/junit.xml",
    ]  # fmt: skip
    assert job.summary == f"REPORT of reports/{family}\n"
    assert "Upload the diagnostics of failed tests" in job.skipped
    # The fake tox's report is no report of the suite's, which refuses to overwrite it.
    (job.workdir / "reports" / family / "conformance-report.md").unlink()
    collected = suite_command([*args, "--collect-only", "-q"], job.workdir, root_checks=False)
    assert collected.returncode == 0, collected.stdout + collected.stderr
    assert (job.workdir / "reports" / family / "junit.xml").is_file()


def test_a_failed_ci_family_still_reports_and_uploads_its_diagnostics(tmp_path: Path) -> None:
    job = Runner(tmp_path).run_job("ci.yml", "conformance", {"ip_family": "ipv6"}, inputs={}, suite_fails=True)
    assert "no conformance report" in job.summary
    assert "Upload the report and JUnit XML" in job.ran
    assert "Upload the diagnostics of failed tests" in job.ran


@pytest.mark.parametrize("job_id", ["lint", "unit"])
def test_ci_runs_the_readme_commands(tmp_path: Path, job_id: str) -> None:
    job = Runner(tmp_path).run_job("ci.yml", job_id, {}, inputs={})
    assert set(job.ran.values()) == {0}
    assert [c for c in job.calls if c[0] == "tox"] == [["tox", "-e", job_id]]


# --- both workflows ----------------------------------------------------------------------------------------------


def test_every_option_handed_to_the_suite_is_one_of_its_options(tmp_path: Path) -> None:
    handed: set[str] = set()
    for index, entry in enumerate(nightly_entries(tmp_path, {}) + nightly_entries(tmp_path / "c", CUSTOM_INPUTS)):
        inputs = CUSTOM_INPUTS if entry["custom"] else {}
        job = Runner(tmp_path / f"n{index}").run_job("nightly.yml", "kind", entry, inputs)
        handed |= {a for a in job.tox_posargs() if a.startswith("--")}
    for family in ("ipv4", "ipv6", "dual"):
        job = Runner(tmp_path / family).run_job("ci.yml", "conformance", {"ip_family": family}, inputs={})
        handed |= {a for a in job.tox_posargs() if a.startswith("--")}
    assert {"--backend", "--istio-hub", "--load-image", "--install-values", "--kind-bin"} <= handed
    assert "--istiohub" in suite_options()
    assert {o for o in handed if dashless(o) not in suite_options()} == set()


def test_job_and_artifact_names_are_unique_per_matrix_entry(tmp_path: Path) -> None:
    ci_families = workflow("ci.yml")["jobs"]["conformance"]["strategy"]["matrix"]["ip_family"]
    entries = {
        "nightly.yml": nightly_entries(tmp_path, {}) + nightly_entries(tmp_path / "c", CUSTOM_INPUTS),
        "ci.yml": [{"ip_family": f} for f in ci_families],
    }
    for file, matrix_job in (("nightly.yml", "kind"), ("ci.yml", "conformance")):
        job = workflow(file)["jobs"][matrix_job]
        job_names, artifacts = [], []
        for entry in entries[file]:
            context = Context(matrix=entry)
            job_names.append(context.render(job["name"]))
            for step in job["steps"]:
                if str(step.get("uses", "")).startswith("actions/upload-artifact@"):
                    artifacts.append(context.render(step["with"]["name"]))
                    own_directory = str(entry.get("name", entry.get("ip_family")))
                    assert context.render(step["with"]["path"]).rstrip("/").endswith(own_directory)
        assert len(set(job_names)) == len(job_names), job_names
        assert len(set(artifacts)) == len(artifacts), artifacts
        assert len(artifacts) == 2 * len(entries[file])
        # The other jobs upload artifacts of their own, named so that no row's artifact (nor the `site` job's
        # download pattern, conformance-report-*) can mean them: the site and the history (nightly.yml).
        others = [
            step["with"]["name"]
            for other in set(workflow(file)["jobs"]) - {matrix_job}
            for step in steps_of(file, other)
            if str(step.get("uses", "")).startswith("actions/upload-artifact@")
        ]
        assert sorted(others) == (["conformance-site", "nightly-history"] if file == "nightly.yml" else [])
        assert not any(o.startswith(("conformance-report-", "diagnostics-")) for o in others)


@pytest.mark.parametrize(("file", "job_id", "step"), [(f, j, s) for f, j, s in every_step() if "uses" in s])
def test_every_action_is_pinned_by_major_version_or_commit(file: str, job_id: str, step: dict[str, Any]) -> None:
    assert re.fullmatch(r"[A-Za-z0-9-]+/[A-Za-z0-9._-]+@(v\d+|[0-9a-f]{40})", step["uses"]), step["uses"]


@pytest.mark.parametrize(("file", "job_id", "step"), [(f, j, s) for f, j, s in every_step() if "run" in s])
def test_no_script_interpolates_an_expression(file: str, job_id: str, step: dict[str, Any]) -> None:
    """Inputs, event fields, even matrix values reach scripts through `env:` only (no script injection)."""
    assert "${{" not in step["run"], f"{file} {job_id}: {step.get('name')}: pass it through env:"


JOB_PERMISSIONS = {
    ("nightly.yml", "site"): {"contents": "read", "actions": "read"},
    ("nightly.yml", "deploy"): {"pages": "write", "id-token": "write"},
}
"""The only jobs with permissions of their own: `site` reads other runs' artifacts (the previous nights, the
upstream report); `deploy` has what actions/deploy-pages needs, and it alone."""


def test_both_workflows_read_the_repository_only() -> None:
    for file in ("ci.yml", "nightly.yml"):
        assert workflow(file)["permissions"] == {"contents": "read"}
        for job_id, job in workflow(file)["jobs"].items():
            assert job.get("permissions") == JOB_PERMISSIONS.get((file, job_id)), (file, job_id)
            assert job["runs-on"] == "ubuntu-24.04"
            assert job["timeout-minutes"] > 0
    for _, _, step in every_step():
        if str(step.get("uses", "")).startswith("actions/checkout@"):
            assert step["with"]["persist-credentials"] is False
        if str(step.get("uses", "")).startswith("actions/setup-python@"):
            assert step["with"]["python-version"] == "3.11"


def test_nightly_triggers_and_inputs() -> None:
    on = workflow("nightly.yml")["on"]
    assert on["schedule"] == [{"cron": "17 3 * * *"}]
    inputs = on["workflow_dispatch"]["inputs"]
    assert set(inputs) == {
        "hub",
        "tag",
        "istio_version",
        "install_values",
        "image_archive",
        "istioctl_url",
        "istioctl_sha256",
        "ip_family",
        "variant",
        "compare_upstream",
    }
    assert (inputs["compare_upstream"]["type"], inputs["compare_upstream"]["default"]) == ("boolean", False)
    assert inputs["ip_family"]["options"] == ["ipv4", "ipv6", "dual"]
    assert (inputs["variant"]["options"], inputs["variant"]["default"]) == (
        ["profile", "default", "distroless"],
        "profile",
    )
    assert all(not spec.get("required", False) for spec in inputs.values())
    matrix_step = next(s for s in steps_of("nightly.yml", "matrix") if s.get("id") == "rows")
    assert {value for value in matrix_step["env"].values()} == {f"${{{{ inputs.{name} }}}}" for name in inputs}


def test_the_nightly_page_matches_the_workflows(tmp_path: Path) -> None:
    # The README links to docs/nightly.md, which holds the whole reference of the workflow.
    assert "(docs/nightly.md)" in (REPO / "README.md").read_text()
    page = (REPO / "docs" / "nightly.md").read_text()
    section = page.split("# Nightly verification of your build", 1)[1]
    on = workflow("nightly.yml")["on"]
    for name in on["workflow_dispatch"]["inputs"]:
        assert f"| `{name}` |" in section, name
    assert '`cron: "17 3 * * *"`' in section
    for name in ("`diagnostics-<row>`", "`conformance-report-<row>`", "`kind-export-logs/`", "`kind-logs/`"):
        assert name in section, name
    # The command the page shows is the one the custom job runs, option for option.
    (entry,) = nightly_entries(tmp_path, CUSTOM_INPUTS)
    job = Runner(tmp_path / "job").run_job("nightly.yml", "kind", entry, inputs=CUSTOM_INPUTS)
    shown = re.search(r"\.venv/bin/tox -e conformance -- (.*?)\n```", section, flags=re.DOTALL)
    assert shown is not None
    assert re.findall(r"--[a-z-]+", shown[1]) == list(dict.fromkeys(a for a in job.tox_posargs() if a.startswith("--")))
    name = Context(matrix={**entry, "istio": "1.21.6", "ip_family": "ipv4"}).render(
        workflow("nightly.yml")["jobs"]["kind"]["name"]
    )
    assert f"`{name}`" in section


# --- the linters, on workflows that must fail (where tox -e lint installs them) -------------------------------


def linter(name: str) -> str:
    found = shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if found is None:
        pytest.skip(f"{name} is not installed here (tox -e lint installs it)")
    return found


@pytest.mark.lint_tools
def test_jactionlint_fails_on_the_mistakes_it_must_catch() -> None:
    binary = linter("jactionlint")
    result = subprocess.run(
        [binary, "--no-online", "--no-color", "--oneline", "--shellcheck=", str(BAD_WORKFLOWS / "mistakes.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    for rule in ("template-injection", "undefined-job-needs", "invalid-cron", "undefined-property", "if-always-true"):
        assert f"[{rule}]" in result.stdout, rule


@pytest.mark.lint_tools
def test_the_workflow_schema_check_fails_on_a_malformed_workflow() -> None:
    binary = linter("check-jsonschema")
    result = subprocess.run(
        [binary, "--builtin-schema", "vendor.github-workflows", str(BAD_WORKFLOWS / "schema-error.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "timeout-minutes" in result.stdout


@pytest.mark.parametrize("family", ["ipv4", "ipv6", "dual"])
def test_nightly_loads_the_nat_modules_and_enables_forwarding_for_ipv6_before_the_suite(
    tmp_path: Path, family: str
) -> None:
    entry = {**nightly_entries(tmp_path, {"ip_family": family})[0]}
    job = Runner(tmp_path / "job").run_job("nightly.yml", "kind", entry, inputs={"ip_family": family})
    names = [c[0] for c in job.calls]
    assert [
        "modprobe",
        "-a",
        "iptable_nat",
        "ip6table_nat",
        "xt_TPROXY",
        "xt_socket",
        "xt_connmark",
        "ip_set",
    ] in job.calls
    assert names.index("modprobe") < max(i for i, c in enumerate(job.calls) if c[0] == "tox")
    sysctl = [c for c in job.calls if c[0] == "sysctl"]
    if family in ("ipv6", "dual"):
        assert sysctl == [
            ["sysctl", "-w", "net.ipv6.conf.all.forwarding=1"],
            ["sysctl", "-w", "net.ipv4.ip_forward=1"],
        ]
        assert names.index("sysctl") < max(i for i, c in enumerate(job.calls) if c[0] == "tox")
    else:
        assert sysctl == []


def test_an_unreleased_custom_build_needs_its_istioctl_url(tmp_path: Path) -> None:
    inputs = {**CUSTOM_INPUTS, "istio_version": "1.32-dev", "tag": "1.32-dev.3"}
    job, value = run_matrix_job(tmp_path / "no-url", inputs)
    assert value is None
    assert "istio_version '1.32-dev' is not a release" in job.logs
    url = "https://builds.example/istioctl-1.32-dev-linux-amd64.tar.gz"
    with_url = {**inputs, "istioctl_url": url, "istioctl_sha256": "ab" * 32}
    (entry,) = nightly_entries(tmp_path / "url", with_url)
    assert (entry["istio"], entry["custom"]) == ("1.32-dev", True)
    # An unreleased build claims the newest release's capabilities (1.31.1): both installs, ambient's distroless.
    needed = [f"ghcr.io/you/istio/{n}:1.32-dev.3" for n in ("pilot", "proxyv2")]
    needed += [f"ghcr.io/you/istio/{n}:1.32-dev.3-distroless" for n in ("pilot", "proxyv2", "install-cni", "ztunnel")]
    job = Runner(tmp_path / "job").run_job("nightly.yml", "kind", entry, inputs=with_url, registry=tuple(needed))
    args = job.tox_posargs()
    assert args[args.index("--istioctl-url") + 1] == url
    assert args[args.index("--istioctl-sha256") + 1] == "ab" * 32


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ({"istioctl_url": "http://builds.example/istioctl"}, "expected an https:// URL"),
        ({"istioctl_sha256": "ab" * 32}, "istioctl_sha256 given without istioctl_url"),
        ({"istioctl_url": "https://b.example/i", "istioctl_sha256": "xyz"}, "expected 64 hex digits"),
    ],
)
def test_istioctl_inputs_are_checked(capsys: pytest.CaptureFixture[str], extra: dict[str, str], says: str) -> None:
    module = matrix_module()
    argv = ["rows", "--hub=ghcr.io/you/istio", "--tag=t", "--istio-version=1.21.6"]
    argv += [f"--{k.replace('_', '-')}={v}" for k, v in extra.items()]
    assert module.main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert says in err


# --- what the diagnostics artifacts hold ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "job_id", "step", "matrix_key"),
    [
        ("ci.yml", "conformance", "Upload the diagnostics of failed tests", "ip_family"),
        ("nightly.yml", "kind", "Upload the diagnostics", "name"),
    ],
)
def test_the_diagnostics_upload_holds_the_folders_the_suite_writes(
    tmp_path: Path, file: str, job_id: str, step: str, matrix_key: str
) -> None:
    """The uploaded path is the job's --artifacts-dir, and what the suite writes there is visible to the upload.

    actions/upload-artifact@v4 skips hidden files and folders unless `include-hidden-files: true`; the suite's
    case folders (`<profile>/<Case>/`) never start with a dot, so the default upload takes them all.
    """
    from conformance.run.outputs import case_dir
    from conformance.spec.dimensions import Profile

    upload = next(s for s in steps_of(file, job_id) if s.get("name") == step)
    assert upload["uses"] == "actions/upload-artifact@v4"
    assert upload["if"] == "failure()"
    assert upload["with"]["path"] == f"artifacts/${{{{ matrix.{matrix_key} }}}}/"
    assert "include-hidden-files" not in upload["with"]
    entry = {"ip_family": "ipv6"} if file == "ci.yml" else nightly_entries(tmp_path, {})[0]
    job = Runner(tmp_path / "job").run_job(file, job_id, entry, inputs={})
    args = job.tox_posargs()
    assert args[args.index("--artifacts-dir") + 1] == f"artifacts/{entry[matrix_key]}"
    names = [c.name for m in _suite_modules() for c in getattr(m, "CASES", ())]
    assert names
    for name in names:
        for profile in Profile:
            folder = case_dir(Path("artifacts") / "x", profile.value, name)
            assert not any(part.startswith(".") for part in folder.parts), folder


def _suite_modules() -> list[ModuleType]:
    import importlib
    import pkgutil

    import conformance.suite

    return [
        importlib.import_module(f"conformance.suite.{m.name}")
        for m in pkgutil.iter_modules(conformance.suite.__path__)
        if m.name.startswith("test_")
    ]
