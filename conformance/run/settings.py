"""The run's settings, read from pytest's options and checked before anything is created.

The plugin declares the options (`pytest_addoption`) and calls `settings_from` and `prepare_outputs` in
`pytest_configure`: a malformed or incompatible option, or an output folder that cannot be used, stops the run
there with one line (`pytest.UsageError`, exit status 4), before a cluster, a report or junit.xml exists.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn

import pytest

from conformance.backends.timeouts import TimeoutConfig, parse_timeout_config
from conformance.report.json_document import JSON_NAME
from conformance.report.markdown import MD_NAME
from conformance.run import diagnostics
from conformance.run.outputs import (
    SETUP_FOLDER,
    OutputFolder,
    artifacts_folder,
    check_writable_dir,
    earlier_report_file,
    make_output_dirs,
    output_dir,
    report_folder,
)
from conformance.spec.capabilities import (
    Capability,
    MeshCapabilities,
    claimed_capabilities,
    emulated_capabilities,
    istio_capabilities,
    proxy_image,
)
from conformance.spec.dimensions import IpFamily, Profile

BACKENDS = ("emulated", "kind", "kubeconfig")


@dataclass
class Settings:
    """The validated options of a run."""

    backend: str
    family: IpFamily
    profiles: tuple[Profile, ...]
    explicit_profiles: bool
    report_dir: Path | None
    artifacts_dir: Path | None
    timeouts: TimeoutConfig
    mesh: MeshCapabilities
    emulator_sidecar: list[str] | None
    in_ci: bool
    backend_options: dict[str, Any] = field(default_factory=dict)
    emulator_ztunnel: list[str] | None = None


@dataclass(frozen=True)
class Outputs:
    """The run's output folders, checked and made before anything runs (None: not written)."""

    report: OutputFolder | None
    artifacts: OutputFolder | None

    def claim(self) -> diagnostics.Claim | None:
        """Records files in the artifacts folder's record (none when the folder is not written)."""
        return self.artifacts.claim if self.artifacts is not None else None

    def claim_backend_files(self) -> None:
        """What the backend wrote itself where the suite writes (`kind export logs`), recorded once it is there."""
        if self.artifacts is not None:
            artifacts = self.artifacts
            kept = (*(v.value for v in Profile), SETUP_FOLDER)
            artifacts.claim_present([p for p in artifacts.places if p not in kept])


def _fail(message: str) -> NoReturn:
    raise pytest.UsageError(message)


