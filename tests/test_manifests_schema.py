"""Every manifest the kind backend applies, checked the way an API server would, offline.

1. Kubernetes objects against the OpenAPI-derived JSON schemas kubernetes-validate ships (strict: unknown fields
   fail), for the Kubernetes minor of every row of fixtures/versions.yaml.
2. The Sidecar (a CRD, absent from those schemas) against tests/data/istio-sidecar.schema.json, transcribed from
   istio/api's CRD plus istiod's validating webhook (the file's $comment says from where exactly); the
   DestinationRules against tests/data/istio-destinationrule.schema.json, likewise from Istio's CRD.
3. What the API server (or istiod's webhook) enforces that no schema can: unique Service port names and numbers,
   selectors matching pod template labels, DNS-1123 names, label syntax, requests within limits, downward-API paths,
   namespaces created before the objects in them.

The manifests are the world's, with the echo image set as the backend sets it (`<repository>:<12 hex of the
echo program's files>`), round-tripped through YAML as `kubectl apply -f -` receives them. test_kind_backend.py
and test_kind_plan.py check that the applied stream equals exactly this.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from conftest import ECHO_IMAGE
from kubernetes_validate import utils as kubernetes_validate

from conformance.spec.dimensions import SINGLE_STACK, IpFamily
from conformance.world.layout import World

REPO = Path(__file__).resolve().parents[1]
SIDECAR_SCHEMA = json.loads((REPO / "tests" / "data" / "istio-sidecar.schema.json").read_text())
DESTINATION_RULE_SCHEMA = json.loads((REPO / "tests" / "data" / "istio-destinationrule.schema.json").read_text())

# The Kubernetes minor of each row of fixtures/versions.yaml -> the schema version used. kubernetes-validate 1.37.0
# ships schemas for 1.25 to 1.37 only: 1.20 (the Istio 1.9 and 1.10 rows) is checked against 1.25, the oldest it
# has. Nothing the manifests use changed between 1.20 and 1.25 (apps/v1 Deployment, v1 Service with appProtocol,
# GA in 1.20; v1 Namespace); the 1.20-only rules the schemas would not catch anyway are checked by hand below.
SCHEMA_FOR_KUBERNETES = {"1.20": "1.25", "1.29": "1.29", "1.35": "1.35", "1.36": "1.36"}

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
QUALIFIED_NAME_PART = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
ENV_VAR_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
# Downward-API fields an env var may reference (apis/core/validation validEnvDownwardAPIFieldPathExpressions,
# Kubernetes 1.20; status.hostIPs only came in 1.28, so it is left out: the oldest cluster must accept them all).
ENV_FIELD_PATHS = {
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.podIP",
    "status.podIPs",
}


@functools.cache
def _dns1123_label(name: str) -> bool:
    return bool(DNS1123_LABEL.match(name)) and len(name) <= 63


def _dns1035_label(name: str) -> bool:
    return bool(DNS1035_LABEL.match(name)) and len(name) <= 63


def _dns1123_subdomain(name: str) -> bool:
    return bool(DNS1123_SUBDOMAIN.match(name)) and len(name) <= 253


def _label_value(value: str) -> bool:
    return bool(LABEL_VALUE.match(value)) and len(value) <= 63


def applied(family: IpFamily) -> list[dict[str, Any]]:
    """The stream `kubectl apply -f -` receives, parsed (shared between tests: copy before changing it)."""
    text = yaml.safe_dump_all(
        [dict(m) for m in World(family, image=ECHO_IMAGE, tproxy=True).manifests()], sort_keys=False
    )
    return list(yaml.safe_load_all(text))


def kubernetes_objects(family: IpFamily) -> list[dict[str, Any]]:
    return [m for m in applied(family) if m["apiVersion"] != "networking.istio.io/v1beta1"]


def sidecars(family: IpFamily) -> list[dict[str, Any]]:
    return [m for m in applied(family) if m["kind"] == "Sidecar"]


def ident(m: dict[str, Any]) -> str:
    return f"{m['kind']} {m['metadata'].get('namespace', '')}/{m['metadata']['name']}"


FAMILIES = list(SINGLE_STACK)


# --- 1. Kubernetes schemas ------------------------------------------------------------------------------------------


def test_every_row_s_kubernetes_version_has_a_schema() -> None:
    rows = yaml.safe_load((REPO / "fixtures" / "versions.yaml").read_text())["rows"]
    assert {str(r["kubernetes"]) for r in rows} == set(SCHEMA_FOR_KUBERNETES)
    shipped = {v.rsplit(".", 1)[0] for v in kubernetes_validate.all_versions()}
    assert set(SCHEMA_FOR_KUBERNETES.values()) <= shipped
    # If a later kubernetes-validate ships 1.20, use it instead of 1.25 (and drop the note above).
    assert "1.20" not in shipped


@pytest.mark.parametrize("family", FAMILIES, ids=str)
@pytest.mark.parametrize("kubernetes", sorted(SCHEMA_FOR_KUBERNETES))
def test_kubernetes_objects_validate_strictly(family: IpFamily, kubernetes: str) -> None:
    objects = kubernetes_objects(family)
    # baseline server and client, meshed client, one meshed server per Sidecar situation (seven), one per capture
    # setting (excluded, not included), the two TPROXY servers, and the probe pods (baseline, rewrite on and off).
    assert [m["kind"] for m in objects].count("Deployment") == 10 + 2 + 2 + 3
    for manifest in objects:
        try:
            used = kubernetes_validate.validate(manifest, SCHEMA_FOR_KUBERNETES[kubernetes], strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{ident(manifest)} on Kubernetes {kubernetes}: {err.message} at {list(err.absolute_path)}")
        assert used == SCHEMA_FOR_KUBERNETES[kubernetes]


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (
            lambda d: d["spec"]["template"]["spec"]["containers"][0].update(imagePullPolicyy="Always"),
            "imagePullPolicyy",
        ),
        (lambda d: d["spec"].update(replicas="1"), "'1' is not of type 'integer'"),
        (lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("name"), "'name' is a required property"),
    ],
    ids=["unknown field", "wrong type", "missing name"],
)
def test_strict_schemas_do_reject_a_broken_deployment(change: Any, error: str) -> None:
    deployment = copy.deepcopy(next(m for m in kubernetes_objects(IpFamily.IPV4) if m["kind"] == "Deployment"))
    change(deployment)
    with pytest.raises(kubernetes_validate.ValidationError) as raised:
        kubernetes_validate.validate(deployment, "1.25", strict=True)
    assert error in raised.value.message


# --- 2. the Sidecar CRD -----------------------------------------------------------------------------------------


def test_the_sidecar_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SIDECAR_SCHEMA)


@pytest.mark.parametrize("family", FAMILIES, ids=str)
def test_sidecars_validate_against_istio_s_crd_and_webhook_rules(family: IpFamily) -> None:
    found = sidecars(family)
    assert [s["metadata"]["name"] for s in found] == [
        "echo-localhost",
        "echo-instance",
        "echo-localhost-cross",
        "echo-instance-cross",
        "echo-empty",
        "echo-unlisted",
        "echo-tproxy-instance",
    ]
    validator = jsonschema.Draft202012Validator(SIDECAR_SCHEMA)
    for sidecar in found:
        problems = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(sidecar)]
        assert problems == [], ident(sidecar)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("ingress", 0, "defaultEndpoint"), "10.0.0.7:8081"),  # arbitrary IPs are not accepted
        (("ingress", 0, "defaultEndpoint"), "127.0.0.1:0"),
        (("ingress", 0, "port", "number"), 0),
        (("ingress", 0, "port", "number"), 70000),
        (("ingress", 0, "port", "protocol"), "QUIC"),
        (("ingress", 0, "port", "name"), "HTTP_Loopback"),
        (("ingress", 0, "captureMode"), "REDIRECT"),
        (("workloadSelector", "labels", "app"), "echo-*"),
        (("ingress", 0, "defaultEndpointt"), "127.0.0.1:8081"),
    ],
)
def test_the_sidecar_schema_rejects_what_istio_rejects(path: tuple[Any, ...], value: object) -> None:
    sidecar = copy.deepcopy(sidecars(IpFamily.IPV4)[0])
    target: Any = sidecar["spec"]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert not jsonschema.Draft202012Validator(SIDECAR_SCHEMA).is_valid(sidecar)


def test_the_destination_rule_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(DESTINATION_RULE_SCHEMA)


@pytest.mark.parametrize("family", FAMILIES, ids=str)
def test_destination_rules_validate_and_name_their_server_s_service(family: IpFamily) -> None:
    """The capture servers' DestinationRules (auto-mTLS off, istio/istio#30311): valid, one per such Service."""
    objects = applied(family)
    rules = [m for m in objects if m["kind"] == "DestinationRule"]
    assert [r["metadata"]["name"] for r in rules] == ["echo-excluded", "echo-not-included"]
    services = {(m["metadata"]["namespace"], m["metadata"]["name"]) for m in objects if m["kind"] == "Service"}
    validator = jsonschema.Draft202012Validator(DESTINATION_RULE_SCHEMA)
    for rule in rules:
        assert [e.message for e in validator.iter_errors(rule)] == [], ident(rule)
        name, namespace = rule["metadata"]["name"], rule["metadata"]["namespace"]
        assert (namespace, name) in services
        assert rule["spec"]["host"] == f"{name}.{namespace}.svc.cluster.local"
        assert rule["spec"]["trafficPolicy"] == {"tls": {"mode": "DISABLE"}}


