"""Fake kind, istioctl and docker, and the cluster model, for the kind backend's own tests (standard library only).

Run as `python3 fakebin.py TOOL ARGS...`, or `main(["fakebin", TOOL, *ARGS])` from a wrapper that imports this
module (so Python reuses its compiled bytecode: a test run starts this program hundreds of times).
Every invocation appends one JSON line `{"tool", "argv", "stdin"}` to $FAKE_LOG, then answers the way the real
tool would, keeping a small cluster model in $FAKE_STATE (a JSON file): kind clusters, the images docker built,
whether Istio is installed, the objects applied, and a generation per namespace that a rollout restart bumps
(new ReplicaSet hash, new pod names and IPs, as after a real restart). The backend runs no kubectl: its API calls
go to tests/fakes/kind_api.py, an HTTP server in front of this same model (the functions below).

Pods are derived from the applied Deployments: Running and ready, named `<app>-<template hash>-<suffix>`, with IPs in
the family $FAKE_FAMILY (ipv4, ipv6 or dual; unset: the kind cluster config's `ipFamily`), and an `istio-proxy`
container when the namespace is labelled istio-injection=enabled (unless $FAKE_NO_INJECTION is set: the webhook
"did not run"). As Istio injects: the init container is istio-init, or istio-validation once the ambient profile
(istio-cni) is installed; the proxy image is HUB/proxyv2:TAG with the install's variant (`--set
values.global.variant=V`, else distroless under the ambient profile, as its values set), and a distroless proxy has
no `ss` (exec fails as runc reports it). Services get a ClusterIP of each family on a dual-stack cluster when they
ask for it (ipFamilyPolicy RequireDualStack or PreferDualStack), else one.

Knobs (environment):
  FAKE_LOG, FAKE_STATE        the log and the state file (required)
  FAKE_FAMILY                 ipv4, ipv6, dual (default: the kind cluster's ipFamily, else ipv4)
  FAKE_NO_INJECTION           set: no sidecar is injected anywhere
  FAKE_ISTIOCTL_VERSION       what `istioctl version --remote=false` prints (default: from the wrapper name)
  FAKE_PRECHECK_DIR           a directory with stdout.txt, stderr.txt and exit_code for `istioctl x precheck`
                              (default: no issues)
  FAKE_FAIL                   a substring of "TOOL ARG ARG..."; a matching command fails with
  FAKE_FAIL_EXIT, FAKE_FAIL_STDERR   this exit status (default 1) and stderr (default "fake failure")
  FAKE_TERMINATING            N: the first N pod listings of an injected namespace also hold a Terminating pod
  FAKE_PROBE_OUTPUT           set: `echo.py probe` prints this text instead of results
  FAKE_NOT_READY              container names (comma-separated): just started, not ready
  FAKE_RESTARTING             container names (comma-separated): killed by a failing liveness or startup probe,
                              restartCount 3, waiting in CrashLoopBackOff
  FAKE_API_URL                the fake API server's URL (kind_api.py): the kubeconfig kind writes points there
                              (plain HTTP, a bearer token); required by kind create cluster / get kubeconfig
The knobs are read from the mapping `ENV` (os.environ unless an in-process user such as kind_api.py replaces it).
Unknown commands exit 1 with a message on stderr, so a test notices a command it did not expect.
"""

from __future__ import annotations

import os
import sys
import zlib

# Every command of a test run starts this program, so it imports as little as it can: no typing, no pathlib, and
# neither json nor re (which json imports) on the common paths: importing them would double its start-up time.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import MutableMapping
    from re import Pattern
    from typing import Any

# Where the knobs below are read: the process's environment, or a mapping an in-process user (the fake API server
# of kind_api.py) puts here; it may change between two calls.
ENV: MutableMapping[str, str] = os.environ

# --- JSON, small and sufficient (the state file, the log) -----------------------------------------------------------

_ESCAPES = {ord('"'): '\\"', ord("\\"): "\\\\", **{i: f"\\u{i:04x}" for i in range(32)}}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", ord("\b"): "\\b", ord("\f"): "\\f"})
_UNESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _json_string(text: str) -> str:
    return '"' + text.translate(_ESCAPES) + '"'


