"""The process runtime on its own: real processes, real network namespaces (as root)."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from pinnace.kubelet.runtime.base import ContainerConfig, ContainerState, PodSandboxConfig, RuntimeFailure
from pinnace.kubelet.runtime.crilog import read_logs

root_only = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces, cgroups")]

PY = sys.executable

SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen()
while True:
    c, _ = s.accept(); c.sendall(b"hello from " + sys.argv[1].encode()); c.close()
"""

CLIENT = """
import socket, sys, time
for _ in range(100):
    try:
        c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1); print(c.recv(100).decode()); break
    except OSError:
        time.sleep(0.05)
"""


async def run_pod(runtime, tmp_path, name, containers):
    sandbox = await runtime.run_pod_sandbox(PodSandboxConfig(name=name, namespace="default", uid=name + "-uid"))
    ids = []
    for cname, command in containers:
        cid = await runtime.create_container(
            sandbox, ContainerConfig(name=cname, command=command, log_path=str(tmp_path / name / f"{cname}.log"))
        )
        await runtime.start_container(cid)
        ids.append(cid)
    return sandbox, ids


async def logs_of(runtime, cid) -> str:
    status = await runtime.container_status(cid)
    return b"".join([chunk async for chunk in read_logs(status.log_path)]).decode()


async def test_container_without_command_is_a_config_error(runtime):
    sandbox = await runtime.run_pod_sandbox(PodSandboxConfig(name="p", namespace="default", uid="u"))
    with pytest.raises(RuntimeFailure) as error:
        await runtime.create_container(sandbox, ContainerConfig(name="c", command=[]))
    assert error.value.reason == "CreateContainerConfigError"


async def test_exit_code_and_logs_in_cri_format(runtime, tmp_path):
    _, [cid] = await run_pod(runtime, tmp_path, "p1", [("c", ["sh", "-c", "echo out; echo err >&2; exit 3"])])
    await asyncio.wait_for(runtime.wait_container(cid), 5)
    status = await runtime.container_status(cid)
    assert (status.state, status.exit_code, status.reason) == (ContainerState.EXITED, 3, "Error")
    await asyncio.sleep(0.1)
    raw = open(status.log_path).read().splitlines()
    assert {line.split(" ")[1] for line in raw} == {"stdout", "stderr"}
    assert all(line.split(" ")[2] == "F" for line in raw)
    assert sorted((await logs_of(runtime, cid)).splitlines()) == ["err", "out"]


async def test_sigterm_then_sigkill(runtime, tmp_path):
    _, [cid] = await run_pod(runtime, tmp_path, "p2", [("c", ["sh", "-c", "trap '' TERM; sleep 30 & wait"])])
    await asyncio.sleep(0.2)
    await runtime.stop_container(cid, 0.5)
    status = await runtime.container_status(cid)
    assert status.exit_code == 137


@root_only[0]
@root_only[1]
async def test_containers_of_a_pod_share_localhost(runtime, tmp_path):
    sandbox, [_, client] = await run_pod(
        runtime,
        tmp_path,
        "p3",
        [("server", [PY, "-c", SERVER, "127.0.0.1", "8080"]), ("client", [PY, "-c", CLIENT, "127.0.0.1", "8080"])],
    )
    await asyncio.wait_for(runtime.wait_container(client), 10)
    await asyncio.sleep(0.1)
    assert "hello from 127.0.0.1" in await logs_of(runtime, client)
    status = await runtime.pod_sandbox_status(sandbox)
    assert status.ip and status.ip.startswith(runtime.pod_cidr.rsplit(".", 1)[0])


@root_only[0]
@root_only[1]
async def test_pods_reach_each_other_by_ip_and_port_forward(runtime, tmp_path):
    server_sandbox, _ = await run_pod(runtime, tmp_path, "p4", [("server", [PY, "-c", SERVER, "0.0.0.0", "8080"])])
    ip = (await runtime.pod_sandbox_status(server_sandbox)).ip
    _, [client] = await run_pod(runtime, tmp_path, "p5", [("client", [PY, "-c", CLIENT, ip, "8080"])])
    await asyncio.wait_for(runtime.wait_container(client), 10)
    await asyncio.sleep(0.1)
    assert "hello from 0.0.0.0" in await logs_of(runtime, client)
    reader, writer = await runtime.port_forward(server_sandbox, 8080)
    assert await reader.read(100) == b"hello from 0.0.0.0"
    writer.close()