@pytest.mark.parametrize(
    ("path", "value"),
    [(("trafficPolicy", "tls", "mode"), "OFF"), (("hostt",), "x"), (("trafficPolicy", "tls", "sni"), 1)],
)
def test_the_destination_rule_schema_rejects_what_istio_rejects(path: tuple[str, ...], value: object) -> None:
    rule = copy.deepcopy(next(m for m in applied(IpFamily.IPV4) if m["kind"] == "DestinationRule"))
    target: Any = rule["spec"]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert not jsonschema.Draft202012Validator(DESTINATION_RULE_SCHEMA).is_valid(rule)


# --- 3. what the API server enforces beyond the schemas ---------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES, ids=str)
def test_names_are_dns_names(family: IpFamily) -> None:
    for m in applied(family):
        name = m["metadata"]["name"]
        if m["kind"] == "Namespace":
            assert _dns1123_label(name), ident(m)
        elif m["kind"] == "Service":
            assert _dns1035_label(name), ident(m)  # a Service name must start with a letter
        else:
            assert _dns1123_subdomain(name), ident(m)
        namespace = m["metadata"].get("namespace")
        assert (m["kind"] == "Namespace") == (namespace is None), ident(m)


@pytest.mark.parametrize("family", FAMILIES, ids=str)
def test_objects_are_unique_and_their_namespaces_come_first(family: IpFamily) -> None:
    seen: set[tuple[str, str, str]] = set()
    namespaces: set[str] = set()
    for m in applied(family):
        key = (m["kind"], m["metadata"].get("namespace", ""), m["metadata"]["name"])
        assert key not in seen, ident(m)
        seen.add(key)
        if m["kind"] == "Namespace":
            namespaces.add(m["metadata"]["name"])
        else:
            assert m["metadata"]["namespace"] in namespaces, f"{ident(m)} precedes its Namespace"


