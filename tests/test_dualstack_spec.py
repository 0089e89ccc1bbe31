"""The dual-stack family in the spec (issue 23 items 1-2, the oracle only): cells, rules, sources, the CLI.

Facts: shared/reference/settings-dualstack.md §2 and §5; the rules are in conformance/spec/dualstack.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from types import SimpleNamespace

import pytest

from conformance.engine.probe import classify_source
from conformance.report.json_document import _address
from conformance.spec.capabilities import Capability, endpoint_capabilities, istio_capabilities
from conformance.spec.capture import CAPTURE_RULES
from conformance.spec.cells import all_cells
from conformance.spec.dimensions import (
    SINGLE_STACK,
    Bind,
    CellKey,
    Client,
    DefaultEndpoint,
    InboundCapture,
    Interception,
    IpFamily,
    Path,
    PortKind,
    Profile,
    Protocol,
    Source,
    binds,
    source_addresses,
)
from conformance.spec.dualstack import DUAL_BINDS, DUAL_PROFILES, DUAL_RULES, LocalhostV6OnDual
from conformance.spec.probes import (
    DUAL_PROBE_RULE,
    PROBE_RULES,
    ProbeCellKey,
    ProbeKind,
    ProbeSource,
    ProbeUse,
    expect_probe,
    probe_behaviour,
    probe_cells,
)
from conformance.spec.render import describe_expectation, spec_document, spec_markdown
from conformance.spec.semantics import RULES, expect, traffic_behaviour

DUAL = IpFamily.DUAL
V4 = IpFamily.IPV4
V6 = IpFamily.IPV6


def dual_cell(
    profile: Profile,
    bind: Bind,
    client_family: IpFamily,
    *,
    endpoint: DefaultEndpoint = DefaultEndpoint.NONE,
    port: PortKind = PortKind.DECLARED,
    protocol: Protocol = Protocol.HTTP,
    path: Path = Path.POD_IP,
    client: Client | None = Client.PLAIN,
    capture: InboundCapture = InboundCapture.ALL,
) -> CellKey:
    return CellKey(
        profile, endpoint, bind, port, protocol, path, client, DUAL, capture=capture, client_family=client_family
    )


def test_cell_counts_per_family() -> None:
    # Single-stack families are unchanged: 2,238 IPv4 and 2,984 IPv6 (with dual_wildcard) traffic cells.
    assert len(all_cells(families=[V4])) == 2238
    assert len(all_cells(families=[V6])) == 2984
    dual = all_cells(families=[DUAL])
    # A dual run asks the IPv4 run's REDIRECT cells of baseline, legacy and passthrough, capture settings
    # included: 96 + 528 + 528 + 4 x 60 = 1,392 cells of 3 binds; with the 4 binds of a dual pod that is
    # 1,392 / 3 x 4 = 1,856, each asked from both client families: 3,712.
    single = [
        c for c in all_cells(families=[V4]) if c.profile in DUAL_PROFILES and c.interception is Interception.REDIRECT
    ]
    assert len(single) == 96 + 528 + 528 + 4 * 60 == 1392
    assert len(dual) == 1392 // 3 * 4 * 2 == 3712
    per = Counter((c.profile, c.capture) for c in dual)
    assert per[(Profile.BASELINE, InboundCapture.ALL)] == 96 // 3 * 4 * 2 == 256
    assert per[(Profile.LEGACY, InboundCapture.ALL)] == per[(Profile.PASSTHROUGH, InboundCapture.ALL)] == 1408
    assert all(per[(p, s)] == 60 // 3 * 4 * 2 for p in (Profile.LEGACY, Profile.PASSTHROUGH) for s in InboundCapture
               if s is not InboundCapture.ALL)  # fmt: skip
    # Default: all three families.
    assert len(all_cells()) == 2238 + 2984 + 3712


def test_dual_cells_scope() -> None:
    dual = all_cells(families=[DUAL])
    assert {c.profile for c in dual} == set(DUAL_PROFILES)  # no ambient
    assert {c.interception for c in dual} == {Interception.REDIRECT}  # no TPROXY
    assert {c.bind for c in dual} == set(binds(DUAL)) == set(Bind)
    assert {c.client_family for c in dual} == set(SINGLE_STACK)
    assert {c.default_endpoint for c in dual} == set(DefaultEndpoint)
    assert Counter(c.client_family for c in dual) == {V4: 1856, V6: 1856}


def test_ids_are_unique_and_single_stack_ids_are_unchanged() -> None:
    cells = all_cells()
    assert len({c.id for c in cells}) == len(cells)
    ids = {c.id for c in cells}
    # Pinned single-stack ids (as version 5 and the dual_wildcard change had them) and a dual id.
    assert "passthrough/none/wildcard/declared/http/pod_ip/plain/ipv4" in ids
    assert "passthrough+tproxy/none/wildcard/declared/http/pod_ip/plain/ipv6" in ids
    assert "legacy+excluded/none/loopback/undeclared/tcp/pod_ip/meshed/ipv4" in ids
    assert "passthrough/0.0.0.0/dual_wildcard/declared/http/pod_ip/plain/ipv6" in ids
    assert "passthrough/none/wildcard/declared/http/pod_ip/plain/dual+ipv6" in ids
    assert "baseline/none/loopback/declared/tcp/localhost/in_pod/dual+ipv4" in ids
    assert all(c.id.endswith(("/dual+ipv4", "/dual+ipv6")) for c in cells if c.ip_family is DUAL)
    assert all(c.client_family is None for c in cells if c.ip_family in SINGLE_STACK)


def test_json_of_a_single_stack_cell_gains_only_a_null_client_family() -> None:
    cell = all_cells([Profile.LEGACY], [V4])[0]
    assert cell.to_json() == {
        "profile": "legacy",
        "default_endpoint": "none",
        "bind": "loopback",
        "port": "declared",
        "protocol": "http",
        "path": "pod_ip",
        "client": "plain",
        "ip_family": "ipv4",
        "interception": "redirect",
        "capture": "all",
        "client_family": None,
    }
    assert dual_cell(Profile.LEGACY, Bind.LOOPBACK, V6).to_json()["client_family"] == "ipv6"


def test_every_dual_rule_is_used() -> None:
    behaviours = (traffic_behaviour(None), traffic_behaviour("1.18.5"))
    used = {r for c in all_cells(families=[DUAL]) for b in behaviours for r in expect(c, b).because}
    assert {r.id for r in DUAL_RULES} <= used
    assert used <= set(RULES) | set(CAPTURE_RULES)
    # No single-stack cell is explained by a dual rule.
    dual_ids = {r.id for r in DUAL_RULES}
    assert not any(set(expect(c).because) & dual_ids for c in all_cells(families=SINGLE_STACK))


def test_ipv6_client_to_legacy_mode_sees_ipv4_localhost() -> None:
    """Hidden case 1: legacy sends every client, IPv6 included, to 127.0.0.1:P (cluster.go actualLocalHosts[0])."""
    cell = dual_cell(Profile.LEGACY, Bind.LOOPBACK, V6)
    want = expect(cell)
    assert want.reachable
    assert want.source is Source.IPV4_LOCALHOST
    assert want.because == ("dual-legacy-ipv4-localhost", "dual-bind-admits")
    assert source_addresses(DUAL, V6)[Source.IPV4_LOCALHOST] == "127.0.0.1"
    assert describe_expectation(want, DUAL, V6) == "✓ 127.0.0.1"
    # An IPv4 client sees its own family's localhost; a pod_ip-only app is unreachable either way (503 / reset).
    assert expect(dual_cell(Profile.LEGACY, Bind.LOOPBACK, V4)).source is Source.LOCALHOST
    assert not expect(dual_cell(Profile.LEGACY, Bind.POD_IP, V6)).reachable


@pytest.mark.parametrize("version", ["1.17.0", "1.18.5", "1.19.0", "1.19.3"])
def test_localhost_v6_endpoint_before_47440_dials_127_0_0_1(version: str) -> None:
    """Hidden case 2a: before #47440 `[::1]:P` gave actualLocalHosts[0], 127.0.0.1, on a dual-stack pod."""
    behaviour = traffic_behaviour(version)
    assert behaviour.dual_localhost_v6 is LocalhostV6OnDual.IPV4_LOCALHOST
    for client_family, source in ((V4, Source.LOCALHOST), (V6, Source.IPV4_LOCALHOST)):
        cell = dual_cell(Profile.PASSTHROUGH, Bind.LOOPBACK, client_family, endpoint=DefaultEndpoint.LOCALHOST_V6)
        want = expect(cell, behaviour)
        assert want.reachable
        assert want.source is source
        assert want.because[0] == "dual-sidecar-localhost-v6-before-47440"
        assert source_addresses(DUAL, client_family)[source] == "127.0.0.1"


