# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the local cluster of scripts/k8s-local.sh lacks: cluster DNS records and volumes.

Started (and stopped) by `scripts/k8s-local.sh up|down`; standard library only, so that it
runs with the machine's python3. Every second it lists, through the API server:

- Services and Endpoints, and writes one hosts file for dnsmasq (which reloads a changed
  file of its --hostsdir by itself): ``<service>.<namespace>.svc.cluster.local`` is the
  ClusterIP, or, for a headless Service, the ready pod addresses (as CoreDNS answers);
  a pod with a hostname behind a headless Service (a StatefulSet pod) also gets
  ``<hostname>.<service>.<namespace>.svc.cluster.local``.
- PersistentVolumeClaims of a StorageClass whose provisioner is ``opsdeck.local/hostpath``:
  a Pending claim gets a hostPath PersistentVolume made for it (a directory under
  --volumes-dir, bound to the claim by claimRef); a Released volume it made is deleted
  with its directory (reclaim policy Delete, as an external provisioner does it).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import ssl
import sys
import time

PROVISIONER = "opsdeck.local/hostpath"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
DOMAIN = "cluster.local"


def log(message):
    sys.stdout.write("%s %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), message))
    sys.stdout.flush()


class Api(object):
    """JSON over HTTPS with the admin client certificate (the cluster's own CA)."""

    def __init__(self, server, ca, cert, key):
        self.host, _sep, port = server.replace("https://", "").partition(":")
        self.port = int(port or 443)
        self.context = ssl.create_default_context(cafile=ca)
        self.context.load_cert_chain(cert, key)
        self.conn = None

    def request(self, method, path, body=None):
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=20)
            try:
                headers = {"Accept": "application/json"}
                data = None
                if body is not None:
                    data = json.dumps(body).encode("utf-8")
                    headers["Content-Type"] = "application/json"
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                raw = resp.read()
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
                continue
            if resp.status >= 400:
                raise ApiError(resp.status, "%s %s: HTTP %s %s" % (method, path, resp.status, raw[:300]))
            return json.loads(raw) if raw else {}
        return {}  # pragma: no cover - the loop returns or raises

    def items(self, path):
        return self.request("GET", path).get("items") or []


class ApiError(Exception):
    def __init__(self, status, message):
        super(ApiError, self).__init__(message)
        self.status = status


def dns_records(services, endpoints):
    """{name: [addresses]} for the hosts file, from Service and Endpoints objects."""
    by_key = dict(((e["metadata"]["namespace"], e["metadata"]["name"]), e) for e in endpoints)
    records = {}
    for svc in services:
        meta, spec = svc["metadata"], svc.get("spec") or {}
        name = "%s.%s.svc.%s" % (meta["name"], meta["namespace"], DOMAIN)
        cluster_ip = spec.get("clusterIP")
        if cluster_ip and cluster_ip != "None":
            records.setdefault(name, []).append(cluster_ip)
            continue
        if spec.get("type") == "ExternalName":
            continue  # a CNAME; a hosts file cannot say that
        subsets = (by_key.get((meta["namespace"], meta["name"])) or {}).get("subsets") or []
        for subset in subsets:
            addresses = list(subset.get("addresses") or [])
            if spec.get("publishNotReadyAddresses"):
                addresses += subset.get("notReadyAddresses") or []
            for address in addresses:
                records.setdefault(name, []).append(address["ip"])
                if address.get("hostname"):
                    records.setdefault("%s.%s" % (address["hostname"], name), []).append(address["ip"])
    return dict((k, sorted(set(v))) for k, v in records.items())


def hosts_text(records):
    lines = ["# written by scripts/k8s_local_agent.py from the API server; do not edit"]
    for name in sorted(records):
        for address in records[name]:
            lines.append("%s %s" % (address, name))
    return "\n".join(lines) + "\n"