def _qualified_name(key: str) -> bool:
    prefix, slash, name = key.rpartition("/")
    if slash and not _dns1123_subdomain(prefix):
        return False
    return bool(QUALIFIED_NAME_PART.match(name)) and len(name) <= 63


@pytest.mark.parametrize("family", FAMILIES, ids=str)
def test_labels_selectors_and_annotations_are_well_formed(family: IpFamily) -> None:
    for m in applied(family):
        metas = [m["metadata"]]
        if m["kind"] == "Deployment":
            metas.append(m["spec"]["template"]["metadata"])
        for meta in metas:
            for key, value in meta.get("labels", {}).items():
                assert _qualified_name(key), f"{ident(m)}: label key {key!r}"
                assert _label_value(value), f"{ident(m)}: label {key}={value!r}"
            for key, value in meta.get("annotations", {}).items():
                assert _qualified_name(key), f"{ident(m)}: annotation key {key!r}"
                assert isinstance(value, str), f"{ident(m)}: annotation {key} must be a string"


@pytest.mark.parametrize("family", FAMILIES, ids=str)
def test_deployment_selectors_match_their_pod_templates(family: IpFamily) -> None:
    for d in (m for m in applied(family) if m["kind"] == "Deployment"):
        selector = d["spec"]["selector"]["matchLabels"]
        template = d["spec"]["template"]["metadata"]["labels"]
        assert selector, ident(d)  # an empty selector is rejected for apps/v1
        assert selector.items() <= template.items(), f"{ident(d)}: `selector` does not match template `labels`"


