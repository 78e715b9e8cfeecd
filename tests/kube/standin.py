#!/usr/bin/env python3
"""A stand-in Kubernetes API server, kubelet and kube-proxy for Cutover's tests.

No real Kubernetes API server can run on the machines Cutover is tested on, so
this plays one, well enough for the real `kubectl` to drive it (checked with
v1.20, Debian's kubernetes-client, and v1.32, the Google Cloud SDK's), and it
really runs the pods:

* The API, in JSON: /version, discovery, and the resources core/v1 pods (+log,
  +status), services (+status), namespaces, events (always an empty list);
  apps/v1 deployments (+scale, +status); discovery.k8s.io/v1 endpointslices
  (read-only, computed on read from Services and pods); and
  gateway.networking.k8s.io/v1 gateways and httproutes. GET, LIST (with a
  labelSelector), POST, PUT, DELETE and PATCH (JSON merge, JSON patch,
  strategic merge, server-side apply), refused with the real server's Status
  objects and wording. It is served over plain HTTP, or over HTTPS when --token
  is given: kubectl sends a kubeconfig's token to https servers only (its
  clientcmd reads a user's credentials only for TLS), so the stand-in then
  makes a self-signed certificate for the --listen host with the `openssl`
  command and gives it to kubectl as the kubeconfig's
  certificate-authority-data.
* A deployment controller: spec.replicas pods of the current template, named
  `<deployment>-<hash>-<suffix>`; a new template rolls the old pods out once
  the new ones are ready (surge first, then remove).
* A kubelet: each pod's first container `command + args` runs as a local
  process group, in its own temporary working directory, with its output in the
  pod's log; it is probed for readiness, restarted with a back-off when it
  exits, and terminated (SIGTERM, SIGKILL after the grace period) when the pod
  goes. If the stand-in is killed, even by SIGKILL, its pods' processes die too
  (PR_SET_PDEATHSIG, and a reaper process for what they started).
* A kube-proxy: a NodePort Service listens on 127.0.0.1:<nodePort> and a
  Gateway on 127.0.0.1:<listeners[0].port>; each TCP connection is spliced to a
  ready pod chosen when it arrives (a Gateway first picks a backendRef of the
  first HTTPRoute, by name, that names it, by weight).

What it does not do, on purpose:

* no watch (so no `kubectl get -w`, `rollout status`, `wait`), no protobuf, no
  server-side Table printing (kubectl prints NAME and AGE), no OpenAPI
  (/openapi/v2 and /v3 are 404: give kubectl --validate=false), no paging
  (`limit` is ignored); a fieldSelector may only name metadata.name and
  metadata.namespace (what `kubectl delete` lists by to see an object gone),
  others are ignored;
* authentication is one bearer token (--token); no authorization;
* no nodes, scheduling, images or containers: `image` is ignored, only the first
  container of a pod runs, as a process on this machine whose environment is
  PATH plus the container's `env` (name/value; valueFrom is not supported) plus
  PORT (a free 127.0.0.1 port given to the pod, also in its annotation
  `standin.cutover.dev/port`) and POD_NAME. A container without `command`
  fails (the stand-in cannot run an image's entrypoint). Readiness probes
  (httpGet, tcpSocket; others count as passing) go to PORT whatever port they
  name, every min(periodSeconds, 1) s with a 1 s timeout, and one result
  decides; without one a pod is ready once its process has run 0.2 s; liveness
  and startup probes are ignored. A process that exits is restarted as
  restartPolicy says, after a back-off of 1 s doubling to 5 s. A pod's spec is
  read once, when it starts;
* `application/strategic-merge-patch+json` is applied as a JSON merge patch
  (RFC 7386): lists are replaced rather than merged by key, and `$` directives
  are dropped;
* server-side apply merges the applied object into the stored one (maps merged,
  lists replaced, null deletes); there are no managedFields and no field
  ownership, so a field a manager stops applying stays;
* deleted objects vanish at once (no finalizers; a deleted pod's process gets
  SIGTERM, then SIGKILL after its grace period, capped at 5 s), so
  EndpointSlice endpoints are never `terminating`; a Deployment's pods are
  garbage-collected with it;
* only a Service's first port is served; ClusterIP Services are stored but not
  forwarded and get no clusterIP; EndpointSlice ports carry the Service's
  targetPort when it is a number, else 0; each Service's slice is named
  `<service>-abcde`;
* routing is per TCP connection, not per HTTP request: HTTPRoute hostnames,
  matches and filters, and all but its first rule, are ignored, and its status
  is stored as written; the Deployment strategy is always the same rolling
  update.

Usage: standin.py --listen 127.0.0.1:PORT --kubeconfig PATH [--token T] [--log F]
"""

import argparse
import base64
import copy
import ctypes
import hashlib
import http.client
import ipaddress
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

LOCALHOST = "127.0.0.1"
PORT_ANNOTATION = "standin.cutover.dev/port"
POD_PORTS = range(20000, 30000)  # given to pods
NODE_PORTS = range(30000, 32000)  # given to NodePort Services that name none
VALID_PORTS = range(20000, 32000)  # what a nodePort or listener port may be
MAX_GRACE = 5.0  # seconds a pod's process gets between SIGTERM and SIGKILL
SHUTDOWN_GRACE = 2.0
NO_COMMAND = "the stand-in runs a container's command; this one has none"
NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' random name suffixes
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")

# Content types.
JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


# --- The API's resources -------------------------------------------------

CRUD = ("create", "delete", "get", "list", "patch", "update")


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool = True
    short_names: tuple = ()
    verbs: tuple = CRUD
    subresources: tuple = ()
    categories: tuple = ()

    @property
    def api_version(self):
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self):
        """How NotFound and Conflict name it: `deployments.apps`, `pods`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def group_kind(self):
        """How Invalid names it: `Deployment.apps`, `Service`."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def built_in(self):
        """Whether the real server takes strategic merge patches for it (not CRDs)."""
        return self.group in ("", "apps", "discovery.k8s.io")


PODS = Resource("", "v1", "pods", "pod", "Pod", short_names=("po",),
                subresources=("log", "status"), categories=("all",))
SERVICES = Resource("", "v1", "services", "service", "Service", short_names=("svc",),
                    subresources=("status",), categories=("all",))
NAMESPACES = Resource("", "v1", "namespaces", "namespace", "Namespace", namespaced=False,
                      short_names=("ns",))
EVENTS = Resource("", "v1", "events", "event", "Event", short_names=("ev",), verbs=("list",))
DEPLOYMENTS = Resource("apps", "v1", "deployments", "deployment", "Deployment",
                       short_names=("deploy",), subresources=("scale", "status"),
                       categories=("all",))
ENDPOINTSLICES = Resource("discovery.k8s.io", "v1", "endpointslices", "endpointslice",
                          "EndpointSlice", verbs=("get", "list"))
GATEWAYS = Resource("gateway.networking.k8s.io", "v1", "gateways", "gateway", "Gateway",
                    short_names=("gtw",))
HTTPROUTES = Resource("gateway.networking.k8s.io", "v1", "httproutes", "httproute", "HTTPRoute")

RESOURCES = (PODS, SERVICES, NAMESPACES, EVENTS, DEPLOYMENTS, ENDPOINTSLICES, GATEWAYS,
             HTTPROUTES)
GROUP_VERSIONS = tuple(dict.fromkeys((r.group, r.version) for r in RESOURCES))


def discovery_entries(res):
    """The APIResourceList entries for a resource and its subresources."""
    entries = [{"name": res.plural, "singularName": res.singular, "namespaced": res.namespaced,
                "kind": res.kind, "verbs": list(res.verbs)}]
    if res.short_names:
        entries[0]["shortNames"] = list(res.short_names)
    if res.categories:
        entries[0]["categories"] = list(res.categories)
    for sub in res.subresources:
        entry = {"name": f"{res.plural}/{sub}", "singularName": "", "namespaced": res.namespaced,
                 "kind": res.kind, "verbs": ["get", "patch", "update"]}
        if sub == "log":
            entry["verbs"] = ["get"]
        elif sub == "scale":
            entry.update(group="autoscaling", version="v1", kind="Scale")
        entries.append(entry)
    return entries


