"""Image handling of runtimes with images: pull policy defaults, pull secrets, pull back-off, image GC,
and how Kubernetes' securityContext and DNS settings map to the CRI."""

from __future__ import annotations

import base64
import json
import time
from types import SimpleNamespace

import pytest

from pinnace.kubelet.images import ImageManager, default_pull_policy, docker_configs_of, image_command
from pinnace.kubelet.runtime.base import ContainerConfig, PodSandboxConfig, RuntimeFailure
from pinnace.kubelet.security_context import effective_security_context, pod_is_privileged


@pytest.mark.parametrize("image, policy", [
    ("busybox", "Always"),
    ("busybox:latest", "Always"),
    ("127.0.0.1:5000/demo/httpd", "Always"),  # the port is not a tag
    ("127.0.0.1:5000/demo/httpd:1", "IfNotPresent"),
    ("busybox:1.36", "IfNotPresent"),
    ("busybox@sha256:" + "0" * 64, "IfNotPresent"),
])
def test_pull_policy_defaults_from_the_tag(image, policy):
    assert default_pull_policy(image) == policy


def secret(kind: str, key: str, content: dict) -> dict:
    return {"type": kind, "data": {key: base64.b64encode(json.dumps(content).encode()).decode()}}


def test_pull_secrets_in_both_docker_config_formats():
    auths = {"reg:5000": {"username": "u", "password": "p"}}
    assert docker_configs_of(secret("kubernetes.io/dockerconfigjson", ".dockerconfigjson", {"auths": auths})) == [{"auths": auths}]
    assert docker_configs_of(secret("kubernetes.io/dockercfg", ".dockercfg", auths)) == [{"auths": auths}]
    assert docker_configs_of({"data": {".dockerconfigjson": "not base64 json"}}) == []


def test_command_and_args_are_expanded_separately():
    spec = {"command": ["sh", "-c"], "args": ["echo $(WHO)"]}
    assert image_command(spec, {"WHO": "pod"}) == (["sh", "-c"], ["echo pod"])
    assert image_command({"args": ["-p", "8080"]}, {}) == ([], ["-p", "8080"])  # the image's ENTRYPOINT stays
    assert image_command({}, {}) == ([], [])


class FakeRuntime:
    def __init__(self, used: int, total: int, images: list[dict], in_use: set[str], present: set[str] = frozenset()):
        self.used, self.total = used, total
        self.images = images
        self.in_use = in_use
        self.present = set(present)
        self.removed: list[str] = []
        self.pulls = 0
        self.fail_pulls = False

    async def image_fs_usage(self):
        return [{"mountpoint": "/", "usedBytes": self.used}]

    async def image_records(self):
        return [i for i in self.images if i["id"] not in self.removed]

    async def images_in_use(self):
        return self.in_use

    async def remove_image(self, image_id):
        self.removed.append(image_id)

    async def image_id(self, image):
        return f"id-{image}" if image in self.present else None

    async def pull_image(self, image, docker_configs):
        self.pulls += 1
        if self.fail_pulls:
            raise RuntimeFailure(f'Failed to pull image "{image}": not found', reason="ErrImagePull")
        self.present.add(image)
        return f"id-{image}"

    async def list_images(self):
        return [{"names": [i["id"]], "sizeBytes": i["sizeBytes"]} for i in self.images]


class Recorder:
    def __init__(self):
        self.events: list[tuple[str, str]] = []

    def event(self, obj, kind, reason, message):
        self.events.append((reason, message))


def manager(runtime: FakeRuntime, **config) -> ImageManager:
    settings = {"backoff_initial": 10.0, "backoff_max": 300.0, **config}
    kubelet = SimpleNamespace(runtime=runtime, recorder=Recorder(), config=SimpleNamespace(**settings),
                              get_object=None)
    return ImageManager(kubelet)  # type: ignore[arg-type]


async def test_gc_removes_unused_images_oldest_first_down_to_80_percent(monkeypatch):
    gib = 2**30
    images = [{"id": name, "names": [name], "sizeBytes": 4 * gib} for name in ("old", "used", "new", "newest")]
    runtime = FakeRuntime(used=90 * gib, total=100 * gib, images=images, in_use={"used"})
    images_manager = manager(runtime)
    images_manager.last_used = {"old": 1.0, "used": 0.5, "new": 2.0, "newest": 3.0}
    monkeypatch.setattr("shutil.disk_usage", lambda path: SimpleNamespace(used=runtime.used, total=runtime.total))
    removed = await images_manager.garbage_collect()
    assert removed == ["old", "new", "newest"]  # 10 GiB to free: never the image in use
    assert "used" not in runtime.removed


async def test_gc_does_nothing_below_85_percent(monkeypatch):
    runtime = FakeRuntime(used=84, total=100, images=[{"id": "a", "names": ["a"], "sizeBytes": 10}], in_use=set())
    monkeypatch.setattr("shutil.disk_usage", lambda path: SimpleNamespace(used=runtime.used, total=runtime.total))
    assert await manager(runtime).garbage_collect() == []


