"""A container that a health probe marks unhealthy for a moment during a deploy (a loaded
host, a slow start) gets compose_unhealthy_grace seconds to recover before the deploy fails.

`docker compose up --wait` gives up at the first "unhealthy". The reference app is made to
answer not-ready for its first seconds (APP_READY_AFTER) with a probe that turns unhealthy
after one failure: with the grace set to 0 the deploy fails at once with Compose's message;
with the default grace it waits, the container turns healthy and the deploy succeeds.
Real Docker engine, real containers.
"""

import subprocess

import pytest

from helpers import local_inventory, recap, run

NAME = "opsdeck-grace"
PROJECT_DIR = "/opt/%s" % NAME


def inventory(tmp_path, ready_after):
    return local_inventory(tmp_path / ("inv-%d" % ready_after), {
        "stack_name": NAME,
        "stack_environment": "dev",
        "stack_project_dir": PROJECT_DIR,
        "stack_proxy": {"enabled": False},
        "stack_services": [
            {"name": "worker", "image": "opsdeck/refapp:0.1.0", "build": "refapp", "port": 8000,
             "env": {"APP_READY_AFTER": str(ready_after)},
             "health": {"ready": "/health/ready", "interval": 1, "timeout": 3, "retries": 1,
                        "start_period": 1}},
        ],
    })


def health():
    out = subprocess.run(["docker", "inspect", "--format", "{{.State.Health.Status}}",
                          NAME + "-worker-1"], capture_output=True, text=True, check=False)
    return out.stdout.strip()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("grace")
    try:
        strict = run(["ansible-playbook", "playbooks/deploy.yml", "-i", inventory(base, 12),
                      "-e", "compose_unhealthy_grace=0"], timeout=900)
        after_strict = health()
        # another APP_READY_AFTER recreates the container: unhealthy again for a moment
        graceful = run(["ansible-playbook", "playbooks/deploy.yml", "-i", inventory(base, 13)],
                       timeout=900)
        yield {"strict": strict, "after_strict": after_strict, "graceful": graceful,
               "after_graceful": health()}
    finally:
        subprocess.run(["docker", "compose", "-p", NAME, "down", "-v", "--timeout", "3"],
                       capture_output=True, check=False)
        subprocess.run(["rm", "-rf", PROJECT_DIR], check=False)


def test_without_grace_the_deploy_fails_at_once_with_composes_message(runs):
    result = runs["strict"]
    assert result.returncode != 0, result.stdout[-3000:]
    text = " ".join(result.stdout.split())
    assert "docker compose up did not bring %s up healthy" % NAME in text, result.stdout[-3000:]
    assert "container %s-worker-1 is unhealthy" % NAME in text
    assert runs["after_strict"] in ("unhealthy", "healthy")  # it was left running


def test_with_the_default_grace_the_deploy_waits_for_the_recovery(runs):
    result = runs["graceful"]
    assert result.returncode == 0, result.stdout[-3000:]
    totals = recap(result.stdout)
    assert totals["failed"] == 0 and totals["rescued"] == 1, totals
    assert "Give the container a probe marked unhealthy its grace period" in result.stdout
    assert runs["after_graceful"] == "healthy"