# --- Errors, as the real API server words them -----------------------------

class ApiError(Exception):
    def __init__(self, code, reason, message, details=None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self):
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "code": self.code}
        if self.details is not None:
            body["details"] = self.details
        return body


def not_found(res, name):
    return ApiError(404, "NotFound", f'{res.qualified} "{name}" not found',
                    {"name": name, "group": res.group, "kind": res.plural})


def no_such_path():
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def already_exists(res, name):
    return ApiError(409, "AlreadyExists", f'{res.qualified} "{name}" already exists',
                    {"name": name, "group": res.group, "kind": res.plural})


def conflict(res, name):
    return ApiError(409, "Conflict",
                    f'Operation cannot be fulfilled on {res.qualified} "{name}": the object has '
                    "been modified; please apply your changes to the latest version and try again",
                    {"name": name, "group": res.group, "kind": res.plural})


def invalid(res, name, errors):
    """422 for field errors, each (field, reason, message) as field_required() etc. make."""
    listed = [f"{field}: {message}" for field, _, message in errors]
    summary = listed[0] if len(listed) == 1 else "[" + ", ".join(listed) + "]"
    return ApiError(422, "Invalid", f'{res.group_kind} "{name}" is invalid: {summary}',
                    {"name": name, "group": res.group, "kind": res.kind,
                     "causes": [{"reason": reason, "message": message, "field": field}
                                for field, reason, message in errors]})


def field_required(field, detail=""):
    return field, "FieldValueRequired", "Required value" + (f": {detail}" if detail else "")


def field_invalid(field, value, detail):
    return field, "FieldValueInvalid", f"Invalid value: {json.dumps(value)}: {detail}"


def rejected_patch(message):
    """What the real server answers when a JSON patch cannot be applied (a failed `test`)."""
    return ApiError(422, "Invalid",
                    "the server rejected our request due to an error in our request",
                    {"causes": [{"reason": "UnexpectedServerResponse", "message": message}]})


def bad_request(message):
    return ApiError(400, "BadRequest", message)


def unsupported_media_type(accepted):
    return ApiError(415, "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types "
                    "include: " + ", ".join(accepted))


def method_not_allowed():
    return ApiError(405, "MethodNotAllowed",
                    "the server does not allow this method on the requested resource")


# --- Patches ---------------------------------------------------------------

