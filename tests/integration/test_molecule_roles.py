"""The Molecule scenarios of the roles used on their own (see test_molecule.py for what each
checks): kubernetes (GitOps mode), monitoring and elk. Apart from test_molecule.py so that
pytest-xdist runs the two files on different workers."""

import pytest

from test_molecule import molecule_test


@pytest.mark.parametrize("scenario", ["kubernetes", "monitoring", "elk"])
def test_molecule_role_scenario(scenario):
    molecule_test(scenario)
