# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kubernetes connection helper for opsdeck.stack modules (private).

The connection options follow kubernetes.core's names, aliases and ``K8S_AUTH_*``
environment variables (kubeconfig, context, host, api_key, validate_certs, ca_cert,
client_cert, client_key, proxy), so a playbook that already talks to a cluster with
``kubernetes.core.k8s`` can pass the same options here.

The ``kubernetes`` Python client is used to load the configuration (kubeconfig files or
dicts, in-cluster service accounts, exec/OIDC token refresh) and for its REST transport
(TLS, client certificates, proxy). Requests are plain JSON over that transport so that
the helper does not depend on the generated model classes, which change between client
releases.
"""

from __future__ import annotations

import importlib.util
import json
import traceback

from urllib.parse import quote, urlencode

from ansible.module_utils.basic import env_fallback

# The kubernetes package takes about a second to import (it loads every generated API
# model), and the GitOps mode of the modules never needs it, so only its presence is
# checked here and the import happens on first use (``_lib``).
try:
    HAS_K8S = importlib.util.find_spec("kubernetes") is not None
except (ImportError, ValueError):  # pragma: no cover - broken environments
    HAS_K8S = False
K8S_IMP_ERR = None if HAS_K8S else "ModuleNotFoundError: No module named 'kubernetes'"
_LIB = {}


def _lib():
    """The kubernetes client modules, imported once."""
    if not _LIB:
        try:
            from kubernetes import client, config
            from kubernetes.client.exceptions import ApiException
        except ImportError:
            raise K8sError("the kubernetes Python client cannot be imported (%s); install or repair it "
                           "(pip install kubernetes) on the host that runs the module"
                           % traceback.format_exc().strip().splitlines()[-1])
        _LIB.update(client=client, config=config, ApiException=ApiException)
    return _LIB


USER_AGENT = "opsdeck.stack"
REQUEST_TIMEOUT = 30

# Same option names, aliases and environment variables as kubernetes.core.
K8S_AUTH_ARG_SPEC = dict(
    kubeconfig=dict(type="raw", no_log=True, fallback=(env_fallback, ["K8S_AUTH_KUBECONFIG"])),
    context=dict(type="str", fallback=(env_fallback, ["K8S_AUTH_CONTEXT"])),
    host=dict(type="str", fallback=(env_fallback, ["K8S_AUTH_HOST"])),
    api_key=dict(type="str", no_log=True, fallback=(env_fallback, ["K8S_AUTH_API_KEY"])),
    validate_certs=dict(type="bool", aliases=["verify_ssl"], fallback=(env_fallback, ["K8S_AUTH_VERIFY_SSL"])),
    ca_cert=dict(type="path", aliases=["ssl_ca_cert"], fallback=(env_fallback, ["K8S_AUTH_SSL_CA_CERT"])),
    client_cert=dict(type="path", aliases=["cert_file"], fallback=(env_fallback, ["K8S_AUTH_CERT_FILE"])),
    client_key=dict(type="path", aliases=["key_file"], no_log=False, fallback=(env_fallback, ["K8S_AUTH_KEY_FILE"])),
    proxy=dict(type="str", fallback=(env_fallback, ["K8S_AUTH_PROXY"])),
)

AUTH_KEYS = tuple(K8S_AUTH_ARG_SPEC)


class K8sError(Exception):
    """A problem talking to the API server, with a message a person can act on."""


class K8sApiError(K8sError):
    """The API server answered with an error status."""

    def __init__(self, status, reason, message, body=None, method=None, path=None):
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body
        self.method = method
        self.path = path
        super(K8sApiError, self).__init__(
            "%s %s: HTTP %s %s: %s" % (method, path, status, reason or "", message)
        )


def _load_kubeconfig(configuration, kubeconfig, context):
    config = _lib()["config"]
    if isinstance(kubeconfig, dict):
        config.load_kube_config_from_dict(
            config_dict=kubeconfig, context=context, client_configuration=configuration
        )
    else:
        config.load_kube_config(
            config_file=kubeconfig or None, context=context, client_configuration=configuration,
            persist_config=False,
        )


def build_configuration(auth):
    """Return a kubernetes ``Configuration`` from kubernetes.core-style auth options.

    Order, as in kubernetes.core: explicit host + credentials need no file; otherwise a
    kubeconfig/context if given; otherwise the in-cluster service account, then the
    default kubeconfig (``KUBECONFIG`` or ``~/.kube/config``). Explicit options
    override whatever was loaded.
    """
    lib = _lib()
    auth = dict((k, v) for k, v in (auth or {}).items() if v is not None)
    configuration = lib["client"].Configuration()
    host = auth.get("host")
    direct = host and (auth.get("api_key") or (auth.get("client_cert") and auth.get("client_key")))
    if not direct:
        try:
            if auth.get("kubeconfig") or auth.get("context"):
                _load_kubeconfig(configuration, auth.get("kubeconfig"), auth.get("context"))
            else:
                try:
                    lib["config"].load_incluster_config(client_configuration=configuration)
                except lib["config"].ConfigException:
                    _load_kubeconfig(configuration, None, None)
        except Exception as exc:  # the client raises several types here
            if not host:
                raise K8sError(
                    "could not load a Kubernetes configuration (%s): set kubeconfig (or the "
                    "KUBECONFIG / K8S_AUTH_KUBECONFIG environment variable) and optionally "
                    "context, or host with api_key or client_cert/client_key" % (exc,)
                )
    if host:
        configuration.host = host.rstrip("/")
    if auth.get("api_key"):
        configuration.api_key = {"authorization": "Bearer %s" % auth["api_key"]}
        configuration.api_key_prefix = {}
    if "validate_certs" in auth:
        configuration.verify_ssl = bool(auth["validate_certs"])
    if auth.get("ca_cert"):
        configuration.ssl_ca_cert = auth["ca_cert"]
    if auth.get("client_cert"):
        configuration.cert_file = auth["client_cert"]
    if auth.get("client_key"):
        configuration.key_file = auth["client_key"]
    if auth.get("proxy"):
        configuration.proxy = auth["proxy"]
    return configuration


def _status_message(body):
    """Pull the human message out of a Kubernetes ``Status`` body."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        data = json.loads(body) if isinstance(body, str) else body
    except ValueError:
        return (body or "").strip()[:500]
    if isinstance(data, dict):
        return str(data.get("message") or data.get("reason") or "")[:2000]
    return str(data)[:500]