def to_json(value: Any, indent: int | None = None, level: int = 0) -> str:
    """JSON text for dicts, lists, strings, numbers, booleans and None (like json.dumps, non-ASCII kept)."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _json_string(value)
    if isinstance(value, dict):
        items = [f"{_json_string(str(k))}: {to_json(v, indent, level + 1)}" for k, v in value.items()]
        brackets = "{}"
    elif isinstance(value, list | tuple):
        items = [to_json(v, indent, level + 1) for v in value]
        brackets = "[]"
    else:
        raise TypeError(f"not JSON: {value!r}")
    if not items:
        return brackets
    if indent is None:
        return brackets[0] + ", ".join(items) + brackets[1]
    inner, outer = "\n" + " " * (indent * (level + 1)), "\n" + " " * (indent * level)
    return brackets[0] + inner + ("," + inner).join(items) + outer + brackets[1]


def from_json(text: str) -> Any:
    """The value of a JSON document (ValueError if it is not one)."""
    try:
        value, end = _json_value(text, _json_space(text, 0))
    except (IndexError, KeyError) as exc:
        raise ValueError(f"not JSON: {text[:60]!r}") from exc
    if _json_space(text, end) != len(text):
        raise ValueError(f"not JSON (trailing data): {text[:60]!r}")
    return value


def _json_space(text: str, at: int) -> int:
    while at < len(text) and text[at] in " \t\r\n":
        at += 1
    return at


def _json_value(text: str, at: int) -> tuple[Any, int]:
    char = text[at]
    if char == '"':
        return _json_str(text, at + 1)
    if char in "{[":
        closing, out_dict, out_list = "}" if char == "{" else "]", {}, []
        at = _json_space(text, at + 1)
        while text[at] != closing:
            if char == "{":
                key, at = _json_str(text, _json_space(text, at) + 1)
                at = _json_space(text, at)
                if text[at] != ":":
                    raise ValueError(f"not JSON: expected ':' at {at}")
                out_dict[key], at = _json_value(text, _json_space(text, at + 1))
            else:
                item, at = _json_value(text, at)
                out_list.append(item)
            at = _json_space(text, at)
            if text[at] == ",":
                at = _json_space(text, at + 1)
            elif text[at] != closing:
                raise ValueError(f"not JSON: expected ',' or {closing!r} at {at}")
        return (out_dict if char == "{" else out_list), at + 1
    for word, value in (("true", True), ("false", False), ("null", None)):
        if text.startswith(word, at):
            return value, at + len(word)
    end = at
    while end < len(text) and text[end] in "+-0123456789.eE":
        end += 1
    number = text[at:end]
    if not number:
        raise ValueError(f"not JSON: unexpected {char!r} at {at}")
    return (float(number) if any(c in number for c in ".eE") else int(number)), end


def _json_str(text: str, at: int) -> tuple[str, int]:
    out = []
    while True:
        quote, backslash = text.index('"', at), text.find("\\", at)
        if backslash == -1 or backslash > quote:
            out.append(text[at:quote])
            return "".join(out), quote + 1
        out.append(text[at:backslash])
        escape = text[backslash + 1]
        if escape == "u":
            code = int(text[backslash + 2 : backslash + 6], 16)
            at = backslash + 6
            if 0xD800 <= code < 0xDC00 and text.startswith("\\u", at):  # a surrogate pair
                code = 0x10000 + ((code - 0xD800) << 10) + (int(text[at + 2 : at + 6], 16) - 0xDC00)
                at += 6
            out.append(chr(code))
        else:
            out.append(_UNESCAPES[escape])
            at = backslash + 2


# --- a YAML reader for what `yaml.safe_dump_all` writes (block style; no anchors, tags or block scalars) -----------

_PATTERNS: dict[str, Pattern[str]] = {}


def _pattern(name: str) -> Pattern[str]:
    """The reader's regular expressions, compiled on first use (only YAML bodies need them)."""
    if not _PATTERNS:
        import re

        _PATTERNS["key"] = re.compile(
            r"""^(?P<key>'(?:[^']|'')*'|"(?:[^"\\]|\\.)*"|[^\s'"#\-][^:]*?|-[^\s:][^:]*?)\s*:(?:\s+(?P<rest>.*))?$"""
        )
        _PATTERNS["int"] = re.compile(r"^[-+]?(0|[1-9][0-9]*)$")
        _PATTERNS["float"] = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+\.[0-9]*)([eE][-+]?[0-9]+)?$")
    return _PATTERNS[name]


class YamlError(ValueError):
    """Input outside the subset this reader understands."""


def _scalar(text: str) -> Any:
    text = text.strip()
    if text.startswith("'"):
        if not text.endswith("'") or len(text) < 2:
            raise YamlError(f"unterminated quoted scalar {text!r}")
        return text[1:-1].replace("''", "'")
    if text.startswith('"'):
        return from_json(text)
    if text in ("{}", "[]"):
        return {} if text == "{}" else []
    if text[:1] in "{[&*!|>":
        raise YamlError(f"unsupported YAML construct {text!r}")
    if text in ("null", "~", "Null", "NULL", ""):
        return None
    if text in ("true", "True", "TRUE"):
        return True
    if text in ("false", "False", "FALSE"):
        return False
    if _pattern("int").match(text):
        return int(text)
    if _pattern("float").match(text):
        return float(text)
    return text


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