def merge_patch(target, patch):
    """RFC 7386: maps merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def without_directives(patch):
    """A strategic merge patch without its `$patch`, `$setElementOrder/...` etc. keys."""
    if isinstance(patch, dict):
        return {k: without_directives(v) for k, v in patch.items() if not k.startswith("$")}
    if isinstance(patch, list):
        return [without_directives(v) for v in patch]
    return patch


class PatchFailed(Exception):
    """A JSON patch that does not apply to the document (worded like evanphx/json-patch)."""


def json_patch(doc, operations):
    """RFC 6902 on a copy of `doc`: every operation applies, or PatchFailed and none does."""
    doc = copy.deepcopy(doc)
    for op in operations:
        if not isinstance(op, dict):
            raise PatchFailed("each operation must be an object")
        kind, path = op.get("op"), _pointer(op.get("path"))
        if kind == "add":
            doc = _add(doc, path, _value(op))
        elif kind == "remove":
            _remove(doc, path, op["path"])
        elif kind == "replace":
            _lookup(doc, path, op["path"], "replace")
            if not path:
                doc = _value(op)
            else:
                parent = _lookup(doc, path[:-1], op["path"], "replace")
                parent[_key(parent, path[-1], op["path"])] = _value(op)
        elif kind == "move":
            value = _remove(doc, _pointer(op.get("from")), op.get("from"))
            doc = _add(doc, path, value)
        elif kind == "copy":
            doc = _add(doc, path, copy.deepcopy(_lookup(doc, _pointer(op.get("from")),
                                                        op.get("from"), "copy")))
        elif kind == "test":
            if _canonical(_lookup(doc, path, op["path"], "test")) != _canonical(_value(op)):
                raise PatchFailed(f"testing value {op['path']} failed: test failed")
        else:
            raise PatchFailed(f"Unexpected kind: {kind}")
    return doc


def _pointer(path):
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise PatchFailed(f"invalid JSON pointer: {path!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in path.split("/")[1:]]


def _value(op):
    if "value" not in op:
        raise PatchFailed(f"{op.get('op')} operation has no value")
    return copy.deepcopy(op["value"])


def _canonical(value):
    return json.dumps(value, sort_keys=True)


def _key(container, token, path, insert=False):
    """`token` as a key of `container`: a string for a map, an index for a list."""
    if isinstance(container, dict):
        return token
    if isinstance(container, list):
        if insert and token == "-":
            return len(container)
        limit = len(container) + (1 if insert else 0)
        if token.isdigit() and int(token) < limit:
            return int(token)
    raise PatchFailed(f"doc is missing path: {path!r}: missing value")


def _lookup(doc, tokens, path, verb):
    for token in tokens:
        key = _key(doc, token, path)
        if isinstance(doc, dict) and key not in doc:
            raise PatchFailed(f"{verb} operation does not apply: doc is missing path: {path!r}")
        doc = doc[key]
    return doc


def _add(doc, tokens, value):
    if not tokens:
        return value
    path = "/" + "/".join(tokens)
    parent = _lookup(doc, tokens[:-1], path, "add")
    key = _key(parent, tokens[-1], path, insert=True)
    if isinstance(parent, list):
        parent.insert(key, value)
    else:
        parent[key] = value
    return doc


def _remove(doc, tokens, path):
    if not tokens:
        raise PatchFailed("cannot remove the whole document")
    parent = _lookup(doc, tokens[:-1], path, "remove")
    key = _key(parent, tokens[-1], path)
    if isinstance(parent, dict) and key not in parent:
        raise PatchFailed(f"remove operation does not apply: doc is missing path: {path!r}")
    return parent.pop(key)


def patched(ctype, doc, body):
    """`doc` with a JSON, merge or strategic merge PATCH body applied."""
    patch = decode_json(body)
    if ctype == JSON_PATCH:
        if not isinstance(patch, list):
            raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
        try:
            return json_patch(doc, patch)
        except PatchFailed as e:
            raise rejected_patch(str(e)) from None
    if ctype == STRATEGIC_PATCH:
        patch = without_directives(patch)
    if not isinstance(patch, dict):
        raise bad_request("the patch is not a JSON object")
    return merge_patch(doc, patch)


def decode_json(body):
    try:
        return json.loads(body or b"null")
    except ValueError as e:
        raise bad_request(f"the request body is not JSON: {e}") from None


# --- Label selectors ---------------------------------------------------------

_LABEL_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_EQUALITY = re.compile(rf"({_LABEL_KEY})\s*(==|=|!=)\s*([-A-Za-z0-9_.]*)")
_SET = re.compile(rf"({_LABEL_KEY})\s+(in|notin)\s*\(([^)]*)\)")
_EXISTS = re.compile(rf"(!?)\s*({_LABEL_KEY})")


def parse_selector(text):
    """`a=b,c!=d,e,!f,g in (h,i)` as a list of (key, operator, values)."""
    requirements = []
    for part in re.split(r",(?![^()]*\))", text or ""):
        part = part.strip()
        if not part:
            continue
        if m := _EQUALITY.fullmatch(part):
            requirements.append((m[1], "!=" if m[2] == "!=" else "=", {m[3]}))
        elif m := _SET.fullmatch(part):
            values = {v.strip() for v in m[3].split(",") if v.strip()}
            requirements.append((m[1], "!=" if m[2] == "notin" else "=", values))
        elif m := _EXISTS.fullmatch(part):
            requirements.append((m[2], "!" if m[1] else "exists", None))
        else:
            raise bad_request(f"unable to parse requirement: {part!r}")
    return requirements


def selector_matches(requirements, labels):
    for key, op, values in requirements:
        present = key in labels
        if op == "=" and not (present and labels[key] in values):
            return False
        if op == "!=" and present and labels[key] in values:
            return False
        if (op == "exists" and not present) or (op == "!" and present):
            return False
    return True


FIELDS = ("metadata.name", "metadata.namespace")  # the field selectors served


def fields_of(obj):
    meta = obj.get("metadata") or {}
    return {"metadata.name": meta.get("name", ""), "metadata.namespace": meta.get("namespace", "")}


def labels_match(selector, labels):
    """Whether a map selector (a Service's, a matchLabels) picks these labels."""
    return all(labels.get(k) == v for k, v in selector.items())


# --- Small helpers -----------------------------------------------------------

def now_iso():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def random_suffix(n=5):
    return "".join(random.choice(NAME_ALPHABET) for _ in range(n))


def labels_of(obj):
    return (obj.get("metadata") or {}).get("labels") or {}


def pod_ready(pod):
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def template_hash(template):
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


def port_is_free(port):
    with socket.socket() as s:
        try:
            s.bind((LOCALHOST, port))
        except OSError:
            return False
    return True


def node_port(service):
    """The port a Service is served on at the node (127.0.0.1), if it is."""
    spec = service.get("spec") or {}
    ports = spec.get("ports") or [{}]
    if spec.get("type") in ("NodePort", "LoadBalancer"):
        return ports[0].get("nodePort")
    return None


def listener_port(gateway):
    listeners = (gateway.get("spec") or {}).get("listeners") or [{}]
    return listeners[0].get("port")


def expand(text, variables):
    """Kubernetes' $(VAR) expansion: defined variables are replaced, `$$` is `$`."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            if text[i + 1] == "$":
                out.append("$")
                i += 2
                continue
            end = text.find(")", i + 2) if text[i + 1] == "(" else -1
            if end != -1:
                name = text[i + 2:end]
                out.append(variables.get(name, text[i:end + 1]))
                i = end + 1
                continue
        out.append(text[i])
        i += 1
    return "".join(out)


# --- The store ---------------------------------------------------------------

class Store:
    """Every API object, by resource and (namespace, name); hold `lock` to use it."""

    def __init__(self):
        self.lock = threading.RLock()
        self._objects = {res: {} for res in RESOURCES}
        self._version = 0

    @property
    def version(self):
        return str(self._version)

    def get(self, res, namespace, name):
        return self._objects[res].get((namespace or "", name))

    def list(self, res, namespace=None):
        return [obj for (ns, _), obj in sorted(self._objects[res].items())
                if namespace is None or ns == namespace]

    def put(self, res, obj):
        """Stores `obj` with a new resourceVersion."""
        self._version += 1
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self._version)
        self._objects[res][(meta.get("namespace", ""), meta["name"])] = obj
        return obj

    def remove(self, res, namespace, name):
        return self._objects[res].pop((namespace or "", name), None)


# --- The kubelet: one pod's process ----------------------------------------------

_LIBC = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15


def _die_with_parent():
    """Runs in the child before exec: SIGKILL it if the stand-in dies."""
    _LIBC.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))


class Reaper:
    """A helper process that kills every pod's process group once the stand-in is gone.

    PR_SET_PDEATHSIG kills a pod's first process when the stand-in dies, even by
    SIGKILL, but not what that process started (`sh -c ...`). This process, forked
    before any thread and in a session of its own, is told each pod's process group
    through a pipe and kills the groups still listed when the pipe closes, which it
    does however the stand-in ends.
    """

    def __init__(self):
        read, self._write = os.pipe()
        self._pid = os.fork()
        if self._pid == 0:
            os.close(self._write)
            os.setsid()
            _LIBC.prctl(PR_SET_NAME, b"standin-reaper")  # what ps and pgrep (without -f) show
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            self._serve(read)
            os._exit(0)
        os.close(read)
        self._lock = threading.Lock()

    def close(self):
        """Ends the reaper (it kills the groups still listed: none after a clean shutdown)."""
        with self._lock:
            os.close(self._write)
            self._write = None
        os.waitpid(self._pid, 0)

    def watch(self, pgid):
        self._send(f"+{pgid}\n")

    def forget(self, pgid):
        self._send(f"-{pgid}\n")

    def _send(self, line):
        with self._lock:
            try:
                if self._write is not None:
                    os.write(self._write, line.encode())
            except OSError:
                pass  # the reaper is gone: PR_SET_PDEATHSIG still covers the first processes

    @staticmethod
    def _serve(read):
        groups, pending = set(), b""
        while chunk := os.read(read, 4096):
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                (groups.add if line.startswith(b"+") else groups.discard)(int(line[1:]))
        for pgid in groups:
            _kill_group(pgid, signal.SIGKILL)


class PodRunner:
    """The kubelet's work for one pod: run, probe, restart and stop its first container.

    One thread per pod; it alone starts and reaps the process (PR_SET_PDEATHSIG is
    tied to the thread that forked), and reports the pod's status to the cluster.
    """

    def __init__(self, cluster, pod, port, directory):
        meta, spec = pod["metadata"], copy.deepcopy(pod.get("spec") or {})
        self.cluster, self.port, self.directory = cluster, port, directory
        self.uid, self.namespace, self.name = meta["uid"], meta["namespace"], meta["name"]
        self.container = (spec.get("containers") or [{}])[0]
        self.restart_policy = spec.get("restartPolicy", "Always")
        self.grace = min(float(spec.get("terminationGracePeriodSeconds", 30)), MAX_GRACE)
        self.workdir = os.path.join(directory, "work")
        self.log_path = os.path.join(directory, "container.log")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"pod {self.name}", daemon=True)
        # What the pod's status reports.
        self.proc = None
        self.phase = "Pending"
        self.state = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state = {}
        self.restarts = 0
        self.ready = False
        self.ready_changed = self.start_time = now_iso()
        self.started_at = None  # when the current process started (ISO)
        self.started_clock = 0.0  # the same, on the monotonic clock
        self._published = None

    def start(self):
        self._thread.start()

    def stop(self, grace=None):
        """Ends the pod: its thread terminates the process and goes."""
        if grace is not None:
            self.grace = min(self.grace, max(float(grace), 0.0))
        self._stop.set()

    def join(self, timeout):
        self._thread.join(timeout)

    def read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return b""

    def _run(self):
        try:
            os.makedirs(self.workdir, exist_ok=True)
            if self.container.get("command"):
                self._supervise()
            else:
                self.phase = "Failed"
                self.state = {"waiting": {"reason": "ErrImagePull", "message": NO_COMMAND}}
                self._publish()
                self._stop.wait()
        except Exception:  # a bug here must not leave the process behind silently
            traceback.print_exc()
        finally:
            self._terminate()
            shutil.rmtree(self.directory, ignore_errors=True)

    def _supervise(self):
        backoff, next_start, probe_due = 1.0, 0.0, 0.0
        probe = self.container.get("readinessProbe")
        period = min(float(probe.get("periodSeconds", 1)), 1.0) if probe else 0.0
        while not self._stop.is_set():
            now, code = time.monotonic(), None
            if self.proc is not None:
                code = self.proc.poll()
                if code is None and now >= probe_due:
                    self._set_ready(self._probe(probe))
                    probe_due = time.monotonic() + period
            elif next_start is not None and now >= next_start:
                code = self._spawn()
                probe_due = now
            if code is not None:
                self._exited(code)
                if self.restart_policy == "Always" or (
                        self.restart_policy == "OnFailure" and code != 0):
                    next_start = now + backoff
                    self.state = {"waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": f"back-off {backoff:g}s restarting failed container="
                                   f"{self.container.get('name')} pod={self.name}_"
                                   f"{self.namespace}({self.uid})"}}
                    backoff = min(backoff * 2, 5.0)
                else:
                    next_start = None
                    self.phase = "Succeeded" if code == 0 else "Failed"
                    self.state, self.last_state = self.last_state, {}
            self._publish()
            self._stop.wait(0.1)

    def _environment(self):
        variables = {"PORT": str(self.port), "POD_NAME": self.name}
        for item in self.container.get("env") or []:
            if "name" in item:
                variables[item["name"]] = expand(str(item.get("value", "")), variables)
        variables.update(PORT=str(self.port), POD_NAME=self.name)
        return variables

    def _spawn(self):
        """Starts the container's process; None, or an exit code if it cannot start."""
        variables = self._environment()
        argv = [expand(str(a), variables)
                for a in (self.container.get("command") or []) + (self.container.get("args") or [])]
        env = {"PATH": os.environ.get("PATH", os.defpath), **variables}
        if self.phase != "Pending":
            self.restarts += 1
        self.phase = "Running"
        self.started_at, self.started_clock = now_iso(), time.monotonic()
        with open(self.log_path, "ab") as log:
            try:
                self.proc = subprocess.Popen(
                    argv, cwd=self.workdir, env=env, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)
            except OSError as e:
                log.write(f"stand-in: cannot start {argv!r}: {e}\n".encode())
                self.last_state = {"terminated": {"exitCode": 128, "reason": "StartError",
                                                  "message": str(e), "startedAt": self.started_at,
                                                  "finishedAt": now_iso()}}
                return 128
        self.cluster.reaper.watch(self.proc.pid)
        self.state = {"running": {"startedAt": self.started_at}}
        return None

    def _exited(self, code):
        """Records the process's exit and kills what it left in its process group."""
        if code < 0:  # killed by a signal, as a container runtime reports it
            code = 128 - code
        if self.proc is not None:  # (else _spawn recorded why it could not start)
            self.last_state = {"terminated": {
                "exitCode": code, "reason": "Completed" if code == 0 else "Error",
                "startedAt": self.started_at, "finishedAt": now_iso()}}
            _kill_group(self.proc.pid, signal.SIGKILL)
            self.cluster.reaper.forget(self.proc.pid)
        self.proc = None
        self._set_ready(False)

    def _set_ready(self, ready):
        if ready != self.ready:
            self.ready, self.ready_changed = ready, now_iso()

    def _probe(self, probe):
        if not probe:
            return time.monotonic() - self.started_clock >= 0.2
        if "httpGet" in probe:
            conn = http.client.HTTPConnection(LOCALHOST, self.port, timeout=1)
            try:
                conn.request("GET", probe["httpGet"].get("path") or "/",
                             headers={"User-Agent": "kube-probe/1.20"})
                response = conn.getresponse()
                response.read(10240)  # as the kubelet does; closing with unread data resets
                return 200 <= response.status < 400
            except (OSError, http.client.HTTPException):
                return False
            finally:
                conn.close()
        if "tcpSocket" in probe:
            try:
                socket.create_connection((LOCALHOST, self.port), timeout=1).close()
                return True
            except OSError:
                return False
        return True

    def _terminate(self):
        proc, self.proc = self.proc, None
        if proc is None:
            return
        _kill_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(self.grace)
        except subprocess.TimeoutExpired:
            pass
        _kill_group(proc.pid, signal.SIGKILL)  # also whatever else is left in the group
        proc.wait()
        self.cluster.reaper.forget(proc.pid)

    def _publish(self):
        status = self._status()
        if status != self._published:
            self._published = status
            self.cluster.set_pod_status(self.uid, self.namespace, self.name, status)

    def _status(self):
        name = self.container.get("name", "")

        def condition(kind, ok, since):
            c = {"type": kind, "status": "True" if ok else "False", "lastProbeTime": None,
                 "lastTransitionTime": since}
            if not ok:
                c.update(reason="ContainersNotReady",
                         message=f"containers with unready status: [{name}]")
            return c

        running = self.proc is not None
        container = {"name": name, "state": self.state, "lastState": self.last_state,
                     "ready": self.ready, "restartCount": self.restarts,
                     "image": self.container.get("image", ""), "imageID": "",
                     "started": running}
        if running:
            container["containerID"] = f"standin://{self.proc.pid}"
        return {
            "phase": self.phase,
            "conditions": [condition("Initialized", True, self.start_time),
                           condition("Ready", self.ready, self.ready_changed),
                           condition("ContainersReady", self.ready, self.ready_changed),
                           condition("PodScheduled", True, self.start_time)],
            "hostIP": LOCALHOST, "podIP": LOCALHOST, "podIPs": [{"ip": LOCALHOST}],
            "startTime": self.start_time,
            "containerStatuses": [container],
        }


def _kill_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# --- The kube-proxy: listeners and splicing ------------------------------------

class Listener:
    """A TCP listener on 127.0.0.1 that hands each connection to a backend chosen on arrival."""

    def __init__(self, port, target, choose):
        self.port, self.target, self._choose = port, target, choose
        self._sock = socket.create_server((LOCALHOST, port), backlog=128)
        threading.Thread(target=self._accept, name=f"listener {port}", daemon=True).start()

    def close(self):
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() below
        except OSError:
            pass
        self._sock.close()

    def _accept(self):
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._forward, args=(conn,), daemon=True).start()

    def _forward(self, conn):
        try:
            port = self._choose(self.target)
        except Exception:  # a malformed route, say: this connection gets nowhere
            traceback.print_exc()
            port = None
        if port is None:
            conn.close()
            return
        try:
            upstream = socket.create_connection((LOCALHOST, port), timeout=2)
        except OSError:
            conn.close()
            return
        upstream.settimeout(None)
        splice(conn, upstream)


