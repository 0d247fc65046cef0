"""A tiny in-process stand-in for a Kubernetes API server, for tests ONLY.

It exists because no real API server (kind, k3s, minikube, kube-apiserver) can run on the
machine these tests were written on. It serves just what kubernetes.core.k8s / k8s_info
need to drive roles/kubernetes in apply mode: discovery (/version, /api, /apis and the
resource lists of the kinds the renderer produces), GET of one object, and server-side
apply (PATCH application/apply-patch+yaml, with dryRun=All for check mode).

It is NOT a faithful API server: an apply replaces everything but status and
server-owned metadata (right when one field manager owns all fields, as here), no
defaulting beyond Deployment/StatefulSet replicas, no validation, no watch. Workload
status is simulated: a Deployment, StatefulSet or DaemonSet (on a cluster of FAKE_NODES
nodes) becomes ready at once and a Job completes at once, unless one of its images
contains BROKEN_MARKER, in which case its new pods never become available (a Job: fails).
"""

from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

BROKEN_MARKER = "does-not-exist"
FAKE_NODES = 3

# (group, version) -> [(plural, kind, namespaced)]
RESOURCES = {
    ("", "v1"): [("namespaces", "Namespace", False), ("secrets", "Secret", True),
                 ("services", "Service", True), ("serviceaccounts", "ServiceAccount", True),
                 ("configmaps", "ConfigMap", True)],
    ("apps", "v1"): [("deployments", "Deployment", True), ("statefulsets", "StatefulSet", True),
                     ("daemonsets", "DaemonSet", True)],
    ("batch", "v1"): [("jobs", "Job", True)],
    ("rbac.authorization.k8s.io", "v1"): [("roles", "Role", True), ("rolebindings", "RoleBinding", True)],
    ("networking.k8s.io", "v1"): [("networkpolicies", "NetworkPolicy", True), ("ingresses", "Ingress", True)],
    ("autoscaling", "v2"): [("horizontalpodautoscalers", "HorizontalPodAutoscaler", True)],
    ("policy", "v1"): [("poddisruptionbudgets", "PodDisruptionBudget", True)],
}
SERVER_META = ("uid", "resourceVersion", "generation", "creationTimestamp")


def _status(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "reason": reason, "message": message, "code": code}