class _Lines:
    def __init__(self, text: str) -> None:
        self.lines = [ln.rstrip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        self.i = 0

    def peek(self) -> str | None:
        return self.lines[self.i] if self.i < len(self.lines) else None

    def block(self, indent: int) -> Any:
        line = self.peek()
        assert line is not None
        body = line[indent:]
        if body == "-" or body.startswith("- "):
            return self.sequence(indent)
        return self.mapping(indent)

    def _value(self, rest: str, indent: int) -> Any:
        # A plain or quoted scalar may continue on more-indented lines (folded with spaces).
        parts = [rest]
        while (nxt := self.peek()) is not None and _indent(nxt) > indent:
            parts.append(nxt.strip())
            self.i += 1
        return _scalar(" ".join(parts))

    def _nested(self, indent: int) -> Any:
        nxt = self.peek()
        if nxt is None:
            return None
        deeper = _indent(nxt)
        if deeper > indent:
            return self.block(deeper)
        if deeper == indent and (nxt[indent:] == "-" or nxt[indent:].startswith("- ")):
            return self.sequence(indent)  # PyYAML writes a mapping's sequence at the key's own indent
        return None

    def mapping(self, indent: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        while (line := self.peek()) is not None and _indent(line) == indent:
            body = line[indent:]
            if body == "-" or body.startswith("- "):
                break
            match = _pattern("key").match(body)
            if match is None:
                raise YamlError(f"expected `key: value`, got {line!r}")
            key = _scalar(match["key"])
            self.i += 1
            rest = match["rest"]
            out[str(key)] = self._value(rest, indent) if rest else self._nested(indent)
        return out

    def sequence(self, indent: int) -> list[Any]:
        out: list[Any] = []
        while (line := self.peek()) is not None and _indent(line) == indent:
            body = line[indent:]
            if not (body == "-" or body.startswith("- ")):
                break
            rest = body[2:]
            if not rest.strip():
                self.i += 1
                out.append(self._nested(indent))
            elif _pattern("key").match(rest) or rest.startswith("- "):
                # `- key: value` opens a mapping (or `- - x` a sequence) two columns further in.
                self.lines[self.i] = " " * (indent + 2) + rest
                out.append(self.block(indent + 2))
            else:
                self.i += 1
                out.append(self._value(rest, indent))
        return out


def load_yaml_stream(text: str) -> list[Any]:
    """The documents of a `---`-separated block-style YAML stream (empty documents dropped)."""
    docs: list[list[str]] = [[]]
    for line in text.splitlines():
        if line.rstrip() in ("---", "..."):
            docs.append([])
        else:
            docs[-1].append(line)
    out = []
    for lines in docs:
        reader = _Lines("\n".join(lines))
        if reader.peek() is None:
            continue
        value = reader.block(_indent(reader.lines[0]))
        if reader.peek() is not None:
            raise YamlError(f"unexpected line {reader.peek()!r}")
        out.append(value)
    return out


# --- the cluster model ----------------------------------------------------------------------------------------------

# A restart makes a new ReplicaSet: another template hash, so new pod names.
TEMPLATE_HASHES = ("5d9c8b7f6", "7f6d5c9b8", "6b8f7d5c9", "9c7b6f8d5")
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what Kubernetes draws pod name suffixes from
PROXY_LISTENERS = (("127.0.0.1", 15000), ("*", 15001), ("*", 15006), ("*", 15021), ("*", 15090))
STARTED_AT = "2026-11-30T03:00:00Z"  # when every container of the model started
AMBIENT_DAEMONSETS = ("istio-cni-node", "ztunnel")  # istio-system's DaemonSets, with the ambient overlay only


class Failure(Exception):
    """The command fails: this stderr, this exit status."""

    def __init__(self, stderr: str, code: int = 1) -> None:
        super().__init__(stderr)
        self.stderr = stderr
        self.code = code


class NotFound(Failure):
    """An object (or a kind) the cluster does not have: `message` is the API server's Status message."""

    def __init__(self, stderr: str, message: str) -> None:
        super().__init__(stderr)
        self.message = message


class ExitWithOutput(Exception):
    """The command prints this on stdout and still exits non-zero (istioctl x precheck with findings)."""

    def __init__(self, stdout: str, code: int) -> None:
        super().__init__(stdout)
        self.stdout = stdout
        self.code = code


def read(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def load_state(path: str | None = None, text: dict[str, Any] | None = None) -> dict[str, Any]:
    """The cluster model in the state file (default $FAKE_STATE), or already parsed (`text`); none is empty."""
    path = path or ENV["FAKE_STATE"]
    if text is None:
        text = from_json(read(path)) if os.path.exists(path) else {}
    state: dict[str, Any] = text
    state.setdefault("clusters", [])
    state.setdefault("images", [])
    state.setdefault("istio", None)
    state.setdefault("objects", [])
    state.setdefault("generation", {})
    return state


def save_state(state: dict[str, Any], path: str | None = None) -> None:
    """Replace the state file (default $FAKE_STATE) at once: a reader never sees half of it."""
    path = path or ENV["FAKE_STATE"]
    scratch = f"{path}.{os.getpid()}"
    write(scratch, to_json(state, indent=1))
    os.replace(scratch, path)


def objects(state: dict[str, Any], kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
    return [
        o
        for o in state["objects"]
        if o.get("kind") == kind and (namespace is None or o["metadata"].get("namespace") == namespace)
    ]


def injected(state: dict[str, Any], namespace: str) -> bool:
    if ENV.get("FAKE_NO_INJECTION"):
        return False
    for ns in objects(state, "Namespace"):
        if ns["metadata"]["name"] == namespace:
            return ns["metadata"].get("labels", {}).get("istio-injection") == "enabled"
    return False


def enrolled(state: dict[str, Any], namespace: str) -> bool:
    """Whether istio-cni (the ambient profile) has enrolled the namespace's pods: its dataplane-mode label."""
    for ns in objects(state, "Namespace"):
        if ns["metadata"]["name"] == namespace:
            return ambient(state) and ns["metadata"].get("labels", {}).get("istio.io/dataplane-mode") == "ambient"
    return False


def cluster_family(cluster: dict[str, Any]) -> str:
    """A kind cluster's family: its config's `ipFamily` (a seeded cluster may give `family` instead), else ipv4."""
    config = str(cluster.get("config") or "")
    for family in ("ipv6", "dual"):
        if cluster.get("family") == family or f"ipFamily: {family}" in config:
            return family
    return "ipv4"


def _family(state: dict[str, Any]) -> str:
    family = ENV.get("FAKE_FAMILY") or (cluster_family(state["clusters"][0]) if state.get("clusters") else "ipv4")
    if family not in ("ipv4", "ipv6", "dual"):
        raise Failure(f"fakebin: FAKE_FAMILY={family!r}")
    return family


def _addresses(state: dict[str, Any], index: int, v4_prefix: str, v6_prefix: str) -> list[str]:
    v4, v6 = f"{v4_prefix}.{10 + index}", f"{v6_prefix}::{10 + index:x}"
    return {"ipv4": [v4], "ipv6": [v6], "dual": [v4, v6]}[_family(state)]


def ambient(state: dict[str, Any]) -> bool:
    """Whether the installed Istio has the ambient profile (its DaemonSets istio-cni-node and ztunnel)."""
    istio = state["istio"]
    return bool(istio) and "ambient.yaml" in istio.get("overlays", [])


def pods(state: dict[str, Any], namespace: str) -> list[dict[str, Any]]:
    """One Running, ready pod per Deployment of the namespace, as the API lists them.

    Its containers are the template's (the whole spec), then the injected proxy's.
    """
    deployments = objects(state, "Deployment")
    generation = state["generation"].get(namespace, 0)
    out = []
    for index, deployment in enumerate(deployments):
        meta = deployment["metadata"]
        if meta.get("namespace") != namespace:
            continue
        template = deployment["spec"]["template"]
        app = meta["name"]
        template_hash = TEMPLATE_HASHES[generation % len(TEMPLATE_HASHES)]
        seed = zlib.crc32(f"{namespace}/{app}/{generation}".encode())
        suffix = "".join(_SUFFIX_ALPHABET[(seed >> (5 * k)) % len(_SUFFIX_ALPHABET)] for k in range(5))
        ips = _addresses(state, index + 20 * generation, "10.244.0", "fd00:10:244")
        containers = [{**c, "image": c.get("image", "")} for c in template["spec"]["containers"]]
        init: list[dict[str, Any]] = []
        labels = {**template["metadata"].get("labels", {}), "pod-template-hash": template_hash}
        if injected(state, namespace):
            istio = state["istio"] or {}
            variant = istio.get("variant", "")
            tag = istio.get("tag", "") + (f"-{variant}" if variant and variant != "default" else "")
            proxy_image = f"{istio.get('hub', 'docker.io/istio')}/proxyv2:{tag}"
            containers.append({"name": "istio-proxy", "image": proxy_image, "args": ["proxy", "sidecar"]})
            if ambient(state):  # istio-cni writes the rules; the init container only checks them
                init.append(
                    {"name": "istio-validation", "image": proxy_image, "args": ["istio-iptables", "--run-validation"]}
                )
            else:
                init.append({"name": "istio-init", "image": proxy_image, "args": ["istio-iptables"]})
            labels["security.istio.io/tlsMode"] = "istio"
        annotations = dict(template["metadata"].get("annotations", {}))
        if enrolled(state, namespace) and not injected(state, namespace):
            annotations["ambient.istio.io/redirection"] = "enabled"  # what istio-cni writes once it has enrolled it
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"{app}-{template_hash}-{suffix}",
                    "namespace": namespace,
                    "labels": labels,
                    "annotations": annotations,
                },
                "spec": {"containers": containers, "initContainers": init},
                "status": {
                    "phase": "Running",
                    "podIP": ips[0],
                    "podIPs": [{"ip": ip} for ip in ips],
                    "containerStatuses": [container_status(c) for c in containers],
                },
            }
        )
    return out


def container_status(container: dict[str, Any]) -> dict[str, Any]:
    """A container that started at STARTED_AT, is running and ready; one named in $FAKE_NOT_READY has just
    started and is not ready (its readiness probe has not had its chances yet)."""
    started, ready = STARTED_AT, True
    if container["name"] in ENV.get("FAKE_NOT_READY", "").split(","):
        import time  # only here: the common path imports as little as it can

        started, ready = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), False
    if container["name"] in ENV.get("FAKE_RESTARTING", "").split(","):
        # As the API server shows a container its liveness probe keeps killing, between two runs.
        return {
            "name": container["name"],
            "image": container["image"],
            "imageID": "",
            "ready": False,
            "started": False,
            "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}},
            "lastState": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": STARTED_AT}},
        }
    return {
        "name": container["name"],
        "image": container["image"],
        "imageID": "",
        "ready": ready,
        "started": True,
        "restartCount": 0,
        "state": {"running": {"startedAt": started}},
    }


