"""The node agent against a real API server: real processes, and real network namespaces as root."""

from __future__ import annotations

import asyncio
import os

import pytest

from pinnace.kubelet.agent import Kubelet
from pinnace.kubelet.testing import (
    IS_ROOT,
    PY,
    condition,
    container,
    container_status,
    kubelet_config,
    pod,
    stop_and_clean,
    wait_for,
)

needs_root = [pytest.mark.root, pytest.mark.skipif(not IS_ROOT, reason="needs root: network namespaces, cgroups")]

SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen()
while True:
    c, _ = s.accept(); c.sendall(b"hello from " + socket.gethostname().encode()); c.close()
"""

CLIENT = """
import socket, sys, time
for _ in range(200):
    try:
        c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1); print("got", c.recv(100).decode(), flush=True); break
    except OSError:
        time.sleep(0.05)
time.sleep(60)
"""


def phase(expected: str):
    return lambda p: (p.get("status") or {}).get("phase") == expected


def running_ready(p: dict) -> bool:
    return phase("Running")(p) and condition(p, "Ready") == "True"


@pytest.fixture
async def kubelet(client, tmp_path):
    instance = Kubelet(client, kubelet_config(tmp_path / "node"))
    await instance.start()
    try:
        yield instance
    finally:
        await stop_and_clean(instance)


async def create(client, kubelet, name, containers, **spec):
    return await client.create("v1/pods", pod(name, containers, nodeName=kubelet.node_name, **spec))


async def curl(url: str) -> str:
    # An asyncio subprocess: the kubelet serving the request runs on this same event loop.
    process = await asyncio.create_subprocess_exec("curl", "-s", "--noproxy", "*", url, stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(process.communicate(), 10)
    return out.decode()


async def logs(kubelet, name, container_name) -> str:
    worker = kubelet.worker_for("default", name)
    status = await kubelet.runtime.container_status(worker.tracks[container_name].container_id)
    from pinnace.kubelet.runtime.crilog import read_logs

    return b"".join([chunk async for chunk in read_logs(status.log_path)]).decode()


async def test_node_is_registered_with_capacity_conditions_and_lease(client, kubelet):
    node = await client.get("v1/nodes", kubelet.node_name)
    labels = node["metadata"]["labels"]
    assert labels["kubernetes.io/hostname"] == kubelet.node_name
    assert labels["kubernetes.io/os"] == "linux"
    assert node["status"]["capacity"]["pods"] == "110"
    assert {"cpu", "memory", "ephemeral-storage"} <= set(node["status"]["allocatable"])
    assert {c["type"] for c in node["status"]["conditions"]} == {"Ready", "MemoryPressure", "DiskPressure", "PIDPressure"}
    assert node["status"]["nodeInfo"]["kubeletVersion"].startswith("v1.")
    assert node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] == kubelet.port
    for _ in range(50):
        try:
            lease = await client.get("coordination.k8s.io/v1/leases", kubelet.node_name, namespace="kube-node-lease")
            break
        except Exception:
            await asyncio.sleep(0.1)
    assert lease["spec"]["holderIdentity"] == kubelet.node_name


async def test_node_marked_unknown_is_ready_again_at_the_next_status_check(client, kubelet):
    # What the node lifecycle controller does to a node whose Lease went stale.
    node = await client.get("v1/nodes", kubelet.node_name)
    conditions = [{**c, "status": "Unknown", "reason": "NodeStatusUnknown"} if c["type"] == "Ready" else c
                  for c in node["status"]["conditions"]]
    await client.patch("v1/nodes", kubelet.node_name, {"status": {"conditions": conditions}},
                       patch_type="merge", subresource="status")
    await kubelet.post_node_status()  # the periodic check: nothing changed on the node itself
    node = await client.get("v1/nodes", kubelet.node_name)
    assert condition(node, "Ready") == "True"


async def test_container_without_command_waits_with_config_error(client, kubelet):
    await create(client, kubelet, "nocmd", [{"name": "c", "image": "nginx"}])
    p = await wait_for(client, "nocmd", lambda p: container_status(p, "c").get("state", {}).get("waiting", {}).get("reason") == "CreateContainerConfigError")
    assert "command" in container_status(p, "c")["state"]["waiting"]["message"]
    events = await client.list("v1/events", namespace="default")
    assert any("command" in e.get("message", "") for e in events["items"] if e["involvedObject"]["name"] == "nocmd")


@pytest.mark.parametrize(
    "policy, exit_code, final_phase",
    [("Never", 1, "Failed"), ("Never", 0, "Succeeded"), ("OnFailure", 0, "Succeeded")],
)
async def test_restart_policy_final_phases(client, kubelet, policy, exit_code, final_phase):
    name = f"rp-{policy.lower()}-{exit_code}"
    await create(client, kubelet, name, [container("c", "sh", "-c", f"exit {exit_code}")], restartPolicy=policy)
    p = await wait_for(client, name, phase(final_phase))
    terminated = container_status(p, "c")["state"]["terminated"]
    assert terminated["exitCode"] == exit_code
    assert terminated["reason"] == ("Completed" if exit_code == 0 else "Error")
    assert container_status(p, "c")["restartCount"] == 0
    assert condition(p, "Ready") == "False"


async def test_crash_loop_back_off_restarts_with_growing_delay(client, kubelet):
    await create(client, kubelet, "crash", [container("c", "sh", "-c", "echo boom; exit 2")], restartPolicy="Always")
    p = await wait_for(client, "crash", lambda p: container_status(p, "c").get("restartCount", 0) >= 2)
    status = container_status(p, "c")
    assert status["lastState"]["terminated"]["exitCode"] == 2
    assert p["status"]["phase"] == "Running"
    await wait_for(client, "crash", lambda p: container_status(p, "c").get("state", {}).get("waiting", {}).get("reason") == "CrashLoopBackOff")


async def test_on_failure_restarts_until_success(client, kubelet, tmp_path):
    marker = tmp_path / "marker"
    script = f"if [ -e {marker} ]; then exit 0; else touch {marker}; exit 1; fi"
    await create(client, kubelet, "onfail", [container("c", "sh", "-c", script)], restartPolicy="OnFailure")
    p = await wait_for(client, "onfail", phase("Succeeded"))
    assert container_status(p, "c")["restartCount"] == 1


async def test_init_containers_run_in_order_before_app_containers(client, kubelet, tmp_path):
    trace = tmp_path / "trace"
    init = [container(f"init{i}", "sh", "-c", f"echo init{i} >> {trace}") for i in (1, 2)]
    await create(
        client, kubelet, "inits", [container("app", "sh", "-c", f"echo app >> {trace}; sleep 60")], initContainers=init
    )
    p = await wait_for(client, "inits", running_ready)
    assert trace.read_text().split() == ["init1", "init2", "app"]
    assert condition(p, "Initialized") == "True"
    assert [s["state"]["terminated"]["reason"] for s in p["status"]["initContainerStatuses"]] == ["Completed", "Completed"]


async def test_failing_init_container_blocks_the_pod(client, kubelet):
    await create(
        client, kubelet, "badinit", [container("app", "sleep", "60")], restartPolicy="Never",
        initContainers=[container("init", "sh", "-c", "exit 3")],
    )
    p = await wait_for(client, "badinit", phase("Failed"))
    assert condition(p, "Initialized") == "False"
    assert container_status(p, "app")["state"]["waiting"]["reason"] in ("PodInitializing", "ContainerCreating")


async def test_liveness_probe_failure_restarts_the_container(client, kubelet, tmp_path):
    health = tmp_path / "healthy"
    health.write_text("ok")
    probe = {"exec": {"command": ["test", "-e", str(health)]}, "periodSeconds": 1, "failureThreshold": 1}
    await create(client, kubelet, "live", [container("c", "sleep", "60", livenessProbe=probe)])
    await wait_for(client, "live", running_ready)
    health.unlink()
    p = await wait_for(client, "live", lambda p: container_status(p, "c").get("restartCount", 0) >= 1)
    assert "terminated" in container_status(p, "c")["lastState"]


async def test_readiness_flapping_shows_in_ready_condition(client, kubelet, tmp_path):
    ready = tmp_path / "ready"
    probe = {"exec": {"command": ["test", "-e", str(ready)]}, "periodSeconds": 1, "failureThreshold": 1}
    await create(client, kubelet, "ready", [container("c", "sleep", "60", readinessProbe=probe)])
    await wait_for(client, "ready", lambda p: phase("Running")(p) and condition(p, "Ready") == "False")
    ready.write_text("")
    await wait_for(client, "ready", lambda p: condition(p, "Ready") == "True")
    ready.unlink()
    p = await wait_for(client, "ready", lambda p: condition(p, "Ready") == "False")
    assert container_status(p, "c")["restartCount"] == 0


async def test_http_and_tcp_probes(client, kubelet):
    server = f"{PY} -m http.server 8081 --bind 0.0.0.0"
    probes = {
        "readinessProbe": {"httpGet": {"path": "/", "port": 8081}, "periodSeconds": 1},
        "livenessProbe": {"tcpSocket": {"port": "web"}, "periodSeconds": 1},
        "ports": [{"name": "web", "containerPort": 8081}],
    }
    await create(client, kubelet, "httpprobe", [container("web", "sh", "-c", "exec " + server, **probes)], hostNetwork=not IS_ROOT)
    p = await wait_for(client, "httpprobe", running_ready)
    assert container_status(p, "web")["restartCount"] == 0


async def test_graceful_termination_sends_sigterm_then_deletes(client, kubelet, tmp_path):
    marker = tmp_path / "got-term"
    script = f"trap 'echo term > {marker}; exit 0' TERM; while true; do sleep 0.1; done"
    pre_stop = {"exec": {"command": ["sh", "-c", f"echo prestop > {tmp_path / 'prestop'}"]}}
    await create(
        client, kubelet, "graceful", [container("c", "sh", "-c", script, lifecycle={"preStop": pre_stop})],
        terminationGracePeriodSeconds=10,
    )
    await wait_for(client, "graceful", running_ready)
    await client.delete("v1/pods", "graceful", namespace="default")
    for _ in range(100):
        try:
            await client.get("v1/pods", "graceful", namespace="default")
        except Exception:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("pod was not deleted")
    assert marker.read_text().strip() == "term"
    assert (tmp_path / "prestop").read_text().strip() == "prestop"
    assert not await kubelet.runtime.list_pod_sandboxes()


async def test_sigkill_after_grace_period(client, kubelet):
    await create(
        client, kubelet, "stubborn", [container("c", "sh", "-c", "trap '' TERM; while true; do sleep 0.1; done")],
        terminationGracePeriodSeconds=1,
    )
    await wait_for(client, "stubborn", running_ready)
    await client.delete("v1/pods", "stubborn", namespace="default")
    for _ in range(60):
        try:
            await client.get("v1/pods", "stubborn", namespace="default")
        except Exception:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("pod was not deleted after its grace period")


async def test_env_expansion_and_downward_api(client, kubelet):
    await client.create(
        "v1/configmaps", {"metadata": {"name": "cfg", "namespace": "default"}, "data": {"color": "blue", "size": "L"}}
    )
    env = [
        {"name": "GREETING", "value": "hello"},
        {"name": "MESSAGE", "value": "$(GREETING) world $$(ESCAPED) $(MISSING)"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "color"}}},
        {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
    ]
    spec = container(
        "c", "sh", "-c", "echo $MESSAGE; echo $POD_NAME $COLOR $size $MEM; echo $(GREETING); sleep 60",
        env=env, envFrom=[{"configMapRef": {"name": "cfg"}}], resources={"limits": {"memory": "64Mi"}},
    )
    await create(client, kubelet, "envpod", [spec])
    await wait_for(client, "envpod", running_ready)
    await asyncio.sleep(0.3)
    lines = (await logs(kubelet, "envpod", "c")).splitlines()
    assert lines[0] == "hello world $(ESCAPED) $(MISSING)"
    assert lines[1] == "envpod blue L 64"
    assert lines[2] == "hello"


async def test_missing_config_map_is_a_config_error(client, kubelet):
    env = [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k"}}}]
    await create(client, kubelet, "nocm", [container("c", "sleep", "60", env=env)])
    p = await wait_for(client, "nocm", lambda p: container_status(p, "c").get("state", {}).get("waiting", {}).get("reason") == "CreateContainerConfigError")
    assert "absent" in container_status(p, "c")["state"]["waiting"]["message"]


async def test_config_map_volume_is_updated_in_place(client, kubelet, tmp_path):
    await client.create("v1/configmaps", {"metadata": {"name": "vol", "namespace": "default"}, "data": {"k": "one"}})
    mount = str(tmp_path / "mnt" / "config")
    reader = f"while true; do cat {mount}/k 2>/dev/null || cat $PINNACE_VOLUME_CFG/k; echo; sleep 0.2; done"
    await create(
        client, kubelet, "cmvol",
        [container("c", "sh", "-c", reader, volumeMounts=[{"name": "cfg", "mountPath": mount}])],
        volumes=[{"name": "cfg", "configMap": {"name": "vol"}}],
    )
    await wait_for(client, "cmvol", running_ready)
    await asyncio.sleep(0.5)
    assert "one" in await logs(kubelet, "cmvol", "c")
    await client.patch("v1/configmaps", "vol", {"data": {"k": "two"}}, namespace="default")
    for _ in range(60):
        if "two" in await logs(kubelet, "cmvol", "c"):
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError("the container never saw the new configMap value")


async def test_termination_message_from_file_and_logs(client, kubelet):
    await create(
        client, kubelet, "msg",
        [
            container("file", "sh", "-c", "echo bye > $PINNACE_TERMINATION_MESSAGE_PATH; exit 1"),
            container("logs", "sh", "-c", "echo last words; exit 2", terminationMessagePolicy="FallbackToLogsOnError"),
        ],
        restartPolicy="Never",
    )
    p = await wait_for(client, "msg", phase("Failed"))
    assert container_status(p, "file")["state"]["terminated"]["message"].strip() == "bye"
    assert "last words" in container_status(p, "logs")["state"]["terminated"]["message"]


async def test_active_deadline_fails_the_pod(client, kubelet):
    await create(client, kubelet, "deadline", [container("c", "sleep", "60")], activeDeadlineSeconds=1)
    p = await wait_for(client, "deadline", phase("Failed"), timeout=15)
    assert p["status"]["reason"] == "DeadlineExceeded"


async def test_read_only_port_lists_pods(client, kubelet):
    await create(client, kubelet, "ro", [container("c", "sleep", "60")])
    await wait_for(client, "ro", running_ready)
    out = await curl(f"http://127.0.0.1:{kubelet.read_only_port}/pods")
    import json

    items = json.loads(out)["items"]
    assert [item["metadata"]["name"] for item in items] == ["ro"]
    assert items[0]["status"]["phase"] == "Running"
    summary = await curl(f"http://127.0.0.1:{kubelet.read_only_port}/stats/summary")
    assert json.loads(summary)["pods"][0]["podRef"]["name"] == "ro"


@needs_root[0]
@needs_root[1]
async def test_two_containers_share_localhost_and_pods_reach_each_other(client, kubelet):
    await create(
        client, kubelet, "pair",
        [container("server", PY, "-c", SERVER, "127.0.0.1", "8080"), container("client", PY, "-c", CLIENT, "127.0.0.1", "8080")],
    )
    await create(client, kubelet, "other", [container("server", PY, "-c", SERVER, "0.0.0.0", "9090")])
    pair = await wait_for(client, "pair", running_ready)
    other = await wait_for(client, "other", running_ready)
    assert pair["status"]["podIP"] != other["status"]["podIP"]
    await create(client, kubelet, "caller", [container("client", PY, "-c", CLIENT, other["status"]["podIP"], "9090")])
    await wait_for(client, "caller", running_ready)
    for _ in range(50):
        if "got hello" in await logs(kubelet, "pair", "client") and "got hello" in await logs(kubelet, "caller", "client"):
            break
        await asyncio.sleep(0.1)
    assert "got hello" in await logs(kubelet, "pair", "client")
    assert "got hello" in await logs(kubelet, "caller", "client")


@needs_root[0]
@needs_root[1]
async def test_memory_limit_oom_is_reported(client, kubelet):
    hog = container(
        "hog", PY, "-c", "x = []\nwhile True: x.append(bytearray(1 << 20))", resources={"limits": {"memory": "64Mi"}}
    )
    await create(client, kubelet, "oom", [hog], restartPolicy="Never")
    p = await wait_for(client, "oom", phase("Failed"), timeout=30)
    terminated = container_status(p, "hog")["state"]["terminated"]
    assert (terminated["reason"], terminated["exitCode"]) == ("OOMKilled", 137)


@needs_root[0]
@needs_root[1]
async def test_pod_ip_is_released_when_the_pod_is_deleted(client, kubelet):
    await create(client, kubelet, "ipam", [container("c", "sleep", "60")], terminationGracePeriodSeconds=1)
    await wait_for(client, "ipam", running_ready)
    assert len(kubelet.runtime.ipam.allocated()) == 1
    await client.delete("v1/pods", "ipam", namespace="default")
    for _ in range(50):
        if not kubelet.runtime.ipam.allocated():
            break
        await asyncio.sleep(0.1)
    assert kubelet.runtime.ipam.allocated() == {}
    assert not [ns for ns in os.listdir("/var/run/netns") if ns.startswith("pn-") and ns[3:] in kubelet.runtime._sandboxes]


async def test_node_pressure_evicts_best_effort_pods(client, tmp_path):
    config = kubelet_config(tmp_path / "node", eviction_memory_available="1Pi", status_seconds=0.5)
    pressured = Kubelet(client, config)
    await pressured.start()
    try:
        await create(client, pressured, "besteffort", [container("c", "sleep", "60")])
        p = await wait_for(client, "besteffort", phase("Failed"), timeout=30)
        assert p["status"]["reason"] == "Evicted"
        node = await client.get("v1/nodes", pressured.node_name)
        memory = next(c for c in node["status"]["conditions"] if c["type"] == "MemoryPressure")
        assert memory["status"] == "True"
    finally:
        await stop_and_clean(pressured)


async def test_without_pod_network_pods_share_the_host_network_and_the_node_says_so(client, tmp_path):
    plain = Kubelet(client, kubelet_config(tmp_path / "node", network=False))
    await plain.start()
    try:
        await create(client, plain, "hostnet", [container("c", "sleep", "60")])
        p = await wait_for(client, "hostnet", running_ready)
        assert p["status"]["podIP"] == plain.node_ip
        for _ in range(50):
            events = (await client.list("v1/events", namespace="default"))["items"]
            if any(e.get("reason") == "HostNetworkPods" for e in events):
                break
            await asyncio.sleep(0.1)
        assert any(e.get("reason") == "HostNetworkPods" and "host network" in e["message"] for e in events)
    finally:
        await stop_and_clean(plain)


async def test_volumes_empty_dir_secret_downward_api_and_projected(client, kubelet, tmp_path):
    import base64

    await client.create(
        "v1/secrets",
        {"metadata": {"name": "creds", "namespace": "default"}, "data": {"user": base64.b64encode(b"admin").decode(), "skip": "eA=="}},
    )
    await client.create("v1/configmaps", {"metadata": {"name": "proj", "namespace": "default"}, "data": {"a": "1"}})
    root = tmp_path / "m"
    mounts = [
        {"name": "shared", "mountPath": str(root / "shared")},
        {"name": "secret", "mountPath": str(root / "secret"), "readOnly": True},
        {"name": "info", "mountPath": str(root / "info")},
        {"name": "proj", "mountPath": str(root / "proj")},
    ]
    volumes = [
        {"name": "shared", "emptyDir": {"medium": "Memory"}},
        {"name": "secret", "secret": {"secretName": "creds", "items": [{"key": "user", "path": "login/user", "mode": 0o400}]}},
        {"name": "info", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
        {
            "name": "proj",
            "projected": {
                "sources": [
                    {"configMap": {"name": "proj"}},
                    {"downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
                ]
            },
        },
    ]

    def path(volume: str, file: str) -> str:
        # As root the volume is mounted at mountPath; otherwise its directory is named in the environment.
        if IS_ROOT:
            return str(root / volume / file)
        return f"$PINNACE_VOLUME_{volume.upper()}/{file}"

    writer = container("writer", "sh", "-c", f"echo shared-data > {path('shared', 'f')}; sleep 60", volumeMounts=mounts[:1])
    reader = container(
        "reader", "sh", "-c",
        f"sleep 0.5; cat {path('shared', 'f')} {path('secret', 'login/user')}; echo; cat {path('info', 'labels')}; echo; "
        f"cat {path('proj', 'a')} {path('proj', 'name')}; echo; ls {path('secret', '')}; stat -c %a {path('secret', 'login/user')}; sleep 60",
        volumeMounts=mounts,
    )
    spec = pod("vols", [writer, reader], nodeName=kubelet.node_name, volumes=volumes)
    spec["metadata"]["labels"] = {"app": "vols"}
    await client.create("v1/pods", spec)
    await wait_for(client, "vols", running_ready)
    for _ in range(40):
        out = await logs(kubelet, "vols", "reader")
        if "400" in out:
            break
        await asyncio.sleep(0.2)
    lines = out.splitlines()
    assert lines[0] == "shared-data"
    assert lines[1] == "admin"
    assert lines[2] == 'app="vols"'
    assert lines[3] == "1vols"
    assert lines[4] == "login"  # only the listed item
    assert lines[5] == "400"


async def test_startup_probe_gates_readiness_and_post_start_runs(client, kubelet, tmp_path):
    started = tmp_path / "started"
    spec = container(
        "c", "sh", "-c", f"sleep 1; touch {started}; sleep 60",
        startupProbe={"exec": {"command": ["test", "-e", str(started)]}, "periodSeconds": 1, "failureThreshold": 10},
        lifecycle={"postStart": {"exec": {"command": ["sh", "-c", f"echo hook > {tmp_path / 'hook'}"]}}},
    )
    await create(client, kubelet, "startup", [spec])
    p = await wait_for(client, "startup", lambda p: phase("Running")(p))
    assert container_status(p, "c")["started"] is False or condition(p, "Ready") == "True"
    p = await wait_for(client, "startup", running_ready)
    assert container_status(p, "c")["started"] is True
    assert (tmp_path / "hook").read_text().strip() == "hook"


@needs_root[0]
@needs_root[1]
async def test_cluster_dns_resolv_conf_and_hosts(client, tmp_path):
    dns = Kubelet(client, kubelet_config(tmp_path / "node", cluster_dns=["10.43.0.10"]))
    await dns.start()
    try:
        await create(client, dns, "dns", [container("c", "sh", "-c", "cat /etc/resolv.conf /etc/hosts; sleep 60")])
        p = await wait_for(client, "dns", running_ready)
        await asyncio.sleep(0.3)
        out = await logs(dns, "dns", "c")
        assert "nameserver 10.43.0.10" in out
        assert "search default.svc.cluster.local svc.cluster.local cluster.local" in out
        assert f"{p['status']['podIP']}\tdns" in out
    finally:
        await stop_and_clean(dns)


async def test_sidecar_init_container_keeps_running_beside_the_app(client, kubelet, tmp_path):
    marker = tmp_path / "sidecar-up"
    sidecar = container("proxy", "sh", "-c", f"touch {marker}; sleep 60", restartPolicy="Always")
    check = container("check", "test", "-e", str(marker))
    await create(client, kubelet, "sidecar", [container("app", "sleep", "60")], initContainers=[sidecar, check])
    p = await wait_for(client, "sidecar", running_ready)
    assert condition(p, "Initialized") == "True"
    states = {s["name"]: s["state"] for s in p["status"]["initContainerStatuses"]}
    assert "running" in states["proxy"]
    assert states["check"]["terminated"]["exitCode"] == 0
