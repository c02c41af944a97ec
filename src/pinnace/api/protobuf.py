"""Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`), decoded to JSON dicts.

kubectl 1.32 sends its typed-client requests in protobuf: `create namespace|deployment|configmap|
secret|service|job|cronjob|token`, `autoscale`, and drain's fallback DELETE (DeleteOptions). Responses
stay JSON. A body is the 4-byte magic `k8s\\0` followed by a `runtime.Unknown` message whose
`typeMeta` names the kind and whose `raw` holds the object's own message.

The decoder is generic; what it knows about each message is the `MESSAGES` table below: field number
-> (JSON name, type). The numbers are facts from the public `generated.proto` files of
k8s.io/api and k8s.io/apimachinery. Types:

- `string`, `int32`, `int64`, `bool`, `bytes` (base64 in JSON, as Go's encoding/json writes []byte);
- `time` (metav1.Time {seconds, nanos} -> RFC 3339), `intstr` (IntOrString), `quantity`;
- `map` / `bytesmap` / `quantitymap`: map<string, string | bytes | Quantity>;
- any other name: a nested message from the table.

A `[]` suffix marks repeated fields, a `?` suffix Go pointer fields. Go's protobuf marshalling writes
every non-pointer field, even at its zero value, while its JSON drops zero scalars (`omitempty`);
so a zero scalar is dropped unless the field is a pointer (then zero is a real value, such as
`replicas: 0`), and a present nested message is kept even when empty (`resources: {}`), exactly as the
JSON kubectl would have sent. A zero Time is dropped (JSON `null`). Fields not in the table are skipped.
"""

from __future__ import annotations

import base64
import datetime
from typing import Any

from pinnace.api import protowire as pw

MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"


class ProtobufError(ValueError):
    """A body that is not a Kubernetes protobuf envelope, or bytes that do not decode (HTTP 400)."""


class UnsupportedKind(ProtobufError):
    """A well-formed envelope for a kind the table does not describe (HTTP 415)."""