@root_only[0]
@root_only[1]
async def test_memory_limit_oom_killed(runtime, tmp_path):
    sandbox = await runtime.run_pod_sandbox(PodSandboxConfig(name="p6", namespace="default", uid="u6"))
    cid = await runtime.create_container(
        sandbox,
        ContainerConfig(
            name="hog",
            command=[PY, "-c", "x = []\nwhile True: x.append(bytearray(1 << 20))"],
            log_path=str(tmp_path / "hog.log"),
            memory_limit_bytes=64 << 20,
        ),
    )
    await runtime.start_container(cid)
    await asyncio.wait_for(runtime.wait_container(cid), 20)
    status = await runtime.container_status(cid)
    assert (status.exit_code, status.reason) == (137, "OOMKilled")


async def test_exec_sees_container_env(runtime, tmp_path):
    sandbox = await runtime.run_pod_sandbox(PodSandboxConfig(name="p7", namespace="default", uid="u7"))
    cid = await runtime.create_container(
        sandbox,
        ContainerConfig(name="c", command=["sleep", "30"], env={"GREETING": "hi"}, log_path=str(tmp_path / "c.log")),
    )
    await runtime.start_container(cid)
    process = await runtime.exec(cid, ["sh", "-c", "echo $GREETING"], stdin=False, tty=False)
    out, _ = await process.communicate()
    assert out == b"hi\n"


async def test_unprivileged_mode_runs_in_the_host_network_and_names_volumes_in_the_environment(tmp_path):
    from pinnace.kubelet.runtime.base import Mount
    from pinnace.kubelet.runtime.process import ProcessRuntime

    runtime = ProcessRuntime(tmp_path, pod_cidr="10.42.9.0/24", network=False, cgroups=False, mount_namespaces=False)
    await runtime.start()
    volume = tmp_path / "vol"
    volume.mkdir()
    (volume / "f").write_text("content")
    try:
        sandbox = await runtime.run_pod_sandbox(PodSandboxConfig(name="p", namespace="default", uid="u"))
        assert (await runtime.pod_sandbox_status(sandbox)).netns is None
        cid = await runtime.create_container(
            sandbox,
            ContainerConfig(
                name="c", command=["sh", "-c", "cat $PINNACE_VOLUME_MY_DATA/f"], log_path=str(tmp_path / "c.log"),
                mounts=[Mount(str(volume), "/data", volume="my-data")],
            ),
        )
        await runtime.start_container(cid)
        await asyncio.wait_for(runtime.wait_container(cid), 5)
        await asyncio.sleep(0.1)
        assert (await logs_of(runtime, cid)).strip() == "content"
    finally:
        for item in await runtime.list_pod_sandboxes():
            await runtime.remove_pod_sandbox(item.id)
        await runtime.close()


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: mount namespaces")
async def test_shared_mount_point_outlives_the_container_that_made_it(runtime, tmp_path):
    """Every pod mounts its token at the same path: removing the first pod's container must neither
    remove the mount point under the others nor leave it on the host after the last one."""
    from pinnace.kubelet.runtime.base import Mount

    mount_point = f"/run/pinnace-test-{os.getpid()}/serviceaccount"
    ids = []
    for name in ("first", "second"):
        volume = tmp_path / name
        volume.mkdir()
        (volume / "token").write_text(name)
        sandbox = await runtime.run_pod_sandbox(PodSandboxConfig(name=name, namespace="default", uid=name + "-uid"))
        cid = await runtime.create_container(sandbox, ContainerConfig(
            name="c", command=["sh", "-c", f"sleep 1; cat {mount_point}/token"],
            log_path=str(tmp_path / f"{name}.log"), mounts=[Mount(str(volume), mount_point, read_only=True)]))
        await runtime.start_container(cid)
        ids.append(cid)
    await runtime.remove_container(ids[0])
    assert os.path.isdir(mount_point)
    await asyncio.wait_for(runtime.wait_container(ids[1]), 5)
    await asyncio.sleep(0.1)
    assert (await logs_of(runtime, ids[1])).strip() == "second"
    await runtime.remove_container(ids[1])
    assert not os.path.exists(os.path.dirname(mount_point))