@pytest.mark.parametrize("version", ["1.18.6", "1.19.4", "1.20.0", "1.21.0", "1.21.6", "1.28.1", None])
def test_localhost_v6_endpoint_after_47440_dials_ipv6_loopback(version: str | None) -> None:
    """Hidden case 2b: from 1.18.6, 1.19.4, 1.20.0 (and 1.21+) `[::1]:P` dials ::1 (#47440, #47675-#47677)."""
    behaviour = traffic_behaviour(version)
    assert behaviour.dual_localhost_v6 is LocalhostV6OnDual.IPV6_LOCALHOST
    for client_family, source in ((V4, Source.IPV6_LOCALHOST), (V6, Source.LOCALHOST)):
        cell = dual_cell(Profile.LEGACY, Bind.LOOPBACK, client_family, endpoint=DefaultEndpoint.LOCALHOST_V6)
        want = expect(cell, behaviour)
        assert want.reachable
        assert want.source is source
        assert want.because[0] == "dual-sidecar-localhost-v6"
        assert source_addresses(DUAL, client_family)[source] == "::1"


def test_instance_v4_endpoint_from_an_ipv6_client_sees_127_0_0_6() -> None:
    """Hidden case 3: `0.0.0.0:P` dials the IPv4 pod IP from 127.0.0.6, for IPv6 clients too."""
    for bind in (Bind.POD_IP, Bind.WILDCARD, Bind.DUAL_WILDCARD):
        want = expect(dual_cell(Profile.PASSTHROUGH, bind, V6, endpoint=DefaultEndpoint.INSTANCE_V4))
        assert want.reachable
        assert want.source is Source.IPV4_INBOUND_PASSTHROUGH
        assert want.because == ("dual-sidecar-instance-v4", "dual-bind-admits")
    assert source_addresses(DUAL, V6)[Source.IPV4_INBOUND_PASSTHROUGH] == "127.0.0.6"
    loopback = expect(dual_cell(Profile.PASSTHROUGH, Bind.LOOPBACK, V6, endpoint=DefaultEndpoint.INSTANCE_V4))
    assert not loopback.reachable
    assert [f.value for f in loopback.failure] == ["http_503"]