# message -> {field number: (json name, type)}
MESSAGES: dict[str, dict[int, tuple[str, str]]] = {
    # k8s.io/apimachinery/pkg/runtime
    "Unknown": {
        1: ("typeMeta", "TypeMeta"),
        2: ("raw", "rawbytes"),
        3: ("contentEncoding", "string"),
        4: ("contentType", "string"),
    },
    "TypeMeta": {1: ("apiVersion", "string"), 2: ("kind", "string")},
    # k8s.io/apimachinery/pkg/apis/meta/v1
    "ObjectMeta": {
        1: ("name", "string"),
        2: ("generateName", "string"),
        3: ("namespace", "string"),
        4: ("selfLink", "string"),
        5: ("uid", "string"),
        6: ("resourceVersion", "string"),
        7: ("generation", "int64"),
        8: ("creationTimestamp", "time"),
        9: ("deletionTimestamp", "time"),
        10: ("deletionGracePeriodSeconds", "int64?"),
        11: ("labels", "map"),
        12: ("annotations", "map"),
        13: ("ownerReferences", "OwnerReference[]"),
        14: ("finalizers", "string[]"),
    },
    "OwnerReference": {
        1: ("kind", "string"),
        3: ("name", "string"),
        4: ("uid", "string"),
        5: ("apiVersion", "string"),
        6: ("controller", "bool?"),
        7: ("blockOwnerDeletion", "bool?"),
    },
    "LabelSelector": {1: ("matchLabels", "map"), 2: ("matchExpressions", "LabelSelectorRequirement[]")},
    "LabelSelectorRequirement": {1: ("key", "string"), 2: ("operator", "string"), 3: ("values", "string[]")},
    "DeleteOptions": {
        1: ("gracePeriodSeconds", "int64?"),
        2: ("preconditions", "Preconditions"),
        3: ("orphanDependents", "bool?"),
        4: ("propagationPolicy", "string?"),
        5: ("dryRun", "string[]"),
        6: ("ignoreStoreReadErrorWithClusterBreakingPotential", "bool?"),
    },
    "Preconditions": {1: ("uid", "string?"), 2: ("resourceVersion", "string?")},
    # core/v1
    "Namespace": {
        1: ("metadata", "ObjectMeta"),
        2: ("spec", "NamespaceSpec"),
        3: ("status", "NamespaceStatus"),
    },
    "NamespaceSpec": {1: ("finalizers", "string[]")},
    "NamespaceStatus": {1: ("phase", "string")},
    "ConfigMap": {
        1: ("metadata", "ObjectMeta"),
        2: ("data", "map"),
        3: ("binaryData", "bytesmap"),
        4: ("immutable", "bool?"),
    },
    "Secret": {
        1: ("metadata", "ObjectMeta"),
        2: ("data", "bytesmap"),
        3: ("type", "string"),
        4: ("stringData", "map"),
        5: ("immutable", "bool?"),
    },
    "ServiceAccount": {
        1: ("metadata", "ObjectMeta"),
        2: ("secrets", "ObjectReference[]"),
        3: ("imagePullSecrets", "LocalObjectReference[]"),
        4: ("automountServiceAccountToken", "bool?"),
    },
    "ObjectReference": {
        1: ("kind", "string"),
        2: ("namespace", "string"),
        3: ("name", "string"),
        4: ("uid", "string"),
        5: ("apiVersion", "string"),
        6: ("resourceVersion", "string"),
        7: ("fieldPath", "string"),
    },
    "LocalObjectReference": {1: ("name", "string")},
    "Service": {1: ("metadata", "ObjectMeta"), 2: ("spec", "ServiceSpec"), 3: ("status", "ServiceStatus")},
    "ServiceSpec": {
        1: ("ports", "ServicePort[]"),
        2: ("selector", "map"),
        3: ("clusterIP", "string"),
        4: ("type", "string"),
        5: ("externalIPs", "string[]"),
        7: ("sessionAffinity", "string"),
        8: ("loadBalancerIP", "string"),
        9: ("loadBalancerSourceRanges", "string[]"),
        10: ("externalName", "string"),
        11: ("externalTrafficPolicy", "string"),
        12: ("healthCheckNodePort", "int32"),
        13: ("publishNotReadyAddresses", "bool"),
        17: ("ipFamilyPolicy", "string?"),
        18: ("clusterIPs", "string[]"),
        19: ("ipFamilies", "string[]"),
        20: ("allocateLoadBalancerNodePorts", "bool?"),
        21: ("loadBalancerClass", "string?"),
        22: ("internalTrafficPolicy", "string?"),
        23: ("trafficDistribution", "string?"),
    },
    "ServicePort": {
        1: ("name", "string"),
        2: ("protocol", "string"),
        3: ("port", "int32"),
        4: ("targetPort", "intstr"),
        5: ("nodePort", "int32"),
        6: ("appProtocol", "string?"),
    },
    "ServiceStatus": {1: ("loadBalancer", "LoadBalancerStatus")},
    "LoadBalancerStatus": {},
    "PodTemplateSpec": {1: ("metadata", "ObjectMeta"), 2: ("spec", "PodSpec")},
    "PodSpec": {
        2: ("containers", "Container[]"),
        3: ("restartPolicy", "string"),
        4: ("terminationGracePeriodSeconds", "int64?"),
        5: ("activeDeadlineSeconds", "int64?"),
        6: ("dnsPolicy", "string"),
        7: ("nodeSelector", "map"),
        8: ("serviceAccountName", "string"),
        9: ("serviceAccount", "string"),
        10: ("nodeName", "string"),
        11: ("hostNetwork", "bool"),
        12: ("hostPID", "bool"),
        13: ("hostIPC", "bool"),
        15: ("imagePullSecrets", "LocalObjectReference[]"),
        16: ("hostname", "string"),
        17: ("subdomain", "string"),
        19: ("schedulerName", "string"),
        20: ("initContainers", "Container[]"),
        21: ("automountServiceAccountToken", "bool?"),
        22: ("tolerations", "Toleration[]"),
        24: ("priorityClassName", "string"),
        25: ("priority", "int32?"),
        27: ("shareProcessNamespace", "bool?"),
        29: ("runtimeClassName", "string?"),
        30: ("enableServiceLinks", "bool?"),
        31: ("preemptionPolicy", "string?"),
    },
    "Container": {
        1: ("name", "string"),
        2: ("image", "string"),
        3: ("command", "string[]"),
        4: ("args", "string[]"),
        5: ("workingDir", "string"),
        6: ("ports", "ContainerPort[]"),
        7: ("env", "EnvVar[]"),
        8: ("resources", "ResourceRequirements"),
        9: ("volumeMounts", "VolumeMount[]"),
        13: ("terminationMessagePath", "string"),
        14: ("imagePullPolicy", "string"),
        16: ("stdin", "bool"),
        17: ("stdinOnce", "bool"),
        18: ("tty", "bool"),
        20: ("terminationMessagePolicy", "string"),
        24: ("restartPolicy", "string?"),
    },
    "ContainerPort": {
        1: ("name", "string"),
        2: ("hostPort", "int32"),
        3: ("containerPort", "int32"),
        4: ("protocol", "string"),
        5: ("hostIP", "string"),
    },
    "EnvVar": {1: ("name", "string"), 2: ("value", "string")},
    "ResourceRequirements": {1: ("limits", "quantitymap"), 2: ("requests", "quantitymap")},
    "VolumeMount": {
        1: ("name", "string"),
        2: ("readOnly", "bool"),
        3: ("mountPath", "string"),
        4: ("subPath", "string"),
        5: ("mountPropagation", "string?"),
        6: ("subPathExpr", "string"),
    },
    "Toleration": {
        1: ("key", "string"),
        2: ("operator", "string"),
        3: ("value", "string"),
        4: ("effect", "string"),
        5: ("tolerationSeconds", "int64?"),
    },
    # apps/v1
    "Deployment": {
        1: ("metadata", "ObjectMeta"),
        2: ("spec", "DeploymentSpec"),
        3: ("status", "DeploymentStatus"),
    },
    "DeploymentSpec": {
        1: ("replicas", "int32?"),
        2: ("selector", "LabelSelector"),
        3: ("template", "PodTemplateSpec"),
        4: ("strategy", "DeploymentStrategy"),
        5: ("minReadySeconds", "int32"),
        6: ("revisionHistoryLimit", "int32?"),
        7: ("paused", "bool"),
        9: ("progressDeadlineSeconds", "int32?"),
    },
    "DeploymentStrategy": {1: ("type", "string"), 2: ("rollingUpdate", "RollingUpdateDeployment")},
    "RollingUpdateDeployment": {1: ("maxUnavailable", "intstr"), 2: ("maxSurge", "intstr")},
    "DeploymentStatus": {
        1: ("observedGeneration", "int64"),
        2: ("replicas", "int32"),
        3: ("updatedReplicas", "int32"),
        4: ("availableReplicas", "int32"),
        5: ("unavailableReplicas", "int32"),
        7: ("readyReplicas", "int32"),
        8: ("collisionCount", "int32?"),
    },
    # batch/v1
    "Job": {1: ("metadata", "ObjectMeta"), 2: ("spec", "JobSpec"), 3: ("status", "JobStatus")},
    "JobSpec": {
        1: ("parallelism", "int32?"),
        2: ("completions", "int32?"),
        3: ("activeDeadlineSeconds", "int64?"),
        4: ("selector", "LabelSelector"),
        5: ("manualSelector", "bool?"),
        6: ("template", "PodTemplateSpec"),
        7: ("backoffLimit", "int32?"),
        8: ("ttlSecondsAfterFinished", "int32?"),
        9: ("completionMode", "string?"),
        10: ("suspend", "bool?"),
        12: ("backoffLimitPerIndex", "int32?"),
        13: ("maxFailedIndexes", "int32?"),
        14: ("podReplacementPolicy", "string?"),
        15: ("managedBy", "string?"),
    },
    "JobStatus": {
        2: ("startTime", "time"),
        3: ("completionTime", "time"),
        4: ("active", "int32"),
        5: ("succeeded", "int32"),
        6: ("failed", "int32"),
        7: ("completedIndexes", "string"),
        9: ("ready", "int32?"),
    },
    "CronJob": {1: ("metadata", "ObjectMeta"), 2: ("spec", "CronJobSpec"), 3: ("status", "CronJobStatus")},
    "CronJobSpec": {
        1: ("schedule", "string"),
        2: ("startingDeadlineSeconds", "int64?"),
        3: ("concurrencyPolicy", "string"),
        4: ("suspend", "bool?"),
        5: ("jobTemplate", "JobTemplateSpec"),
        6: ("successfulJobsHistoryLimit", "int32?"),
        7: ("failedJobsHistoryLimit", "int32?"),
        8: ("timeZone", "string?"),
    },
    "JobTemplateSpec": {1: ("metadata", "ObjectMeta"), 2: ("spec", "JobSpec")},
    "CronJobStatus": {
        1: ("active", "ObjectReference[]"),
        4: ("lastScheduleTime", "time"),
        5: ("lastSuccessfulTime", "time"),
    },
    # authentication/v1
    "TokenRequest": {
        1: ("metadata", "ObjectMeta"),
        2: ("spec", "TokenRequestSpec"),
        3: ("status", "TokenRequestStatus"),
    },
    "TokenRequestSpec": {
        1: ("audiences", "string[]"),
        3: ("boundObjectRef", "BoundObjectReference"),
        4: ("expirationSeconds", "int64?"),
    },
    "BoundObjectReference": {
        1: ("kind", "string"),
        2: ("apiVersion", "string"),
        3: ("name", "string"),
        4: ("uid", "string"),
    },
    "TokenRequestStatus": {1: ("token", "string"), 2: ("expirationTimestamp", "time")},
    # autoscaling/v1
    "HorizontalPodAutoscaler": {
        1: ("metadata", "ObjectMeta"),
        2: ("spec", "HorizontalPodAutoscalerSpec"),
        3: ("status", "HorizontalPodAutoscalerStatus"),
    },
    "HorizontalPodAutoscalerSpec": {
        1: ("scaleTargetRef", "CrossVersionObjectReference"),
        2: ("minReplicas", "int32?"),
        3: ("maxReplicas", "int32"),
        4: ("targetCPUUtilizationPercentage", "int32?"),
    },
    "CrossVersionObjectReference": {
        1: ("kind", "string"),
        2: ("name", "string"),
        3: ("apiVersion", "string"),
    },
    "HorizontalPodAutoscalerStatus": {
        1: ("observedGeneration", "int64?"),
        2: ("lastScaleTime", "time"),
        3: ("currentReplicas", "int32"),
        4: ("desiredReplicas", "int32"),
        5: ("currentCPUUtilizationPercentage", "int32?"),
    },
}

