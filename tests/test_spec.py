"""Pins the facts the spec encodes, each against the source that states it (seed blog, Istio's own tests)."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import subprocess
import sys
from typing import Any

import pytest
import yaml
from packaging.version import Version

from conformance.engine.probe import Observation, ProbeOutcome, judge
from conformance.spec import (
    RULES,
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
    all_cells,
    expect,
)
from conformance.spec.capabilities import (
    Capability,
    LegacySwitch,
    PrecheckScope,
    emulated_capabilities,
    istio_capabilities,
    proxy_image,
)
from conformance.spec.capture import CAPTURE_RULES
from conformance.spec.dimensions import (
    MESH_PROFILES,
    ONE_FAMILY_BINDS,
    SIDECAR_FORMS_BY_FAMILY,
    SINGLE_STACK,
    UNCAPTURED,
    InboundCapture,
    binds,
)
from conformance.spec.image_tags import image_tag_version
from conformance.spec.render import SPEC_FORMAT, spec_document
from conformance.spec.semantics import (
    CURRENT_TRAFFIC,
    EmptyEndpoint,
    InstanceWithoutIpv4,
    TrafficBehaviour,
    precheck_finding,
    traffic_behaviour,
)
from conformance.world.layout import World
from conformance.world.resources import resource


def cell(
    profile: Profile,
    bind: Bind,
    *,
    endpoint: DefaultEndpoint = DefaultEndpoint.NONE,
    port: PortKind = PortKind.DECLARED,
    protocol: Protocol = Protocol.HTTP,
    path: Path = Path.POD_IP,
    client: Client | None = Client.PLAIN,
    family: IpFamily = IpFamily.IPV4,
) -> CellKey:
    return CellKey(profile, endpoint, bind, port, protocol, path, client, family)


def outcome(key: CellKey) -> str:
    """A compact reading of an expectation: the source when reachable, else the failure forms."""
    return outcome_of(key, CURRENT_TRAFFIC)


def outcome_of(key: CellKey, behaviour: TrafficBehaviour) -> str:
    """`outcome` as the release with `behaviour` gives it."""
    e = expect(key, behaviour)
    return e.source.value if e.reachable and e.source else "+".join(f.value for f in e.failure)


# --- The seed's three claims (istio-1.10-networking-changes.txt, "Current/Future behavior") ---------------


@pytest.mark.parametrize("family", list(SINGLE_STACK))
def test_seed_loopback_only_app_is_exposed_before_110_and_not_after(family: IpFamily) -> None:
    assert expect(cell(Profile.LEGACY, Bind.LOOPBACK, family=family)).reachable
    assert not expect(cell(Profile.PASSTHROUGH, Bind.LOOPBACK, family=family)).reachable
    assert not expect(cell(Profile.BASELINE, Bind.LOOPBACK, family=family)).reachable


@pytest.mark.parametrize("family", list(SINGLE_STACK))
def test_seed_pod_ip_only_app_breaks_before_110_and_works_after(family: IpFamily) -> None:
    assert not expect(cell(Profile.LEGACY, Bind.POD_IP, family=family)).reachable
    assert expect(cell(Profile.PASSTHROUGH, Bind.POD_IP, family=family)).reachable
    assert expect(cell(Profile.BASELINE, Bind.POD_IP, family=family)).reachable


def test_seed_wildcard_app_is_not_impacted() -> None:
    for profile in Profile:
        assert expect(cell(profile, Bind.WILDCARD)).reachable


# --- DEVELOPERS.md's table: declared port, dialled from another pod -------------------------------------

HEART = {
    (Profile.BASELINE, DefaultEndpoint.NONE): ("refused", "client", "client"),
    (Profile.LEGACY, DefaultEndpoint.NONE): ("localhost", "http_503", "localhost"),
    (Profile.PASSTHROUGH, DefaultEndpoint.NONE): ("http_503", "inbound_passthrough", "inbound_passthrough"),
    (Profile.PASSTHROUGH, DefaultEndpoint.LOCALHOST_V4): ("localhost", "http_503", "localhost"),
}


@pytest.mark.parametrize(("profile", "endpoint"), list(HEART))
def test_heart_of_the_matter(profile: Profile, endpoint: DefaultEndpoint) -> None:
    got = tuple(outcome(cell(profile, b, endpoint=endpoint)) for b in ONE_FAMILY_BINDS)
    assert got == HEART[(profile, endpoint)]


def test_tcp_ports_close_instead_of_503() -> None:
    assert expect(cell(Profile.PASSTHROUGH, Bind.LOOPBACK, protocol=Protocol.TCP)).failure == (Failure.RESET_OR_EOF,)
    assert expect(cell(Profile.LEGACY, Bind.POD_IP, protocol=Protocol.TCP)).failure == (Failure.RESET_OR_EOF,)


# --- Istio's own oracle: tests/integration/pilot/common/routing.go instanceIPTests (reference section 4) --

INSTANCE_IP_TESTS = {
    # bind: {defaultEndpoint: HTTP code}; "no Sidecar" is DefaultEndpoint.NONE under the 1.10 default.
    Bind.POD_IP: {
        DefaultEndpoint.NONE: 200,
        DefaultEndpoint.INSTANCE_V4: 200,
        DefaultEndpoint.LOCALHOST_V4: 503,
    },
    Bind.LOOPBACK: {
        DefaultEndpoint.NONE: 503,
        DefaultEndpoint.INSTANCE_V4: 503,
        DefaultEndpoint.LOCALHOST_V4: 200,
    },
    Bind.WILDCARD: {
        DefaultEndpoint.NONE: 200,
        DefaultEndpoint.INSTANCE_V4: 200,
        DefaultEndpoint.LOCALHOST_V4: 200,
    },
}


@pytest.mark.parametrize("client", list(Client))
@pytest.mark.parametrize("bind", list(ONE_FAMILY_BINDS))
def test_istio_instance_ip_tests(bind: Bind, client: Client) -> None:
    for endpoint, code in INSTANCE_IP_TESTS[bind].items():
        e = expect(cell(Profile.PASSTHROUGH, bind, endpoint=endpoint, client=client))
        assert (200 if e.reachable else 503) == code, (bind, endpoint)
        if code == 503:
            assert e.failure == (Failure.HTTP_503,)


def test_ipv6_forms_mirror_ipv4_forms() -> None:
    pairs = {
        DefaultEndpoint.LOCALHOST_V4: DefaultEndpoint.LOCALHOST_V6,
        DefaultEndpoint.INSTANCE_V4: DefaultEndpoint.INSTANCE_V6,
    }
    for v4, v6 in pairs.items():
        for bind in ONE_FAMILY_BINDS:
            a = expect(cell(Profile.PASSTHROUGH, bind, endpoint=v4))
            b = expect(cell(Profile.PASSTHROUGH, bind, endpoint=v6, family=IpFamily.IPV6))
            assert (a.reachable, a.source, a.failure) == (b.reachable, b.source, b.failure)


@pytest.mark.parametrize("family", list(SINGLE_STACK))
def test_empty_host_is_original_dst_from_the_passthrough_bind(family: IpFamily) -> None:
    """Reference section 4: `:P` is ORIGINAL_DST with bind 127.0.0.6 / ::6; routing.go "empty" column."""
    for profile in (Profile.LEGACY, Profile.PASSTHROUGH):
        got = tuple(outcome(cell(profile, b, endpoint=DefaultEndpoint.EMPTY, family=family)) for b in ONE_FAMILY_BINDS)
        assert got == ("http_503", "inbound_passthrough", "inbound_passthrough")
        assert expect(cell(profile, Bind.POD_IP, endpoint=DefaultEndpoint.EMPTY, family=family)).because[0] == (
            "sidecar-empty-endpoint"
        )


@pytest.mark.parametrize("family", list(SINGLE_STACK))
def test_empty_host_on_1_9_is_localhost_with_no_bind(family: IpFamily) -> None:
    """Reference §4: 1.9 accepts `:P` (validation checks a host only when there is one) and its cluster's default
    endpoint is actualLocalHost, no bind: `:P` behaves as `127.0.0.1:P` there, for every path and client."""
    old = traffic_behaviour("1.9.9")
    assert old.empty_endpoint is EmptyEndpoint.LOCALHOST
    cells = [
        c
        for c in all_cells([Profile.LEGACY], [family])
        if c.default_endpoint is DefaultEndpoint.EMPTY and c.path.from_other_pod
    ]
    assert cells
    for c in cells:
        got = expect(c, old)
        twin = expect(dataclasses.replace(c, default_endpoint=DefaultEndpoint.LOCALHOST_V4), old)
        assert (got.reachable, got.source, got.failure) == (twin.reachable, twin.source, twin.failure), c.id
        assert "sidecar-empty-endpoint-1.9-localhost" in got.because
    empty = [cell(Profile.LEGACY, b, endpoint=DefaultEndpoint.EMPTY, family=family) for b in ONE_FAMILY_BINDS]
    got_by_bind = tuple(outcome_of(c, old) for c in empty)
    assert got_by_bind == ("localhost", "http_503", "localhost")
    for version in ("1.10.0", "1.15.0", None):
        assert traffic_behaviour(version).empty_endpoint is EmptyEndpoint.ORIGINAL_DST


def test_1_9_runs_the_empty_host_cells() -> None:
    """1.9 accepts `:P`: the row runs those cells (judged as 1.9 resolves them) instead of skipping them."""
    from conformance.world.layout import World

    mesh = istio_capabilities("1.9.9")
    assert Capability.SIDECAR_ENDPOINT_EMPTY in mesh.capabilities
    assert DefaultEndpoint.EMPTY in World.for_mesh(IpFamily.IPV4, mesh).mesh_endpoints
    doc = json.loads(run_cli("capabilities", "--istio-version", "1.9.9").stdout)
    assert doc["traffic_behaviour"]["empty_endpoint"] == "localhost"
    assert "sidecar-endpoint-empty" not in doc["missing"]


def test_cross_family_literals_resolve_by_the_pod_family() -> None:
    """Reference section 4, "How the host is resolved by the proxy's IP family"."""
    for bind in ONE_FAMILY_BINDS:
        v6_localhost = outcome(cell(Profile.PASSTHROUGH, bind, endpoint=DefaultEndpoint.LOCALHOST_V6))
        assert v6_localhost == outcome(cell(Profile.PASSTHROUGH, bind, endpoint=DefaultEndpoint.LOCALHOST_V4))
        v4_on_v6 = cell(Profile.PASSTHROUGH, bind, endpoint=DefaultEndpoint.LOCALHOST_V4, family=IpFamily.IPV6)
        assert outcome(v4_on_v6) == outcome(
            cell(Profile.PASSTHROUGH, bind, endpoint=DefaultEndpoint.LOCALHOST_V6, family=IpFamily.IPV6)
        )
        # 0.0.0.0:P on a pod with no IPv4 address: 127.0.0.1, no bind (1.15+): no app of that pod listens there.
        no_v4 = expect(cell(Profile.PASSTHROUGH, bind, endpoint=DefaultEndpoint.INSTANCE_V4, family=IpFamily.IPV6))
        assert not no_v4.reachable
        assert no_v4.failure == (Failure.HTTP_503,)
        assert no_v4.because[0] == "sidecar-instance-without-ipv4"
        # [::]:P on a pod with no IPv6 address, the mirror image: [::1], no bind (cluster.go 1.14.4, 1.15.0, master).
        for protocol, failure in ((Protocol.HTTP, Failure.HTTP_503), (Protocol.TCP, Failure.RESET_OR_EOF)):
            no_v6 = expect(cell(Profile.LEGACY, bind, endpoint=DefaultEndpoint.INSTANCE_V6, protocol=protocol))
            assert not no_v6.reachable
            assert no_v6.failure == (failure,)
            assert no_v6.because[0] == "sidecar-instance-without-ipv6"


@pytest.mark.parametrize("profile", [Profile.LEGACY, Profile.PASSTHROUGH])
def test_no_instance_v6_cell_of_an_ipv4_pod_is_reachable_from_other_pods(profile: Profile) -> None:
    """`[::]:P` on an IPv4-only pod dials [::1] with no bind: whatever the bind, port, path or client, the app is
    not reached (503 on HTTP, reset/EOF on TCP), as the spec's JSON document says."""
    proc = run_cli("spec", "--format", "json", "--ip-family", "ipv4", "--profile", profile.value)
    assert proc.returncode == 0, proc.stderr
    cells = [
        c
        for c in json.loads(proc.stdout)["cells"]
        if c["default_endpoint"] == "[::]" and c["path"] in ("pod_ip", "service")
    ]
    assert len(cells) == 3 * 2 * 2 * 2 * 2  # binds x protocols x declared/remapped x paths x clients
    assert [c["id"] for c in cells if c["expected"]["reachable"]] == []
    for c in cells:
        assert c["expected"]["failure"] == (["http_503"] if c["protocol"] == "http" else ["reset_or_eof"]), c["id"]
        assert "sidecar-instance-without-ipv6" in c["expected"]["because"]


