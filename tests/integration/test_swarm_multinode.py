"""The stack on a real multi-node Docker Swarm: 3 managers and 2 workers, each its own Docker
engine in a container on this machine (scripts/swarm-lab.sh), formed by the swarm role from an
inventory that lists them as hosts (community.docker.docker connection), through
playbooks/deploy.yml as a user runs it.

One lab serves every test of this file (module fixture); it is removed at the end, also on
failure. Images: the project's opsdeck/* images are built on the local engine by the images
role and pushed to the lab's registry, which every node pulls from. Layout (the generated
inventory): node1 manager + data label (Redis pinned there), node2 manager, node3 manager +
edge label, node4 worker, node5 worker + edge label; nginx publishes port 18680 in host mode
on the two edge nodes, and the load goes to those two addresses (a bridge on this machine).
Every answer through nginx that is neither 200 nor 429 counts as a failed request.

The figures (requests, failures, times) are printed by each test and collected in
build/logs/swarm-multinode.txt.
"""

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
import yaml

from helpers import ROOT, recap, run

# Requests under load through a 5-engine lab on a 2-core machine: run alone, after the parallel
# phase (scripts/test.sh), so that what it measures is the swarm, not the other suites' load.
pytestmark = pytest.mark.serial

# A lab of its own (not the default one a developer may be using), on its own bridge.
LAB = "opsdeck-swarmlab-test"
SUBNET = "172.31.249.0/24"
SCRIPT = os.path.join(ROOT, "scripts", "swarm-lab.sh")
REGISTRY = LAB + "-registry:5000"
NAME = "opsdeck-ms"
PORT = 18680
IMAGES = ["opsdeck/refapp:0.1.0", "opsdeck/nginx:1.22", "opsdeck/redis:7"]
EDGE = (3, 5)
DATA = 1
DRAINED = 4     # the worker without an edge or data label
VICTIM = 2      # the manager without an edge or data label
TOKEN = "multinode-admin-token-1234"
REDIS_PASSWORD = "multinode-redis-5678-pass"
REPLICAS = 5
LOG_DIR = os.path.join(ROOT, "build", "logs")
FIGURES = os.path.join(LOG_DIR, "swarm-multinode.txt")
STACK = {
    "stack_name": NAME,
    "stack_environment": "staging",
    "stack_target": "swarm",
    "stack_project_dir": "/opt/%s" % NAME,
    "api_version": "1.0.0",
    "api_fail_ready": "0",
    "api_replicas": REPLICAS,
    "stack_services": [{
        "name": "api", "image": REGISTRY + "/opsdeck/refapp:0.1.0", "port": 8000,
        "replicas": "{{ api_replicas }}", "uses": ["redis"], "secrets": ["admin_token"],
        "env": {"APP_NAME": "api", "APP_VERSION": "{{ api_version }}",
                "APP_FAIL_READY": "{{ api_fail_ready }}",
                "ADMIN_TOKEN_FILE": "/run/secrets/admin_token", "TENANTS": "acme",
                "APP_SHUTDOWN_DELAY": "3"},
        "health": {"ready": "/health/ready", "interval": 2, "retries": 3, "start_period": 4},
        "route": {"path": "/api/", "rate": "400r/s", "burst": 400}}],
    "stack_redis": {"enabled": True, "persistence": "none", "password_secret": "redis_password",
                    "image": REGISTRY + "/opsdeck/redis:7"},
    "stack_proxy": {"port": PORT, "replicas": len(EDGE), "image": REGISTRY + "/opsdeck/nginx:1.22"},
    "stack_secrets": {"admin_token": TOKEN, "redis_password": REDIS_PASSWORD},
    # The images are in the lab's registry: pin each deploy to their digests.
    "swarm_resolve_image": "always",
}


def figure(text):
    """Print a measured figure and keep it in build/logs/swarm-multinode.txt."""
    print(text)
    os.makedirs(LOG_DIR, exist_ok=True)
    with open(FIGURES, "a", encoding="utf-8") as handle:
        handle.write("%s %s\n" % (time.strftime("%H:%M:%S"), text))


