"""The collection builds, installs from its tarball, and its playbook runs from the installed copy."""

import glob
import os

from helpers import recap, run


def test_build_install_and_run_installed_playbook(tmp_path):
    result = run(["ansible-galaxy", "collection", "build", "--force", "--output-path", str(tmp_path)])
    assert result.returncode == 0, result.stderr
    (tarball,) = glob.glob(str(tmp_path / "opsdeck-stack-*.tar.gz"))
    assert os.path.getsize(tarball) < 5 * 1024 * 1024, "build_ignore must keep the tarball small"
    install_dir = tmp_path / "collections"
    result = run(["ansible-galaxy", "collection", "install", "--offline", "--force", "-p", str(install_dir),
                  tarball], ANSIBLE_COLLECTIONS_PATH=str(install_dir), PYTHONPATH="")
    assert result.returncode == 0, result.stdout + result.stderr
    installed = install_dir / "ansible_collections" / "opsdeck" / "stack"
    assert (installed / "roles" / "compose" / "meta" / "argument_specs.yml").exists()
    assert not (installed / ".venv").exists() and not (installed / "build").exists()
    # A user's run: the installed playbook and inventory, the installed collection first
    # on the path (the bundled community.docker & co. come from the ansible package).
    user_cfg = tmp_path / "ansible.cfg"
    user_cfg.write_text("[defaults]\ninterpreter_python = auto_silent\n")
    result = run(["ansible-playbook", str(installed / "playbooks" / "deploy.yml"),
                  "-i", str(installed / "inventories" / "dev"), "--check"],
                 timeout=600, ANSIBLE_COLLECTIONS_PATH=str(install_dir),
                 ANSIBLE_CONFIG=str(user_cfg), PYTHONPATH="")
    assert result.returncode == 0, result.stdout[-4000:]
    assert "opsdeck.stack.preflight : Validate and normalise the stack model" in result.stdout
    assert recap(result.stdout)["failed"] == 0
    assert "included: %s/roles/" % installed in result.stdout, "the installed copy must be the one used"