def test_service_port_other_than_target_port_is_keyed_by_target_port() -> None:
    """Reference section 4: inbound clusters are keyed by targetPort; Sidecar ingress by the container port."""
    for c in all_cells():
        if c.port is not PortKind.REMAPPED:
            continue
        twin = expect(dataclasses.replace(c, port=PortKind.DECLARED))
        got = expect(c)
        assert (got.reachable, got.source) == (twin.reachable, twin.source), c.id
        # Sidecars key inbound clusters by targetPort; ztunnel has no clusters and dials the DNAT'd port.
        if c.path.from_other_pod and c.profile not in (Profile.BASELINE, Profile.AMBIENT) and c.capture.value == "all":
            # Under TPROXY the capture rule comes first: the connection reaches the sidecar, then its cluster.
            first = 1 if c.interception is Interception.TPROXY else 0
            assert got.because[first] == "inbound-cluster-by-target-port"
    assert {c.path for c in all_cells() if c.port is PortKind.REMAPPED} == set(Path)
    # The one difference is outbound: a meshed client dialling the pod IP on the container port meets no HTTP
    # listener (the Service's HTTP port is another number), so without a server sidecar it sees a reset.
    e = expect(cell(Profile.BASELINE, Bind.LOOPBACK, port=PortKind.REMAPPED, client=Client.MESHED))
    assert e.failure == (Failure.RESET_OR_EOF,)
    e = expect(cell(Profile.BASELINE, Bind.LOOPBACK, port=PortKind.REMAPPED, client=Client.MESHED, path=Path.SERVICE))
    assert e.failure == (Failure.HTTP_503,)


def test_sidecar_overrides_ignore_the_legacy_switch() -> None:
    """Reference section 3: the flag affects clusters built from Service ports only."""
    for endpoint in (DefaultEndpoint.LOCALHOST_V4, DefaultEndpoint.INSTANCE_V4, DefaultEndpoint.UNLISTED):
        for bind in ONE_FAMILY_BINDS:
            assert outcome(cell(Profile.LEGACY, bind, endpoint=endpoint)) == outcome(
                cell(Profile.PASSTHROUGH, bind, endpoint=endpoint)
            )


def test_unlisted_declared_port_falls_to_passthrough() -> None:
    assert outcome(cell(Profile.LEGACY, Bind.POD_IP, endpoint=DefaultEndpoint.UNLISTED)) == "inbound_passthrough"
    assert not expect(cell(Profile.LEGACY, Bind.LOOPBACK, endpoint=DefaultEndpoint.UNLISTED)).reachable