POD = {"metadata": {"name": "p", "namespace": "default", "uid": "u1"}, "spec": {}}


async def test_pull_failure_reports_err_image_pull_then_image_pull_back_off():
    runtime = FakeRuntime(0, 1, [], set())
    runtime.fail_pulls = True
    images = manager(runtime, backoff_initial=10.0)
    first = await images.ensure(POD, {"name": "c", "image": "reg/app:1"})
    assert first is not None and first.reason == "ErrImagePull" and "not found" in first.message
    again = await images.ensure(POD, {"name": "c", "image": "reg/app:1"})  # right after: same report, no new pull
    assert again is not None and again.reason == "ErrImagePull" and runtime.pulls == 1
    delay, _until, error = images.backoff[("u1", "reg/app:1")]
    images.backoff[("u1", "reg/app:1")] = (delay, time.time() + 1, error)  # past half the back-off
    later = await images.ensure(POD, {"name": "c", "image": "reg/app:1"})
    assert later is not None and later.reason == "ImagePullBackOff" and runtime.pulls == 1
    assert later.message.startswith('Back-off pulling image "reg/app:1"')
    reasons = [reason for reason, _ in images.kubelet.recorder.events]
    assert reasons == ["Pulling", "Failed", "Failed", "BackOff"]


async def test_pull_policies():
    runtime = FakeRuntime(0, 1, [], set(), present={"app:1"})
    images = manager(runtime)
    assert await images.ensure(POD, {"name": "c", "image": "app:1"}) is None
    assert runtime.pulls == 0  # IfNotPresent, present
    assert await images.ensure(POD, {"name": "c", "image": "app:1", "imagePullPolicy": "Always"}) is None
    assert runtime.pulls == 1
    never = await images.ensure(POD, {"name": "c", "image": "other:1", "imagePullPolicy": "Never"})
    assert never is not None and never.reason == "ErrImageNeverPull"


def test_security_context_container_fields_override_the_pods():
    pod = {"spec": {"securityContext": {"runAsUser": 1000, "runAsNonRoot": True, "fsGroup": 2000},
                    "containers": [{"name": "a", "securityContext": {"runAsUser": 3000, "privileged": True}}]}}
    merged = effective_security_context(pod, pod["spec"]["containers"][0])
    assert merged == {"runAsUser": 3000, "runAsNonRoot": True, "fsGroup": 2000, "privileged": True}
    assert pod_is_privileged(pod)


async def test_security_context_maps_to_the_cri():
    from pinnace.kubelet.runtime.cri import CriRuntime

    runtime = CriRuntime(data_dir="/nonexistent", pod_cidr=None)
    config = ContainerConfig(name="c", command=[], image="x", security_context={
        "runAsUser": 1000, "runAsGroup": 3000, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
        "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]}, "fsGroup": 2000, "runAsNonRoot": True,
    })
    security = await runtime._security_context(config)
    assert security.run_as_user.value == 1000 and security.run_as_group.value == 3000
    assert security.readonly_rootfs and security.no_new_privs and not security.privileged
    assert list(security.capabilities.add_capabilities) == ["NET_ADMIN"]
    assert list(security.capabilities.drop_capabilities) == ["ALL"]
    assert list(security.supplemental_groups) == [2000]
    assert "/proc/kcore" in security.masked_paths
    with pytest.raises(RuntimeFailure) as root:
        await runtime._security_context(ContainerConfig(name="c", command=[], security_context={"runAsNonRoot": True, "runAsUser": 0}))
    assert root.value.reason == "CreateContainerConfigError" and "will run as root" in str(root.value)
    privileged = await runtime._security_context(ContainerConfig(name="c", command=[], security_context={"privileged": True}))
    assert privileged.privileged and not privileged.masked_paths


@pytest.mark.parametrize("policy, host_network, custom, expected", [
    ("ClusterFirst", False, None, (["10.43.0.10"], ["ns.svc.cluster.local", "svc.cluster.local", "cluster.local"], ["ndots:5"])),
    ("ClusterFirst", True, None, None),  # the host's resolv.conf
    ("Default", False, None, None),
    ("None", False, {"nameservers": ["1.1.1.1"], "options": [{"name": "ndots", "value": "2"}]}, (["1.1.1.1"], [], ["ndots:2"])),
    ("ClusterFirst", False, {"searches": ["x.example"], "options": [{"name": "ndots", "value": "1"}]},
     (["10.43.0.10"], ["ns.svc.cluster.local", "svc.cluster.local", "cluster.local", "x.example"], ["ndots:1"])),
])
def test_dns_config_per_dns_policy(policy, host_network, custom, expected):
    from pinnace.kubelet.runtime.cri import CriRuntime

    runtime = CriRuntime(data_dir="/nonexistent", pod_cidr=None, dns_servers=["10.43.0.10"])
    dns = runtime._dns_config(PodSandboxConfig(name="p", namespace="ns", uid="u", host_network=host_network,
                                               dns_policy=policy, dns_config=custom))
    if expected is None:
        assert dns is None
    else:
        assert (list(dns.servers), list(dns.searches), list(dns.options)) == expected
