"""Benchmark: kubectl apply of a 100-object manifest, and server-side apply throughput.

Starts a real pinnace API server (SQLite store, HTTPS with the admin token) in this process and
drives it with the real kubectl 1.32, as a user would:

- `create_s`: `kubectl apply -f` of 100 objects that do not exist yet;
- `reapply_s`: the same manifest again (every object "unchanged");
- `change_s`: the manifest with one field changed in each object ("configured");
- `get_s`: `kubectl get -f` of the same manifest, in the same run, for `reapply_ratio_to_get`
  (kubectl's own cost of reading 100 objects; target ratio <= 2.0);
- `ssa_per_s`: server-side apply patches per second (16 concurrent clients through
  `pinnace.client`, each applying a changed ConfigMap).

kubectl keeps its discovery and OpenAPI cache between the runs, as it does for a user.
Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from pinnace.apiserver.server import ApiServer, ServerConfig

OBJECTS = 100


def manifest(version: int) -> str:
    """40 Deployments, 30 Services, 30 ConfigMaps; `version` changes one field in each."""
    docs = []
    for i in range(40):
        docs.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": f"web-{i}", "labels": {"app": f"web-{i}"}},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": f"web-{i}"}},
                    "template": {
                        "metadata": {"labels": {"app": f"web-{i}"}},
                        "spec": {
                            "containers": [
                                {
                                    "name": "app",
                                    "image": f"nginx:1.{20 + version}",
                                    "ports": [{"containerPort": 80}],
                                }
                            ]
                        },
                    },
                },
            }
        )
    for i in range(30):
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": f"svc-{i}", "labels": {"rev": str(version)}},
                "spec": {"selector": {"app": f"web-{i}"}, "ports": [{"port": 80, "targetPort": 80}]},
            }
        )
    for i in range(30):
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"cfg-{i}"},
                "data": {"value": f"v{version}", "static": "x" * 64},
            }
        )
    assert len(docs) == OBJECTS
    return yaml.safe_dump_all(docs)


def kubectl_binary() -> str:
    found = shutil.which("kubectl")
    if found is None:
        sys.exit("kubectl is not installed")
    versioned = Path(os.path.realpath(found)).parent / "kubectl.1.32"
    return str(versioned) if versioned.exists() else found


class ServerThread:
    def __init__(self, data_dir: Path) -> None:
        self.server = ApiServer(ServerConfig(data_dir=data_dir, port=0, bind_address="127.0.0.1"))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ApiServer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(timeout=60)
        return self.server

    def __exit__(self, *exc: object) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)


def timed_kubectl(kubectl: str, kubeconfig: Path, cache: Path, *args: str, expect: str) -> float:
    start = time.perf_counter()
    result = subprocess.run(
        [kubectl, f"--kubeconfig={kubeconfig}", f"--cache-dir={cache}", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(cache.parent)},
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0 or expect not in result.stdout:
        sys.exit(f"kubectl {' '.join(args)} failed: {result.stderr or result.stdout}")
    return elapsed


async def ssa_rate(kubeconfig: Path, seconds: float = 5.0, workers: int = 16) -> float:
    from pinnace.client import Client

    client = await Client.from_kubeconfig(kubeconfig, qps=None)  # measure the server, not the client pacing
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker(index: int) -> None:
        nonlocal done
        round_ = 0
        while time.perf_counter() < deadline:
            body = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"ssa-{index}"},
                "data": {"round": str(round_), "static": "x" * 64},
            }
            await client.patch(
                "v1/configmaps",
                f"ssa-{index}",
                body,
                namespace="default",
                patch_type="apply",
                field_manager="bench",
                force=True,
            )
            done += 1
            round_ += 1

    try:
        start = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(workers)))
        return done / (time.perf_counter() - start)
    finally:
        await client.close()


def main() -> None:
    kubectl = kubectl_binary()
    with tempfile.TemporaryDirectory(prefix="pinnace-bench-apply-") as tmp:
        root = Path(tmp)
        cache = root / "home" / "kube-cache"
        cache.mkdir(parents=True)
        files = []
        for version in (1, 2):
            path = root / f"manifest-{version}.yaml"
            path.write_text(manifest(version))
            files.append(str(path))
        with ServerThread(root / "server") as server:
            kubeconfig = server.kubeconfig_path
            create_s = timed_kubectl(kubectl, kubeconfig, cache, "apply", "-f", files[0], expect="created")
            reapply_s = timed_kubectl(kubectl, kubeconfig, cache, "apply", "-f", files[0], expect="unchanged")
            get_s = timed_kubectl(kubectl, kubeconfig, cache, "get", "-f", files[0], expect="web-39")
            change_s = timed_kubectl(kubectl, kubeconfig, cache, "apply", "-f", files[1], expect="configured")
            ssa_per_s = asyncio.run(ssa_rate(kubeconfig))
    print(
        json.dumps(
            {
                "objects": OBJECTS,
                "create_s": round(create_s, 3),
                "reapply_s": round(reapply_s, 3),
                "change_s": round(change_s, 3),
                "get_s": round(get_s, 3),
                "ssa_per_s": round(ssa_per_s, 1),
                "reapply_ratio_to_get": round(reapply_s / get_s, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