def test_instance_v6_endpoint_from_an_ipv4_client_sees_colon_colon_6() -> None:
    """`[::]:P` dials the IPv6 pod IP from ::6, for IPv4 clients too (with ISTIO_DUAL_STACK=true)."""
    want = expect(
        dual_cell(Profile.LEGACY, Bind.POD_IP, V4, endpoint=DefaultEndpoint.INSTANCE_V6, protocol=Protocol.TCP)
    )
    assert want.reachable
    assert want.source is Source.IPV6_INBOUND_PASSTHROUGH
    assert source_addresses(DUAL, V4)[Source.IPV6_INBOUND_PASSTHROUGH] == "::6"
    assert describe_expectation(want, DUAL, V4) == "✓ ::6"


@pytest.mark.parametrize("client_family", SINGLE_STACK)
@pytest.mark.parametrize(
    ("endpoint", "port"),
    [
        (DefaultEndpoint.NONE, PortKind.DECLARED),
        (DefaultEndpoint.NONE, PortKind.REMAPPED),
        (DefaultEndpoint.NONE, PortKind.UNDECLARED),
        (DefaultEndpoint.EMPTY, PortKind.DECLARED),
        (DefaultEndpoint.UNLISTED, PortKind.DECLARED),
    ],
)
def test_passthrough_source_follows_the_client_family(
    client_family: IpFamily, endpoint: DefaultEndpoint, port: PortKind
) -> None:
    """ORIGINAL_DST paths: the pod IP of the client's family from 127.0.0.6 (IPv4) or ::6 (IPv6)."""
    cell = dual_cell(Profile.PASSTHROUGH, Bind.POD_IP, client_family, endpoint=endpoint, port=port)
    want = expect(cell)
    assert want.reachable
    assert want.source is Source.INBOUND_PASSTHROUGH
    assert "dual-passthrough-by-client-family" in want.because
    address = {V4: "127.0.0.6", V6: "::6"}[client_family]
    assert source_addresses(DUAL, client_family)[Source.INBOUND_PASSTHROUGH] == address
    # Undeclared ports in legacy are passthrough too (no inbound cluster of their own).
    if port is PortKind.UNDECLARED:
        assert expect(replace(cell, profile=Profile.LEGACY)).source is Source.INBOUND_PASSTHROUGH


