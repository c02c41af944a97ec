"""Limits: per-user rate limit (429 with Retry-After), per-user watch cap, a watcher that never reads
is dropped, and oversized or over-nested bodies are refused with a Status."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from tests.conftest import ServerThread

from pinnace.apiserver.security import SecurityConfig
from pinnace.apiserver.server import ApiServer, ServerConfig


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[ApiServer]:
    tokens = tmp_path / "tokens.csv"
    tokens.write_text('busy-token,busy,u2,"readers"\n')
    security = SecurityConfig(token_auth_file=str(tokens), rate_limit_qps=5, rate_limit_burst=5,
                              max_watches_per_user=2, slow_watch_timeout=1.0)
    runner = ServerThread(ServerConfig(data_dir=tmp_path / "server", port=0, bind_address="127.0.0.1",
                                       event_sweep_interval=3600.0, security=security))
    server = runner.start()
    try:
        yield server
    finally:
        runner.stop()


def session_for(server: ApiServer, token: str) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.verify = str(server.ca_path)
    session.headers["Authorization"] = f"Bearer {token}"
    return session


def test_rate_limit_per_user(limited: ApiServer) -> None:
    busy, admin = session_for(limited, "busy-token"), session_for(limited, limited.admin_token)
    codes = [busy.get(limited.url + "/api/v1/namespaces/default/pods", timeout=10) for _ in range(12)]
    refused = [r for r in codes if r.status_code == 429]
    assert refused, [r.status_code for r in codes]
    assert int(refused[0].headers["Retry-After"]) >= 1
    status = refused[0].json()
    assert status["kind"] == "Status" and status["reason"] == "TooManyRequests" and status["code"] == 429
    # Another user (the admin, exempt) is not slowed down by busy's flood.
    assert all(admin.get(limited.url + "/api/v1/namespaces", timeout=10).status_code == 200 for _ in range(20))


def test_watch_cap_per_user(limited: ApiServer) -> None:
    admin = session_for(limited, limited.admin_token)
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "busy"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
               "subjects": [{"kind": "User", "name": "busy", "apiGroup": "rbac.authorization.k8s.io"}]}
    assert admin.post(limited.url + "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", json=binding, timeout=10).ok
    busy = session_for(limited, "busy-token")
    url = limited.url + "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=5"
    open_watches = [busy.get(url, stream=True, timeout=10) for _ in range(2)]
    assert all(w.status_code == 200 for w in open_watches)
    third = busy.get(url, timeout=10)
    assert third.status_code == 429 and "Too many open watches" in third.json()["message"]
    for watch in open_watches:
        watch.close()


def test_a_watcher_that_never_reads_is_dropped(limited: ApiServer) -> None:
    host, port = limited.url.removeprefix("https://").rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(limited.ca_path))
    raw = socket.create_connection((host, int(port)))
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock = context.wrap_socket(raw, server_hostname=host)
    sock.sendall(f"GET /api/v1/namespaces/default/configmaps?watch=true HTTP/1.1\r\nHost: {host}\r\n"
                 f"Authorization: Bearer {limited.admin_token}\r\n\r\n".encode())
    admin = session_for(limited, limited.admin_token)
    opened = time.monotonic() + 10
    while not limited.watchers and time.monotonic() < opened:
        time.sleep(0.05)
    assert limited.watchers, "the watch never started"
    deadline = time.monotonic() + 30
    created = 0
    while limited.watchers and time.monotonic() < deadline:
        big = {"metadata": {"name": f"big-{created}"}, "data": {"x": "y" * 200_000}}
        assert admin.post(limited.url + "/api/v1/namespaces/default/configmaps", json=big, timeout=10).status_code == 201
        created += 1
        time.sleep(0.05)
    assert not limited.watchers, f"the watch is still open after {created} large events"
    sock.close()
    # The server is fine afterwards.
    assert admin.get(limited.url + "/api/v1/namespaces/default/configmaps?limit=1", timeout=10).status_code == 200


@pytest.mark.parametrize("body, content_type, code", [
    (b"[" * 1000 + b"]" * 1000, "application/json", 400),
    (b"a: " + b"[" * 1000 + b"]" * 1000, "application/yaml", 400),
    (b'{"metadata":{"name":"x"},"data":{"k":"' + b"v" * (4 * 1024 * 1024) + b'"}}', "application/json", 413),
])
def test_bad_bodies_get_a_status(limited: ApiServer, body: bytes, content_type: str, code: int) -> None:
    admin = session_for(limited, limited.admin_token)
    response = admin.post(limited.url + "/api/v1/namespaces/default/configmaps", data=body,
                          headers={"Content-Type": content_type}, timeout=30)
    assert response.status_code == code
    assert response.json()["kind"] == "Status" and response.json()["code"] == code