@pytest.mark.parametrize("family", FAMILIES, ids=str)
def test_every_service_and_sidecar_selects_exactly_its_own_server(family: IpFamily) -> None:
    """Not an API-server rule, but a Service selecting no pod has no endpoints, and one selecting two would mix
    servers: each selects the pods of the Deployment of the same name, and nothing else."""
    objects = applied(family)
    deployments = [m for m in objects if m["kind"] == "Deployment"]
    for m in objects:
        if m["kind"] not in ("Service", "Sidecar"):
            continue
        selector = m["spec"]["selector"] if m["kind"] == "Service" else m["spec"]["workloadSelector"]["labels"]
        selected = [
            d["metadata"]["name"]
            for d in deployments
            if d["metadata"]["namespace"] == m["metadata"]["namespace"]
            and selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert selected == [m["metadata"]["name"]], ident(m)


def _is_port_name(name: str) -> bool:
    """IANA_SVC_NAME (validation.IsValidPortName): at most 15 of [-a-z0-9], a letter, no leading/trailing/double -."""
    return (
        len(name) <= 15
        and bool(re.fullmatch(r"[-a-z0-9]+", name))
        and bool(re.search(r"[a-z]", name))
        and "--" not in name
        and not name.startswith("-")
        and not name.endswith("-")
    )


@pytest.mark.parametrize("family", FAMILIES, ids=str)
def test_service_ports_are_unique_and_named(family: IpFamily) -> None:
    for s in (m for m in applied(family) if m["kind"] == "Service"):
        ports = s["spec"]["ports"]
        names = [p.get("name") for p in ports]
        assert all(names) or len(ports) == 1, f"{ident(s)}: with several ports, every port needs a name"
        assert len(set(names)) == len(names), f"{ident(s)}: duplicate port names {names}"
        numbers = [(p["port"], p.get("protocol", "TCP")) for p in ports]
        assert len(set(numbers)) == len(numbers), f"{ident(s)}: duplicate ports {numbers}"
        for p in ports:
            assert _dns1123_label(p["name"]), f"{ident(s)}: port name {p['name']!r}"
            assert 1 <= p["port"] <= 65535, ident(s)
            assert 1 <= p["targetPort"] <= 65535, ident(s)
            # appProtocol must be a qualified name (apis/core/validation, Kubernetes >= 1.20).
            assert _qualified_name(p["appProtocol"]), f"{ident(s)}: appProtocol {p['appProtocol']!r}"
        # Istio picks the protocol from the name prefix (http-, tcp-): it must agree with appProtocol.
        for p in ports:
            assert p["name"].split("-")[0] == p["appProtocol"], f"{ident(s)}: {p['name']} vs {p['appProtocol']}"


def _quantity(text: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "m": 1e-3, "": 1}
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", text).groups()  # type: ignore[union-attr]
    return float(number) * units[unit]


@pytest.mark.parametrize("family", FAMILIES, ids=str)
def test_containers_are_valid_for_the_api_server_and_kubelet(family: IpFamily) -> None:
    for d in (m for m in applied(family) if m["kind"] == "Deployment"):
        containers = d["spec"]["template"]["spec"]["containers"]
        names = [c["name"] for c in containers]
        assert len(set(names)) == len(names), ident(d)
        for c in containers:
            assert _dns1123_label(c["name"]), ident(d)
            assert c["image"] == ECHO_IMAGE, ident(d)
            port_numbers = [p["containerPort"] for p in c.get("ports", [])]
            for p in c.get("ports", []):
                assert _is_port_name(p["name"]), f"{ident(d)}: container port name {p['name']!r}"
                assert 1 <= p["containerPort"] <= 65535, ident(d)
            for env in c.get("env", []):
                assert ENV_VAR_NAME.match(env["name"]), f"{ident(d)}: env {env['name']!r}"
                path = env.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
                if path is not None:
                    assert path in ENV_FIELD_PATHS, f"{ident(d)}: env {env['name']} from unsupported field {path!r}"
            requests, limits = c["resources"].get("requests", {}), c["resources"].get("limits", {})
            for resource, limit in limits.items():
                if resource in requests:
                    assert _quantity(requests[resource]) <= _quantity(limit), f"{ident(d)}: {resource} request > limit"
            probes = [c[f] for f in ("readinessProbe", "livenessProbe", "startupProbe") if f in c]
            assert len(probes) == 1, f"{ident(d)}: container {c['name']}: one probe (readiness, liveness or startup)"
            for probe in probes:
                probe_port = (probe.get("httpGet") or probe["tcpSocket"])["port"]
                assert probe_port in port_numbers, f"{ident(d)}: probe on undeclared port {probe_port}"
                # The API server's validation: a liveness or startup probe's successThreshold must be 1.
                assert probe.get("successThreshold", 1) == 1 or "readinessProbe" in c, ident(d)
            security = c.get("securityContext", {})
            if security.get("runAsNonRoot"):
                assert security.get("runAsUser", 0) != 0, f"{ident(d)}: runAsNonRoot with uid 0 never starts"
            # uid 1337 is the sidecar's: Istio excludes its traffic from capture (IST0144 InvalidApplicationUID).
            assert security.get("runAsUser") != 1337, ident(d)


@pytest.mark.parametrize("family", FAMILIES, ids=str)
def test_sidecar_ingress_ports_are_unique_and_declared_by_its_service(family: IpFamily) -> None:
    services = {
        (m["metadata"]["namespace"], m["metadata"]["name"]): m for m in applied(family) if m["kind"] == "Service"
    }
    for sidecar in sidecars(family):
        numbers = [i["port"]["number"] for i in sidecar["spec"]["ingress"]]
        # istiod's webhook: "sidecar: ports on IP bound listeners must be unique".
        assert len(set(numbers)) == len(numbers), ident(sidecar)
        service = services[(sidecar["metadata"]["namespace"], sidecar["metadata"]["name"])]
        # A Sidecar ingress port.number is the container (target) port, not the Service port (reference §4,
        # istio/istio#42482, #42532): match it against each Service port's targetPort.
        declared = {p["targetPort"]: p["name"] for p in service["spec"]["ports"]}
        for listener in sidecar["spec"]["ingress"]:
            port = listener["port"]
            assert declared.get(port["number"]) == port["name"], f"{ident(sidecar)}: port {port}"