def test_localhost_v4_endpoint_dials_127_0_0_1_for_every_client() -> None:
    for client_family, source in ((V4, Source.LOCALHOST), (V6, Source.IPV4_LOCALHOST)):
        want = expect(
            dual_cell(Profile.PASSTHROUGH, Bind.LOOPBACK, client_family, endpoint=DefaultEndpoint.LOCALHOST_V4)
        )
        assert want.reachable
        assert want.source is source
        assert want.because[0] == "dual-sidecar-localhost-v4"


@pytest.mark.parametrize("client_family", SINGLE_STACK)
@pytest.mark.parametrize("capture", list(InboundCapture))
def test_baseline_and_uncaptured_ports_see_the_client_of_its_family(
    client_family: IpFamily, capture: InboundCapture
) -> None:
    profile = Profile.BASELINE if capture is InboundCapture.ALL else Profile.PASSTHROUGH
    for bind in (Bind.POD_IP, Bind.WILDCARD, Bind.DUAL_WILDCARD):
        want = expect(dual_cell(profile, bind, client_family, capture=capture))
        assert want.reachable
        assert want.source is Source.CLIENT
        assert "dual-direct-client-family" in want.because
    refused = expect(dual_cell(profile, Bind.LOOPBACK, client_family, capture=capture))
    assert not refused.reachable
    assert [f.value for f in refused.failure] == ["refused"]
    # A meshed client's own sidecar answers as in a single-stack run (503 on a declared HTTP port).
    meshed = expect(dual_cell(profile, Bind.LOOPBACK, client_family, capture=capture, client=Client.MESHED))
    assert [f.value for f in meshed.failure] == ["http_503"]


@pytest.mark.parametrize("client_family", SINGLE_STACK)
def test_in_pod_paths_reach_the_bind_of_the_dialled_family(client_family: IpFamily) -> None:
    for profile in DUAL_PROFILES:
        local = {b: expect(dual_cell(profile, b, client_family, path=Path.LOCALHOST, client=None)) for b in Bind}
        own = {b: expect(dual_cell(profile, b, client_family, path=Path.SELF_POD_IP, client=None)) for b in Bind}
        assert {b for b, w in local.items() if w.reachable} == {Bind.LOOPBACK, Bind.WILDCARD, Bind.DUAL_WILDCARD}
        assert {b for b, w in own.items() if w.reachable} == {Bind.POD_IP, Bind.WILDCARD, Bind.DUAL_WILDCARD}
        assert {w.source for w in local.values() if w.reachable} == {Source.LOCALHOST}
        assert {w.source for w in own.values() if w.reachable} == {Source.SELF}


def test_wildcard_and_dual_wildcard_behave_alike_on_a_dual_pod() -> None:
    for cell in all_cells(families=[DUAL]):
        if cell.bind is Bind.DUAL_WILDCARD:
            assert expect(cell) == expect(replace(cell, bind=Bind.WILDCARD)), cell.id