# (apiVersion, kind) -> message name. DeleteOptions travels under any group's version.
KINDS: dict[tuple[str, str], str] = {
    ("v1", "Namespace"): "Namespace",
    ("v1", "ConfigMap"): "ConfigMap",
    ("v1", "Secret"): "Secret",
    ("v1", "Service"): "Service",
    ("v1", "ServiceAccount"): "ServiceAccount",
    ("apps/v1", "Deployment"): "Deployment",
    ("batch/v1", "Job"): "Job",
    ("batch/v1", "CronJob"): "CronJob",
    ("authentication.k8s.io/v1", "TokenRequest"): "TokenRequest",
    ("autoscaling/v1", "HorizontalPodAutoscaler"): "HorizontalPodAutoscaler",
    ("v1", "DeleteOptions"): "DeleteOptions",
    ("meta.k8s.io/v1", "DeleteOptions"): "DeleteOptions",
}

_SCALARS = {"string", "int32", "int64", "bool", "bytes", "rawbytes"}


def _scalar(kind: str, wire_type: int, value: Any) -> Any:
    if kind == "string":
        if wire_type != pw.LENGTH:
            raise ProtobufError("string field with a non length-delimited wire type")
        try:
            return value.decode()
        except UnicodeDecodeError:
            raise ProtobufError("string field is not UTF-8") from None
    if kind in ("int32", "int64"):
        if wire_type != pw.VARINT:
            raise ProtobufError("integer field with a non-varint wire type")
        return pw.signed64(value)
    if kind == "bool":
        if wire_type != pw.VARINT:
            raise ProtobufError("bool field with a non-varint wire type")
        return bool(value)
    if kind == "bytes":
        return base64.b64encode(value).decode()
    return value  # rawbytes


