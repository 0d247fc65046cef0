"""Every role documents exactly the variables it defaults (prometheus.prometheus' CI check)."""

import os

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROLES = sorted(d for d in os.listdir(os.path.join(ROOT, "roles"))
               if os.path.isdir(os.path.join(ROOT, "roles", d)))


def load(*parts):
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as handle:
        return yaml.safe_load(handle) or {}


def test_there_are_roles():
    assert {"preflight", "images", "compose", "nginx_proxy"} <= set(ROLES)


@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_and_defaults_list_the_same_keys(role):
    specs = load("roles", role, "meta", "argument_specs.yml")["argument_specs"]["main"]
    documented = set(specs.get("options", {}))
    defaults = set(load("roles", role, "defaults", "main.yml"))
    assert documented - defaults == set(), "documented without a default in %s" % role
    assert defaults - documented == set(), "defaulted but not documented in %s" % role
    for name, option in specs.get("options", {}).items():
        assert option.get("description"), "%s.%s has no description" % (role, name)
        assert name.startswith(role + "_"), "%s: variable %s lacks the role prefix" % (role, name)
