"""An image that can be neither pulled nor built: dev skips its service with a visible
warning and deploys the rest; staging and prod stop before any change, naming it."""

import os
import subprocess

from helpers import local_inventory, run

NAME = "opsdeck-ghost"
PROJECT_DIR = "/opt/%s" % NAME


def inventory(tmp_path, environment):
    return local_inventory(tmp_path / environment, {
        "stack_name": NAME,
        "stack_environment": environment,
        "stack_project_dir": PROJECT_DIR,
        "stack_proxy": {"enabled": False},
        "stack_services": [
            {"name": "ghost", "image": "registry.invalid/opsdeck/ghost:1.0"},
            {"name": "worker", "image": "opsdeck/refapp:0.1.0", "build": "refapp", "port": 8000,
             "health": {"ready": "/health/ready", "interval": 2, "start_period": 4}},
        ],
    })


def test_staging_fails_naming_the_image(tmp_path):
    result = run(["ansible-playbook", "playbooks/deploy.yml", "-i", inventory(tmp_path, "staging")],
                 timeout=600)
    assert result.returncode != 0
    assert "These images can be neither pulled nor built: registry.invalid/opsdeck/ghost:1.0" in result.stdout
    assert "(components: ghost)" in result.stdout
    assert not os.path.exists(PROJECT_DIR)


def test_dev_warns_and_deploys_the_rest(tmp_path):
    try:
        result = run(["ansible-playbook", "playbooks/deploy.yml", "-i", inventory(tmp_path, "dev")],
                     timeout=900)
        assert result.returncode == 0, result.stdout[-3000:]
        assert "WARNING: skipping ghost: image(s) registry.invalid/opsdeck/ghost:1.0" in result.stdout
        services = subprocess.run(["docker", "compose", "-p", NAME, "ps", "--services"],
                                  capture_output=True, text=True, check=True).stdout.split()
        assert services == ["worker"]
    finally:
        subprocess.run(["docker", "compose", "-p", NAME, "down", "-v", "--timeout", "3"],
                       capture_output=True, check=False)
        subprocess.run(["rm", "-rf", PROJECT_DIR], check=False)
