"""Helpers shared by the Kubernetes renderer's unit tests."""

import kubernetes_validate

VERSIONS = ("1.29.0", "1.33.0")


def by(manifests, kind, name=None):
    """Every manifest of ``kind``, or the one named ``name`` (asserted unique)."""
    items = [m for m in manifests if m["kind"] == kind]
    if name is None:
        return items
    found = [m for m in items if m["metadata"]["name"] == name]
    assert len(found) == 1, "%s/%s: %d found" % (kind, name, len(found))
    return found[0]


def validation_errors(manifests):
    """One line per manifest and version that fails strict schema validation."""
    errors = []
    for item in manifests:
        for version in VERSIONS:
            try:
                kubernetes_validate.validate(item, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                errors.append("%s/%s on %s: %s" % (item["kind"], item["metadata"]["name"],
                                                   version, str(exc).splitlines()[0]))
    return errors