def _zero(value: Any) -> bool:
    return value == "" or value is False or (value == 0 and not isinstance(value, bool))


def _time(data: bytes) -> str | None:
    seconds = nanos = 0
    for number, _, value in pw.fields(data):
        if number == 1:
            seconds = pw.signed64(value)
        elif number == 2:
            nanos = value
    if seconds == 0 and nanos == 0:
        return None
    stamp = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")  # metav1.Time is second precision in JSON


def _intstr(data: bytes) -> int | str:
    kind = int_value = 0
    str_value = ""
    for number, _, value in pw.fields(data):
        if number == 1:
            kind = value
        elif number == 2:
            int_value = pw.signed64(value)
        elif number == 3:
            str_value = value.decode()
    return str_value if kind == 1 else int_value


def _quantity(data: bytes) -> str:
    for number, _, value in pw.fields(data):
        if number == 1:
            return value.decode()
    return "0"


def _map(data: bytes, value_kind: str) -> tuple[str, Any]:
    key = ""
    item: Any = b"" if value_kind != "map" else ""
    for number, _, value in pw.fields(data):
        if number == 1:
            key = value.decode()
        elif number == 2:
            item = value
    if value_kind == "map":
        return key, item.decode() if isinstance(item, bytes) else item
    if value_kind == "bytesmap":
        return key, base64.b64encode(item).decode()
    return key, _quantity(item)


