"""Environment, command line and QoS class of containers, as Kubernetes computes them."""

from __future__ import annotations

import pytest

from pinnace.kubelet.container_spec import (
    ConfigError,
    build_env,
    command_line,
    expand,
    qos_class,
    service_env,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("$(A)", "a"),
        ("x-$(A)-$(B)", "x-a-b"),
        ("$$(A)", "$(A)"),  # escaped reference
        ("$(MISSING)", "$(MISSING)"),  # undefined references stay as written
        ("$$", "$"),
        ("$", "$"),
        ("cost: $5", "cost: $5"),
        ("$(A", "$(A"),  # unterminated
    ],
)
def test_variable_expansion(text, expected):
    assert expand(text, {"A": "a", "B": "b"}) == expected


def test_service_env_has_kubernetes_and_docker_link_variables():
    service = {
        "metadata": {"name": "my-db"},
        "spec": {"clusterIP": "10.43.0.7", "ports": [{"name": "sql", "port": 5432, "protocol": "TCP"}]},
    }
    headless = {"metadata": {"name": "headless"}, "spec": {"clusterIP": "None", "ports": [{"port": 1}]}}
    env = service_env([service, headless])
    assert env["MY_DB_SERVICE_HOST"] == "10.43.0.7"
    assert env["MY_DB_SERVICE_PORT"] == "5432"
    assert env["MY_DB_SERVICE_PORT_SQL"] == "5432"
    assert env["MY_DB_PORT"] == "tcp://10.43.0.7:5432"
    assert env["MY_DB_PORT_5432_TCP_ADDR"] == "10.43.0.7"
    assert not any(key.startswith("HEADLESS") for key in env)


async def test_env_precedence_and_sources():
    objects = {
        ("v1/configmaps", "cm"): {"data": {"A": "from-cm", "B": "b"}},
        ("v1/secrets", "sec"): {"data": {"token": "c2VjcmV0"}},
    }

    async def get(resource, namespace, name):
        return objects.get((resource, name))

    pod = {"metadata": {"name": "p", "namespace": "ns", "labels": {"app": "x"}}, "spec": {"nodeName": "n1"}, "status": {"podIP": "10.42.0.5"}}
    container = {
        "name": "c",
        "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}, {"secretRef": {"name": "sec"}}],
        "env": [
            {"name": "CM_A", "value": "explicit wins"},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "token"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k", "optional": True}}},
        ],
        "resources": {"requests": {"cpu": "250m"}},
    }
    env = await build_env(pod, container, get, [], {"cpu": "2", "memory": "1Gi"})
    assert env["CM_A"] == "explicit wins"
    assert env["CM_B"] == "b"
    assert env["token"] == "secret"
    assert env["TOKEN"] == "secret"
    assert env["APP"] == "x"
    assert env["IP"] == "10.42.0.5"
    assert "OPT" not in env


async def test_missing_secret_key_is_a_config_error():
    async def get(resource, namespace, name):
        return {"data": {}}

    container = {"name": "c", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}
    with pytest.raises(ConfigError, match="couldn't find key k"):
        await build_env({"metadata": {"name": "p"}, "spec": {}}, container, get, [], {})


def test_command_and_args_are_expanded():
    assert command_line({"command": ["echo", "$(X)"], "args": ["$(Y)", "$$(X)"]}, {"X": "1", "Y": "2"}) == ["echo", "1", "2", "$(X)"]
    assert command_line({"args": ["only args"]}, {}) == []


def resources(requests=None, limits=None):
    return {"name": "c", "resources": {"requests": requests or {}, "limits": limits or {}}}


@pytest.mark.parametrize(
    "containers, expected",
    [
        ([resources()], "BestEffort"),
        ([resources(limits={"cpu": "1", "memory": "1Gi"})], "Guaranteed"),
        ([resources({"cpu": "1", "memory": "1Gi"}, {"cpu": "1", "memory": "1Gi"})], "Guaranteed"),
        ([resources({"cpu": "500m"}, {"cpu": "1", "memory": "1Gi"})], "Burstable"),
        ([resources({"memory": "1Gi"})], "Burstable"),
        ([resources(limits={"cpu": "1", "memory": "1Gi"}), resources()], "Burstable"),
    ],
)
def test_qos_class(containers, expected):
    assert qos_class({"spec": {"containers": containers}}) == expected