def lab(*args, timeout=900):
    result = subprocess.run([SCRIPT, "--name", LAB, "--subnet", SUBNET] + list(args),
                            capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, "swarm-lab.sh %s failed:\n%s\n%s" % (
        " ".join(args), result.stdout[-2000:], result.stderr[-3000:])
    return result.stdout


def container(i):
    return "%s-node%d" % (LAB, i)


def node_ip(i):
    return "%s.%d" % (SUBNET.rsplit(".", 1)[0], 10 + i)


def docker_on(i, *args, check=True):
    """The docker CLI inside node i (against that node's own engine)."""
    result = subprocess.run(["docker", "exec", container(i), "docker"] + list(args),
                            capture_output=True, text=True, timeout=60, check=False)
    if check:
        assert result.returncode == 0, "node%d: docker %s: %s" % (i, " ".join(args), result.stderr)
    return result.stdout


def wait_until(what, predicate, timeout=180, interval=0.5):
    """Poll predicate() until it is true (bounded); seconds it took."""
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        assert time.monotonic() - start < timeout, "timed out after %d s waiting for %s" % (timeout, what)
        time.sleep(interval)


def nodes():
    """{hostname: {"status", "availability", "manager"}} as the first manager sees them."""
    out = docker_on(DATA, "node", "ls", "--format", "{{json .}}")
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    return {r["Hostname"]: {"status": r["Status"], "availability": r["Availability"],
                            "manager": r["ManagerStatus"]} for r in rows}


def tasks(service, manager=DATA):
    """[(node, task id)] of the service's running tasks."""
    out = docker_on(manager, "service", "ps", "%s_%s" % (NAME, service), "--no-trunc",
                    "--filter", "desired-state=running", "--format", "{{json .}}")
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    return [(r["Node"], r["ID"]) for r in rows if r["CurrentState"].startswith("Running")]


def replicas(service, manager=DATA):
    out = docker_on(manager, "service", "ls", "--filter", "name=%s_%s" % (NAME, service),
                    "--format", "{{.Replicas}}")
    return out.split()[0] if out.split() else ""


def containers_on(i, service=None):
    label = ("com.docker.swarm.service.name=%s_%s" % (NAME, service) if service
             else "com.docker.stack.namespace=%s" % NAME)
    return docker_on(i, "ps", "-q", "--filter", "label=" + label).split()


def get(ip, path="/api/hello", timeout=5):
    with urllib.request.urlopen("http://%s:%d%s" % (ip, PORT, path), timeout=timeout) as response:
        return response.status, json.load(response)


def versions():
    return {get(node_ip(i))[1]["version"] for i in EDGE}


def diagnose(step):
    """Keep what explains failed requests: where the tasks ran and nginx's non-200 lines."""
    path = os.path.join(LOG_DIR, "swarm-multinode-%s-diagnostics.log" % step)
    with open(path, "w", encoding="utf-8") as handle:
        for service in ("api", "proxy"):
            handle.write(docker_on(DATA, "service", "ps", "%s_%s" % (NAME, service), "--no-trunc",
                                   check=False))
        for i in EDGE:
            for cid in containers_on(i, "proxy"):
                logs = subprocess.run(["docker", "exec", container(i), "docker", "logs", cid],
                                      capture_output=True, text=True, timeout=60, check=False)
                lines = [line for line in (logs.stdout + logs.stderr).splitlines()
                         if '"status":200' not in line and "/healthz" not in line]
                handle.write("== nginx on node%d\n%s\n" % (i, "\n".join(lines[-300:])))
    return path


class EdgeLoad:
    """GET /api/work through nginx on the edge nodes, alternating between their addresses, at
    about RATE requests/s until stopped (bounded); 200 and 429 are answers, the rest failures."""

    def __init__(self, rate=20, limit_seconds=400):
        self.rate, self.limit = rate, limit_seconds
        self.counts, self.failures, self.hosts = {}, [], set()
        self.lock, self.stop_event = threading.Lock(), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.started = self.seconds = 0.0

    def _one(self, ip):
        url = "http://%s:%d/api/work?ms=50&tenant=acme" % (ip, PORT)
        hostname = None
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                status = response.status
                hostname = json.load(response).get("hostname")
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (OSError, ValueError) as exc:
            status = type(exc).__name__
        with self.lock:
            self.counts[status] = self.counts.get(status, 0) + 1
            if hostname:
                self.hosts.add(hostname)
            if status not in (200, 429):
                self.failures.append((time.strftime("%H:%M:%S"), ip, status))

    def _run(self):
        start, sent, workers = time.monotonic(), 0, []
        edges = [node_ip(i) for i in EDGE]
        while not self.stop_event.is_set() and time.monotonic() - start < self.limit:
            worker = threading.Thread(target=self._one, args=(edges[sent % len(edges)],), daemon=True)
            worker.start()
            workers.append(worker)
            sent += 1
            time.sleep(max(0.0, start + sent / self.rate - time.monotonic()))
        for worker in workers:
            worker.join(15)

    @property
    def total(self):
        return sum(self.counts.values())

    def __enter__(self):
        self.started = time.monotonic()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        self.thread.join(60)
        self.seconds = time.monotonic() - self.started


class Cluster:
    def __init__(self, inventory):
        self.inventory = inventory

    def deploy(self, step, *extra, limit=None, timeout=900):
        argv = ["ansible-playbook", "playbooks/deploy.yml", "-i", self.inventory]
        for item in extra:
            argv += ["-e", item]
        if limit:
            argv += ["--limit", limit]
        start = time.monotonic()
        result = run(argv, timeout=timeout,
                     log=os.path.join(LOG_DIR, "swarm-multinode-%s.log" % step),
                     ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks")
        result.seconds = time.monotonic() - start
        return result


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.path.exists(FIGURES):
        os.remove(FIGURES)
    lab("down")  # what an interrupted earlier run may have left
    try:
        start = time.monotonic()
        lab("build", timeout=1800)
        built = time.monotonic()
        lab("up", "-m", "3", "-w", "2")
        up = time.monotonic()
        lab("push", "--build", *IMAGES, timeout=1800)
        pushed = time.monotonic()
        figure("lab: build %.1f s, up (5 engines + registry) %.1f s, images built/pushed %.1f s"
               % (built - start, up - built, pushed - up))
        inv = tmp_path_factory.mktemp("swarm-multinode")
        (inv / "group_vars" / "all").mkdir(parents=True)
        (inv / "hosts.yml").write_text(lab("inventory", "--edge", ",".join(map(str, EDGE)),
                                           "--data", str(DATA)))
        (inv / "group_vars" / "all" / "stack.yml").write_text(yaml.safe_dump(STACK))
        deployed = Cluster(str(inv))
        result = deployed.deploy("1-first")
        assert result.returncode == 0, result.stdout[-4000:]
        figure("first deploy (swarm formed by the role, images pulled on 5 fresh nodes): %.1f s"
               % result.seconds)
        yield deployed
    finally:
        start = time.monotonic()
        lab("down")
        figure("lab down: %.1f s" % (time.monotonic() - start))


def test_the_role_forms_the_swarm_and_places_the_stack(cluster):
    seen = nodes()
    assert sorted(seen) == ["node%d" % i for i in range(1, 6)], seen
    assert all(n["status"] == "Ready" for n in seen.values()), seen
    assert sorted(n["manager"] for n in seen.values()) == ["", "", "Leader", "Reachable", "Reachable"], seen
    assert not seen["node4"]["manager"] and not seen["node5"]["manager"], "node4 and node5 are workers"
    # Node labels from the inventory's swarm_node_labels.
    for i in range(1, 6):
        labels = json.loads(docker_on(DATA, "node", "inspect", "node%d" % i))[0]["Spec"]["Labels"]
        assert (labels.get("opsdeck.data") == "true") == (i == DATA), (i, labels)
        assert (labels.get("opsdeck.edge") == "true") == (i in EDGE), (i, labels)
    # Redis pinned to the data node, nginx on each edge node, the app spread over the nodes.
    assert [n for n, _id in tasks("redis")] == ["node%d" % DATA]
    assert sorted(n for n, _id in tasks("proxy")) == ["node%d" % i for i in EDGE]
    api_nodes = [n for n, _id in tasks("api")]
    assert len(api_nodes) == REPLICAS and len(set(api_nodes)) == REPLICAS, api_nodes
    # Secrets and configs are Swarm objects named after their content.
    spec = json.loads(docker_on(DATA, "service", "inspect", NAME + "_api"))[0]["Spec"]
    secrets = [s["SecretName"] for s in spec["TaskTemplate"]["ContainerSpec"]["Secrets"]]
    assert any(s.startswith(NAME + "_admin_token_") for s in secrets), secrets
    assert "@sha256:" in spec["TaskTemplate"]["ContainerSpec"]["Image"], "pinned to the registry digest"
    proxy = json.loads(docker_on(DATA, "service", "inspect", NAME + "_proxy"))[0]["Spec"]
    configs = [c["ConfigName"] for c in proxy["TaskTemplate"]["ContainerSpec"]["Configs"]]
    assert any(c.startswith(NAME + "_config-proxy-nginx-conf_") for c in configs), configs
    assert proxy["TaskTemplate"]["Placement"]["Constraints"] == ["node.labels.opsdeck.edge == true"]
    assert proxy["EndpointSpec"]["Ports"][0]["PublishMode"] == "host"
    network = json.loads(docker_on(DATA, "network", "inspect", NAME + "_backend"))[0]
    assert network["Driver"] == "overlay" and network["Scope"] == "swarm"
    # Over the overlay: both edges answer, and each reaches Redis (its password a Swarm
    # secret) on the data node and app tasks on other nodes.
    for i in EDGE:
        status, body = get(node_ip(i), "/api/cache?tenant=acme")
        assert status == 200 and body["cache"] == "ok", body
    hosts = set()
    for _attempt in range(40):
        hosts |= {get(node_ip(i))[1]["hostname"] for i in EDGE}
    by_node = {i: {c[:12] for c in containers_on(i, "api")} for i in range(1, 6)}
    reached = {i for i, ids in by_node.items() if ids & hosts}
    assert len(reached) >= 3, "40 requests per edge reached app tasks on nodes %s only" % reached
    # Nodes without the edge label do not publish the port.
    for i in set(range(1, 6)) - set(EDGE):
        with pytest.raises(OSError):
            get(node_ip(i), timeout=2)
    figure("placement: redis on node%d, nginx on %s, api on %s; edge requests reached app tasks on %d nodes"
           % (DATA, sorted(n for n, _id in tasks("proxy")), sorted(api_nodes), len(reached)))


def test_drained_worker_moves_its_tasks_with_no_failed_request(cluster):
    # Right after the first deploy every node runs one api task (5 replicas, 5 nodes).
    moving = containers_on(DRAINED)
    assert containers_on(DRAINED, "api"), "node%d must run an api task to drain: %s" % (
        DRAINED, tasks("api"))
    try:
        with EdgeLoad() as load:
            time.sleep(2)
            start = time.monotonic()
            docker_on(DATA, "node", "update", "--availability", "drain", "node%d" % DRAINED)
            emptied = wait_until("node%d empty" % DRAINED, lambda: not containers_on(DRAINED))
            wait_until("api %d/%d off node%d" % (REPLICAS, REPLICAS, DRAINED), lambda: (
                replicas("api") == "%d/%d" % (REPLICAS, REPLICAS)
                and "node%d" % DRAINED not in [n for n, _t in tasks("api")]))
            moved = time.monotonic() - start
            time.sleep(3)
        figure("drain node%d (%d task containers): empty after %.1f s, api %d/%d elsewhere after %.1f s; "
               "%d requests (%s), %d failed" % (
                   DRAINED, len(moving), emptied, REPLICAS, REPLICAS, moved, load.total,
                   load.counts, len(load.failures)))
        assert load.failures == [], "failed requests during the drain: %s (all: %s; see %s)" % (
            load.failures[:10], load.counts, diagnose("drain"))
        assert load.counts.get(200, 0) > 50, load.counts
    finally:
        docker_on(DATA, "node", "update", "--availability", "active", "node%d" % DRAINED)


def test_rolling_update_spreads_across_nodes_with_no_failed_request(cluster):
    before = {task for _node, task in tasks("api")}
    with EdgeLoad() as load:
        time.sleep(2)
        result = cluster.deploy("2-rolling-update", "api_version=1.1.0")
        time.sleep(2)
    assert result.returncode == 0, result.stdout[-4000:]
    after = tasks("api")
    figure("rolling update of %d api tasks under load: %d requests (%s), %d failed; deploy %.1f s; "
           "new tasks on %s" % (REPLICAS, load.total, load.counts, len(load.failures),
                                result.seconds, sorted(n for n, _t in after)))
    assert load.counts.get(200, 0) > 100, load.counts
    assert load.failures == [], "failed requests during the update: %s (all: %s; see %s)" % (
        load.failures[:10], load.counts, diagnose("2-rolling-update"))
    assert versions() == {"1.1.0"}
    assert len(after) == REPLICAS and not {t for _n, t in after} & before, "every task replaced"
    assert len({n for n, _t in after}) >= 3, "the new tasks are spread: %s" % after


def test_broken_version_is_rolled_back(cluster):
    before = {task for _node, task in tasks("api")}
    with EdgeLoad() as load:
        result = cluster.deploy("3-broken", "api_version=2.0.0", "api_fail_ready=1")
        time.sleep(2)
    figure("broken version: rolled back, deploy failed after %.1f s; %d requests (%s), %d failed"
           % (result.seconds, load.total, load.counts, len(load.failures)))
    assert result.returncode != 0
    assert "Swarm did not accept the new version of api and rolled it back" in result.stdout, \
        result.stdout[-4000:]
    assert load.failures == [], "failed requests during the rollback: %s (see %s)" % (
        load.failures[:10], diagnose("3-broken"))
    assert versions() == {"1.1.0"}, "the previous version still serves"
    assert {task for _node, task in tasks("api")} == before
    assert TOKEN not in result.stdout and REDIS_PASSWORD not in result.stdout


def test_lost_manager_keeps_quorum_deploy_works_rejoin_changes_nothing(cluster):
    assert nodes()["node%d" % VICTIM]["manager"] in ("Reachable", "Leader")
    start = time.monotonic()
    subprocess.run(["docker", "kill", container(VICTIM)], capture_output=True, check=True)
    down = wait_until("node%d Down" % VICTIM, lambda: nodes()["node%d" % VICTIM]["status"] == "Down")
    leaders = [h for h, n in nodes().items() if n["manager"] == "Leader"]
    lost = [t for n, t in tasks("api") if n == "node%d" % VICTIM]
    figure("manager node%d killed (%d api tasks on it): Down after %.1f s; leader %s"
           % (VICTIM, len(lost), down, leaders))
    # A user leaves the dead host out of the play. The two remaining managers are a quorum:
    # the deploy scales the api out (a change the swarm must store and schedule) and waits
    # until every task runs, the lost ones replaced on the live nodes.
    result = cluster.deploy("4-manager-down", "api_version=1.1.0",
                            '{"api_replicas": %d}' % (REPLICAS + 1), limit="!node%d" % VICTIM)
    assert result.returncode == 0, result.stdout[-4000:]
    after = tasks("api")
    figure("deploy with node%d down (2 of 3 managers), api scaled to %d: %.1f s (%.1f s after the kill); "
           "api on %s" % (VICTIM, REPLICAS + 1, result.seconds, time.monotonic() - start,
                          sorted(n for n, _t in after)))
    assert len(after) == REPLICAS + 1 and "node%d" % VICTIM not in [n for n, _t in after], after
    assert versions() == {"1.1.0"}

    start = time.monotonic()
    subprocess.run(["docker", "start", container(VICTIM)], capture_output=True, check=True)
    back = wait_until("node%d back" % VICTIM, lambda: nodes()["node%d" % VICTIM] == {
        "status": "Ready", "availability": "Active", "manager": "Reachable"})
    result = cluster.deploy("5-rejoined", "api_version=1.1.0", '{"api_replicas": %d}' % (REPLICAS + 1))
    figure("node%d restarted: Ready and Reachable after %.1f s; next deploy %.1f s, recap %s"
           % (VICTIM, back, result.seconds, recap(result.stdout)))
    assert result.returncode == 0, result.stdout[-4000:]
    assert recap(result.stdout)["changed"] == 0, result.stdout[-4000:]
    # The restarted manager's old tasks come back as stale ones that Swarm shuts down: the
    # service settles at its declared count again.
    wait_until("%d api tasks" % (REPLICAS + 1), lambda: len(tasks("api")) == REPLICAS + 1, timeout=120)