def test_dual_cells_need_a_client_family() -> None:
    with pytest.raises(ValueError, match="client family"):
        expect(CellKey(Profile.PASSTHROUGH, DefaultEndpoint.NONE, Bind.WILDCARD, PortKind.DECLARED, Protocol.HTTP,
                       Path.POD_IP, Client.PLAIN, DUAL))  # fmt: skip
    with pytest.raises(ValueError, match="client family"):
        source_addresses(DUAL)


def test_sources_are_named_relative_to_the_client_family() -> None:
    assert source_addresses(V4) == {Source.LOCALHOST: "127.0.0.1", Source.INBOUND_PASSTHROUGH: "127.0.0.6"}
    assert source_addresses(V6)[Source.IPV4_LOCALHOST] == "127.0.0.1"
    assert classify_source("127.0.0.6", DUAL, "10.0.0.5", "10.0.0.9", V4) == Source.INBOUND_PASSTHROUGH.value
    assert classify_source("127.0.0.6", DUAL, "fd00::5", "fd00::9", V6) == Source.IPV4_INBOUND_PASSTHROUGH.value
    assert classify_source("::6", DUAL, "10.0.0.5", "10.0.0.9", V4) == Source.IPV6_INBOUND_PASSTHROUGH.value
    assert classify_source("::1", DUAL, "10.0.0.5", "10.0.0.9", V4) == Source.IPV6_LOCALHOST.value
    assert classify_source("10.0.0.5", DUAL, "10.0.0.5", "10.0.0.9", V4) == Source.CLIENT.value
    # Single-stack classification is as before.
    assert classify_source("127.0.0.6", V4, "10.0.0.5", "10.0.0.9") == Source.INBOUND_PASSTHROUGH.value
    assert _address(DUAL, "ipv6_localhost", V4) == "::1"
    assert _address(V6, "inbound_passthrough") == "::6"


def test_capabilities_dual_stack_from_1_17() -> None:
    old = istio_capabilities("1.16.7", family=DUAL)
    assert Capability.DUAL_STACK not in old.capabilities
    assert "1.17.0" in old.reasons[Capability.DUAL_STACK]
    new = istio_capabilities("1.17.0", family=DUAL)
    assert Capability.DUAL_STACK in new.capabilities
    assert Profile.AMBIENT not in istio_capabilities("1.28.0", family=DUAL).profiles()
    assert Capability.INTERCEPTION_TPROXY not in istio_capabilities("1.28.0", family=DUAL).capabilities
    # Single-stack capabilities do not mention dual-stack.
    assert Capability.DUAL_STACK not in istio_capabilities("1.28.0", family=V4).capabilities
    assert Capability.DUAL_STACK not in istio_capabilities("1.16.0", family=V6).reasons
    # On a dual-stack pod no literal is cross-family.
    assert endpoint_capabilities(DefaultEndpoint.INSTANCE_V6, DUAL) == {Capability.SIDECAR_ENDPOINT_IPV6}
    assert endpoint_capabilities(DefaultEndpoint.LOCALHOST_V4, DUAL) == {Capability.SIDECAR_ENDPOINT_IPV4}


def test_the_spec_document_has_probe_cells_but_no_node_proxy_cells_for_dual() -> None:
    doc = spec_document(all_cells(families=[DUAL]))
    probe = doc["probe_cells"]
    assert isinstance(probe, list)
    assert len(probe) == 80
    assert {c["ip_family"] for c in probe} == {"dual"}
    assert {c["bind"] for c in probe} == {b.value for b in Bind}
    assert DUAL_PROBE_RULE in {r["id"] for r in doc["probe_rules"]}  # type: ignore[union-attr]
    assert doc.get("tunnel_cells", []) == []
    assert doc.get("late_cells", []) == []
    dimensions = doc["dimensions"]
    assert isinstance(dimensions, dict)
    assert dimensions["client_family"] == ["ipv4", "ipv6", None]
    assert "dual" in dimensions["ip_family"]