# --- Undeclared ports: unchanged by 1.10 (reference section 2) -------------------------------------------


def test_undeclared_ports_are_identical_before_and_after_110() -> None:
    legacy = [c for c in all_cells([Profile.LEGACY]) if c.port is PortKind.UNDECLARED]
    assert legacy
    for c in legacy:
        twin = dataclasses.replace(c, profile=Profile.PASSTHROUGH)
        assert expect(c).reachable == expect(twin).reachable
        assert expect(c).source == expect(twin).source
        assert expect(c).failure == expect(twin).failure


def test_undeclared_loopback_port_was_never_exposed() -> None:
    e = expect(cell(Profile.LEGACY, Bind.LOOPBACK, port=PortKind.UNDECLARED))
    assert not e.reachable
    assert e.failure == (Failure.HTTP_503,)
    assert outcome(cell(Profile.LEGACY, Bind.POD_IP, port=PortKind.UNDECLARED)) == "inbound_passthrough"


# --- Inside the pod: identical in every profile (reference section 5) ------------------------------------


def test_in_pod_paths_are_identical_in_every_profile() -> None:
    in_pod = [c for c in all_cells() if not c.path.from_other_pod]
    by_coordinates: dict[tuple[object, ...], set[str]] = {}
    for c in in_pod:
        by_coordinates.setdefault((c.bind, c.path, c.protocol, c.ip_family), set()).add(outcome(c))
    assert all(len(v) == 1 for v in by_coordinates.values()), by_coordinates
    assert outcome(cell(Profile.PASSTHROUGH, Bind.LOOPBACK, path=Path.LOCALHOST, client=None)) == "localhost"
    assert outcome(cell(Profile.LEGACY, Bind.POD_IP, path=Path.LOCALHOST, client=None)) == "refused"
    assert outcome(cell(Profile.LEGACY, Bind.POD_IP, path=Path.SELF_POD_IP, client=None)) == "self"
    assert outcome(cell(Profile.BASELINE, Bind.LOOPBACK, path=Path.SELF_POD_IP, client=None)) == "refused"


# --- Failure forms: who stands in the way -----------------------------------------------------------------


@pytest.mark.parametrize("client", list(Client))
@pytest.mark.parametrize("profile", [Profile.LEGACY, Profile.PASSTHROUGH])
def test_sniffed_http_ports_of_a_sidecard_server_answer_exactly_503(profile: Profile, client: Client) -> None:
    """Reference §1, exact failure forms: the inbound catch-all sniffs with no timeout."""
    for port, endpoint in ((PortKind.UNDECLARED, DefaultEndpoint.NONE), (PortKind.DECLARED, DefaultEndpoint.UNLISTED)):
        e = expect(cell(profile, Bind.LOOPBACK, port=port, endpoint=endpoint, client=client))
        assert e.failure == (Failure.HTTP_503,)
        assert e.because[-1] == "inbound-sniffing-503"


def test_a_meshed_client_to_an_undeclared_port_without_server_sidecar_is_reset() -> None:
    """Reference §1: the virtualOutbound catch-all is tcp_proxy only."""
    e = expect(cell(Profile.BASELINE, Bind.LOOPBACK, port=PortKind.UNDECLARED, client=Client.MESHED))
    assert e.failure == (Failure.RESET_OR_EOF,)
    assert e.because[-1] == "outbound-passthrough-tcp"


def test_every_cell_lists_exactly_one_failure_form() -> None:
    """Istio answers one way per cell, except ambient, where its own tests accept either (baseline_test.go
    TestServices: check.Or(check.Error(), check.Status(503)) for loopback-only apps)."""
    failing = [c for c in all_cells() if not expect(c).reachable]
    assert all(len(expect(c).failure) == 1 for c in failing if c.profile is not Profile.AMBIENT)
    ambient = [c for c in failing if c.profile is Profile.AMBIENT and c.path.from_other_pod]
    assert ambient
    assert all(set(expect(c).failure) == {Failure.HTTP_503, Failure.RESET_OR_EOF} for c in ambient)


def test_a_meshed_client_turns_refused_into_a_proxy_failure() -> None:
    assert expect(cell(Profile.BASELINE, Bind.LOOPBACK, client=Client.PLAIN)).failure == (Failure.REFUSED,)
    assert expect(cell(Profile.BASELINE, Bind.LOOPBACK, client=Client.MESHED)).failure == (Failure.HTTP_503,)
    assert expect(cell(Profile.BASELINE, Bind.WILDCARD, client=Client.MESHED)).source is Source.CLIENT


# --- The document --------------------------------------------------------------------------------------


def test_cell_counts_and_uniqueness() -> None:
    cells = all_cells()
    assert len({c.id for c in cells}) == len(cells)
    captured = [c for c in cells if c.capture is InboundCapture.ALL]
    per = {
        (p, f): sum(1 for c in captured if c.profile is p and c.ip_family is f) for p in Profile for f in SINGLE_STACK
    }
    # baseline: 3 binds x 2 protocols x (declared and remapped: 6 paths each + undeclared: 4 paths)
    assert per[(Profile.BASELINE, IpFamily.IPV4)] == 3 * 2 * (2 * 6 + 4)
    # mesh: declared and remapped x 7 Sidecar situations (none, four literals, empty, unlisted) + undeclared;
    # IPv6 asks a fourth bind, dual_wildcard.
    assert per[(Profile.LEGACY, IpFamily.IPV4)] == 3 * 2 * (2 * 7 * 6 + 4)
    assert per[(Profile.LEGACY, IpFamily.IPV6)] == 4 * 2 * (2 * 7 * 6 + 4)
    # passthrough adds TPROXY: none (declared and remapped: 6 paths, undeclared: 4) and the family's instance form
    # (declared and remapped, the 4 paths from other pods)
    assert per[(Profile.PASSTHROUGH, IpFamily.IPV6)] == 4 * 2 * (2 * 7 * 6 + 4) + 4 * 2 * (2 * 6 + 4 + 2 * 4)
    assert not [c for c in cells if c.path is Path.SERVICE and c.port is PortKind.UNDECLARED]
    # Ports left out of capture (capture.py): per sidecar profile and setting, no Sidecar resource, from other pods
    # only: 3 binds x 2 protocols x (declared and remapped: 4 paths each + undeclared: 2 paths).
    for family in SINGLE_STACK:
        for profile in Profile:
            for setting in UNCAPTURED:
                count = sum(1 for c in cells if (c.ip_family, c.profile, c.capture) == (family, profile, setting))
                binds = 4 if family is IpFamily.IPV6 else 3
                assert count == (binds * 2 * (2 * 4 + 2) if profile in MESH_PROFILES else 0)
    assert len([c for c in cells if c.ip_family is IpFamily.IPV4]) == 1854 + 144 + 240
    assert len([c for c in cells if c.ip_family is IpFamily.IPV6]) == (1854 + 144 + 240) * 4 // 3
    # Every defaultEndpoint form is a cell in both families (reference section 4).
    for family in SINGLE_STACK:
        forms = {c.default_endpoint for c in cells if c.ip_family is family}
        assert forms == set(DefaultEndpoint)


def test_every_rule_is_used_and_every_citation_exists() -> None:
    behaviours = tuple(traffic_behaviour(v) for v in (None, "1.10.6", "1.9.9", "1.18.5"))
    used = {r for c in all_cells() for b in behaviours for r in expect(c, b).because} | {"precheck-localhost-listener"}
    assert used == set(RULES) | set(CAPTURE_RULES)
    assert not set(RULES) & set(CAPTURE_RULES)
    for rule in (*RULES.values(), *CAPTURE_RULES.values()):
        assert rule.istio_source
        assert rule.reference.startswith(("reference", "emulation", "probes-ambient", "settings-dualstack"))