def listed_pods(state: dict[str, Any], namespace: str) -> list[dict[str, Any]]:
    """What one listing of the namespace's pods shows: pods(), plus, for the first $FAKE_TERMINATING listings of an
    injected namespace, a pod of the previous generation that is still Terminating (after a rollout restart)."""
    items = pods(state, namespace)
    left = int(ENV.get("FAKE_TERMINATING", "0")) - state.get("terminating_listed", 0)
    if items and left > 0 and injected(state, namespace):
        state["terminating_listed"] = state.get("terminating_listed", 0) + 1
        gone = from_json(to_json(items[0]))
        gone["metadata"]["name"] = gone["metadata"]["name"].rsplit("-", 2)[0] + "-6f7d9c8b5-old00"
        gone["metadata"]["deletionTimestamp"] = "2026-11-30T03:20:00Z"
        items = [*items, gone]
    return items


def services(state: dict[str, Any], namespace: str) -> list[dict[str, Any]]:
    out = []
    for index, service in enumerate(objects(state, "Service")):
        if service["metadata"].get("namespace") != namespace:
            continue
        ips = _addresses(state, index, "10.96.0", "fd00:10:96")
        if service["spec"].get("ipFamilyPolicy") not in ("RequireDualStack", "PreferDualStack"):
            ips = ips[:1]  # Services stay single-stack unless asked
        spec = {**service["spec"], "clusterIP": ips[0], "clusterIPs": ips, "type": "ClusterIP"}
        out.append({"apiVersion": "v1", "kind": "Service", "metadata": service["metadata"], "spec": spec})
    return out