def decode_message(name: str, data: bytes) -> dict:
    """Decode one message of the table into its JSON form."""
    table = MESSAGES.get(name)
    if table is None:
        raise UnsupportedKind(f"no protobuf description of {name}")
    out: dict[str, Any] = {}
    try:
        for number, wire_type, value in pw.fields(data):
            entry = table.get(number)
            if entry is None:
                continue  # a field this table does not describe
            json_name, kind = entry
            optional = kind.endswith("?")
            kind = kind.rstrip("?")
            repeated = kind.endswith("[]")
            kind = kind.removesuffix("[]")
            if kind in ("map", "bytesmap", "quantitymap"):
                key, item = _map(value, kind)
                out.setdefault(json_name, {})[key] = item
                continue
            if repeated and kind in ("int32", "int64") and wire_type == pw.LENGTH:
                # packed repeated varints
                items = out.setdefault(json_name, [])
                pos = 0
                while pos < len(value):
                    number_value, pos = pw.read_varint(value, pos)
                    items.append(pw.signed64(number_value))
                continue
            if kind in _SCALARS:
                decoded: Any = _scalar(kind, wire_type, value)
                if not repeated and not optional and _zero(decoded):
                    continue
            elif kind == "time":
                decoded = _time(value)
                if decoded is None:
                    continue
            elif kind == "intstr":
                decoded = _intstr(value)
            elif kind == "quantity":
                decoded = _quantity(value)
            else:
                if wire_type != pw.LENGTH:
                    raise ProtobufError(f"{name}.{json_name}: message field with wire type {wire_type}")
                decoded = decode_message(kind, value)
            if repeated:
                out.setdefault(json_name, []).append(decoded)
            else:
                out[json_name] = decoded
    except pw.DecodeError as exc:
        raise ProtobufError(f"unable to decode {name}: {exc}") from None
    return out


def decode_envelope(body: bytes) -> tuple[str, str, bytes]:
    """(apiVersion, kind, raw message bytes) of a `k8s\\0` body."""
    if not body.startswith(MAGIC):
        raise ProtobufError(
            "provided data does not appear to be a protobuf message, expected prefix [107 56 115 0]"
        )
    try:
        unknown = decode_message("Unknown", body[len(MAGIC) :])
    except ProtobufError:
        raise
    type_meta = unknown.get("typeMeta") or {}
    encoding = unknown.get("contentEncoding")
    if encoding:
        raise ProtobufError(f"unsupported content encoding {encoding!r}")
    return type_meta.get("apiVersion", ""), type_meta.get("kind", ""), unknown.get("raw", b"")


def decode_protobuf_body(body: bytes) -> dict:
    """Decode a protobuf request body to the object dict its JSON form would give.

    Raises `ProtobufError` (400) for malformed bytes, `UnsupportedKind` (415) for a kind the table
    does not cover.
    """
    api_version, kind, raw = decode_envelope(body)
    message = KINDS.get((api_version, kind))
    if message is None and kind == "DeleteOptions":
        message = "DeleteOptions"
    if message is None:
        raise UnsupportedKind(f"protobuf bodies of {api_version}, Kind={kind} are not supported; send JSON")
    obj: dict[str, Any] = {"kind": kind, "apiVersion": api_version}
    obj.update(decode_message(message, raw))
    return obj
