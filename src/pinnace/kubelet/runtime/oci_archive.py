"""Build OCI image archives from a directory, with no registry and no network.

One tar holds both an OCI image layout (`oci-layout`, `index.json` carrying the
`io.containerd.image.name` annotation, `blobs/sha256/...`) and a docker-save `manifest.json`, so
`ctr images import`, `skopeo copy oci-archive:` and `docker load` all accept it. The image has one
uncompressed layer. `busybox_rootfs()` makes a root file system from Debian's `busybox-static`, which
is enough for shells, `httpd`, `nc` and a pause image (`sleep infinity`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

BUSYBOX = "/bin/busybox"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


@dataclass
class ImageConfig:
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: list[str] = field(default_factory=lambda: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"])
    working_dir: str = ""
    user: str = ""
    exposed_ports: list[str] = field(default_factory=list)


def normalize_reference(name: str) -> str:
    """`httpd:v1` -> `docker.io/library/httpd:v1`, as containerd's CRI names images."""
    if "@" not in name and ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    first = name.split("/", 1)[0]
    if "/" not in name:
        return f"docker.io/library/{name}"
    if "." not in first and ":" not in first and first != "localhost":
        return f"docker.io/{name}"
    return name


def go_arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def busybox_rootfs(target: Path, busybox: str = BUSYBOX) -> Path:
    """A minimal root file system: busybox and a link per applet, /etc/passwd, and empty mount points."""
    if not Path(busybox).exists():
        raise FileNotFoundError(f"{busybox} is missing: install Debian's busybox-static")
    for directory in ("bin", "etc", "tmp", "proc", "sys", "dev", "root", "var/www", "usr/bin", "usr/sbin", "sbin"):
        (target / directory).mkdir(parents=True, exist_ok=True)
    os.chmod(target / "tmp", 0o1777)
    shutil.copy2(busybox, target / "bin" / "busybox")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        link = target / "bin" / applet
        if applet != "busybox" and not link.exists():
            link.symlink_to("busybox")
    (target / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    (target / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    return target


def _layer_tar(rootfs: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(rootfs.rglob("*")):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(rootfs)))
            info.mtime = 0  # reproducible digests for the same content
            info.uname = info.gname = ""
            if info.isreg():
                with open(path, "rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)
    return buffer.getvalue()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def build_image_archive(rootfs: Path, reference: str, output: Path, config: ImageConfig | None = None) -> str:
    """Pack `rootfs` as image `reference` into the tar `output`; returns the manifest digest."""
    config = config or ImageConfig()
    reference = normalize_reference(reference)
    layer = _layer_tar(rootfs)
    layer_digest = _digest(layer)
    image_config: dict = {
        "architecture": go_arch(),
        "os": "linux",
        "config": {"Env": config.env},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created_by": "pinnace oci_archive"}],
    }
    if config.entrypoint is not None:
        image_config["config"]["Entrypoint"] = config.entrypoint
    if config.cmd is not None:
        image_config["config"]["Cmd"] = config.cmd
    if config.working_dir:
        image_config["config"]["WorkingDir"] = config.working_dir
    if config.user:
        image_config["config"]["User"] = config.user
    if config.exposed_ports:
        image_config["config"]["ExposedPorts"] = {port: {} for port in config.exposed_ports}
    config_bytes = json.dumps(image_config, sort_keys=True).encode()
    config_digest = _digest(config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config_bytes)},
        "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": len(layer)}],
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
    manifest_digest = _digest(manifest_bytes)
    tag = reference.rsplit(":", 1)[1] if ":" in reference.rsplit("/", 1)[-1] else "latest"
    index = {
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": OCI_MANIFEST,
            "digest": manifest_digest,
            "size": len(manifest_bytes),
            "annotations": {"io.containerd.image.name": reference, "org.opencontainers.image.ref.name": tag},
        }],
    }
    short = reference.removeprefix("docker.io/library/").removeprefix("docker.io/")
    docker_manifest = [{
        "Config": f"blobs/sha256/{config_digest.split(':')[1]}",
        "RepoTags": [short],
        "Layers": [f"blobs/sha256/{layer_digest.split(':')[1]}"],
    }]
    output.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(output, "w") as tar:
        _add_bytes(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        _add_bytes(tar, "index.json", json.dumps(index).encode())
        _add_bytes(tar, "manifest.json", json.dumps(docker_manifest).encode())
        for digest, data in ((layer_digest, layer), (config_digest, config_bytes), (manifest_digest, manifest_bytes)):
            _add_bytes(tar, f"blobs/sha256/{digest.split(':')[1]}", data)
    return manifest_digest


def build_busybox_image(reference: str, output: Path, workdir: Path, config: ImageConfig | None = None,
                        files: dict[str, str] | None = None) -> str:
    """A busybox image; `files` adds text files (path inside the image -> content)."""
    rootfs = busybox_rootfs(workdir / "rootfs")
    for name, content in (files or {}).items():
        path = rootfs / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return build_image_archive(rootfs, reference, output, config or ImageConfig(cmd=["sh"]))


PAUSE_IMAGE = "registry.k8s.io/pause:3.9"


def build_pause_image(output: Path, workdir: Path) -> str:
    """A pause image built locally (`sleep infinity` as the sandbox's placeholder process)."""
    return build_busybox_image(PAUSE_IMAGE, output, workdir, ImageConfig(entrypoint=["/bin/sleep", "infinity"]))