def _pipe(src, dst):
    """Copies src to dst until src's end, then half-closes dst; an error ends both."""
    try:
        while data := src.recv(65536):
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def splice(a, b):
    other = threading.Thread(target=_pipe, args=(a, b), daemon=True)
    other.start()
    _pipe(b, a)
    other.join()
    a.close()
    b.close()


# --- The cluster: admission, controllers, kubelet and proxy ----------------------

@dataclass
class Rollout:
    """A Deployment's progress towards one template, for its Progressing condition."""
    template: str
    ready: int
    since: float
    done: bool = False


class Cluster:
    """The cluster's state and machinery: admission of writes, the deployment controller,
    the kubelet's pods and the proxy's listeners. All but the pods' own threads work
    under store.lock."""

    def __init__(self, state_dir, reaper):
        self.store = Store()
        self.state_dir, self.reaper = state_dir, reaper
        self.closed = False  # once shut down, no pod starts and no listener opens
        self.runners = {}  # pod uid -> PodRunner
        self.listeners = {}  # port -> Listener
        self.rollouts = {}  # deployment uid -> Rollout
        self._round_robin = {}  # (namespace, service) -> next index
        self._bind_failures = set()
        with self.store.lock:
            self.create(NAMESPACES, "", "default", {"metadata": {}})

    # Writes, shared by the API and the controllers. The caller holds store.lock.

    def create(self, res, namespace, name, obj, dry_run=False):
        obj = self._admit(res, namespace, name, obj, None)
        return obj if dry_run else self.store.put(res, obj)

    def replace(self, res, old, obj, dry_run=False):
        meta = old["metadata"]
        obj = self._admit(res, meta.get("namespace", ""), meta["name"], obj, old)
        return obj if dry_run else self.store.put(res, obj)

    def set_status(self, res, old, status, dry_run=False):
        obj = copy.deepcopy(old)
        obj["status"] = status
        return obj if dry_run else self.store.put(res, obj)

    def delete(self, res, namespace, name, grace=None):
        obj = self.store.remove(res, namespace, name)
        if res is PODS and obj and grace is not None:
            runner = self.runners.get(obj["metadata"]["uid"])
            if runner:
                runner.stop(grace)
        if res is NAMESPACES:
            for other in RESOURCES:
                if other.namespaced:
                    for item in self.store.list(other, name):
                        self.store.remove(other, name, item["metadata"]["name"])
        return obj

    def _admit(self, res, namespace, name, obj, old):
        """`obj` as it would be stored: server-set fields filled in, defaults, validation."""
        if not isinstance(obj, dict) or not isinstance(obj.get("metadata") or {}, dict):
            raise bad_request(f"the body is not a {res.kind} object")
        obj = copy.deepcopy(obj)
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind
        meta = obj["metadata"] = obj.get("metadata") or {}
        meta["name"] = name
        if res.namespaced:
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if not DNS_SUBDOMAIN.fullmatch(name) or len(name) > 253:
            raise invalid(res, name, [field_invalid(
                "metadata.name", name, "a lowercase RFC 1123 subdomain must consist of lower case "
                "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric "
                "character")])
        meta.pop("resourceVersion", None)
        if "status" in res.subresources:  # status is written through /status only
            obj["status"] = copy.deepcopy(old.get("status", {})) if old else {}
        admit = {PODS: self._admit_pod, SERVICES: self._admit_service,
                 DEPLOYMENTS: self._admit_deployment, GATEWAYS: self._admit_gateway,
                 NAMESPACES: self._admit_namespace}.get(res)
        if admit:
            admit(obj, old)
        if old is None:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_iso()
            meta["generation"] = 1
        else:
            for key in ("uid", "creationTimestamp"):
                meta[key] = old["metadata"][key]
            changed = obj.get("spec") != old.get("spec")
            meta["generation"] = old["metadata"].get("generation", 1) + (1 if changed else 0)
        return obj

    def _admit_pod(self, pod, old):
        meta, spec = pod["metadata"], pod.setdefault("spec", {})
        containers = spec.get("containers")
        if not containers or not all(isinstance(c, dict) and c.get("name") for c in containers):
            raise invalid(PODS, meta["name"], [field_required("spec.containers")])
        annotations = meta["annotations"] = meta.get("annotations") or {}
        if old is None:
            annotations[PORT_ANNOTATION] = str(self._free_port(POD_PORTS))
            pod["status"] = {"phase": "Pending"}
        else:
            annotations[PORT_ANNOTATION] = old["metadata"]["annotations"][PORT_ANNOTATION]

    def _admit_service(self, svc, old):
        meta, spec = svc["metadata"], svc.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        ports = spec.get("ports")
        if not ports:
            raise invalid(SERVICES, meta["name"], [field_required("spec.ports")])
        for i, port in enumerate(ports):
            number = port.get("port")
            if not isinstance(number, int) or not 0 < number < 65536:
                raise invalid(SERVICES, meta["name"], [field_invalid(
                    f"spec.ports[{i}].port", number, "must be between 1 and 65535, inclusive")])
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", number)
        if spec["type"] in ("NodePort", "LoadBalancer"):
            if ports[0].get("nodePort") is None:
                ports[0]["nodePort"] = self._free_port(NODE_PORTS)
            self._check_port(SERVICES, svc, "spec.ports[0].nodePort", ports[0]["nodePort"])

    def _admit_deployment(self, dep, old):
        name, spec = dep["metadata"]["name"], dep.setdefault("spec", {})
        spec.setdefault("replicas", 1)
        spec.setdefault("progressDeadlineSeconds", 600)
        errors = []
        if not isinstance(spec["replicas"], int) or spec["replicas"] < 0:
            errors.append(field_invalid("spec.replicas", spec["replicas"],
                                        "must be greater than or equal to 0"))
        selector = (spec.get("selector") or {}).get("matchLabels")
        template = spec.get("template") or {}
        labels = labels_of(template)
        if not selector:
            errors.append(field_required("spec.selector"))
        elif not labels_match(selector, labels):
            errors.append(field_invalid("spec.template.metadata.labels", labels,
                                        "`selector` does not match template `labels`"))
        containers = (template.get("spec") or {}).get("containers")
        if not containers or not all(isinstance(c, dict) and c.get("name") for c in containers):
            errors.append(field_required("spec.template.spec.containers"))
        if errors:
            raise invalid(DEPLOYMENTS, name, errors)

    def _admit_gateway(self, gateway, old):
        port = listener_port(gateway)
        if port is None:
            raise invalid(GATEWAYS, gateway["metadata"]["name"],
                          [field_required("spec.listeners[0].port")])
        self._check_port(GATEWAYS, gateway, "spec.listeners[0].port", port)

    def _admit_namespace(self, namespace, old):
        namespace.setdefault("spec", {"finalizers": ["kubernetes"]})
        namespace.setdefault("status", {"phase": "Active"})

    def _check_port(self, res, obj, field, port):
        meta = obj["metadata"]
        if not isinstance(port, int) or port not in VALID_PORTS:
            raise invalid(res, meta["name"], [field_invalid(
                field, port, "provided port is not in the valid range. The range of valid ports "
                f"is {VALID_PORTS.start}-{VALID_PORTS.stop - 1}")])
        owner = self._allocated_ports().get(port)
        if owner is not None and owner != (res, meta["namespace"], meta["name"]):
            raise invalid(res, meta["name"], [field_invalid(
                field, port, "provided port is already allocated")])

    def _allocated_ports(self):
        """Every port a pod, Service or Gateway holds, and whose it is."""
        ports = {}
        for res, port_of in ((PODS, lambda p: int(p["metadata"]["annotations"][PORT_ANNOTATION])),
                             (SERVICES, node_port), (GATEWAYS, listener_port)):
            for obj in self.store.list(res):
                port = port_of(obj)
                if port is not None:
                    ports[port] = (res, obj["metadata"]["namespace"], obj["metadata"]["name"])
        return ports

    def _free_port(self, candidates):
        taken = self._allocated_ports()
        for _ in range(500):
            port = random.choice(candidates)
            if port not in taken and port_is_free(port):
                return port
        raise ApiError(500, "InternalError", "no free port left on 127.0.0.1")

    # The control loop.

    def reconcile(self):
        """One pass of every controller: after each API write, and every 100 ms."""
        with self.store.lock:
            if self.closed:
                return
            deployments = self.store.list(DEPLOYMENTS)
            for dep in deployments:
                self._reconcile_deployment(dep)
            alive = {d["metadata"]["uid"] for d in deployments}
            self.rollouts = {uid: r for uid, r in self.rollouts.items() if uid in alive}
            for pod in self.store.list(PODS):
                owner = _controller_of(pod)
                if owner and owner.get("kind") == "Deployment" and owner.get("uid") not in alive:
                    self.delete(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])
            self._sync_kubelet()
            self._sync_listeners()

    def _reconcile_deployment(self, dep):
        meta, spec = dep["metadata"], dep["spec"]
        namespace, want = meta["namespace"], spec["replicas"]
        current = template_hash(spec["template"])
        owned = [p for p in self.store.list(PODS, namespace)
                 if (_controller_of(p) or {}).get("uid") == meta["uid"]]
        new = [p for p in owned if labels_of(p).get("pod-template-hash") == current]
        old = [p for p in owned if p not in new]
        for _ in range(want - len(new)):
            new.append(self._create_pod(dep, current))
        # Excess new pods go, the unready and youngest first.
        new.sort(key=lambda p: (not pod_ready(p), p["metadata"]["creationTimestamp"]))
        for pod in new[want:]:
            self.delete(PODS, namespace, pod["metadata"]["name"])
        new = new[:want]
        # Old pods go when unready, or when enough ready pods remain without them.
        ready_new = sum(map(pod_ready, new))
        ready_old = sum(map(pod_ready, old))
        for pod in sorted(old, key=pod_ready):
            if pod_ready(pod):
                if ready_new + ready_old <= want:
                    continue
                ready_old -= 1
            self.delete(PODS, namespace, pod["metadata"]["name"])
            old.remove(pod)
        status = self._deployment_status(dep, current, new, old)
        if status != dep.get("status"):
            dep["status"] = status
            self.store.put(DEPLOYMENTS, dep)

    def _create_pod(self, dep, current):
        meta, template = dep["metadata"], copy.deepcopy(dep["spec"]["template"])
        template_meta = template.get("metadata") or {}
        prefix = f"{meta['name']}-{current}-"
        name = prefix + random_suffix()
        while self.store.get(PODS, meta["namespace"], name):
            name = prefix + random_suffix()
        pod = {"metadata": {
            "generateName": prefix,
            "labels": {**(template_meta.get("labels") or {}), "pod-template-hash": current},
            "annotations": dict(template_meta.get("annotations") or {}),
            "ownerReferences": [{"apiVersion": DEPLOYMENTS.api_version, "kind": "Deployment",
                                 "name": meta["name"], "uid": meta["uid"], "controller": True,
                                 "blockOwnerDeletion": True}]},
            "spec": template.get("spec") or {}}
        return self.create(PODS, meta["namespace"], name, pod)

    def _deployment_status(self, dep, current, new, old):
        meta, spec = dep["metadata"], dep["spec"]
        want, pods = spec["replicas"], new + old
        ready, ready_new = sum(map(pod_ready, pods)), sum(map(pod_ready, new))
        rollout = self.rollouts.get(meta["uid"])
        clock = time.monotonic()
        if rollout is None or rollout.template != current:
            rollout = self.rollouts[meta["uid"]] = Rollout(current, ready_new, clock)
        elif ready_new > rollout.ready:
            rollout.since = clock
        rollout.ready = ready_new
        if len(new) == want and ready_new == want and not old:
            rollout.done = True
        replica_set = f'ReplicaSet "{meta["name"]}-{current}"'
        previous = (dep.get("status") or {}).get("conditions") or []
        if rollout.done:
            progressing = ("True", "NewReplicaSetAvailable",
                           f"{replica_set} has successfully progressed.")
        elif clock - rollout.since > spec["progressDeadlineSeconds"]:
            progressing = ("False", "ProgressDeadlineExceeded",
                           f"{replica_set} has timed out progressing.")
        else:
            progressing = ("True", "ReplicaSetUpdated", f"{replica_set} is progressing.")
        available = (("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
                     if ready >= want else
                     ("False", "MinimumReplicasUnavailable",
                      "Deployment does not have minimum availability."))
        status = {"observedGeneration": meta["generation"], "replicas": len(pods),
                  "updatedReplicas": len(new), "readyReplicas": ready, "availableReplicas": ready,
                  "unavailableReplicas": max(want - ready, 0)}
        status = {k: v for k, v in status.items() if v}  # the real server omits zeros
        status["conditions"] = [_condition(previous, "Available", *available),
                                _condition(previous, "Progressing", *progressing)]
        return status

    def _sync_kubelet(self):
        pods = {p["metadata"]["uid"]: p for p in self.store.list(PODS)}
        for uid in [uid for uid in self.runners if uid not in pods]:
            self.runners.pop(uid).stop()
        for uid, pod in pods.items():
            if uid not in self.runners:
                port = int(pod["metadata"]["annotations"][PORT_ANNOTATION])
                runner = PodRunner(self, pod, port, os.path.join(self.state_dir, uid))
                self.runners[uid] = runner
                runner.start()

    def set_pod_status(self, uid, namespace, name, status):
        with self.store.lock:
            pod = self.store.get(PODS, namespace, name)
            if pod and pod["metadata"]["uid"] == uid:
                pod["status"] = copy.deepcopy(status)
                self.store.put(PODS, pod)

    def pod_log(self, pod):
        runner = self.runners.get(pod["metadata"]["uid"])
        return runner.read_log() if runner else b""

    def endpoint_slices(self, namespace=None):
        slices = []
        for svc in self.store.list(SERVICES, namespace):
            meta, spec = svc["metadata"], svc["spec"]
            if not spec.get("selector"):
                continue
            endpoints = [{
                "addresses": [LOCALHOST],
                "conditions": {"ready": pod_ready(p), "serving": pod_ready(p),
                               "terminating": False},
                "targetRef": {"kind": "Pod", "namespace": p["metadata"]["namespace"],
                              "name": p["metadata"]["name"], "uid": p["metadata"]["uid"]},
            } for p in self._selected_pods(svc)]
            ports = [{"name": p.get("name", ""),
                      "port": p["targetPort"] if isinstance(p["targetPort"], int) else 0,
                      "protocol": p["protocol"]} for p in spec["ports"]]
            slices.append({
                "apiVersion": ENDPOINTSLICES.api_version, "kind": ENDPOINTSLICES.kind,
                "metadata": {
                    "name": f"{meta['name']}-abcde", "namespace": meta["namespace"],
                    "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, meta["uid"])),
                    "resourceVersion": self.store.version, "generation": 1,
                    "creationTimestamp": meta["creationTimestamp"],
                    "labels": {"kubernetes.io/service-name": meta["name"],
                               "endpointslice.kubernetes.io/managed-by":
                                   "endpointslice-controller.k8s.io"},
                    "ownerReferences": [{"apiVersion": "v1", "kind": "Service",
                                         "name": meta["name"], "uid": meta["uid"],
                                         "controller": True, "blockOwnerDeletion": True}]},
                "addressType": "IPv4", "endpoints": endpoints, "ports": ports})
        return slices

    def _selected_pods(self, svc):
        """The pods of a Service: in its namespace, picked by its selector, not finished."""
        selector = svc["spec"].get("selector") or {}
        return [p for p in self.store.list(PODS, svc["metadata"]["namespace"])
                if selector and labels_match(selector, labels_of(p))
                and p.get("status", {}).get("phase") not in ("Succeeded", "Failed")]

    # The proxy.

    def _sync_listeners(self):
        wanted = {}
        for res, port_of in ((SERVICES, node_port), (GATEWAYS, listener_port)):
            for obj in self.store.list(res):
                port = port_of(obj)
                if port is not None:
                    wanted[port] = (res.kind, obj["metadata"]["namespace"], obj["metadata"]["name"])
        for port in [p for p, lst in self.listeners.items() if wanted.get(p) != lst.target]:
            self.listeners.pop(port).close()
        for port, target in wanted.items():
            if port in self.listeners:
                continue
            try:
                self.listeners[port] = Listener(port, target, self.choose_backend)
                self._bind_failures.discard(port)
            except OSError as e:
                if port not in self._bind_failures:
                    self._bind_failures.add(port)
                    print(f"standin: cannot listen on {LOCALHOST}:{port} for {target[0]} "
                          f"{target[1]}/{target[2]}: {e}", file=sys.stderr, flush=True)

    def choose_backend(self, target):
        """The port of the pod a new connection to a Service's or Gateway's listener goes to."""
        kind, namespace, name = target
        with self.store.lock:
            if kind == SERVICES.kind:
                return self._service_backend(self.store.get(SERVICES, namespace, name))
            route = next((r for r in self.store.list(HTTPROUTES, namespace)
                          if _names_gateway(r, namespace, name)), None)
            rules = ((route or {}).get("spec") or {}).get("rules") or [{}]
            refs = [r for r in rules[0].get("backendRefs") or []
                    if r.get("kind", "Service") == "Service"]
            weights = [max(int(r.get("weight", 1)), 0) for r in refs]
            if not refs or sum(weights) == 0:
                return None
            ref = random.choices(refs, weights)[0]
            return self._service_backend(self.store.get(
                SERVICES, ref.get("namespace", namespace), ref.get("name")))

    def _service_backend(self, svc):
        if svc is None:
            return None
        ports = [self.runners[p["metadata"]["uid"]].port for p in self._selected_pods(svc)
                 if pod_ready(p) and p["metadata"]["uid"] in self.runners]
        if not ports:
            return None
        key = (svc["metadata"]["namespace"], svc["metadata"]["name"])
        index = self._round_robin.get(key, 0)
        self._round_robin[key] = index + 1
        return ports[index % len(ports)]

    def shutdown(self):
        """Every pod's process group: SIGTERM, SIGKILL after 2 s; every listener closed."""
        with self.store.lock:
            self.closed = True
            runners = list(self.runners.values())
            self.runners.clear()
            for listener in self.listeners.values():
                listener.close()
            self.listeners.clear()
        for runner in runners:
            runner.stop(SHUTDOWN_GRACE)
        for runner in runners:
            runner.join(SHUTDOWN_GRACE + 1)


def _controller_of(obj):
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return next((r for r in refs if r.get("controller")), None)


def _names_gateway(route, namespace, gateway):
    return any(ref.get("name") == gateway and ref.get("namespace", namespace) == namespace
               and ref.get("kind", "Gateway") == "Gateway"
               for ref in (route.get("spec") or {}).get("parentRefs") or [])


def _condition(previous, kind, status, reason, message):
    """A Deployment condition, keeping its times while it says the same."""
    before = next((c for c in previous if c.get("type") == kind), {})
    now = now_iso()
    same_status = before.get("status") == status
    same = same_status and before.get("reason") == reason and before.get("message") == message
    return {"type": kind, "status": status,
            "lastUpdateTime": before["lastUpdateTime"] if same else now,
            "lastTransitionTime": before["lastTransitionTime"] if same_status else now,
            "reason": reason, "message": message}


# --- The API ----------------------------------------------------------------------

class Api:
    """Answers one API request: (status code, a JSON-able answer, or bytes for a log)."""

    def __init__(self, cluster, address):
        self.cluster, self.store, self.address = cluster, cluster.store, address

    def handle(self, method, target, ctype, body):
        url = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        segments = [unquote(s) for s in url.path.split("/") if s]
        if segments == ["version"] and method == "GET":
            return 200, self.version()
        if segments == ["api"] and method == "GET":
            return 200, {"kind": "APIVersions", "versions": ["v1"],
                         "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                                         "serverAddress": self.address}]}
        if segments == ["apis"] and method == "GET":
            return 200, self.group_list()
        if segments[:2] == ["api", "v1"]:
            group_version, rest = ("", "v1"), segments[2:]
        elif segments[:1] == ["apis"] and len(segments) >= 3:
            group_version, rest = (segments[1], segments[2]), segments[3:]
        else:
            raise no_such_path()
        if group_version not in GROUP_VERSIONS:
            raise no_such_path()
        if not rest:
            if method != "GET":
                raise method_not_allowed()
            return 200, self.resource_list(group_version)
        res, namespace, name, sub = self.locate(group_version, rest)
        return self.dispatch(method, res, namespace, name, sub, query, ctype, body)

    # Discovery.

    @staticmethod
    def version():
        return {"major": "1", "minor": "20", "gitVersion": "v1.20.2-cutover-standin",
                "gitCommit": "", "gitTreeState": "clean", "buildDate": "1970-01-01T00:00:00Z",
                "goVersion": "python", "compiler": "standin", "platform": "linux/amd64"}

    @staticmethod
    def group_list():
        groups = []
        for group, version in GROUP_VERSIONS:
            if group:
                gv = {"groupVersion": f"{group}/{version}", "version": version}
                groups.append({"name": group, "versions": [gv], "preferredVersion": gv})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    @staticmethod
    def resource_list(group_version):
        group, version = group_version
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": f"{group}/{version}" if group else version,
                "resources": [e for r in RESOURCES if (r.group, r.version) == group_version
                              for e in discovery_entries(r)]}

    @staticmethod
    def locate(group_version, rest):
        """(resource, namespace, name, subresource) of a path below /api/v1 or /apis/G/V."""
        here = {r.plural: r for r in RESOURCES if (r.group, r.version) == group_version}
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3 and \
                getattr(here.get(rest[2]), "namespaced", False):
            namespace, rest = rest[1], rest[2:]
        res = here.get(rest[0])
        if res is None or len(rest) > 3:
            raise no_such_path()
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if (name and res.namespaced and namespace is None) or (sub and sub not in res.subresources):
            raise no_such_path()
        return res, namespace, name, sub

    # Requests on resources.

    def dispatch(self, method, res, namespace, name, sub, query, ctype, body):
        verb = {("GET", False): "list", ("POST", False): "create", ("GET", True): "get",
                ("PUT", True): "update", ("PATCH", True): "patch",
                ("DELETE", True): "delete"}.get((method, name is not None))
        allowed = ("get",) if sub == "log" else ("get", "update", "patch") if sub else res.verbs
        if verb not in allowed:
            raise method_not_allowed()
        if query.get("watch") in ("true", "1"):
            raise ApiError(405, "MethodNotAllowed", "the stand-in does not support watch")
        dry_run = "dryRun" in query
        with self.store.lock:
            if sub == "log":
                return self.log(namespace, name, query)
            if verb in ("list", "get"):
                return 200, copy.deepcopy(self.list(res, namespace, query) if verb == "list"
                                          else self.get(res, namespace, name, sub))
            if verb == "create":
                code, answer = 201, self.create(res, namespace, ctype, body, dry_run)
            elif verb == "delete":
                code, answer = 200, self.delete(res, namespace, name, query, body)
            else:
                code, answer = self.write(res, namespace, name, sub, verb, query, ctype, body,
                                          dry_run)
            answer = copy.deepcopy(answer)
        if not dry_run:  # start pods and listeners now, not in 100 ms
            self.cluster.reconcile()
        return code, answer

    def list(self, res, namespace, query):
        labels = parse_selector(query.get("labelSelector"))
        fields = [r for r in parse_selector(query.get("fieldSelector")) if r[0] in FIELDS]
        items = self.cluster.endpoint_slices(namespace) if res is ENDPOINTSLICES else \
            self.store.list(res, namespace)
        return {"kind": f"{res.kind}List", "apiVersion": res.api_version,
                "metadata": {"resourceVersion": self.store.version},
                "items": [o for o in items if selector_matches(labels, labels_of(o))
                          and selector_matches(fields, fields_of(o))]}

    def get(self, res, namespace, name, sub):
        obj = self.existing(res, namespace, name)
        return scale_of(obj) if sub == "scale" else obj

    def existing(self, res, namespace, name):
        if res is ENDPOINTSLICES:
            obj = next((s for s in self.cluster.endpoint_slices(namespace)
                        if s["metadata"]["name"] == name), None)
        else:
            obj = self.store.get(res, namespace, name)
        if obj is None:
            raise not_found(res, name)
        return obj

    def create(self, res, namespace, ctype, body, dry_run):
        if ctype not in (JSON, ""):  # like the real server, no Content-Type is JSON
            raise unsupported_media_type([JSON])
        obj = decode_json(body)
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        if not isinstance(meta, dict):
            raise bad_request(f"the body is not a {res.kind} object with metadata")
        if res.namespaced and meta.get("namespace") not in (None, "", namespace):
            raise bad_request("the namespace of the provided object does not match the namespace "
                              "sent on the request")
        name = meta.get("name") or (meta["generateName"] + random_suffix()
                                    if meta.get("generateName") else "")
        if not name:
            raise invalid(res, "", [field_required("metadata.name",
                                                   "name or generateName is required")])
        return self.create_named(res, namespace, name, obj, dry_run)

    def create_named(self, res, namespace, name, obj, dry_run):
        if res.namespaced and self.store.get(NAMESPACES, "", namespace) is None:
            raise not_found(NAMESPACES, namespace)
        if self.store.get(res, namespace, name) is not None:
            raise already_exists(res, name)
        return self.cluster.create(res, namespace or "", name, obj, dry_run)

    def write(self, res, namespace, name, sub, verb, query, ctype, body, dry_run):
        """PUT and PATCH, on an object or its status or scale: (code, the object as stored)."""
        if verb == "update" and ctype not in (JSON, ""):
            raise unsupported_media_type([JSON])
        accepted = [JSON_PATCH, MERGE_PATCH] + ([STRATEGIC_PATCH] if res.built_in else []) + \
                   [APPLY_PATCH]
        if verb == "patch" and ctype not in accepted:
            raise unsupported_media_type(accepted)
        old = self.store.get(res, namespace, name)
        if ctype == APPLY_PATCH:
            if not query.get("fieldManager"):
                raise bad_request("PATCH requests with content type application/apply-patch+yaml "
                                  "require a fieldManager")
            applied = self.applied(body)
            if old is None and sub is None:
                return 201, self.create_named(res, namespace, name, applied, dry_run)
        if old is None:
            raise not_found(res, name)
        current = scale_of(old) if sub == "scale" else old
        if ctype == APPLY_PATCH:
            new = merge_patch(current, applied)
        elif verb == "update":
            new = decode_json(body)
            if not isinstance(new, dict):
                raise bad_request(f"the body is not a {res.kind} object")
            given = (new.get("metadata") or {}).get("name")
            if given != name:
                raise bad_request(f"the name of the object ({given}) does not match the name on "
                                  f"the URL ({name})")
        else:
            new = patched(ctype, copy.deepcopy(current), body)
        if not isinstance(new, dict):
            raise bad_request("the patched object is not an object")
        version = (new.get("metadata") or {}).get("resourceVersion")
        if version and version != old["metadata"]["resourceVersion"]:
            raise conflict(res, name)
        if sub == "status":
            return 200, self.cluster.set_status(res, old, new.get("status"), dry_run)
        if sub == "scale":
            replicas = (new.get("spec") or {}).get("replicas")
            dep = copy.deepcopy(old)
            dep["spec"]["replicas"] = replicas
            return 200, scale_of(self.cluster.replace(res, old, dep, dry_run))
        return 200, self.cluster.replace(res, old, new, dry_run)

    @staticmethod
    def applied(body):
        """A server-side apply body: kubectl sends JSON, which is YAML too."""
        try:
            obj = json.loads(body)
        except ValueError:
            raise unsupported_media_type(["application/apply-patch+yaml (in its JSON form, "
                                          "as kubectl sends it)"]) from None
        if not isinstance(obj, dict):
            raise bad_request("the applied configuration is not an object")
        return obj

    def delete(self, res, namespace, name, query, body):
        obj = self.existing(res, namespace, name)
        if res is NAMESPACES and name == "default":
            raise ApiError(403, "Forbidden",
                           'namespaces "default" is forbidden: this namespace may not be deleted',
                           {"name": name, "kind": "namespaces"})
        options = decode_json(body) if body else {}
        grace = query.get("gracePeriodSeconds", (options or {}).get("gracePeriodSeconds"))
        if "dryRun" not in query:
            self.cluster.delete(res, namespace, name, grace)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": name, "group": res.group, "kind": res.plural,
                            "uid": obj["metadata"]["uid"]}}

    def log(self, namespace, name, query):
        pod = self.existing(PODS, namespace, name)
        names = [c.get("name") for c in pod["spec"]["containers"]]
        container = query.get("container")
        if container is None:
            if len(names) != 1:
                raise bad_request(f"a container name must be specified for pod {name}, choose one "
                                  f"of: [{' '.join(names)}]")
            container = names[0]
        if container not in names:
            raise bad_request(f"container {container} is not valid for pod {name}")
        text = self.cluster.pod_log(pod) if container == names[0] else b""
        if "tailLines" in query:
            try:
                tail = int(query["tailLines"])
            except ValueError:
                raise bad_request(f"tailLines is not a number: {query['tailLines']}") from None
            text = b"".join(text.splitlines(keepends=True)[-tail:] if tail > 0 else [])
        return 200, text


