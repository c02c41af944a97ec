"""Authorization benchmark: prints one JSON line.

`get pod` requests per second over HTTPS (keep-alive, 32 concurrent clients) against an API server in
its own process, with 5,000 RoleBindings in the store:
- `admin_rps`: as cluster-admin (the admin token, group system:masters);
- `bound_user_rps`: as a user (static token) who is a subject of all 5,000 RoleBindings, spread over
  50 namespaces; only one of them, in the pod's namespace, grants `get pods`;
- `no_authz_rps`: the same user and request against the same data with `authorization_mode=AlwaysAllow`;
- `rbac_ratio` = bound_user_rps / no_authz_rps (target >= 0.8).
Each mode runs `--rounds` times, alternating, and the best round counts (the machine is shared).

Usage: python bench/authz.py [--seconds 3] [--rounds 2] [--bindings 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
USER_TOKEN = "bench-user-token"

SERVER = """
import asyncio, sys
from pinnace.apiserver.server import ApiServer, ServerConfig
from pinnace.apiserver.security import SecurityConfig

async def main():
    data_dir, mode, tokens = sys.argv[1], sys.argv[2], sys.argv[3]
    # The per-user rate limit is off: this measures authorization, not throttling.
    security = SecurityConfig(authorization_mode=mode, token_auth_file=tokens, rate_limit_qps=0)
    server = ApiServer(ServerConfig(data_dir=data_dir, port=0, bind_address="127.0.0.1", security=security))
    await server.start()
    print(server.url, server.admin_token, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""

SEED = """
import asyncio, sys
from pinnace.apiserver.server import ApiServer, ServerConfig

async def main():
    data_dir, count = sys.argv[1], int(sys.argv[2])
    server = ApiServer(ServerConfig(data_dir=data_dir, port=0, bind_address="127.0.0.1"))
    await server.start()
    kinds, registry = server.kinds, server.registry
    ns_info = kinds.by_resource("v1/namespaces")
    roles = kinds.by_resource("rbac.authorization.k8s.io/v1/roles")
    bindings = kinds.by_resource("rbac.authorization.k8s.io/v1/rolebindings")
    namespaces = ["default"] + [f"team-{i}" for i in range(49)]
    for ns in namespaces[1:]:
        await registry.create(ns_info, None, {"metadata": {"name": ns}})
    for ns in namespaces:
        await registry.create(roles, ns, {"metadata": {"name": "cm-reader"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]})
    await registry.create(roles, "default", {"metadata": {"name": "pod-reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]})
    for i in range(count):
        ns = namespaces[i % len(namespaces)]
        role = "pod-reader" if i == count - 1 else "cm-reader"
        if i == count - 1:
            ns = "default"
        await registry.create(bindings, ns, {"metadata": {"name": f"rb-{i}"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
            "subjects": [{"kind": "User", "name": "bench-user", "apiGroup": "rbac.authorization.k8s.io"},
                         {"kind": "Group", "name": f"group-{i % 7}", "apiGroup": "rbac.authorization.k8s.io"}]})
    pods = kinds.by_resource("v1/pods")
    await registry.create(pods, "default", {"metadata": {"name": "web"},
        "spec": {"containers": [{"name": "c", "image": "nginx", "command": ["sleep", "1"]}]}})
    await server.stop()

asyncio.run(main())
"""


def start_server(data_dir: Path, mode: str, tokens: Path) -> tuple[subprocess.Popen, str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    process = subprocess.Popen([sys.executable, "-c", SERVER, str(data_dir), mode, str(tokens)],
                               stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
    assert process.stdout is not None
    line = process.stdout.readline().split()
    if len(line) != 2:
        process.kill()
        raise RuntimeError("the API server did not start")
    return process, line[0], line[1]


def stop_server(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def measure(url: str, token: str, ca: Path, seconds: float, clients: int = 32) -> float:
    context = ssl.create_default_context(cafile=str(ca))
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    connector = aiohttp.TCPConnector(ssl=context, limit=clients)
    done = 0
    async with aiohttp.ClientSession(url, connector=connector, headers=headers) as session:
        async with session.get("/api/v1/namespaces/default/pods/web") as response:
            if response.status != 200:
                raise RuntimeError(f"get pod answered {response.status}: {await response.text()}")
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                async with session.get("/api/v1/namespaces/default/pods/web") as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"get pod answered {response.status}")
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bindings", type=int, default=5000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pinnace-authz-bench-"))
    try:
        data_dir, tokens = work / "data", work / "tokens.csv"
        tokens.write_text(f'{USER_TOKEN},bench-user,uid-1,"group-1,group-2"\n')
        seeded = time.perf_counter()
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        subprocess.run([sys.executable, "-c", SEED, str(data_dir), str(args.bindings)], check=True, env=env)
        seed_seconds = time.perf_counter() - seeded
        ca = data_dir / "pki" / "ca.crt"
        best = {"admin": 0.0, "bound_user": 0.0, "no_authz": 0.0}
        for _ in range(args.rounds):
            process, url, admin_token = start_server(data_dir, "RBAC", tokens)
            try:
                best["admin"] = max(best["admin"], asyncio.run(measure(url, admin_token, ca, args.seconds)))
                best["bound_user"] = max(best["bound_user"], asyncio.run(measure(url, USER_TOKEN, ca, args.seconds)))
            finally:
                stop_server(process)
            process, url, _ = start_server(data_dir, "AlwaysAllow", tokens)
            try:
                best["no_authz"] = max(best["no_authz"], asyncio.run(measure(url, USER_TOKEN, ca, args.seconds)))
            finally:
                stop_server(process)
        result = {
            "admin_rps": round(best["admin"], 1),
            "bound_user_rps": round(best["bound_user"], 1),
            "no_authz_rps": round(best["no_authz"], 1),
            "rbac_ratio": round(best["bound_user"] / best["no_authz"], 3) if best["no_authz"] else None,
            "role_bindings": args.bindings,
            "seed_seconds": round(seed_seconds, 1),
        }
        print(json.dumps(result))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