def test_json_document_has_stable_keys() -> None:
    doc = spec_document(all_cells([Profile.LEGACY], [IpFamily.IPV6]))
    assert doc["format"] == SPEC_FORMAT
    assert doc["version"] == 7
    cells = doc["cells"]
    assert isinstance(cells, list)
    first = cells[0]
    assert list(first) == [
        "id",
        "profile",
        "default_endpoint",
        "bind",
        "port",
        "protocol",
        "path",
        "client",
        "ip_family",
        "interception",
        "capture",
        "client_family",
        "expected",
    ]
    assert list(first["expected"]) == ["reachable", "source", "failure", "because"]


def test_the_docs_state_the_rule_count_and_the_format_versions() -> None:
    """docs/spec.md says how many rules there are and which version the spec document has; docs/running.md
    says which version the report has (the README links to both)."""
    from conformance.report.json_document import REPORT_VERSION
    from conformance.spec.render import SPEC_FORMAT_VERSION

    repo = pathlib.Path(__file__).resolve().parents[1]
    spec_page = (repo / "docs" / "spec.md").read_text()
    running_page = (repo / "docs" / "running.md").read_text()
    words = {
        27: "twenty-seven",
        28: "twenty-eight",
        29: "twenty-nine",
        30: "thirty",
        31: "thirty-one",
        32: "thirty-two",
        40: "forty",
    }
    assert f"`semantics.py` holds {words[len(RULES)]} rules" in spec_page
    assert f"(`format: mesh-inbound-conformance/spec`, `version: {SPEC_FORMAT_VERSION}`)" in spec_page
    assert f"What changed from version {SPEC_FORMAT_VERSION - 1} to {SPEC_FORMAT_VERSION}:" in spec_page
    assert f"(`format: mesh-inbound-conformance/report`, `version: {REPORT_VERSION}`;" in running_page
    for page in [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]:
        assert "source_judged: false` where" not in page.read_text(), page.name


def test_every_reachable_cell_says_what_the_app_sees() -> None:
    """Spec version 4: no reachable traffic cell leaves its source open (version 3 had `source_judged: false`
    for a sidecar client of an ambient server)."""
    cells = all_cells()
    assert [c.id for c in cells if expect(c).reachable and expect(c).source is None] == []
    assert all("source_judged" not in expect(c).to_json() for c in cells)


def test_the_report_carries_the_spec_expectation_as_is() -> None:
    """Report version 3: a cell's `expected` is the spec's, plus `source_address` (version 2 had `source_judged`)."""
    from conformance.report.json_document import REPORT_VERSION, json_document
    from conformance.report.record import RunRecord

    report = RunRecord(emulated_capabilities(), {}, "emulated", IpFamily.IPV4, tuple(Profile))
    key = cell(Profile.AMBIENT, Bind.POD_IP, client=Client.MESHED)
    outcome = ProbeOutcome("ok", 200, "10.244.0.11", "echo", 1.0, "", "r")
    observation = Observation(key, outcome, True, [outcome], "client")
    verdict = judge(expect(key), observation)
    report.record_cell("PodIPFromMeshedClient[ambient]", key, expect(key), observation, verdict, "full")
    doc = json_document(report)
    assert (doc["format"], doc["version"], REPORT_VERSION) == ("mesh-inbound-conformance/report", 4, 4)
    expected = doc["cells"][0]["expected"]  # type: ignore[index]
    assert list(expected) == ["reachable", "source", "failure", "because", "source_address"]
    assert expected["source"] == "client"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "conformance", *args], capture_output=True, text=True, check=False)