def scale_of(dep):
    """A Deployment's autoscaling/v1 Scale."""
    meta = dep["metadata"]
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                               "creationTimestamp")},
            "spec": {"replicas": dep["spec"]["replicas"]},
            "status": {"replicas": (dep.get("status") or {}).get("replicas", 0),
                       "selector": ",".join(f"{k}={v}" for k, v in
                                            dep["spec"]["selector"]["matchLabels"].items())}}


# --- HTTP ---------------------------------------------------------------------------

class ApiServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, api_factory, token, tls, log_path):
        super().__init__(address, Handler)
        self.api = api_factory(f"{self.server_address[0]}:{self.server_address[1]}")
        self.token, self.tls = token, tls
        self._log = open(log_path, "a", encoding="utf-8") if log_path else None
        self._log_lock = threading.Lock()

    def finish_request(self, request, client_address):
        """Serves one connection, in its own thread (so the TLS handshake is done there)."""
        if self.tls is None:
            return super().finish_request(request, client_address)
        try:
            request.settimeout(10)
            request = self.tls.wrap_socket(request, server_side=True)
            request.settimeout(None)
        except (ssl.SSLError, OSError):
            return None
        try:
            return super().finish_request(request, client_address)
        finally:
            request.close()

    def log_line(self, line):
        if self._log:
            with self._log_lock:
                self._log.write(line + "\n")
                self._log.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "cutover-standin"

    def do_GET(self):
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def log_message(self, *args):
        pass  # --log writes one line per request instead

    def _serve(self):
        body = self._read_body()
        raw_type = self.headers.get("Content-Type") or ""
        ctype = raw_type.split(";")[0].strip().lower()
        try:
            token = self.server.token
            if token and self.headers.get("Authorization") != f"Bearer {token}":
                raise ApiError(401, "Unauthorized", "Unauthorized")
            code, answer = self.server.api.handle(self.command, self.path, ctype, body)
        except ApiError as e:
            code, answer = e.code, e.status()
        except Exception as e:  # a bug: say so, like the real server's InternalError
            traceback.print_exc()
            code, answer = 500, ApiError(500, "InternalError", f"stand-in error: {e!r}").status()
        if isinstance(answer, bytes):
            payload, content_type = answer, "text/plain"
        else:
            payload, content_type = json.dumps(answer).encode(), JSON
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        self.server.log_line(f"{self.command} {self.path} {raw_type or '-'} -> {code}")

    def _read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))