class K8sClient(object):
    """Minimal JSON REST client over the kubernetes package's transport."""

    def __init__(self, configuration, timeout=REQUEST_TIMEOUT):
        self.configuration = configuration
        self.timeout = timeout
        self._api_client = _lib()["client"].ApiClient(configuration)
        self._rest = self._api_client.rest_client

    @property
    def host(self):
        return self.configuration.host

    def _auth_headers(self):
        headers = {}
        try:
            settings = self.configuration.auth_settings() or {}
        except Exception:  # pragma: no cover - defensive, old clients
            settings = {}
        for setting in settings.values():
            if setting.get("in") == "header" and setting.get("value"):
                headers[setting["key"]] = setting["value"]
        return headers

    def request(self, method, path, query=None, body=None, content_type=None):
        """Send one request; return the decoded JSON body (or ``{}``).

        ``content_type`` overrides ``application/json`` for the body, e.g.
        ``application/apply-patch+yaml`` for a server-side apply (JSON is YAML).

        Raises ``K8sApiError`` for HTTP errors and ``K8sError`` when the server
        cannot be reached.
        """
        url = self.configuration.host.rstrip("/") + path
        if query:
            url += "?" + urlencode(query)
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
            if content_type and not isinstance(body, (str, bytes)):
                body = json.dumps(body)  # the REST layer encodes only JSON content types itself
        headers.update(self._auth_headers())
        try:
            resp = self._rest.request(method, url, headers=headers, body=body, _request_timeout=self.timeout)
        except Exception as exc:
            if isinstance(exc, _lib()["ApiException"]):
                # older clients raise for non-2xx in the REST layer
                raise K8sApiError(exc.status, exc.reason, _status_message(exc.body), exc.body, method, path)
            raise K8sError(
                "cannot reach the Kubernetes API at %s (%s %s): %s; check host/kubeconfig/context, "
                "proxy and that the API server is up" % (self.configuration.host, method, path, exc)
            )
        data = getattr(resp, "data", None)
        if data is None and hasattr(resp, "read"):
            data = resp.read()
        status = resp.status
        if not 200 <= status <= 299:
            raise K8sApiError(status, getattr(resp, "reason", ""), _status_message(data), data, method, path)
        if not data:
            return {}
        try:
            return json.loads(data)
        except ValueError:
            raise K8sError("the API server at %s answered %s %s with something that is not JSON"
                           % (self.configuration.host, method, path))

    def get_or_none(self, path, query=None):
        """GET ``path``; ``None`` when it does not exist (404)."""
        try:
            return self.request("GET", path, query=query)
        except K8sApiError as exc:
            if exc.status == 404:
                return None
            raise


def namespaced_path(api_version, plural, namespace, name=None):
    """REST path of a namespaced resource, e.g. ``/apis/apps/v1/namespaces/ns/deployments/x``."""
    prefix = "/api/v1" if api_version == "v1" else "/apis/%s" % api_version
    path = "%s/namespaces/%s/%s" % (prefix, quote(namespace, safe=""), plural)
    if name is not None:
        path += "/" + quote(name, safe="")
    return path


def auth_from_params(params):
    """The connection options out of a module's params."""
    return dict((k, params.get(k)) for k in AUTH_KEYS)


def client_from_params(params, timeout=REQUEST_TIMEOUT):
    """A ready ``K8sClient`` for the connection options in ``params``."""
    return K8sClient(build_configuration(auth_from_params(params)), timeout=timeout)


def explain_api_error(exc, what):
    """Turn an API error into a message saying what to do."""
    if isinstance(exc, K8sApiError):
        hints = {
            401: "authentication failed: check api_key, the kubeconfig user or client_cert/client_key",
            403: "forbidden: the account needs RBAC permission for this (get/list/create/update/delete "
                 "on horizontalpodautoscalers.autoscaling, get on the target deployments/statefulsets)",
            404: "not found: check the namespace and names",
            409: "conflict: the object changed while we worked on it; run the task again",
            422: "the API server rejected the object as invalid",
        }
        hint = hints.get(exc.status, "the API server answered HTTP %s" % exc.status)
        return "%s failed: %s (%s)" % (what, hint, exc.message or exc.reason)
    return "%s failed: %s" % (what, exc)