def test_cli_prints_every_cell_as_json() -> None:
    proc = run_cli("spec", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert len(doc["cells"]) == len(all_cells())


def test_cli_markdown_has_a_table_per_profile_and_family() -> None:
    proc = run_cli("spec", "--format", "markdown")
    assert proc.returncode == 0
    for profile in Profile:
        for family in SINGLE_STACK:
            assert f"## {profile.value} ({family.value})" in proc.stdout
    assert "| none | declared | http | pod_ip | plain client | ✗ 503 | ✓ 127.0.0.6 | ✓ 127.0.0.6 |" in proc.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("spec", "--format", "yaml"),
        ("spec", "--profile", "sidecarless"),
        ("nope",),
        ("capabilities", "--istio-version", "x.y"),
        ("capabilities", "--istio-version", "1.22.8", "--ip-family", "ipv5"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(args: tuple[str, ...]) -> None:
    proc = run_cli(*args)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr


# --- Capabilities by version (reference section 3, tools-versions-ci.md) -------------------------------


@pytest.mark.parametrize(
    ("version", "profiles", "switch", "ipv6_forms", "precheck"),
    [
        ("1.9.9", ("baseline", "legacy"), LegacySwitch.NONE, False, False),
        ("1.10.6", ("baseline", "legacy", "passthrough"), LegacySwitch.PILOT_ENV, False, True),
        ("1.14.3", ("baseline", "legacy", "passthrough"), LegacySwitch.PILOT_ENV, False, True),
        # [::1]/[::] forms: PR #40265, cherry-picked as #40520 (reference section 4).
        ("1.14.4", ("baseline", "legacy", "passthrough"), LegacySwitch.PILOT_ENV, True, True),
        ("1.15.0", ("baseline", "legacy", "passthrough"), LegacySwitch.PILOT_ENV, True, True),
        # istioctl 1.15.1+ checks legacy proxies only (#40922, tools-versions-ci.md).
        ("1.15.1", ("baseline", "legacy", "passthrough"), LegacySwitch.PILOT_ENV, True, False),
        ("1.15.7", ("baseline", "legacy", "passthrough"), LegacySwitch.PILOT_ENV, True, False),
        ("1.16.0", ("baseline", "legacy", "passthrough"), LegacySwitch.PILOT_ENV, True, False),
        ("1.20.8", ("baseline", "legacy", "passthrough"), LegacySwitch.PILOT_ENV, True, False),
        ("1.21.6", ("baseline", "passthrough"), LegacySwitch.NONE, True, False),
        ("1.22.0", ("baseline", "legacy", "passthrough", "ambient"), LegacySwitch.MESH_CONFIG, True, False),
        ("1.24.0", ("baseline", "legacy", "passthrough", "ambient"), LegacySwitch.MESH_CONFIG, True, False),
        ("1.31.1", ("baseline", "legacy", "passthrough", "ambient"), LegacySwitch.MESH_CONFIG, True, False),
    ],
)
def test_capabilities_by_version(
    version: str, profiles: tuple[str, ...], switch: LegacySwitch, ipv6_forms: bool, precheck: bool
) -> None:
    mesh = istio_capabilities(version)
    assert tuple(p.value for p in mesh.profiles()) == profiles
    assert mesh.legacy_switch is switch
    assert (Capability.SIDECAR_ENDPOINT_IPV6 in mesh.capabilities) is ipv6_forms
    assert (Capability.PRECHECK_LOCALHOST in mesh.capabilities) is precheck
    if not precheck:
        assert "precheck" in mesh.reasons[Capability.PRECHECK_LOCALHOST]


@pytest.mark.parametrize(
    ("istioctl", "scope", "any_phase"),
    [
        ("1.9.9", PrecheckScope.NONE, False),
        ("1.10.0", PrecheckScope.ALL_INJECTED, True),
        ("1.11.8", PrecheckScope.ALL_INJECTED, True),
        ("1.12.0", PrecheckScope.ALL_INJECTED, False),
        ("1.14.6", PrecheckScope.ALL_INJECTED, False),
        ("1.15.0", PrecheckScope.ALL_INJECTED, False),
        ("1.15.1", PrecheckScope.LEGACY_PROXIES, False),
        ("1.15.1-beta.0", PrecheckScope.LEGACY_PROXIES, False),
        ("1.20.8", PrecheckScope.LEGACY_PROXIES, False),
        ("1.21.0", PrecheckScope.NONE, False),
    ],
)
def test_precheck_scope_by_istioctl_patch_version(istioctl: str, scope: PrecheckScope, any_phase: bool) -> None:
    """tools-versions-ci.md, the precheck table: compared on patch versions, not on minors."""
    mesh = istio_capabilities("1.10.6", istioctl_version=istioctl)
    assert mesh.precheck is scope
    assert mesh.precheck_any_phase is any_phase


def test_cli_capabilities_1151_checks_legacy_proxies_only() -> None:
    proc = run_cli("capabilities", "--istio-version", "1.15.1")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["precheck"] == "legacy-proxies"
    assert "precheck-localhost" not in doc["capabilities"]
    assert doc["proxy_image"] == "docker.io/istio/proxyv2:1.15.1"
    doc = json.loads(run_cli("capabilities", "--istio-version", "1.14.4").stdout)
    assert "sidecar-endpoint-ipv6" in doc["capabilities"]
    assert "sidecar-endpoint-cross-family" in doc["capabilities"]


@pytest.mark.parametrize(
    ("version", "resolution"),
    [
        (None, InstanceWithoutIpv4.IPV4_LOCALHOST),  # emulated: the current release
        ("1.10.0", InstanceWithoutIpv4.FIRST_ADDRESS),
        ("1.10.6", InstanceWithoutIpv4.FIRST_ADDRESS),
        ("1.14.3", InstanceWithoutIpv4.FIRST_ADDRESS),
        # cluster.go at tag 1.14.4 holds the 1.15 code (PR #40265, cherry-picked as #40520).
        ("1.14.4", InstanceWithoutIpv4.IPV4_LOCALHOST),
        ("1.15.0", InstanceWithoutIpv4.IPV4_LOCALHOST),
        ("1.31.1", InstanceWithoutIpv4.IPV4_LOCALHOST),
        ("1.32-dev", InstanceWithoutIpv4.IPV4_LOCALHOST),
    ],
)
def test_traffic_behaviour_by_release(version: str | None, resolution: InstanceWithoutIpv4) -> None:
    assert traffic_behaviour(version).instance_without_ipv4 is resolution


@pytest.mark.parametrize("protocol", list(Protocol))
def test_instance_endpoint_on_an_ipv6_pod_before_1144_dials_the_pod_ip_from_the_passthrough_bind(
    protocol: Protocol,
) -> None:
    """1.10-1.14.3: `0.0.0.0:P` dials IPAddresses[0] (the IPv6 pod IP) from ::6; 1.14.4+/1.15+: 127.0.0.1, no bind."""
    old, current = traffic_behaviour("1.12.9"), traffic_behaviour("1.15.0")
    cells = [
        c
        for c in all_cells([Profile.PASSTHROUGH, Profile.LEGACY], [IpFamily.IPV6])
        if c.default_endpoint is DefaultEndpoint.INSTANCE_V4 and c.path.from_other_pod and c.protocol is protocol
    ]
    assert cells
    for cell in cells:
        then, now = expect(cell, old), expect(cell, current)
        # No IPv6-only bind admits 127.0.0.1; the dual socket does (dual-wildcard-accepts-ipv4).
        assert now.reachable is (cell.bind is Bind.DUAL_WILDCARD)
        assert then.because[0] == "sidecar-instance-first-address" or cell.port is PortKind.REMAPPED
        if cell.bind is Bind.LOOPBACK:
            assert not then.reachable
            assert then.failure == now.failure
        else:
            assert (then.reachable, then.source) == (True, Source.INBOUND_PASSTHROUGH)
    # Every other cell is judged alike by both releases.
    others = [
        c for c in all_cells(tuple(Profile), [IpFamily.IPV6]) if c.default_endpoint is not DefaultEndpoint.INSTANCE_V4
    ]
    assert all(expect(c, old) == expect(c, current) for c in others)


def test_cases_that_pick_cells_by_reachability_pick_as_the_release_behaves() -> None:
    """Where releases differ, a cell moves between the arrival cases: on 1.12.9 an IPv6 pod's 0.0.0.0:P reaches an
    app bound to the pod IP (from ::6), so its request must be recorded, not absent."""
    from conformance.suite import test_no_arrival

    never, answered = test_no_arrival.CASES
    moved = [
        c
        for c in never.cells(Profile.PASSTHROUGH, IpFamily.IPV6)
        if c.default_endpoint is DefaultEndpoint.INSTANCE_V4 and c.bind is Bind.POD_IP and c.path.from_other_pod
    ]
    assert moved
    old = traffic_behaviour("1.12.9")
    assert not set(moved) & set(never.cells(Profile.PASSTHROUGH, IpFamily.IPV6, old))
    assert set(moved) <= set(answered.cells(Profile.PASSTHROUGH, IpFamily.IPV6, old))


def test_cross_family_cells_run_from_1_10_and_1_9_says_why_not() -> None:
    assert Capability.SIDECAR_ENDPOINT_CROSS_FAMILY in istio_capabilities("1.10.6").capabilities
    assert Capability.SIDECAR_ENDPOINT_CROSS_FAMILY in istio_capabilities("1.14.3").capabilities
    mesh = istio_capabilities("1.9.9")
    assert mesh.missing(frozenset({Capability.SIDECAR_ENDPOINT_CROSS_FAMILY})) == (
        "Istio 1.9.9 binds 127.0.0.6 for every family: its cross-family defaultEndpoint resolution is not encoded"
    )


@pytest.mark.parametrize(
    ("tag", "version"),
    [
        # operator/pkg/version.TagToVersionString: go-version NewSemver, numeric segments only (padded to three).
        ("1.10.0", "1.10.0"),
        ("1.10.0-rc.1", "1.10.0"),
        ("1.10.0-dev", "1.10.0"),
        ("1.20.0-distroless", "1.20.0"),
        ("1.20.0-debug", "1.20.0"),
        ("1.9.9-distroless", "1.9.9"),
        ("release-1.9.9", "1.9.9"),
        ("release-1.18.2-distroless", "1.18.2"),
        ("v1.9.0", "1.9.0"),
        ("1.10", "1.10.0"),
        ("1.9.9+build.7", "1.9.9"),
        ("1.9.9.1", "1.9.9.1"),
        ("1.23-dev", "1.23.0"),
        ("1.09.3", "1.9.3"),
        # What go-version's semver does not read: the pod is checked.
        ("latest", None),
        ("1.9.9_fix", None),
        ("1.9.9-", None),
        ("1.9.9dev", None),
        ("release-", None),
        ("Release-1.9.9", None),
        ("1.9.9 ", None),
    ],
)
def test_an_image_tag_reads_as_istioctl_reads_it(tag: str, version: str | None) -> None:
    """Not PEP 440: `1.10.0-rc.1` is 1.10.0 to istioctl (PEP 440: 1.10.0rc1, older than 1.10.0), `1.20.0-distroless`
    parses, a `release-` prefix is stripped."""
    got = image_tag_version(f"docker.io/istio/proxyv2:{tag}")
    assert (str(got) if got is not None else None) == version


@pytest.mark.parametrize(
    ("image", "checked"),
    [
        ("docker.io/istio/proxyv2:1.18.2", False),
        ("docker.io/istio/proxyv2:1.9.9", True),
        ("docker.io/istio/proxyv2:1.9.9-distroless", True),
        ("docker.io/istio/proxyv2:1.10.0", False),
        # The pre-release is dropped: these are 1.10.0 and 1.20.0 to istioctl, not older than 1.10.
        ("docker.io/istio/proxyv2:1.10.0-rc.1", False),
        ("docker.io/istio/proxyv2:1.10.0-dev", False),
        ("docker.io/istio/proxyv2:1.20.0-distroless", False),
        ("docker.io/istio/proxyv2:1.20.0-debug", False),
        ("docker.io/istio/proxyv2:release-1.9.9", True),
        ("docker.io/istio/proxyv2:release-1.18.2", False),
        # Tags istioctl cannot read (it cuts at the first ':'): the pod is checked.
        ("docker.io/istio/proxyv2:latest", True),
        ("localhost:5000/istio/proxyv2:1.18.2", True),
        ("docker.io/istio/proxyv2@sha256:" + "a" * 64, True),
        ("docker.io/istio/proxyv2", True),
    ],
)
def test_precheck_1151_to_120_decides_from_the_deployed_proxy_image(image: str, checked: bool) -> None:
    assert image_tag_version(image) is None or checked is (image_tag_version(image) < Version("1.10.0"))
    mesh = istio_capabilities("1.18.2", proxy_image_ref=image)
    assert (Capability.PRECHECK_LOCALHOST in mesh.capabilities) is checked
    if not checked:
        assert image in mesh.reasons[Capability.PRECHECK_LOCALHOST]


def test_proxy_image_reference_follows_hub_and_tag() -> None:
    assert proxy_image(None, None, "1.18.2") == "docker.io/istio/proxyv2:1.18.2"
    assert proxy_image("localhost:5000/istio/", "dev", "1.18.2") == "localhost:5000/istio/proxyv2:dev"


def test_precheck_as_an_upgrade_check_from_19() -> None:
    """istioctl 1.15.1-1.20 only checks proxies older than 1.10: a 1.9.9 mesh is checked."""
    mesh = istio_capabilities("1.9.9", istioctl_version="1.18.7")
    assert mesh.precheck is PrecheckScope.LEGACY_PROXIES
    assert Capability.PRECHECK_LOCALHOST in mesh.capabilities
    assert Capability.PRECHECK_LOCALHOST not in istio_capabilities("1.12.0", istioctl_version="1.18.7").capabilities
    assert Capability.PRECHECK_LOCALHOST not in istio_capabilities("1.12.0", istioctl_version="1.15.1").capabilities


def test_precheck_flags_exposed_loopback_ports_only() -> None:
    assert precheck_finding(DefaultEndpoint.NONE, PortKind.DECLARED, Bind.LOOPBACK)[0]
    assert precheck_finding(DefaultEndpoint.LOCALHOST_V4, PortKind.DECLARED, Bind.LOOPBACK)[0]
    assert not precheck_finding(DefaultEndpoint.UNLISTED, PortKind.DECLARED, Bind.LOOPBACK)[0]
    assert not precheck_finding(DefaultEndpoint.NONE, PortKind.UNDECLARED, Bind.LOOPBACK)[0]
    assert not precheck_finding(DefaultEndpoint.NONE, PortKind.DECLARED, Bind.WILDCARD)[0]


def test_too_old_versions_are_refused() -> None:
    with pytest.raises(ValueError, match=r"older than 1\.9"):
        istio_capabilities("1.8.6")


@pytest.mark.parametrize(
    ("version", "kubernetes", "kind", "image", "judged"),
    [
        ("1.20.8", "1.29", "v0.27.0", "kindest/node:v1.29.14@sha256:", "1.20.8"),
        ("1.15.1", "1.25", "v0.21.0", "kindest/node:v1.25.16@sha256:", "1.15.1"),
        ("1.32-dev", "1.36", "v0.32.0", "kindest/node:v1.36.1@sha256:", "1.31.1"),
    ],
)
def test_cli_capabilities_names_the_kind_cluster(
    version: str, kubernetes: str, kind: str, image: str, judged: str
) -> None:
    proc = run_cli("capabilities", "--istio-version", version)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert (doc["version"], doc["capabilities_of"]) == (version, judged)
    cluster = doc["kind_cluster"]
    assert (cluster["kubernetes"], cluster["kind"]) == (kubernetes, kind)
    assert cluster["node_image"].startswith(image)


def test_cli_capabilities_of_istio_1_11_name_its_cluster() -> None:
    """1.11 has no matrix row: it runs on the newest Kubernetes of its range (1.18-1.22, announcing-1.11) that has a
    pinned node image, 1.21 with kind v0.20.0."""
    proc = run_cli("capabilities", "--istio-version", "1.11.4")
    assert proc.returncode == 0
    cluster = json.loads(proc.stdout)["kind_cluster"]
    assert (cluster["kubernetes"], cluster["kind"]) == ("1.21", "v0.20.0")
    assert cluster["node_image"].startswith("kindest/node:v1.21.14@sha256:")


def test_a_minor_without_a_known_kubernetes_range_says_so_naming_the_known_ranges(tmp_path: pathlib.Path) -> None:
    from conformance.backends.kind.support import load_support

    table = yaml.safe_load(resource("fixtures", "kubernetes.yaml").read_text())
    del table["istio"]["1.11"]
    doctored = tmp_path / "kubernetes.yaml"
    doctored.write_text(yaml.safe_dump(table, sort_keys=False))
    with pytest.raises(ValueError, match=r"^Istio 1\.11\.4: no known Kubernetes range for 1\.11 \(known: 1\.9 \(k8s "):
        load_support(doctored).cluster_for("1.11.4")


# --- Ambient (probes-ambient.md section 2, reference section 8) ---------------------------------------------


@pytest.mark.parametrize("family", list(SINGLE_STACK))
def test_ambient_from_other_pods_written_out(family: IpFamily) -> None:
    """Every endpoint situation, port kind, protocol, path and client alike: loopback never reached and never
    'refused'; pod IP and wildcard reached, seeing the client pod's IP (ztunnel inbound.rs, baseline_test.go),
    from a sidecar client too (inbound.rs serve_connect, inbound_passthrough.rs; TestServices 1.22-1.28 checks
    the original source unless the *destination* has a sidecar)."""
    cells = [c for c in all_cells([Profile.AMBIENT], [family]) if c.path.from_other_pod]
    assert {c.client for c in cells} == {Client.PLAIN, Client.MESHED, Client.AMBIENT}
    assert {c.default_endpoint for c in cells} == {
        DefaultEndpoint.NONE,
        *SIDECAR_FORMS_BY_FAMILY[family],
        DefaultEndpoint.UNLISTED,
    }
    for cell in cells:
        got = expect(cell)
        if cell.bind is Bind.LOOPBACK:
            assert (got.reachable, set(got.failure)) == (False, {Failure.HTTP_503, Failure.RESET_OR_EOF}), cell.id
            assert "ambient-no-override" in got.because
        else:
            assert (got.reachable, got.source) == (True, Source.CLIENT), cell.id
            sidecar_client = cell.client is Client.MESHED
            last = "ambient-sidecar-client-original-source" if sidecar_client else "ambient-original-source"
            assert got.because[-1] == last, cell.id
    assert "ambient-sidecar-client-source" not in RULES


def test_a_sidecar_client_of_an_ambient_server_must_be_seen_as_itself() -> None:
    """The app must see the sidecar client's pod IP: 127.0.0.6, the pod's own IP or any other peer fails the source
    part; not being reached fails both parts."""
    cell = next(
        c
        for c in all_cells([Profile.AMBIENT], [IpFamily.IPV4])
        if c.client is Client.MESHED and c.bind is Bind.POD_IP and c.path is Path.POD_IP
    )
    expected = expect(cell)

    def seen(label: str, peer: str | None, source: str | None) -> Observation:
        outcome = ProbeOutcome(label, 200 if label == "ok" else None, peer, "echo", 1.0, "", "r")
        return Observation(cell, outcome, True, [outcome], source)

    assert judge(expected, seen("ok", "10.244.0.11", "client")).passed
    for peer, source in (("127.0.0.6", "inbound_passthrough"), ("10.244.0.12", "self"), ("10.1.2.3", "other")):
        verdict = judge(expected, seen("ok", peer, source))
        assert verdict.holds("reachability")
        assert not verdict.holds("source"), peer
        assert "expected the app to see client" in verdict.reason
    verdict = judge(expected, seen("reset_or_eof", None, None))
    assert not verdict.holds("reachability")
    assert not verdict.holds("source")
    assert "expected reachable (app sees client)" in verdict.reason


def test_ambient_in_pod_is_as_the_bind_allows() -> None:
    for cell in all_cells([Profile.AMBIENT]):
        if cell.path.from_other_pod:
            continue
        twin = CellKey(
            Profile.BASELINE,
            DefaultEndpoint.NONE,
            cell.bind,
            cell.port,
            cell.protocol,
            cell.path,
            None,
            cell.ip_family,
        )
        got, plain = expect(cell), expect(twin)
        assert (got.reachable, got.source, got.failure) == (plain.reachable, plain.source, plain.failure)
        assert got.because[0] == "ambient-in-pod-not-captured"


def test_ambient_capability_from_1_22() -> None:
    for version in ("1.22.0", "1.22.8", "1.23.5", "1.24.0", "1.31.1"):
        assert Profile.AMBIENT in istio_capabilities(version).profiles()
        assert Profile.AMBIENT in istio_capabilities(version, family=IpFamily.IPV4).profiles()
    assert Profile.AMBIENT in emulated_capabilities().profiles()


def _ambient_reason(version: str, family: IpFamily = IpFamily.IPV4) -> str | None:
    return istio_capabilities(version, family=family).missing(frozenset({Capability.PROFILE_AMBIENT}))


@pytest.mark.parametrize("version", ["1.18.0", "1.20.8", "1.21.0", "1.21.6"])
def test_ambient_before_1_22_is_alpha_not_covered(version: str) -> None:
    """1.18-1.21 have ambient as alpha (profile, ztunnel chart; 1.21 already redirects in the pod): the skip says
    so, not that there is no ambient mode (probes-ambient.md §2)."""
    assert Profile.AMBIENT not in istio_capabilities(version).profiles()
    assert _ambient_reason(version) == (
        f"Istio {version} has ambient mode as alpha (1.18-1.21): alpha, not covered (the suite covers ambient from "
        "the 1.22 beta)"
    )


@pytest.mark.parametrize("version", ["1.9.9", "1.17.8"])
def test_ambient_before_1_18_does_not_exist(version: str) -> None:
    assert _ambient_reason(version) == (
        f"Istio {version} has no ambient mode (alpha from 1.18, beta from 1.22, GA from 1.24)"
    )


@pytest.mark.parametrize("version", ["1.22.0", "1.22.8", "1.22.9-beta.0"])
def test_ambient_on_ipv6_needs_1_23(version: str) -> None:
    """The 1.22 istio-cni node agent never gets its IPv6 setting; #50747 fixed it in 1.23.0, not backported
    (user report #51622). Only the IPv6 run loses ambient; nothing else depends on the family."""
    v6, v4 = istio_capabilities(version, family=IpFamily.IPV6), istio_capabilities(version, family=IpFamily.IPV4)
    assert Profile.AMBIENT not in v6.profiles()
    assert v6.capabilities == v4.capabilities - {Capability.PROFILE_AMBIENT}
    reason = _ambient_reason(version, IpFamily.IPV6)
    assert reason == (
        f"Istio {version} cannot run ambient on IPv6: its istio-cni node agent never receives the IPv6 setting (no "
        "ip6tables in-pod rules, an IPv4-only probe ipset; user report #51622); fixed by #50747 in 1.23.0, not "
        "backported"
    )
    for later in ("1.23.0", "1.23.6", "1.24.0", "1.31.1"):
        assert Profile.AMBIENT in istio_capabilities(later, family=IpFamily.IPV6).profiles()


def test_an_ipv6_world_on_1_22_has_no_enrolled_namespace() -> None:
    from conformance.world.layout import World

    assert not World.for_mesh(IpFamily.IPV6, istio_capabilities("1.22.8", family=IpFamily.IPV6)).ambient
    assert World.for_mesh(IpFamily.IPV6, istio_capabilities("1.23.0", family=IpFamily.IPV6)).ambient
    assert World.for_mesh(IpFamily.IPV4, istio_capabilities("1.22.8", family=IpFamily.IPV4)).ambient


def test_cli_capabilities_of_1_22_in_an_ipv6_run_skip_ambient_with_the_reason() -> None:
    doc = json.loads(run_cli("capabilities", "--istio-version", "1.22.8", "--ip-family", "ipv6").stdout)
    assert doc["ip_family"] == "ipv6"
    assert "ambient" not in doc["profiles"]
    assert "profile-ambient" not in doc["capabilities"]
    assert "#50747 in 1.23.0" in doc["missing"]["profile-ambient"]
    for version, family in (("1.23.0", "ipv6"), ("1.23.6", "ipv6"), ("1.22.8", "ipv4")):
        doc = json.loads(run_cli("capabilities", "--istio-version", version, "--ip-family", family).stdout)
        assert "ambient" in doc["profiles"], (version, family)
    doc = json.loads(run_cli("capabilities", "--istio-version", "1.22.8").stdout)
    assert (doc["ip_family"], "ambient" in doc["profiles"]) == ("ipv4", True)


# --- Ports left out of capture (capture.py, settings-dualstack.md §3) ----------------------------------------------


def test_an_uncaptured_cell_is_its_baseline_cell_with_the_capture_rules_first() -> None:
    uncaptured = [c for c in all_cells() if c.capture is not InboundCapture.ALL]
    assert uncaptured
    for c in uncaptured:
        base = expect(dataclasses.replace(c, profile=Profile.BASELINE, capture=InboundCapture.ALL))
        got = expect(c)
        assert (got.reachable, got.source, got.failure) == (base.reachable, base.source, base.failure), c.id
        setting = {
            InboundCapture.EXCLUDED: "excluded-inbound-port",
            InboundCapture.NOT_INCLUDED: "not-included-no-inbound-capture",
        }
        assert got.because == (setting[c.capture], "uncaptured-as-baseline", *base.because), c.id
        # The same server behaves alike whatever the mesh's inbound setting: the proxy is never met.
        assert expect(dataclasses.replace(c, profile=Profile.PASSTHROUGH)) == expect(
            dataclasses.replace(c, profile=Profile.LEGACY)
        )


@pytest.mark.parametrize("capture", UNCAPTURED, ids=str)
def test_uncaptured_ports_show_the_client_and_refuse_loopback_like_kubernetes(capture: InboundCapture) -> None:
    def of(bind: Bind, client: Client, protocol: Protocol = Protocol.HTTP, port: PortKind = PortKind.DECLARED) -> Any:
        return expect(
            CellKey(
                Profile.PASSTHROUGH,
                DefaultEndpoint.NONE,
                bind,
                port,
                protocol,
                Path.POD_IP,
                client,
                IpFamily.IPV4,
                capture=capture,
            )
        )

    assert (of(Bind.POD_IP, Client.PLAIN).reachable, of(Bind.POD_IP, Client.PLAIN).source) == (True, Source.CLIENT)
    assert of(Bind.WILDCARD, Client.MESHED).source is Source.CLIENT  # not 127.0.0.6: no server proxy
    assert of(Bind.LOOPBACK, Client.PLAIN).failure == (Failure.REFUSED,)
    # A meshed client's own sidecar stands in the way: 503 on its HTTP listener, a close on TCP and on its
    # outbound catch-all (an undeclared port).
    assert of(Bind.LOOPBACK, Client.MESHED).failure == (Failure.HTTP_503,)
    assert of(Bind.LOOPBACK, Client.MESHED, Protocol.TCP).failure == (Failure.RESET_OR_EOF,)
    assert of(Bind.LOOPBACK, Client.MESHED, port=PortKind.UNDECLARED).failure == (Failure.RESET_OR_EOF,)


def test_uncaptured_cells_have_their_own_ids_and_json_key() -> None:
    c = CellKey(
        Profile.LEGACY,
        DefaultEndpoint.NONE,
        Bind.LOOPBACK,
        PortKind.DECLARED,
        Protocol.TCP,
        Path.SERVICE,
        Client.MESHED,
        IpFamily.IPV6,
        capture=InboundCapture.NOT_INCLUDED,
    )
    assert c.id == "legacy+not_included/none/loopback/declared/tcp/service/meshed/ipv6"
    assert c.to_json()["capture"] == "not_included"
    assert (
        dataclasses.replace(c, capture=InboundCapture.ALL).id == "legacy/none/loopback/declared/tcp/service/meshed/ipv6"
    )
    # No in-pod path, no Sidecar resource, no baseline or ambient server is asked with ports left out.
    uncaptured = [c for c in all_cells() if c.capture is not InboundCapture.ALL]
    assert all(c.path.from_other_pod and c.default_endpoint is DefaultEndpoint.NONE for c in uncaptured)
    assert {c.profile for c in uncaptured} == set(MESH_PROFILES)
    doc = spec_document(all_cells([Profile.PASSTHROUGH], [IpFamily.IPV4]))
    assert {r["id"] for r in doc["rules"]} >= set(CAPTURE_RULES)  # type: ignore[index,union-attr]
    assert doc["dimensions"]["capture"] == ["all", "excluded", "not_included"]  # type: ignore[index]


# --- TPROXY interception (spec/interception.py) ----------------------------------------------------------------


def _redirect_twin(c: CellKey) -> CellKey:
    return dataclasses.replace(c, interception=Interception.REDIRECT)


def test_tproxy_cells_are_passthrough_only_with_distinct_ids_and_redirect_ids_unchanged() -> None:
    tproxy = [c for c in all_cells() if c.interception is Interception.TPROXY]
    assert {c.profile for c in tproxy} == {Profile.PASSTHROUGH}
    assert all(c.id.startswith("passthrough+tproxy/") for c in tproxy)
    # Per family: `none` (96) and the family's own instance form from other pods (48); IPv6 a fourth bind.
    for family, instance in (
        (IpFamily.IPV4, DefaultEndpoint.INSTANCE_V4),
        (IpFamily.IPV6, DefaultEndpoint.INSTANCE_V6),
    ):
        mine = [c for c in tproxy if c.ip_family is family]
        assert len(mine) == 144 * len(binds(family)) // 3
        assert {c.default_endpoint for c in mine} == {DefaultEndpoint.NONE, instance}
        assert all(c.path.from_other_pod for c in mine if c.default_endpoint is instance)
    # A REDIRECT cell's id is what it was before interception was a coordinate; the JSON always names the mode.
    redirect = CellKey(
        Profile.PASSTHROUGH,
        DefaultEndpoint.NONE,
        Bind.WILDCARD,
        PortKind.DECLARED,
        Protocol.HTTP,
        Path.POD_IP,
        Client.PLAIN,
        IpFamily.IPV4,
    )
    assert redirect.id == "passthrough/none/wildcard/declared/http/pod_ip/plain/ipv4"
    assert redirect.to_json()["interception"] == "redirect"
    tproxied = dataclasses.replace(redirect, interception=Interception.TPROXY)
    assert tproxied.id == "passthrough+tproxy/none/wildcard/declared/http/pod_ip/plain/ipv4"
    assert tproxied.to_json()["interception"] == "tproxy"


def test_tproxy_keeps_the_client_address_where_the_sidecar_dials_the_pod_ip() -> None:
    """original_src (settings-dualstack.md §1(c)): the app sees the client; reachability is REDIRECT's."""
    tproxy = [c for c in all_cells() if c.interception is Interception.TPROXY]
    for c in tproxy:
        got, twin = expect(c), expect(_redirect_twin(c))
        assert (got.reachable, got.failure) == (twin.reachable, twin.failure), c.id
        if not c.path.from_other_pod:
            assert got.source is twin.source, c.id
            assert got.because[0] == "tproxy-in-pod-not-captured", c.id
            continue
        assert got.because[0] == "tproxy-capture", c.id
        if got.reachable:
            assert twin.source is Source.INBOUND_PASSTHROUGH, c.id
            assert got.source is Source.CLIENT, c.id
            assert got.because[-1] == "tproxy-original-src", c.id
    # A loopback-only app stays unreachable, with REDIRECT's failure forms (503 on HTTP, reset on TCP).
    loopback = [c for c in tproxy if c.bind is Bind.LOOPBACK and c.path.from_other_pod]
    assert loopback
    assert not [c for c in loopback if expect(c).reachable]
    assert {expect(c).failure for c in loopback} == {(Failure.HTTP_503,), (Failure.RESET_OR_EOF,)}


def test_tproxy_localhost_dials_are_not_guessed() -> None:
    """Legacy and `127.0.0.1:P` under TPROXY depend on route_localnet (UNCONFIRMED): expect() refuses them."""
    base = cell(Profile.LEGACY, Bind.WILDCARD)
    with pytest.raises(ValueError, match="route_localnet"):
        expect(dataclasses.replace(base, interception=Interception.TPROXY))
    sidecar = cell(Profile.PASSTHROUGH, Bind.WILDCARD, endpoint=DefaultEndpoint.LOCALHOST_V4)
    with pytest.raises(ValueError, match="route_localnet"):
        expect(dataclasses.replace(sidecar, interception=Interception.TPROXY))


@pytest.mark.parametrize(
    ("version", "family", "has", "reason"),
    [
        ("1.10.6", IpFamily.IPV4, False, "#31095"),
        ("1.11.0", IpFamily.IPV4, True, None),
        ("1.11.8", IpFamily.IPV6, False, "1.12.0"),
        ("1.12.0", IpFamily.IPV6, True, None),
        ("1.31.1", IpFamily.IPV6, True, None),
    ],
)
def test_tproxy_capability_by_release_and_family(version: str, family: IpFamily, has: bool, reason: str | None) -> None:
    mesh = istio_capabilities(version, family=family)
    assert (Capability.INTERCEPTION_TPROXY in mesh.capabilities) is has
    if reason is not None:
        assert reason in mesh.reasons[Capability.INTERCEPTION_TPROXY]
    assert World.for_mesh(family, mesh).tproxy is has
    assert Capability.INTERCEPTION_TPROXY in emulated_capabilities().capabilities


def test_tproxy_cases_need_the_capability_and_other_cases_ask_no_tproxy_cell() -> None:
    from conformance.suite import test_interception, test_reachability, test_source_address

    for case in test_interception.CASES:
        assert Capability.INTERCEPTION_TPROXY in case.needed(Profile.PASSTHROUGH, IpFamily.IPV6)
        assert all(c.interception is Interception.TPROXY for c in case.cells(Profile.PASSTHROUGH, IpFamily.IPV6))
    asked = {c for case in test_interception.CASES for c in case.cells(Profile.PASSTHROUGH, IpFamily.IPV4)}
    assert asked == {
        c for c in all_cells([Profile.PASSTHROUGH], [IpFamily.IPV4]) if c.interception is Interception.TPROXY
    }
    for case in (*test_reachability.CASES, *test_source_address.CASES):
        assert all(c.interception is Interception.REDIRECT for c in case.cells(Profile.PASSTHROUGH, IpFamily.IPV4))