def settings_from(opt: Any) -> Settings:
    """The run's settings from pytest's parsed options (`config.option`); one line when an option is wrong."""
    backend = opt.backend
    if backend not in BACKENDS:
        _fail(f"--backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    try:
        family = IpFamily(opt.ip_family)
    except ValueError:
        _fail(f"--ip-family {opt.ip_family!r}: expected ipv4, ipv6 or dual")
    requested = []
    for value in opt.profile or []:
        for item in filter(None, value.split(",")):
            try:
                requested.append(Profile(item))
            except ValueError:
                _fail(f"--profile {item!r}: expected one of {', '.join(p.value for p in Profile)}")
    try:
        timeouts = parse_timeout_config(opt.timeout_config)
    except ValueError as err:
        _fail(str(err))
    sidecar = _emulator_command("--emulator-sidecar", opt.emulator_sidecar, backend)
    ztunnel = _emulator_command("--emulator-ztunnel", opt.emulator_ztunnel, backend)
    from conformance.backends.kind import options as kind_options

    try:
        backend_options = kind_options.validate(opt, backend)
    except ValueError as err:
        _fail(str(err))
    mesh = _mesh(opt, backend, backend_options, family)
    if family is IpFamily.DUAL and Capability.DUAL_STACK not in mesh.capabilities:
        _fail(f"--ip-family dual: {mesh.reasons.get(Capability.DUAL_STACK, 'no dual-stack support')}")
    report_dir = output_dir(opt.report_dir, "reports", family.value)
    artifacts_dir = output_dir(opt.artifacts_dir, "artifacts", family.value)
    for option, path in (("--report-dir", report_dir), ("--artifacts-dir", artifacts_dir)):
        problem = check_writable_dir(option, path) if path is not None else None
        if problem is not None:
            _fail(problem)
    # Absolute from here on: pytest changes to its invocation folder before pytest_sessionfinish, and the suite
    # shows ids relative to the rootdir by making that folder the rootdir (pytest_configure): the last report
    # write (`total`, `finished`, `interrupted`) landed under site-packages, relative to it.
    report_dir = report_dir.absolute() if report_dir is not None else None
    artifacts_dir = artifacts_dir.absolute() if artifacts_dir is not None else None
    profiles = tuple(dict.fromkeys(requested)) if requested else mesh.profiles()
    return Settings(
        backend=backend,
        family=family,
        profiles=profiles,
        explicit_profiles=bool(requested),
        report_dir=report_dir,
        artifacts_dir=artifacts_dir,
        timeouts=timeouts,
        mesh=mesh,
        emulator_sidecar=sidecar,
        in_ci=os.environ.get("CI", "").lower() in ("1", "true", "yes"),
        # The kind/kubeconfig backend checks what the selected profiles need (ztunnel for ambient).
        backend_options={**backend_options, "profiles": [p.value for p in profiles]},
        emulator_ztunnel=ztunnel,
    )


def _emulator_command(option: str, value: str | None, backend: str) -> list[str] | None:
    """A replacement program for an emulated component, split like a shell would; one line when it is wrong."""
    if value is None:
        return None
    if backend != "emulated":
        _fail(f"{option} works with --backend emulated only, not {backend}")
    try:
        command = shlex.split(value)
    except ValueError as err:
        _fail(f"{option} {value!r}: {err}")
    if not command:
        _fail(f"{option}: expected a command, got an empty string")
    from conformance.backends.emulated.cluster import sidecar_command_problem

    problem = sidecar_command_problem(command, option)
    if problem is not None:
        _fail(problem)
    return command


def _mesh(opt: Any, backend: str, backend_options: dict[str, Any], family: IpFamily) -> MeshCapabilities:
    try:
        if backend == "emulated":
            if opt.mesh_version:
                _fail("--mesh-version describes a real Istio build: use it with --backend kind or kubeconfig")
            mesh = emulated_capabilities(family)
        else:
            claimed = backend_options["istio_version"]
            # An unreleased custom build (1.32-dev) is judged by the newest known release of its minor.
            version = backend_options.get("capability_version") or claimed
            istioctl = backend_options.get("istioctl_version")
            if not istioctl:
                # The matrix row may name another istioctl for the precheck (1.9.9 is checked by a 1.10 istioctl).
                from conformance.backends.kind.matrix import row_for

                try:
                    istioctl = row_for(backend_options["istio_version"]).istioctl_precheck
                except ValueError:
                    istioctl = None
            # istioctl 1.15.1-1.20 decides from the tag of the proxy image the run deploys, not the claimed version.
            deployed = proxy_image(
                backend_options.get("istio_hub"), backend_options.get("istio_tag"), backend_options["istio_version"]
            )
            mesh = istio_capabilities(version, istioctl, proxy_image_ref=deployed, family=family)
            if version != claimed:
                mesh = replace(mesh, version=claimed)
    except ValueError as err:
        _fail(f"--mesh-version/--istio-version: {err}")
    if opt.mesh_capabilities:
        claimed = set()
        for item in filter(None, (i.strip() for i in opt.mesh_capabilities.split(","))):
            try:
                claimed.add(Capability(item))
            except ValueError:
                _fail(f"--mesh-capabilities {item!r}: expected some of {', '.join(c.value for c in Capability)}")
        mesh = claimed_capabilities(mesh, frozenset(claimed))
    return mesh


def prepare_outputs(settings: Settings, junit_here: bool) -> Outputs:
    """Check the output folders, then make them: a refusal or a folder that cannot be made is one line, exit 4.

    Done in pytest_configure, before the junitxml plugin exists: a folder found unusable later (a report folder
    under /sys) failed every test and then junit.xml's own write, with an INTERNALERROR traceback.
    """
    report = artifacts = None
    if settings.report_dir is not None:
        # junit.xml when the suite puts it there; one the user names with --junitxml is theirs to place.
        names = [JSON_NAME, MD_NAME, *(["junit.xml"] if junit_here else [])]
        report = report_folder(settings.report_dir, names, earlier_report_file)
    if settings.artifacts_dir is not None:
        artifacts = artifacts_folder(settings.artifacts_dir, [p.value for p in Profile], settings.backend)
    for folder in (report, artifacts):
        problem = folder.refusal() if folder is not None else None
        if problem is not None:
            _fail(problem)
    problem = make_output_dirs([(f.option, f.root) for f in (report, artifacts) if f is not None])
    if problem is not None:
        _fail(problem)
    if report is not None:
        # Written by this run from here on (the report at the session's start, junit.xml at its end).
        report.claim(report.root / name for name in report.places)
    return Outputs(report, artifacts)
