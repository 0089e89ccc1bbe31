"""What the kind and kubeconfig backends change in a cluster: server-side apply, rollout restarts, namespace deletion.

Manifests go in by server-side apply (PATCH, application/apply-patch+yaml, field manager mesh-inbound-conformance),
without `force`: fields another manager owns are a 409 Conflict the user must see, not something the suite takes
over silently on a cluster that is not only its own. Each change is one step of the run's transcript, shown as
the kubectl command that does the same by hand.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from typing import Any

from conformance.backends.base import BackendError
from conformance.backends.kind.api import ApiError, KubeApi
from conformance.backends.kubeclient import api_reason

FIELD_MANAGER = "mesh-inbound-conformance"

# Where each kind the world deploys lives in the API: (path prefix, plural, namespaced).
_RESOURCES: dict[str, tuple[str, str, bool]] = {
    "v1/Namespace": ("/api/v1", "namespaces", False),
    "v1/Service": ("/api/v1", "services", True),
    "v1/ConfigMap": ("/api/v1", "configmaps", True),
    "apps/v1/Deployment": ("/apis/apps/v1", "deployments", True),
    "apps/v1/DaemonSet": ("/apis/apps/v1", "daemonsets", True),
}


def resource_path(doc: Mapping[str, Any]) -> str:
    """The REST path of a manifest's object; BackendError for a kind the suite does not deploy."""
    api_version, kind = str(doc.get("apiVersion", "")), str(doc.get("kind", ""))
    meta = doc.get("metadata") or {}
    name, namespace = str(meta.get("name", "")), str(meta.get("namespace", ""))
    if api_version.startswith(("networking.istio.io/", "security.istio.io/")):
        prefix, plural, namespaced = f"/apis/{api_version}", f"{kind.lower()}s", True
    elif f"{api_version}/{kind}" in _RESOURCES:
        prefix, plural, namespaced = _RESOURCES[f"{api_version}/{kind}"]
    else:
        raise BackendError(f"the suite does not know where {api_version} {kind} lives in the API")
    if not name or (namespaced and not namespace):
        raise BackendError(f"{kind} {namespace}/{name}: a manifest needs metadata.name (and metadata.namespace)")
    return f"{prefix}/namespaces/{namespace}/{plural}/{name}" if namespaced else f"{prefix}/{plural}/{name}"


def apply(api: KubeApi, docs: Sequence[Mapping[str, Any]], manifest_text: str, what: str) -> None:
    """Server-side apply of each object, in order (namespaces come first in the world's manifests)."""
    paths = [resource_path(doc) for doc in docs]

    def apply_all() -> None:
        for doc, path in zip(docs, paths, strict=True):
            meta = doc.get("metadata") or {}
            try:
                api.request(
                    "PATCH",
                    path,
                    [("fieldManager", FIELD_MANAGER)],
                    body=json.dumps(doc),
                    content_type="application/apply-patch+yaml",
                )
            except Exception as err:
                status = int(getattr(err, "status", 0) or 0)
                if status == 0:
                    raise
                where = f"{doc.get('kind')} {meta.get('namespace', '')}/{meta.get('name')}".replace(" /", " ")
                hint = ""
                if status == 409:
                    hint = (
                        " (another field manager owns these fields: delete the object, or its namespace, and run again)"
                    )
                raise ApiError(f"{where}: {api_reason(err)}{hint}", status) from None

    api.call(
        apply_all,
        what=what,
        kubectl=["apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "-f", "-"],
        request=f"PATCH (server-side apply, fieldManager={FIELD_MANAGER}) of {len(docs)} objects",
        stdin=manifest_text,
    )


def restart_deployments(api: KubeApi, namespace: str, what: str) -> None:
    """`kubectl rollout restart deploy`: a new restartedAt annotation in every Deployment's pod template."""
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    patch = {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": stamp}}}}}

    def restart() -> None:
        for item in api.get_json(path).get("items", []):
            api.request(
                "PATCH",
                f"{path}/{item['metadata']['name']}",
                body=patch,
                content_type="application/strategic-merge-patch+json",
            )

    api.call(
        restart,
        what=what,
        kubectl=["-n", namespace, "rollout", "restart", "deploy"],
        request=f"GET {path}, then PATCH (strategic merge, restartedAt) each",
    )


def delete_namespaces(api: KubeApi, names: Sequence[str], what: str) -> None:
    """Delete the namespaces without waiting for them to go (a namespace that is already gone is fine)."""
    from kubernetes.client.exceptions import ApiException

    def delete() -> None:
        for name in names:
            try:
                api.request("DELETE", f"/api/v1/namespaces/{name}")
            except ApiException as err:
                if err.status != 404:
                    raise

    api.call(
        delete,
        what=what,
        kubectl=["delete", "namespace", *names, "--wait=false"],
        request="DELETE " + ", ".join(f"/api/v1/namespaces/{n}" for n in names),
    )


# --- waiting ---------------------------------------------------------------------------------------