def find_pod(state: dict[str, Any], namespace: str, name: str) -> dict[str, Any]:
    for pod in pods(state, namespace):
        if pod["metadata"]["name"] == name:
            return pod
    raise Failure(f'Error from server (NotFound): pods "{name}" not found')


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pod_ip(pod: dict[str, Any], ipv6: bool | None = None) -> str:
    """The pod's primary IP, or (`ipv6` given) its address of that family when it has one: a dual-stack client
    reaches a server from its address of the family it dials."""
    ips = [str(entry["ip"]) for entry in pod["status"]["podIPs"]]
    return next((ip for ip in ips if ipv6 is not None and (":" in ip) == ipv6), str(pod["status"]["podIP"]))


def _ss_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listeners(state: dict[str, Any], pod: dict[str, Any]) -> list[tuple[str, int]]:
    """The pod's listening sockets: the proxy's (a meshed pod), then the echo program's (PORT:BIND:PROTO arguments)."""
    ipv6 = ":" in pod_ip(pod)
    loopback = "::1" if ipv6 else "127.0.0.1"
    meshed = "istio-proxy" in [c["name"] for c in pod["spec"]["containers"]]
    wanted: list[tuple[str, int]] = list(PROXY_LISTENERS) if meshed else []
    deployment = _deployment_of(state, pod)
    # Every container of the pod shares its network namespace: ss sees all their listeners.
    args = [a for c in deployment["spec"]["template"]["spec"]["containers"] for a in c.get("args", [])]
    wanted += [("*", int(args[i + 1])) for i, a in enumerate(args) if a == "--control-port"]
    for arg in args:
        port, _, rest = str(arg).partition(":")
        bind, _, protocol = rest.partition(":")
        hosts = {"loopback": loopback, "pod_ip": pod_ip(pod), "wildcard": "*", "dual_wildcard": "*"}
        if port.isdigit() and bind in hosts and protocol in ("http", "tcp"):
            host = hosts[bind]
            wanted.append((host, int(port)))
    return wanted


def ss_listeners(state: dict[str, Any], pod: dict[str, Any]) -> str:
    """`ss -ltnH` in the pod."""
    lines = []
    for host, port in listeners(state, pod):
        local = _ss_address(host, port)
        peer = "*:*" if host == "*" else ("[::]:*" if ":" in host else "0.0.0.0:*")
        lines.append(f"LISTEN 0      4096   {local:>22} {peer:>12}")
    return "\n".join(lines) + "\n"


PROC_NET_HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"


def _proc_address(host: str, ipv6: bool) -> str:
    """An address as /proc/net/tcp{,6} prints it: the bytes of each 32-bit word in host (little-endian) order."""
    import ipaddress  # only here: the common path imports as little as it can

    if host == "*":
        host = "::" if ipv6 else "0.0.0.0"
    raw = ipaddress.ip_address(host).packed
    return "".join(raw[i : i + 4][::-1].hex().upper() for i in range(0, len(raw), 4))


def proc_net_tcp(state: dict[str, Any], pod: dict[str, Any]) -> str:
    """`cat /proc/net/tcp /proc/net/tcp6` in any container of the pod (they share its network namespace)."""
    ipv6 = ":" in pod_ip(pod)
    files = {False: PROC_NET_HEADER, True: PROC_NET_HEADER}
    counts = {False: 0, True: 0}
    for host, port in listeners(state, pod):
        six = ipv6 if host == "*" else ":" in host
        local = f"{_proc_address(host, six)}:{port:04X}"
        remote = f"{_proc_address('*', six)}:0000"
        files[six] += (
            f"{counts[six]:4d}: {local} {remote} 0A 00000000:00000000 00:00000000 00000000 10001        0 "
            f"{4711 + port} 1 0000000000000000 100 0 0 10 0\n"
        )
        counts[six] += 1
    return files[False] + files[True]


RUNC_NO_SS = (
    'failed to exec in container: failed to start exec "0123abcd": OCI runtime exec failed: exec failed: unable '
    'to start container process: exec: "ss": executable file not found in $PATH: unknown'
)


def _deployment_of(state: dict[str, Any], pod: dict[str, Any]) -> dict[str, Any]:
    app = pod["metadata"]["labels"].get("app")
    for deployment in objects(state, "Deployment", pod["metadata"]["namespace"]):
        if deployment["metadata"]["name"] == app:
            return deployment
    raise Failure(f"fakebin: no Deployment behind pod {pod['metadata']['name']}")


def inbound_ports(state: dict[str, Any], pod: dict[str, Any]) -> list[int]:
    """Ports of the pod's inbound clusters: a Sidecar's ingress ports if one selects it, else its Services' ports."""
    namespace, labels = pod["metadata"]["namespace"], pod["metadata"]["labels"]
    for sidecar in objects(state, "Sidecar", namespace):
        spec = sidecar.get("spec", {})
        if spec.get("ingress") and _selects(spec.get("workloadSelector", {}).get("labels", {}), labels):
            return sorted({int(i["port"]["number"]) for i in spec["ingress"]})
    ports: set[int] = set()
    for service in objects(state, "Service", namespace):
        if _selects(service["spec"].get("selector", {}), labels):
            ports |= {int(p.get("targetPort", p["port"])) for p in service["spec"].get("ports", [])}
    return sorted(ports)


