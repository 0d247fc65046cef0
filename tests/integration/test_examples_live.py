"""The dev platforms of seeds 000 (VeloFlux) and 004 (Vision API) deployed live on Compose.

Each example inventory (examples/veloflux/dev, examples/vision/dev) is copied as it is, then
only what this shared machine needs is changed, in the copy:

- the images: the platforms' own cannot be pulled here, so every app service runs the
  reference application, built by the images role from Debian packages under a tag of its own
  (opsdeck/refapp:examples-live: the shared 0.1.0 is never rebuilt or retagged), listening
  on the port the example gives it (APP_PORT,
  APP_EXTRA_PORTS) with the reference app's health paths, checked with its python probe (the
  image has no curl, which Vision's guide uses), given 10 s and 10 tries (a python probe can take
  more than the default 3 s on this shared, loaded 2-CPU machine);
- a stack name of its own (``exlive-<platform>``) and host ports in 18800-18849 (the proxy,
  Prometheus and Vision's published ports).

What a user notices is asserted: the deploy succeeds, every container is healthy, each route
of the seed answers through nginx and reaches the service the model routes it to, and a
second deploy reports changed=0. The stacks are removed at the end.
"""

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request

import pytest
import yaml

from helpers import ROOT, recap, run

IMAGE = "opsdeck/refapp:examples-live"  # a tag of its own: never the shared 0.1.0
PORTS = {"veloflux": {"proxy": 18800, "prometheus": 18801},
         "vision": {"proxy": 18810, "prometheus": 18811, "http": 18812, "dashboard": 18813}}


class Unsafe(str):
    """Text Ansible must not template (!unsafe), kept as such when the copy is written."""


class _Loader(yaml.SafeLoader):
    pass


class _Dumper(yaml.SafeDumper):
    pass


_Loader.add_constructor("!unsafe", lambda loader, node: Unsafe(loader.construct_scalar(node)))
_Dumper.add_representer(Unsafe, lambda dumper, data: dumper.represent_scalar("!unsafe", str(data)))


def live_inventory(folder, platform):
    """A copy of examples/<platform>/dev with the changes the docstring lists; its path."""
    source = os.path.join(ROOT, "examples", platform, "dev")
    target = folder / platform
    shutil.copytree(source, target)
    path = target / "group_vars" / "all" / "stack.yml"
    with open(path, encoding="utf-8") as handle:
        variables = yaml.load(handle, Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    ports = PORTS[platform]
    variables["stack_name"] = "exlive-%s" % platform
    variables["stack_proxy"]["port"] = ports["proxy"]
    variables["stack_monitoring"]["port"] = ports["prometheus"]
    for svc in variables["stack_services"]:
        svc.update(image=IMAGE, build="refapp")
        own = svc.get("ports") or [{"name": "http", "port": svc["port"]}]
        env = svc.setdefault("env", {})
        env.update(APP_NAME=svc["name"], APP_PORT=str(own[0]["port"]))
        if len(own) > 1:
            env["APP_EXTRA_PORTS"] = ",".join(str(p["port"]) for p in own[1:])
        for port in own:
            if port.get("publish"):
                port["publish"] = ports[port["name"]]
        svc["health"] = dict(svc.get("health") or {}, live="/health/live", ready="/health/ready", probe="auto",
                             timeout=10, retries=10)
    with open(path, "w", encoding="utf-8") as handle:
        yaml.dump(variables, handle, Dumper=_Dumper, sort_keys=False, allow_unicode=True)
    return str(target)


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read().decode()
            return response.status, body
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError as exc:
        return type(exc).__name__, ""


def wait_status(url, want=200, seconds=90):
    status, body = None, ""
    deadline = time.time() + seconds
    while time.time() < deadline:
        status, body = get(url)
        if status == want:
            break
        time.sleep(2)
    return status, body


def containers(project):
    out = subprocess.run(["docker", "ps", "-a", "--filter", "label=com.docker.compose.project=%s" % project,
                          "--format", "{{.Names}} {{.Status}}"], capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module", params=["veloflux", "vision"])
def deployed(request, tmp_path_factory):
    platform = request.param
    inventory = live_inventory(tmp_path_factory.mktemp("examples-live"), platform)
    logs = os.path.join(ROOT, "build", "logs")
    first = run(["ansible-playbook", "playbooks/deploy.yml", "-i", inventory],
                log=os.path.join(logs, "examples-live-%s-deploy.log" % platform))
    try:
        yield {"platform": platform, "inventory": inventory, "first": first,
               "project": "exlive-%s" % platform, "ports": PORTS[platform]}
    finally:
        run(["ansible-playbook", "playbooks/destroy.yml", "-i", inventory, "-e", "destroy_volumes=true"],
            log=os.path.join(logs, "examples-live-%s-destroy.log" % platform))


def test_the_dev_platform_deploys_and_every_service_is_healthy(deployed):
    first = deployed["first"]
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    # every container is seen healthy (on this shared, loaded machine a health check can time
    # out now and then: each is required to have been healthy, not all at one instant)
    seen, listed, down, waiting = set(), [], [], []
    deadline = time.time() + 300
    while time.time() < deadline:
        listed = containers(deployed["project"])
        down = [line for line in listed if not line.split(" ", 1)[1].startswith("Up")]
        seen.update(line.split(" ", 1)[0] for line in listed if "(healthy)" in line)
        waiting = [line for line in listed if line.split(" ", 1)[0] not in seen and "health" in line]
        if listed and not waiting and not down:
            break
        time.sleep(3)
    assert listed
    assert not down, down
    assert not waiting, waiting


def _answer(url):
    status, body = wait_status(url)
    assert status == 200, (url, status, body[:300])
    return json.loads(body) if body.startswith("{") else body


def test_the_seed_routes_answer_through_nginx(deployed):
    base = "http://127.0.0.1:%d" % deployed["ports"]["proxy"]
    if deployed["platform"] == "veloflux":
        # /api/ and /admin/ reach VeloFlux, / the AI dashboard
        assert _answer(base + "/api/hello")["app"] == "veloflux"
        status, _body = get(base + "/admin/status")
        assert status in (200, 401, 403), status   # reached the app (its own token check)
        status, body = get(base + "/health/ready")
        assert status == 200, (status, body[:300])
    else:
        # /api/ is passed on without its prefix, as the guide's proxy_pass http://vision_api/
        status, body = wait_status(base + "/api/health/ready")
        assert status == 200, (status, body[:300])
        # dev publishes vision-api's two ports on the host
        assert _answer("http://127.0.0.1:%d/api/hello" % deployed["ports"]["http"])["port"] == 8000
        assert _answer("http://127.0.0.1:%d/api/hello" % deployed["ports"]["dashboard"])["port"] == 8080
    status, _body = wait_status("http://127.0.0.1:%d/-/ready" % deployed["ports"]["prometheus"])
    assert status == 200


def test_a_second_deploy_changes_nothing(deployed):
    second = run(["ansible-playbook", "playbooks/deploy.yml", "-i", deployed["inventory"]],
                 log=os.path.join(ROOT, "build", "logs", "examples-live-%s-redeploy.log" % deployed["platform"]))
    assert second.returncode == 0, second.stdout[-4000:]
    assert recap(second.stdout).get("changed") == 0, second.stdout[-4000:]
