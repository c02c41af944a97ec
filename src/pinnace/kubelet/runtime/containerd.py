"""A containerd supervised by the node agent, with a config that works on these hosts.

`pinnace agent --runtime cri` talks to `--cri-endpoint` when given; otherwise it starts its own
containerd (Debian's `containerd`, `runc`, `containernetworking-plugins`) with everything under its
data dir: root, state, the gRPC socket, the CNI config (bridge + host-local on the node's podCIDR) and
registry host configs. Two host facts shape the config: nobody may lower `oom_score_adj` here
(`restrict_oom_score_adj = true`), and crun refuses the hybrid cgroup layout (runc, cgroupfs driver).
When no pause image is present, one is built from busybox-static and imported, so no network is needed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
from pathlib import Path

from pinnace.kubelet.runtime.oci_archive import PAUSE_IMAGE, build_pause_image

log = logging.getLogger(__name__)

CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
START_TIMEOUT = 20.0
# No per-pod masquerading: pods reach each other and the node over the bridge without it, and the
# bridge plugin's iptables calls queue on the xtables lock, which made pod start-up several times
# slower here (10 concurrent pods: 2.3 s with it, 0.6 s without).
IP_MASQ = False


class ContainerdError(RuntimeError):
    pass


def cni_bin_dir() -> str:
    for directory in CNI_BIN_DIRS:
        if Path(directory, "bridge").exists():
            return directory
    raise ContainerdError("the CNI plugins are missing: install Debian's containernetworking-plugins")


def config_toml(base: Path, sandbox_image: str = PAUSE_IMAGE) -> str:
    return f"""version = 2
root = "{base}/root"
state = "{base}/state"

[grpc]
  address = "{base}/containerd.sock"

[ttrpc]
  address = "{base}/containerd.sock.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    snapshotter = "overlayfs"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin_dir()}"
    conf_dir = "{base}/cni"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{base}/certs.d"
"""


def cni_conflist(pod_cidr: str, bridge: str, name: str = "pinnace", ipam_dir: str | None = None) -> dict:
    ipam: dict = {"type": "host-local", "ranges": [[{"subnet": pod_cidr}]], "routes": [{"dst": "0.0.0.0/0"}]}
    if ipam_dir:
        # host-local keeps its leases per network name in /var/lib/cni by default, shared by every
        # node on the machine; each node keeps its own.
        ipam["dataDir"] = ipam_dir
    return {
        "cniVersion": "0.4.0",
        "name": name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                "ipMasq": IP_MASQ,
                "hairpinMode": True,
                "ipam": ipam,
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


class Containerd:
    """Starts, watches and stops one containerd process rooted at `base`."""

    def __init__(self, base: Path, pod_cidr: str | None, bridge: str = "pinnace0") -> None:
        self.base = base
        self.pod_cidr = pod_cidr
        self.bridge = bridge
        self.process: asyncio.subprocess.Process | None = None

    @property
    def socket(self) -> str:
        return str(self.base / "containerd.sock")

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    def write_config(self) -> Path:
        for sub in ("root", "state", "cni", "certs.d", "images"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        self.write_cni_config()
        path = self.base / "config.toml"
        path.write_text(config_toml(self.base))
        return path

    def write_cni_config(self) -> None:
        """Write the conflist once the pod CIDR is known; containerd watches the directory and reloads it."""
        if not self.pod_cidr:
            return
        directory = self.base / "cni"
        directory.mkdir(parents=True, exist_ok=True)
        # Written aside and renamed, so containerd never loads half a file.
        tmp = directory / ".10-pinnace.conflist.tmp"
        conflist = cni_conflist(self.pod_cidr, self.bridge, ipam_dir=str(self.base / "cni-ipam"))
        tmp.write_text(json.dumps(conflist, indent=2))
        os.replace(tmp, directory / "10-pinnace.conflist")

    async def start(self) -> None:
        binary = shutil.which("containerd")
        if not binary:
            raise ContainerdError("containerd is not installed: install Debian's containerd and runc")
        if not shutil.which("runc"):
            raise ContainerdError("runc is not installed: install Debian's runc")
        config = self.write_config()
        await asyncio.to_thread(self.stop_stale, config)
        Path(self.socket).unlink(missing_ok=True)
        log_file = open(self.base / "containerd.log", "ab")
        self.process = await asyncio.create_subprocess_exec(
            binary, "--config", str(config), stdout=log_file, stderr=log_file, start_new_session=True
        )
        log_file.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while not os.path.exists(self.socket):
            if self.process.returncode is not None:
                raise ContainerdError(f"containerd exited with status {self.process.returncode}; see {self.base / 'containerd.log'}")
            if loop.time() > deadline:
                raise ContainerdError(f"containerd did not open {self.socket} within {START_TIMEOUT:.0f}s")
            await asyncio.sleep(0.05)
        await self.ensure_pause_image()

    def stop_stale(self, config: Path, timeout: float = 10.0) -> None:
        """Stop a containerd left on our root by an agent that was killed (it was in its own session).

        Two containerds cannot share a root (bolt's lock); pods survive a containerd restart, so the
        stale one is stopped and ours takes over its state."""
        import psutil

        for process in psutil.process_iter(["cmdline"]):
            cmdline = process.info["cmdline"] or []
            if process.pid == os.getpid() or "--config" not in cmdline or str(config) not in cmdline:
                continue
            log.info("stopping containerd %d left by an earlier agent", process.pid)
            try:
                process.terminate()
                process.wait(timeout)
            except psutil.TimeoutExpired:
                process.kill()
            except psutil.NoSuchProcess:
                pass

    async def ctr(self, *args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            "ctr", "--address", self.socket, "--namespace", "k8s.io", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        if process.returncode != 0:
            raise ContainerdError(f"ctr {' '.join(args)} failed: {err.decode().strip()}")
        return out.decode()

    async def import_archive(self, path: Path) -> None:
        await self.ctr("images", "import", "--no-unpack", str(path))

    async def ensure_pause_image(self) -> None:
        listing = await self.ctr("images", "ls", "-q")
        if PAUSE_IMAGE in listing.split():
            return
        archive = self.base / "images" / "pause.tar"
        await asyncio.to_thread(build_pause_image, archive, self.base / "images" / "pause-build")
        await self.import_archive(archive)
        shutil.rmtree(self.base / "images" / "pause-build", ignore_errors=True)
        log.info("built and imported the pause image %s", PAUSE_IMAGE)

    async def stop(self, timeout: float = 10.0) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
        self.process = None
