"""Pod volumes as directories under the data dir: `<data_dir>/pods/<uid>/volumes/<name>`.

Supported: emptyDir (medium Memory is a tmpfs when root, else a plain directory), hostPath (types
Directory/DirectoryOrCreate/File/FileOrCreate/Socket checked; `""` accepted as is), configMap,
secret, downwardAPI and projected (configMap, secret, downwardAPI and serviceAccountToken sources).
configMap/secret/downwardAPI/projected files honour items, mode and defaultMode, and `optional`; they
are rewritten in place when their source changes (each pod worker refreshes them every
`refresh_seconds`). Files are replaced atomically, one at a time.

A serviceAccountToken source is a TokenRequest for the pod's ServiceAccount, bound to the pod, with the
source's audience and expirationSeconds (`request_token`, the kubelet's API client). As the kubelet's
token manager does, a token is reused until 80% of its lifetime has passed (or 24 hours), then a fresh
one replaces the file; a failed refresh keeps the old token while it is still valid.

How a container sees a volume is the runtime's business: the process runtime bind-mounts the
directory at `mountPath` in a private mount namespace when root, else names it in the environment.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import ctypes.util
import datetime
import os
import shutil
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from pinnace.kubelet.container_spec import ConfigError, Getter, field_ref, resource_field_ref

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
MNT_DETACH = 2

# (namespace, service account, TokenRequest spec) -> the TokenRequest's status; raises VolumeError.
TokenRequester = Callable[[str, str, dict], Awaitable[dict]]
DEFAULT_TOKEN_SECONDS = 3600  # the projected source's default expirationSeconds
MAX_TOKEN_AGE = 24 * 3600  # refresh at least daily, whatever the lifetime


@dataclass
class _Token:
    token: bytes
    issued: float
    expires: float

    def due(self, now: float) -> bool:
        lifetime = self.expires - self.issued
        return now - self.issued > min(0.8 * lifetime, MAX_TOKEN_AGE)


class VolumeError(Exception):
    """A volume could not be set up; reported as a FailedMount event and retried."""


def _write_files(directory: Path, files: dict[str, tuple[bytes, int]]) -> bool:
    """Make `directory` hold exactly `files` (relative path -> (content, mode)); True if anything changed."""
    changed = False
    directory.mkdir(parents=True, exist_ok=True)
    wanted = set(files)
    for relative, (content, mode) in files.items():
        target = directory / relative
        try:
            if target.read_bytes() == content and stat.S_IMODE(target.stat().st_mode) == mode:
                continue
        except OSError:
            pass
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(content)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
        changed = True
    for path in sorted(directory.rglob("*"), reverse=True):
        relative = str(path.relative_to(directory))
        if path.is_file() and relative not in wanted:
            path.unlink()
            changed = True
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    return changed


class VolumeManager:
    def __init__(self, data_dir: str | os.PathLike[str], get: Getter, allocatable: dict[str, str], is_root: bool,
                 request_token: TokenRequester | None = None) -> None:
        self.pods_dir = Path(data_dir) / "pods"
        self.get = get
        self.allocatable = allocatable
        self.is_root = is_root
        self.request_token = request_token
        self.tokens: dict[tuple[str, str, str], _Token] = {}  # (pod uid, volume, path) -> current token

    def volume_dir(self, pod: dict, name: str) -> Path:
        return self.pods_dir / pod["metadata"]["uid"] / "volumes" / name

    def pod_dir(self, pod: dict) -> Path:
        return self.pods_dir / pod["metadata"]["uid"]

    async def setup(self, pod: dict) -> dict[str, str]:
        """Create or refresh every volume; returns volume name -> host path."""
        paths: dict[str, str] = {}
        for volume in pod["spec"].get("volumes") or []:
            name = volume["name"]
            directory = self.volume_dir(pod, name)
            if "hostPath" in volume:
                paths[name] = self._host_path(volume["hostPath"])
                continue
            if "emptyDir" in volume:
                self._empty_dir(directory, volume["emptyDir"])
            elif any(kind in volume for kind in ("configMap", "secret", "downwardAPI", "projected")):
                files = await self._projected_files(pod, volume)
                _write_files(directory, files)
            else:
                kind = next((key for key in volume if key != "name"), "unknown")
                raise VolumeError(f"volume {name!r}: type {kind} is not supported by this node")
            paths[name] = str(directory)
        return paths

    @staticmethod
    def _host_path(spec: dict) -> str:
        path = spec["path"]
        kind = spec.get("type", "")
        if kind == "DirectoryOrCreate":
            os.makedirs(path, exist_ok=True)
        elif kind == "FileOrCreate":
            os.makedirs(os.path.dirname(path), exist_ok=True)
            Path(path).touch(exist_ok=True)
        elif kind == "Directory" and not os.path.isdir(path):
            raise VolumeError(f"hostPath type check failed: {path} is not a directory")
        elif kind == "File" and not os.path.isfile(path):
            raise VolumeError(f"hostPath type check failed: {path} is not a file")
        elif kind == "Socket" and not (os.path.exists(path) and stat.S_ISSOCK(os.stat(path).st_mode)):
            raise VolumeError(f"hostPath type check failed: {path} is not a socket")
        return path

    def _empty_dir(self, directory: Path, spec: dict) -> None:
        if directory.exists():
            return
        directory.mkdir(parents=True)
        if spec.get("medium") == "Memory" and self.is_root:
            size = spec.get("sizeLimit")
            options = f"size={size}".encode() if size else None
            from pinnace.api.quantity import bytes_of

            if size:
                options = f"size={bytes_of(size)}".encode()
            if _libc.mount(b"tmpfs", str(directory).encode(), b"tmpfs", 0, options) != 0:
                raise VolumeError(f"mounting tmpfs failed: {os.strerror(ctypes.get_errno())}")

    async def _projected_files(self, pod: dict, volume: dict) -> dict[str, tuple[bytes, int]]:
        files: dict[str, tuple[bytes, int]] = {}
        if "projected" in volume:
            default_mode = volume["projected"].get("defaultMode", 0o644)
            sources = volume["projected"].get("sources") or []
        else:
            kind = next(k for k in ("configMap", "secret", "downwardAPI") if k in volume)
            default_mode = volume[kind].get("defaultMode", 0o644)
            sources = [{kind: volume[kind]}]
        namespace = pod["metadata"].get("namespace", "default")
        for source in sources:
            if "configMap" in source or "secret" in source:
                is_secret = "secret" in source
                spec = source["secret" if is_secret else "configMap"]
                name = spec.get("secretName") if is_secret else spec.get("name")
                obj = await self.get("v1/secrets" if is_secret else "v1/configmaps", namespace, name)
                if obj is None:
                    if spec.get("optional"):
                        continue
                    raise VolumeError(f'{"secret" if is_secret else "configmap"} "{name}" not found')
                data: dict[str, bytes] = {}
                for key, value in (obj.get("data") or {}).items():
                    data[key] = base64.b64decode(value) if is_secret else value.encode()
                for key, value in (obj.get("binaryData") or {}).items():
                    data[key] = base64.b64decode(value)
                for key, value in (obj.get("stringData") or {}).items():
                    data[key] = value.encode()
                mode = spec.get("defaultMode", default_mode)
                items = spec.get("items")
                if items:
                    for item in items:
                        if item["key"] not in data:
                            if spec.get("optional"):
                                continue
                            raise VolumeError(f"configmap references non-existent config key: {item['key']}")
                        files[item["path"]] = (data[item["key"]], item.get("mode", mode))
                else:
                    for key, value in data.items():
                        files[key] = (value, mode)
            elif "downwardAPI" in source:
                spec = source["downwardAPI"]
                mode = spec.get("defaultMode", default_mode)
                for item in spec.get("items") or []:
                    try:
                        if "fieldRef" in item:
                            value = field_ref(pod, item["fieldRef"]["fieldPath"])
                        else:
                            value = resource_field_ref(pod, None, item["resourceFieldRef"], self.allocatable)
                    except ConfigError as error:
                        raise VolumeError(str(error)) from error
                    files[item["path"]] = (value.encode(), item.get("mode", mode))
            elif "serviceAccountToken" in source:
                spec = source["serviceAccountToken"]
                token = await self._service_account_token(pod, volume["name"], spec)
                files[spec["path"]] = (token, default_mode)
        return files

    async def _service_account_token(self, pod: dict, volume: str, spec: dict) -> bytes:
        key = (pod["metadata"]["uid"], volume, spec["path"])
        now = time.time()
        current = self.tokens.get(key)
        if current is not None and not current.due(now):
            return current.token
        if self.request_token is None:
            raise VolumeError("serviceAccountToken volumes need a connection to the API server")
        meta = pod["metadata"]
        request: dict = {
            "expirationSeconds": spec.get("expirationSeconds") or DEFAULT_TOKEN_SECONDS,
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": meta["name"], "uid": meta["uid"]},
        }
        if spec.get("audience"):
            request["audiences"] = [spec["audience"]]
        account = pod["spec"].get("serviceAccountName") or pod["spec"].get("serviceAccount") or "default"
        try:
            status = await self.request_token(meta.get("namespace", "default"), account, request)
        except VolumeError:
            if current is not None and current.expires > now:
                return current.token  # the old token still works; the next refresh tries again
            raise
        token = str(status.get("token") or "")
        if not token:
            raise VolumeError(f'TokenRequest for service account "{account}" returned no token')
        expires = _parse_time(status.get("expirationTimestamp")) or now + request["expirationSeconds"]
        self.tokens[key] = _Token(token.encode(), now, expires)
        return token.encode()

    def teardown(self, pod_uid: str) -> None:
        """Unmount tmpfs volumes and delete the pod's directory."""
        for key in list(self.tokens):  # a copy: this runs in a worker thread
            if key[0] == pod_uid:
                self.tokens.pop(key, None)
        pod_dir = self.pods_dir / pod_uid
        volumes = pod_dir / "volumes"
        if volumes.is_dir():
            for directory in volumes.iterdir():
                if os.path.ismount(directory):
                    _libc.umount2(str(directory).encode(), MNT_DETACH)
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(pod_dir)


def _parse_time(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