def test_markdown_has_a_client_family_column_for_dual_only() -> None:
    text = spec_markdown([Profile.LEGACY], [DUAL])
    header = "| defaultEndpoint | port | protocol | path | client | client family | " + " | ".join(
        b.value for b in Bind
    )
    assert header in text
    assert (
        "| none | declared | http | pod_ip | plain client | ipv6 | ✓ 127.0.0.1 | ✗ 503 | ✓ 127.0.0.1 | ✓ 127.0.0.1 |"
        in text
    )
    # The probe tables: no client family (a probe dials the primary, IPv4, pod IP), a dual_wildcard column.
    assert "## legacy (dual): health probes" in text
    assert "| probe | rewrite | loopback | pod_ip | wildcard | dual_wildcard |" in text
    assert "client family" not in spec_markdown([Profile.LEGACY], [V4])


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "conformance", *args], capture_output=True, text=True, check=False)


def test_cli_spec_json_dual() -> None:
    proc = run_cli("spec", "--format", "json", "--ip-family", "dual")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    cells = doc["cells"]
    assert len(cells) == 3712
    assert {c["ip_family"] for c in cells} == {"dual"}
    assert {c["client_family"] for c in cells} == {"ipv4", "ipv6"}
    by_id = {c["id"]: c for c in cells}
    legacy_v6 = by_id["legacy/none/wildcard/declared/http/pod_ip/plain/dual+ipv6"]
    assert legacy_v6["expected"]["source"] == "ipv4_localhost"
    assert {r.id for r in DUAL_RULES} <= {r["id"] for r in doc["rules"]}


def test_cli_capabilities_dual_prints_the_localhost_v6_behaviour() -> None:
    proc = run_cli("capabilities", "--istio-version", "1.19.3", "--ip-family", "dual")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["traffic_behaviour"]["dual_localhost_v6"] == "ipv4-localhost"
    assert "dual-stack" in doc["capabilities"]
    assert "ambient" not in doc["profiles"]
    single = json.loads(run_cli("capabilities", "--istio-version", "1.19.3").stdout)
    assert "dual_localhost_v6" not in single["traffic_behaviour"]


def test_impact_offers_the_three_families() -> None:
    """`impact` reads a dual-stack pod per family (issue 23 item 4): dual is a choice, a typo one line."""
    proc = run_cli("impact", "--ip-family", "triple")
    assert proc.returncode == 2
    assert "invalid choice: 'triple' (choose from 'ipv4', 'ipv6', 'dual')" in proc.stderr


def test_a_dual_kind_run_is_let_through_to_the_capability_check() -> None:
    """kind and kubeconfig run dual-stack cells (issue 23): a release before 1.17 stops with one line."""
    from conformance.run.settings import settings_from

    class Options(SimpleNamespace):
        def __getattr__(self, name: str) -> None:  # the options this test does not give are left out
            return None

    opt = Options(backend="kind", ip_family="dual", timeout_config="", istio_version="1.16.7", profile=None)
    with pytest.raises(pytest.UsageError) as error:
        settings_from(opt)
    assert str(error.value).startswith("--ip-family dual: ")
    assert "1.17" in str(error.value)
    assert len(str(error.value).splitlines()) == 1


# --- health probes on dual-stack pods (rule dual-probe-primary-ipv4; settings-dualstack.md §4, §5) ---------------


def probe_cell(
    profile: Profile,
    bind: Bind,
    rewrite: bool | None,
    probe: ProbeKind = ProbeKind.HTTP,
    use: ProbeUse = ProbeUse.READINESS,
    family: IpFamily = DUAL,
) -> ProbeCellKey:
    return ProbeCellKey(profile, bind, probe, rewrite, family, use)


def test_dual_probe_cells_scope_and_ids() -> None:
    cells = probe_cells(tuple(Profile), (DUAL,))
    # baseline 4 binds x 4 (readiness http and tcp, liveness, startup); legacy and passthrough x 2 rewrite settings.
    assert Counter(c.profile for c in cells) == {Profile.BASELINE: 16, Profile.LEGACY: 32, Profile.PASSTHROUGH: 32}
    assert {c.bind for c in cells} == set(Bind)
    assert len({c.id for c in cells}) == len(cells) == 80
    assert (
        probe_cell(Profile.PASSTHROUGH, Bind.DUAL_WILDCARD, True).id
        == "probe/passthrough/dual_wildcard/http/rewrite/dual"
    )
    # Single-stack probe cells keep their three binds and ids.
    for family in SINGLE_STACK:
        single = probe_cells(tuple(Profile), (family,))
        assert len(single) == 72
        assert Bind.DUAL_WILDCARD not in {c.bind for c in single}
        assert all(c.id.endswith(f"/{family.value}") for c in single)