class FakeKubeAPI:
    """Objects by (group, version, plural, namespace, name); an apply log for assertions."""

    def __init__(self):
        self.objects = {}
        self.applies = []
        self.lock = threading.Lock()
        self._version = 1
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.server.server_address[1]

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def kubeconfig(self):
        return {"apiVersion": "v1", "kind": "Config", "current-context": "fake",
                "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                "users": [{"name": "fake", "user": {"token": "fake-token"}}]}

    def get(self, group, version, plural, namespace, name):
        return copy.deepcopy(self.objects.get((group, version, plural, namespace, name)))

    # ------------------------------------------------------------------ routing
    def _route(self, path):
        parts = [p for p in path.split("/") if p]
        if parts[:1] == ["api"]:
            group, rest = "", parts[1:]
        elif parts[:1] == ["apis"]:
            group, rest = (parts[1], parts[2:]) if len(parts) > 1 else (None, [])
        else:
            return None
        if not rest:
            return {"discovery": group}
        version, rest = rest[0], rest[1:]
        if not rest:
            return {"resources": (group, version)}
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        plural = rest[0]
        name = rest[1] if len(rest) > 1 else None
        if plural == "namespaces" and namespace is None:
            name = rest[1] if len(rest) > 1 else None
        return {"object": (group, version, plural, namespace, name)}

    def _discovery(self, group):
        if group == "":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        groups = {}
        for (grp, ver) in RESOURCES:
            if grp:
                groups.setdefault(grp, []).append(ver)
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": grp, "versions": [{"groupVersion": "%s/%s" % (grp, v), "version": v} for v in vers],
             "preferredVersion": {"groupVersion": "%s/%s" % (grp, vers[0]), "version": vers[0]}}
            for grp, vers in sorted(groups.items())]}

    def _resource_list(self, group, version):
        items = RESOURCES.get((group, version))
        if items is None:
            return None
        verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
        resources = []
        for plural, kind, namespaced in items:
            resources.append({"name": plural, "singularName": kind.lower(), "namespaced": namespaced,
                              "kind": kind, "verbs": verbs})
            if kind in ("Deployment", "StatefulSet"):
                resources.append({"name": plural + "/status", "singularName": "", "namespaced": True,
                                  "kind": kind, "verbs": ["get", "patch", "update"]})
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": "/".join(filter(None, [group, version])), "resources": resources}

    # ------------------------------------------------------------------ apply
    def apply(self, key, body, dry_run):
        with self.lock:
            old = self.objects.get(key)
            new = copy.deepcopy(body)
            meta = new.setdefault("metadata", {})
            if key[3] and not meta.get("namespace"):
                meta["namespace"] = key[3]
            kind = new.get("kind")
            if kind in ("Deployment", "StatefulSet"):
                new["spec"].setdefault("replicas", old["spec"].get("replicas", 1) if old else 1)
            if old is not None:
                comparable_old = {k: v for k, v in old.items() if k != "status"}
                comparable_old = copy.deepcopy(comparable_old)
                for field in SERVER_META:
                    comparable_old["metadata"].pop(field, None)
                if comparable_old == {k: v for k, v in new.items() if k != "status"}:
                    return copy.deepcopy(old)
                for field in SERVER_META:
                    meta[field] = old["metadata"][field]
                meta["generation"] = old["metadata"]["generation"] + (
                    1 if old.get("spec") != new.get("spec") else 0)
            else:
                meta.update({"uid": str(uuid.uuid4()), "generation": 1,
                             "creationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
            self._version += 1
            meta["resourceVersion"] = str(self._version)
            new.pop("status", None)
            status = self._status_of(new, old)
            if status is not None:
                new["status"] = status
            if not dry_run:
                self.objects[key] = new
                self.applies.append((kind, meta.get("name")))
            return copy.deepcopy(new)

    @staticmethod
    def _status_of(obj, old):
        kind = obj.get("kind")
        if kind not in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            return old.get("status") if old else None
        images = [c.get("image", "") for c in obj["spec"]["template"]["spec"].get("containers", [])]
        broken = any(BROKEN_MARKER in image for image in images)
        generation = obj["metadata"]["generation"]
        if kind == "Job":
            if old is not None:  # a Job runs once; re-applying it changes nothing
                return old.get("status")
            condition = ({"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}
                         if broken else {"type": "Complete", "status": "True"})
            return {"conditions": [condition], "succeeded": 0 if broken else 1,
                    "failed": 1 if broken else 0}
        if kind == "DaemonSet":
            ready = 0 if broken else FAKE_NODES
            return {"observedGeneration": generation, "desiredNumberScheduled": FAKE_NODES,
                    "currentNumberScheduled": FAKE_NODES, "updatedNumberScheduled": FAKE_NODES,
                    "numberReady": ready, "numberAvailable": ready,
                    "numberUnavailable": FAKE_NODES - ready, "numberMisscheduled": 0}
        replicas = obj["spec"]["replicas"]
        if kind == "Deployment":
            if broken:
                return {"observedGeneration": generation, "replicas": replicas + 1, "updatedReplicas": 1,
                        "readyReplicas": replicas, "availableReplicas": replicas, "unavailableReplicas": 1}
            return {"observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
                    "readyReplicas": replicas, "availableReplicas": replicas,
                    "conditions": [{"type": "Available", "status": "True"},
                                   {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]}
        revision = "rev-%d" % generation
        return {"observedGeneration": generation, "replicas": replicas,
                "readyReplicas": 0 if broken else replicas, "updatedReplicas": replicas,
                "currentReplicas": replicas, "availableReplicas": 0 if broken else replicas,
                "currentRevision": revision, "updateRevision": revision}

    # ------------------------------------------------------------------ HTTP
    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802
                url = urlparse(self.path)
                if url.path == "/version":
                    return self._send(200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0-fake",
                                            "platform": "linux/amd64"})
                route = api._route(url.path)
                if route is None:
                    return self._send(404, _status(404, "NotFound", "no such path %s" % url.path))
                if "discovery" in route:
                    return self._send(200, api._discovery(route["discovery"]))
                if "resources" in route:
                    listing = api._resource_list(*route["resources"])
                    if listing is None:
                        return self._send(404, _status(404, "NotFound", "no such group version"))
                    return self._send(200, listing)
                key = route["object"]
                if key[4] is None:
                    items = [copy.deepcopy(obj) for k, obj in sorted(api.objects.items())
                             if k[:4] == key[:4]]
                    return self._send(200, {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": items})
                obj = api.objects.get(key)
                if obj is None:
                    return self._send(404, _status(404, "NotFound", '%s "%s" not found' % (key[2], key[4])))
                return self._send(200, obj)

            def do_PATCH(self):  # noqa: N802
                url = urlparse(self.path)
                query = parse_qs(url.query)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                route = api._route(url.path)
                if not route or "object" not in route:
                    return self._send(404, _status(404, "NotFound", "no such path"))
                if "apply-patch" not in (self.headers.get("Content-Type") or ""):
                    return self._send(415, _status(415, "UnsupportedMediaType", "only server-side apply"))
                if not query.get("fieldManager"):
                    return self._send(422, _status(422, "Invalid", "fieldManager is required for apply"))
                dry_run = "All" in query.get("dryRun", [])
                return self._send(200, api.apply(route["object"], body, dry_run))

        return Handler