def config_dump(state: dict[str, Any], pod: dict[str, Any]) -> str:
    """Envoy's dynamic_active_clusters with mask=cluster.name, the way pilot-agent prints it."""
    names = [f"inbound|{port}||" for port in inbound_ports(state, pod)]
    names += ["BlackHoleCluster", "InboundPassthroughClusterIpv4", "PassthroughCluster"]
    clusters = [{"cluster": {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": n}} for n in names]
    dump = {
        "configs": [
            {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump", "dynamic_active_clusters": clusters}
        ]
    }
    return to_json(dump, indent=1) + "\n"


# --- argument parsing -----------------------------------------------------------------------------------------------


class Args:
    """istioctl style arguments: flags with values, boolean flags, positionals, and what follows `--`."""

    def __init__(self, argv: list[str], with_value: set[str], boolean: set[str]) -> None:
        self.flags: dict[str, list[str]] = {}
        self.words: list[str] = []
        self.after: list[str] = []
        i = 0
        while i < len(argv):
            arg = argv[i]
            if arg == "--":
                self.after = argv[i + 1 :]
                break
            if arg.startswith("-") and arg != "-":
                name, eq, value = arg.partition("=")
                if name in with_value:
                    if not eq:
                        i += 1
                        if i >= len(argv):
                            raise Failure(f"error: flag needs an argument: {name}")
                        value = argv[i]
                    self.flags.setdefault(name, []).append(value)
                elif name in boolean:
                    self.flags.setdefault(name, []).append(value if eq else "true")
                else:
                    raise Failure(f"Error: unknown flag: {name}")
            else:
                self.words.append(arg)
            i += 1

    def get(self, *names: str) -> str | None:
        for name in names:
            if name in self.flags:
                return self.flags[name][-1]
        return None


def _needs_kubeconfig(args: Args) -> None:
    path = args.get("--kubeconfig")
    if path is None:
        raise Failure("fakebin: every istioctl command of the backend must name --kubeconfig")
    if not os.path.isfile(path):
        raise Failure(f"error: stat {path}: no such file or directory")


# --- kind -----------------------------------------------------------------------------------------------------------

API_KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- cluster:
    server: {url}
  name: kind-{name}
contexts:
- context:
    cluster: kind-{name}
    user: kind-{name}
  name: kind-{name}
current-context: kind-{name}
users:
- name: kind-{name}
  user:
    token: fake
"""


def _kubeconfig(name: str) -> str:
    """The cluster's kubeconfig, pointing at the fake API server (tests/fakes/kind_api.py, $FAKE_API_URL)."""
    url = ENV.get("FAKE_API_URL")
    if not url:
        raise Failure("fakebin: kind needs $FAKE_API_URL (start tests/fakes/kind_api.py): nothing else answers")
    return API_KUBECONFIG.format(name=name, url=url)


def kind(argv: list[str], state: dict[str, Any]) -> str:
    args = Args(argv, {"--name", "--image", "--config", "--kubeconfig", "--wait"}, set())
    words = args.words
    name = args.get("--name") or "kind"
    names = [c["name"] for c in state["clusters"]]
    if words == ["get", "clusters"]:
        if not names:
            sys.stderr.write("No kind clusters found.\n")
        return "".join(f"{n}\n" for n in names)
    if words == ["create", "cluster"]:
        if name in names:
            raise Failure(
                f'ERROR: failed to create cluster: node(s) already exist for a cluster with the name "{name}"'
            )
        config = args.get("--config")
        if config is None or not os.path.isfile(config):
            raise Failure(f"ERROR: failed to create cluster: error reading file: open {config}: no such file")
        kubeconfig = args.get("--kubeconfig")
        if kubeconfig is None:
            raise Failure("fakebin: the backend must pass --kubeconfig to kind create cluster")
        write(kubeconfig, _kubeconfig(name))
        state["clusters"].append({"name": name, "image": args.get("--image"), "config": read(config)})
        sys.stderr.write(f'Creating cluster "{name}" ...\n ✓ Ensuring node image ({args.get("--image")}) 🖼\n')
        return ""
    if words == ["get", "kubeconfig"]:
        if name not in names:
            raise Failure(f'ERROR: could not locate any control plane nodes for cluster named "{name}"')
        return _kubeconfig(name)
    if words[:2] == ["load", "docker-image"] and len(words) > 2:
        if name not in names:
            raise Failure(f'ERROR: no nodes found for cluster "{name}"')
        for image in words[2:]:
            if image not in state["images"]:
                raise Failure(f'ERROR: image: "{image}" not present locally')
            sys.stderr.write(
                f'Image: "{image}" with ID "sha256:0123" not yet present on node "{name}-control-plane", loading...\n'
            )
        return ""
    if words[:2] == ["load", "image-archive"] and len(words) == 3:
        if name not in names:
            raise Failure(f'ERROR: no nodes found for cluster "{name}"')
        if not os.path.isfile(words[2]):
            raise Failure(f"ERROR: failed to load image: open {words[2]}: no such file or directory")
        archive = from_json(read(words[2]))
        state.setdefault("node_images", []).extend(archive["images"])
        return ""
    if words[:2] == ["export", "logs"] and len(words) == 3:
        target = words[2]
        os.makedirs(os.path.join(target, f"{name}-control-plane"), exist_ok=True)
        write(os.path.join(target, f"{name}-control-plane", "kubelet.log"), "I0101 kubelet started\n")
        sys.stderr.write(f'Exporting logs for cluster "{name}" to:\n')
        return f"{target}\n"
    if words == ["delete", "cluster"]:
        state["clusters"] = [c for c in state["clusters"] if c["name"] != name]
        sys.stderr.write(f'Deleting cluster "{name}" ...\n')
        return ""
    raise Failure(f"fakebin: unknown kind command: {' '.join(argv)}")


# --- docker ---------------------------------------------------------------------------------------------------------


def docker(argv: list[str], state: dict[str, Any]) -> str:
    if argv[:1] == ["save"]:
        # docker save --platform P --output F IMAGE...: the fake archive names its images and platform.
        save = Args(argv, {"--platform", "--output", "-o"}, set())
        output, platform = save.get("--output", "-o"), save.get("--platform")
        if output is None or platform is None:
            raise Failure("fakebin: docker save needs --platform and --output (Docker 29's containerd store)")
        missing = [i for i in save.words[1:] if i not in state["images"]]
        if missing:
            raise Failure(f"Error response from daemon: reference does not exist: {missing[0]}")
        write(output, to_json({"platform": platform, "images": save.words[1:]}))
        return ""
    args = Args(argv, {"--tag", "-t"}, set())
    if args.words[:1] == ["build"] and len(args.words) == 2:
        context = args.words[1]
        if not os.path.isfile(os.path.join(context, "Dockerfile")):
            raise Failure(f"ERROR: failed to solve: failed to read dockerfile: open {context}/Dockerfile: no such file")
        tag = args.get("--tag", "-t")
        if tag is None:
            raise Failure("fakebin: docker build without --tag")
        state["images"].append(tag)
        return f"#1 [internal] load build definition from Dockerfile\n#9 naming to {tag} done\n"
    raise Failure(f"fakebin: unknown docker command: {' '.join(argv)}")


# --- istioctl -------------------------------------------------------------------------------------------------------


def istioctl(argv: list[str], state: dict[str, Any], version: str) -> str:
    args = Args(
        argv,
        {"--kubeconfig", "-f", "--filename", "--set", "-s", "--readiness-timeout", "-n", "--namespace"},
        {"-y", "--skip-confirmation", "--remote", "--purge"},
    )
    words = args.words
    if words == ["version"]:
        return ENV.get("FAKE_ISTIOCTL_VERSION", version) + "\n"
    _needs_kubeconfig(args)
    if words == ["install"]:
        for overlay in args.flags.get("-f", []):
            if not os.path.isfile(overlay):
                raise Failure(f"Error: could not read {overlay}: open {overlay}: no such file or directory")
        settings = dict(s.partition("=")[::2] for s in args.flags.get("--set", []))
        overlays = [os.path.basename(f) for f in args.flags.get("-f", [])]
        profile_variant = "distroless" if "ambient.yaml" in overlays else ""
        state["istio"] = {
            "hub": settings.get("hub", ""),
            "tag": settings.get("tag", ""),
            "overlays": overlays,
            "variant": settings.get("values.global.variant", profile_variant),
        }
        return "✔ Istio core installed\n✔ Istiod installed\n✔ Installation complete\n"
    if words == ["x", "precheck"]:
        directory = ENV.get("FAKE_PRECHECK_DIR")
        if not directory:
            sys.stderr.write(
                "✔ No issues found when checking the cluster. Istio is safe to install or upgrade!\n"
                "  To get started, check out https://istio.io/latest/docs/setup/getting-started/\n"
            )
            return ""
        sys.stderr.write(read(os.path.join(directory, "stderr.txt")))
        code = int(read(os.path.join(directory, "exit_code")))
        if code:
            raise ExitWithOutput(read(os.path.join(directory, "stdout.txt")), code)
        return read(os.path.join(directory, "stdout.txt"))
    if words[:1] == ["uninstall"] and "--purge" in argv:
        state["istio"] = {}
        return "✔ Uninstall complete\n"
    if words[:1] == ["proxy-config"] and len(words) == 3 and words[1] in ("listeners", "clusters"):
        pod_name, _, namespace = words[2].rpartition(".")
        find_pod(state, namespace, pod_name)
        if words[1] == "listeners":
            return "ADDRESS PORT  MATCH DESTINATION\n0.0.0.0 15001 ALL   PassthroughCluster\n"
        return "SERVICE FQDN PORT SUBSET DIRECTION TYPE\nBlackHoleCluster - - - STATIC\n"
    raise Failure(f"fakebin: unknown istioctl command: {' '.join(argv)}")


# --- the model's answers for the fake API server (tests/fakes/kind_api.py) ------------------------------------------


def _nodes(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The control-plane node of each kind cluster: the kubelet version from the node image's tag, the pod CIDR
    from the cluster config's family (a seeded cluster may give `kubernetes` and `family` instead)."""
    nodes = []
    for cluster in state["clusters"]:
        image = str(cluster.get("image") or "")
        version = cluster.get("kubernetes") or (image.split(":", 1)[1].split("@", 1)[0] if ":" in image else "v1.20.15")
        cidrs = {"ipv4": ["10.244.0.0/24"], "ipv6": ["fd00:10:244::/64"], "dual": ["10.244.0.0/24", "fd00:10:244::/64"]}
        family = cluster_family(cluster)
        nodes.append(
            {
                "metadata": {"name": f"{cluster['name']}-control-plane"},
                "spec": {"podCIDR": cidrs[family][0], "podCIDRs": cidrs[family]},
                "status": {"nodeInfo": {"kubeletVersion": version}},
            }
        )
    return nodes


def restart(state: dict[str, Any], namespace: str) -> None:
    """Restart every Deployment of the namespace: its pods get a new generation (template hash, names, IPs)."""
    state["generation"][namespace] = state["generation"].get(namespace, 0) + 1


def delete_namespaces(state: dict[str, Any], names: set[str]) -> None:
    """Remove the namespaces and every object in them."""
    state["objects"] = [
        o
        for o in state["objects"]
        if o["metadata"].get("namespace") not in names
        and not (o["kind"] == "Namespace" and o["metadata"]["name"] in names)
    ]


def store(state: dict[str, Any], doc: dict[str, Any]) -> bool:
    """Store one applied object in place of the one of the same kind, namespace and name; True if it is new.

    NotFound for a Sidecar before Istio is installed (no such kind yet) or an object in a namespace that does not
    exist.
    """
    kind_, meta = doc.get("kind"), doc.get("metadata", {})
    if kind_ == "Sidecar" and not state["istio"]:
        raise NotFound(
            f'error: unable to recognize "STDIN": no matches for kind "Sidecar" in version "{doc.get("apiVersion")}"',
            "the server could not find the requested resource",
        )
    namespaces = {o["metadata"]["name"] for o in objects(state, "Namespace")}
    if kind_ != "Namespace" and meta.get("namespace") not in namespaces:
        missing = f'namespaces "{meta.get("namespace")}" not found'
        raise NotFound(f"Error from server (NotFound): {missing}", missing)
    key = (kind_, meta.get("namespace"), meta["name"])
    before = len(state["objects"])
    state["objects"] = [
        o for o in state["objects"] if (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) != key
    ]
    state["objects"].append(doc)
    return len(state["objects"]) > before


def _exec(
    state: dict[str, Any], namespace: str, name: str, container: str | None, command: list[str], stdin: str | None
) -> str:
    pod = find_pod(state, namespace, name)
    names = [c["name"] for c in pod["spec"]["containers"]]
    if container not in names:
        raise Failure(f'error: unable to upgrade connection: container not found ("{container}")')
    if container == "echo" and command[:4] == ["python3", "/app/echo.py", "probe", "--batch"] and len(command) == 5:
        if ENV.get("FAKE_PROBE_OUTPUT") is not None:
            return ENV["FAKE_PROBE_OUTPUT"]
        if stdin:
            raise Failure("fakebin: the probe batch is an argument; nothing may be written to stdin")
        batch = from_json(command[4])
        results = [
            {
                "target": target,
                "outcome": "ok",
                "status": 200 if target["protocol"] == "http" else None,
                "peer": pod_ip(pod, ":" in target["address"]),
                "pod": _server_name(state, namespace, name, target["address"]),
                "latency_ms": 1.25,
                "detail": "",
            }
            for target in batch.get("targets", [])
        ]
        return to_json({"results": results}) + "\n"
    if container == "istio-proxy" and command == ["ss", "-ltnH"]:
        if "distroless" in next(c["image"] for c in pod["spec"]["containers"] if c["name"] == "istio-proxy"):
            raise Failure(RUNC_NO_SS, 126)
        return ss_listeners(state, pod)
    if command == ["cat", "/proc/net/tcp", "/proc/net/tcp6"] and container != "istio-proxy":
        return proc_net_tcp(state, pod)
    if container == "istio-proxy" and command[:3] == ["pilot-agent", "request", "GET"] and len(command) == 4:
        if not command[3].startswith("config_dump"):
            raise Failure(f"fakebin: unexpected admin path {command[3]}")
        return config_dump(state, pod)
    raise Failure(f"fakebin: unknown exec command: {' '.join(command)}")


def _server_name(state: dict[str, Any], namespace: str, own: str, address: str) -> str | None:
    """The pod that answers at `address`: a pod IP, a ClusterIP (its selected pod), or the pod itself."""
    everywhere = sorted({o["metadata"]["name"] for o in objects(state, "Namespace")})
    for ns in everywhere:
        for pod in pods(state, ns):
            if address in [entry["ip"] for entry in pod["status"]["podIPs"]]:
                return str(pod["metadata"]["name"])
        for service in services(state, ns):
            if address in service["spec"]["clusterIPs"]:
                for pod in pods(state, ns):
                    if _selects(service["spec"].get("selector", {}), pod["metadata"]["labels"]):
                        return str(pod["metadata"]["name"])
    return own


# --- main -----------------------------------------------------------------------------------------------------------


def _reads_stdin(tool: str, argv: list[str]) -> bool:
    return False  # no fake tool reads stdin (the API work goes to the fake API server)


def main(argv: list[str]) -> int:
    wrapper, args = argv[1], argv[2:]
    tool, _, version = wrapper.partition("-")
    stdin = sys.stdin.read() if _reads_stdin(tool, args) else None
    entry: dict[str, Any] = {"tool": wrapper, "argv": args}
    if stdin is not None:
        entry["stdin"] = stdin
    fd = os.open(ENV["FAKE_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (to_json(entry) + "\n").encode())
    finally:
        os.close(fd)
    fail = ENV.get("FAKE_FAIL")
    if fail and fail in " ".join([wrapper, *args]):
        sys.stderr.write(ENV.get("FAKE_FAIL_STDERR", "fake failure") + "\n")
        return int(ENV.get("FAKE_FAIL_EXIT", "1"))
    state = load_state()
    try:
        if tool == "kind":
            out = kind(args, state)
        elif tool == "docker":
            out = docker(args, state)
        elif tool == "istioctl":
            out = istioctl(args, state, version or ENV.get("FAKE_ISTIOCTL_VERSION", "1.10.6"))
        else:
            raise Failure(f"fakebin: unknown tool {tool}")
    except ExitWithOutput as done:
        sys.stdout.write(done.stdout)
        return done.code
    except Failure as failure:
        if failure.stderr:
            sys.stderr.write(failure.stderr + "\n")
        return failure.code
    save_state(state)
    sys.stdout.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