def test_a_dual_probe_of_ambient_is_not_a_cell() -> None:
    with pytest.raises(ValueError, match="not asked on dual-stack pods"):
        expect_probe(probe_cell(Profile.AMBIENT, Bind.WILDCARD, None))


def test_dual_wildcard_passes_a_rewritten_probe_from_127_0_0_6_in_passthrough() -> None:
    want = expect_probe(probe_cell(Profile.PASSTHROUGH, Bind.DUAL_WILDCARD, True))
    assert (want.ready, want.source, want.reachable, want.restarts) == (
        True,
        ProbeSource.INBOUND_PASSTHROUGH,
        True,
        False,
    )
    assert want.because[0] == DUAL_PROBE_RULE
    assert "probe-agent-pod-ip" in want.because
    assert DUAL_BINDS in want.because
    assert "bind-admits" not in want.because
    # 127.0.0.6 is the name of the probes' family, IPv4: the IPv4 primary pod IP's passthrough bind.
    assert source_addresses(DUAL, V4)[Source.INBOUND_PASSTHROUGH] == "127.0.0.6"


def test_a_loopback_app_fails_rewritten_probes_on_a_dual_pod_and_its_liveness_restarts_it() -> None:
    readiness = expect_probe(probe_cell(Profile.PASSTHROUGH, Bind.LOOPBACK, True))
    assert (readiness.ready, readiness.source) == (False, None)
    liveness = expect_probe(probe_cell(Profile.PASSTHROUGH, Bind.LOOPBACK, True, use=ProbeUse.LIVENESS))
    assert liveness.restarts
    assert liveness.because[0] == DUAL_PROBE_RULE
    startup = expect_probe(probe_cell(Profile.PASSTHROUGH, Bind.DUAL_WILDCARD, True, use=ProbeUse.STARTUP))
    assert (startup.ready, startup.restarts) == (True, False)


def test_legacy_probes_on_a_dual_pod() -> None:
    # The legacy destination: localhost from 127.0.0.6 (>= 1.10); 1.9-style: localhost with no bind.
    for bind, ready in ((Bind.LOOPBACK, True), (Bind.POD_IP, False), (Bind.WILDCARD, True), (Bind.DUAL_WILDCARD, True)):
        current = expect_probe(probe_cell(Profile.LEGACY, bind, True))
        assert current.ready is ready
        assert current.source is (ProbeSource.INBOUND_PASSTHROUGH if ready else None)
        assert "probe-agent-legacy-localhost" in current.because
        old = expect_probe(probe_cell(Profile.LEGACY, bind, True), probe_behaviour("1.9.9"))
        assert old.ready is ready
        assert old.source is (ProbeSource.LOCALHOST if ready else None)
        assert "probe-agent-1.9-localhost" in old.because
    # Unrewritten, the kubelet's probe to the IPv4 pod IP is captured and sent to 127.0.0.1 (dual-legacy rule).
    kubelet = expect_probe(probe_cell(Profile.LEGACY, Bind.DUAL_WILDCARD, False))
    assert (kubelet.ready, kubelet.source) == (True, ProbeSource.LOCALHOST)
    assert "dual-legacy-ipv4-localhost" in kubelet.because


def test_baseline_probes_on_a_dual_pod_come_from_the_kubelet() -> None:
    want = expect_probe(probe_cell(Profile.BASELINE, Bind.DUAL_WILDCARD, None, ProbeKind.TCP))
    assert (want.ready, want.source) == (True, ProbeSource.KUBELET)
    assert want.because[:3] == (DUAL_PROBE_RULE, "probe-kubelet-direct", DUAL_BINDS)
    assert not expect_probe(probe_cell(Profile.BASELINE, Bind.LOOPBACK, None)).ready


