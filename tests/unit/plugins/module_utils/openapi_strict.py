"""Strict validation of manifests against a Kubernetes OpenAPI v2 document (swagger.json).

kubernetes-validate ships schemas for 1.25 and later only; for 1.20 the tests use the API
server's own OpenAPI document, which scripts/k8s-local.sh keeps beside the binaries it
builds (``<cache>/<version>/openapi-v2.json``, from the source's api/openapi-spec). Strict
as kubernetes-validate's ``--strict``: an unknown field is an error, and so is a missing
required field or a value of the wrong type.
"""

import glob
import json
import os

INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"


def openapi_path():
    """The OpenAPI v2 document of the locally built Kubernetes, or None."""
    path = os.environ.get("OPSDECK_K8S_OPENAPI_V2")
    if path:
        return path if os.path.isfile(path) else None
    cache = os.environ.get("OPSDECK_K8S_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "opsdeck", "k8s")
    found = sorted(glob.glob(os.path.join(cache, "current", "openapi-v2.json")))
    return found[0] if found else None


class Schema(object):
    def __init__(self, path):
        with open(path) as handle:
            self.definitions = json.load(handle)["definitions"]
        self.by_gvk = {}
        for name, definition in self.definitions.items():
            for gvk in definition.get("x-kubernetes-group-version-kind") or []:
                api_version = gvk["version"] if not gvk["group"] else "%s/%s" % (gvk["group"], gvk["version"])
                self.by_gvk[(api_version, gvk["kind"])] = name

    def errors(self, obj):
        """Every problem of one manifest, as 'path: message' lines."""
        name = self.by_gvk.get((obj.get("apiVersion"), obj.get("kind")))
        if name is None:
            return ["%s %s is not served by this version" % (obj.get("apiVersion"), obj.get("kind"))]
        out = []
        self._check(obj, {"$ref": "#/definitions/" + name}, "", out)
        return out

    def _check(self, value, schema, path, out):
        ref = schema.get("$ref")
        if ref:
            name = ref.split("/")[-1]
            if name == INT_OR_STRING:
                if not isinstance(value, (int, str)) or isinstance(value, bool):
                    out.append("%s: %r is neither an integer nor a string" % (path, value))
                return
            if name == QUANTITY:
                if not isinstance(value, (int, float, str)) or isinstance(value, bool):
                    out.append("%s: %r is not a quantity" % (path, value))
                return
            schema = self.definitions[name]
        kind = schema.get("type")
        if "properties" in schema or kind == "object":
            if not isinstance(value, dict):
                out.append("%s: expected an object, got %r" % (path, value))
                return
            props = schema.get("properties")
            for key, item in value.items():
                where = "%s.%s" % (path, key) if path else key
                if props is not None and key in props:
                    self._check(item, props[key], where, out)
                elif props is not None and "additionalProperties" not in schema:
                    out.append("%s: unknown field" % where)
                elif isinstance(schema.get("additionalProperties"), dict):
                    self._check(item, schema["additionalProperties"], where, out)
            for key in schema.get("required") or []:
                if key not in value:
                    out.append("%s: required field %s is missing" % (path or "(object)", key))
            return
        if kind == "array":
            if not isinstance(value, list):
                out.append("%s: expected a list, got %r" % (path, value))
                return
            for index, item in enumerate(value):
                self._check(item, schema.get("items") or {}, "%s[%d]" % (path, index), out)
            return
        expected = {"string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,)}.get(kind)
        if expected is None:
            return
        if not isinstance(value, expected) or (kind in ("integer", "number") and isinstance(value, bool)):
            out.append("%s: expected %s, got %r" % (path, kind, value))