def write_if_changed(directory, text, state):
    if state.get("hosts") == text:
        return False
    tmp = os.path.join(os.path.dirname(directory.rstrip("/")), ".cluster.hosts.tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)
    os.rename(tmp, os.path.join(directory, "cluster.hosts"))  # dnsmasq rereads it (inotify)
    state["hosts"] = text
    return True


def our_classes(classes):
    return dict((c["metadata"]["name"], c) for c in classes if c.get("provisioner") == PROVISIONER)


def claim_class(claim, default_class):
    spec = claim.get("spec") or {}
    name = spec.get("storageClassName")
    if name is None:
        name = (claim["metadata"].get("annotations") or {}).get("volume.beta.kubernetes.io/storage-class")
    return default_class if name is None else name


def volume_for(claim, sclass, directory):
    meta, spec = claim["metadata"], claim.get("spec") or {}
    uid = meta["uid"]
    path = os.path.join(directory, "%s_%s_%s" % (meta["namespace"], meta["name"], uid[:8]))
    return path, {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": "pvc-%s" % uid, "annotations": {PROVISIONED_BY: PROVISIONER},
                     "labels": {"opsdeck.local/claim-namespace": meta["namespace"]}},
        "spec": {
            "capacity": {"storage": ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")},
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "volumeMode": spec.get("volumeMode") or "Filesystem",
            "persistentVolumeReclaimPolicy": sclass.get("reclaimPolicy") or "Delete",
            "storageClassName": sclass["metadata"]["name"],
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": meta["namespace"],
                         "name": meta["name"], "uid": uid},
            "hostPath": {"path": path, "type": "Directory"},
        },
    }


def provision(api, directory):
    classes = our_classes(api.items("/apis/storage.k8s.io/v1/storageclasses"))
    if not classes:
        return
    default_class = None
    for name, sclass in classes.items():
        if (sclass["metadata"].get("annotations") or {}).get("storageclass.kubernetes.io/is-default-class") == "true":
            default_class = name
    volumes = dict((v["metadata"]["name"], v) for v in api.items("/api/v1/persistentvolumes"))
    for claim in api.items("/api/v1/persistentvolumeclaims"):
        meta, spec = claim["metadata"], claim.get("spec") or {}
        sclass = classes.get(claim_class(claim, default_class))
        if sclass is None or spec.get("volumeName") or (claim.get("status") or {}).get("phase") != "Pending":
            continue
        if meta.get("deletionTimestamp") or "pvc-%s" % meta["uid"] in volumes:
            continue
        path, volume = volume_for(claim, sclass, directory)
        # world-writable: pods run as whatever non-root user their image wants (hostPath has
        # no fsGroup); the parent directory is 0700, so only root and the pods reach it
        os.makedirs(path, exist_ok=True)
        os.chmod(path, 0o777)
        try:
            api.request("POST", "/api/v1/persistentvolumes", volume)
            log("volume %s (%s) for claim %s/%s" % (volume["metadata"]["name"], path, meta["namespace"], meta["name"]))
        except ApiError as exc:
            if exc.status != 409:
                raise
    for name, volume in volumes.items():
        annotations = volume["metadata"].get("annotations") or {}
        spec = volume.get("spec") or {}
        if annotations.get(PROVISIONED_BY) != PROVISIONER or spec.get("persistentVolumeReclaimPolicy") != "Delete":
            continue
        if (volume.get("status") or {}).get("phase") not in ("Released", "Failed"):
            continue
        path = (spec.get("hostPath") or {}).get("path") or ""
        if os.path.dirname(path) == directory.rstrip("/") and os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        try:
            api.request("DELETE", "/api/v1/persistentvolumes/%s" % name)
            log("deleted released volume %s (%s)" % (name, path))
        except ApiError as exc:
            if exc.status != 404:
                raise


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--hosts-dir", required=True)
    parser.add_argument("--volumes-dir", required=True)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    api = Api(args.server, args.ca, args.cert, args.key)
    state = {}
    running = {"on": True}

    def stop(_signum, _frame):
        running["on"] = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log("agent started: DNS records into %s, volumes under %s" % (args.hosts_dir, args.volumes_dir))
    last_error = None
    while running["on"]:
        try:
            records = dns_records(api.items("/api/v1/services"), api.items("/api/v1/endpoints"))
            if write_if_changed(args.hosts_dir, hosts_text(records), state):
                log("DNS: %d names" % len(records))
            provision(api, args.volumes_dir)
            last_error = None
        except (OSError, ValueError, KeyError, ApiError, http.client.HTTPException) as exc:
            if str(exc) != last_error:
                log("error (retrying): %s" % exc)
            last_error = str(exc)
        time.sleep(args.interval)
    log("agent stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