@pytest.mark.parametrize("version", [None, "1.9.9", "1.11.0", "1.17.0"], ids=lambda v: v or "current")
def test_a_dual_probe_cell_expects_what_the_ipv4_one_does(version: str | None) -> None:
    """The rule decides a dual cell in the IPv4 family: outcomes are the IPv4 twin's (dual_wildcard: wildcard's,
    which opens 0.0.0.0 in an IPv4 pod), only `because` differs (the dual rules)."""
    behaviour = probe_behaviour(version)
    for cell in probe_cells(DUAL_PROFILES, (DUAL,)):
        bind = Bind.WILDCARD if cell.bind is Bind.DUAL_WILDCARD else cell.bind
        want = expect_probe(cell, behaviour)
        twin = expect_probe(replace(cell, bind=bind, ip_family=V4), behaviour)
        assert replace(want, because=()) == replace(twin, because=()), cell.id
        assert want.because[0] == DUAL_PROBE_RULE
        assert "bind-admits" not in want.because
        for rule in want.because:
            assert rule in PROBE_RULES or rule in RULES, rule


def test_every_single_stack_probe_cell_is_unchanged_by_the_dual_rule() -> None:
    for cell in probe_cells(tuple(Profile), SINGLE_STACK):
        assert DUAL_PROBE_RULE not in expect_probe(cell).because
        assert not any(rule.startswith("dual-") for rule in expect_probe(cell).because)


def test_probe_peers_of_a_dual_pod_are_named_by_the_ipv4_family() -> None:
    from conformance.suite.probe_checks import classify_peer

    pod_ip = "10.244.0.7"
    assert classify_peer("127.0.0.6", pod_ip, DUAL) == "inbound_passthrough"
    assert classify_peer("127.0.0.1", pod_ip, DUAL) == "localhost"
    assert classify_peer("::6", pod_ip, DUAL) == "ipv6_inbound_passthrough"
    assert classify_peer("::1", pod_ip, DUAL) == "ipv6_localhost"
    assert classify_peer(pod_ip, pod_ip, DUAL) == "self"
    assert classify_peer("172.18.0.2", pod_ip, DUAL) == "kubelet"
    # Single-stack names as before.
    assert classify_peer("::6", "fd00::7", V6) == "inbound_passthrough"
    assert classify_peer("127.0.0.6", pod_ip, V4) == "inbound_passthrough"


def test_dual_probe_pods_carry_dual_wildcard_containers() -> None:
    from conformance.world.layout import World
    from conformance.world.probe_pods import (
        DUAL_WILDCARD_CONTAINERS,
        PROBED_CONTAINERS,
        probed_container,
        probed_containers,
    )

    assert probed_containers(V4) == probed_containers(V6) == PROBED_CONTAINERS
    dual = probed_containers(DUAL)
    assert dual == (*PROBED_CONTAINERS, *DUAL_WILDCARD_CONTAINERS)
    assert [c.port for c in DUAL_WILDCARD_CONTAINERS] == [8384, 9384, 8394, 8374]
    assert len({c.port for c in dual}) == len({c.control_port for c in dual}) == len({c.name for c in dual}) == 16
    for cell in probe_cells(DUAL_PROFILES, (DUAL,)):
        assert probed_container(cell).name == cell.container
    manifests = World(DUAL).probe_manifests()
    services = [m for m in manifests if m["kind"] == "Service"]
    deployments = [m for m in manifests if m["kind"] == "Deployment"]
    assert services
    for service in services:
        spec = service["spec"]
        assert isinstance(spec, dict)
        assert spec["ipFamilyPolicy"] == "RequireDualStack"
        assert {p["port"] for p in spec["ports"]} == {c.port for c in dual}
    for deployment in deployments:
        containers = deployment["spec"]["template"]["spec"]["containers"]  # type: ignore[index]
        assert "dual-wildcard-http" in [c["name"] for c in containers]
    single = [m for m in World(V4).probe_manifests() if m["kind"] == "Service"]
    assert all("ipFamilyPolicy" not in m["spec"] for m in single)  # type: ignore[operator]