def self_signed_tls(directory, host):
    """A server TLS context for `host`, and its certificate (PEM), made with `openssl`."""
    cert, key = os.path.join(directory, "api.crt"), os.path.join(directory, "api.key")
    try:
        ipaddress.ip_address(host)
        name = f"IP:{host}"
    except ValueError:
        name = f"DNS:{host}"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "30",
                    "-subj", "/CN=cutover-standin", "-addext", f"subjectAltName={name}",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with open(cert, "rb") as f:
        return context, f.read()


def write_kubeconfig(path, server, token, ca_pem):
    user = f"\n    token: {json.dumps(token)}" if token else " {}"
    ca = f"\n    certificate-authority-data: {base64.b64encode(ca_pem).decode()}" if ca_pem else ""
    text = f"""apiVersion: v1
kind: Config
clusters:
- name: standin
  cluster:
    server: {server}{ca}
users:
- name: standin
  user:{user}
contexts:
- name: standin
  context:
    cluster: standin
    user: standin
    namespace: default
current-context: standin
preferences: {{}}
"""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT the API listens on")
    parser.add_argument("--kubeconfig", required=True, help="where to write a kubeconfig for it")
    parser.add_argument("--token", help="the bearer token every request must carry (the API is "
                                        "then served over HTTPS)")
    parser.add_argument("--log", help="a file to append one line per API request to")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")

    reaper = Reaper()  # first: it forks
    state_dir = tempfile.mkdtemp(prefix="cutover-standin-")
    tls, ca_pem = self_signed_tls(state_dir, host) if args.token else (None, None)
    cluster = Cluster(state_dir, reaper)
    server = ApiServer((host, int(port)), lambda address: Api(cluster, address), args.token, tls,
                       args.log)
    scheme = "https" if tls else "http"
    write_kubeconfig(args.kubeconfig, f"{scheme}://{host}:{server.server_address[1]}", args.token,
                     ca_pem)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def control_loop():
        while not stop.wait(0.1):
            try:
                cluster.reconcile()
            except Exception:
                traceback.print_exc()

    threads = [threading.Thread(target=server.serve_forever, name="api", daemon=True),
               threading.Thread(target=control_loop, name="controllers", daemon=True)]
    for t in threads:
        t.start()
    print("standin ready", flush=True)
    while not stop.wait(1):
        pass
    server.shutdown()
    threads[1].join()
    cluster.shutdown()
    reaper.close()
    server.server_close()
    shutil.rmtree(state_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
