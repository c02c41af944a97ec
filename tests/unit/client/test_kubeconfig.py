"""Kubeconfig loading: the variants kubectl accepts."""

import base64
import ssl

import pytest
import yaml

from pinnace.client import Client, KubeconfigError, load_incluster_config, load_kubeconfig


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write(path, clusters=(), users=(), contexts=(), current=None):
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": n, "cluster": c} for n, c in clusters],
        "users": [{"name": n, "user": u} for n, u in users],
        "contexts": [{"name": n, "context": c} for n, c in contexts],
    }
    if current:
        doc["current-context"] = current
    path.write_text(yaml.safe_dump(doc))
    return path


def test_token_and_current_context(tmp_path):
    path = write(tmp_path / "config", [("c", {"server": "https://127.0.0.1:6443/"})], [("u", {"token": "abc"})],
                 [("ctx", {"cluster": "c", "user": "u", "namespace": "team"})], current="ctx")
    config = load_kubeconfig(path)
    assert config.server == "https://127.0.0.1:6443"
    assert config.token == "abc"
    assert config.namespace == "team"


def test_explicit_context_and_default_namespace(tmp_path):
    path = write(tmp_path / "config",
                 [("a", {"server": "https://a:1"}), ("b", {"server": "https://b:2"})],
                 [("u", {"token": "t"})],
                 [("ca", {"cluster": "a", "user": "u"}), ("cb", {"cluster": "b", "user": "u"})], current="ca")
    config = load_kubeconfig(path, context="cb")
    assert config.server == "https://b:2"
    assert config.namespace == "default"


def test_missing_context_is_an_error(tmp_path):
    path = write(tmp_path / "config", [("c", {"server": "https://x"})], [], [("ctx", {"cluster": "c"})], "ctx")
    with pytest.raises(KubeconfigError, match="nope"):
        load_kubeconfig(path, context="nope")


def test_no_file_is_an_error(tmp_path):
    with pytest.raises(KubeconfigError):
        load_kubeconfig(tmp_path / "missing")


def test_inline_certificate_data_and_relative_files(tmp_path):
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.crt").write_text("CA")
    path = write(tmp_path / "config",
                 [("c", {"server": "https://x", "certificate-authority": "certs/ca.crt"})],
                 [("u", {"client-certificate-data": b64(b"CERT"), "client-key-data": b64(b"KEY")})],
                 [("ctx", {"cluster": "c", "user": "u"})], "ctx")
    config = load_kubeconfig(path)
    assert config.ca_file == str(tmp_path / "certs" / "ca.crt")  # relative to the kubeconfig's folder
    assert config.cert_data == b"CERT" and config.key_data == b"KEY"


def test_token_file(tmp_path):
    (tmp_path / "token").write_text("from-file\n")
    path = write(tmp_path / "config", [("c", {"server": "https://x"})], [("u", {"tokenFile": "token"})],
                 [("ctx", {"cluster": "c", "user": "u"})], "ctx")
    assert load_kubeconfig(path).token == "from-file"


def test_insecure_skip_tls_verify_makes_an_unverifying_context(tmp_path):
    path = write(tmp_path / "config", [("c", {"server": "https://x", "insecure-skip-tls-verify": True})], [],
                 [("ctx", {"cluster": "c"})], "ctx")
    config = load_kubeconfig(path)
    context = config.ssl_context()
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_NONE and not context.check_hostname


def test_plain_http_needs_no_tls(tmp_path):
    path = write(tmp_path / "config", [("c", {"server": "http://127.0.0.1:8080"})], [], [("ctx", {"cluster": "c"})],
                 "ctx")
    assert load_kubeconfig(path).ssl_context() is None


def test_kubeconfig_env_merges_files_first_wins(tmp_path, monkeypatch):
    first = write(tmp_path / "one", [("c", {"server": "https://first"})], [("u", {"token": "t1"})],
                  [("ctx", {"cluster": "c", "user": "u"})], current="ctx")
    second = write(tmp_path / "two", [("c", {"server": "https://second"}), ("d", {"server": "https://d"})],
                   [("u", {"token": "t2"})],
                   [("ctx", {"cluster": "d", "user": "u"}), ("other", {"cluster": "d", "user": "u"})],
                   current="other")
    monkeypatch.setenv("KUBECONFIG", f"{first}:{tmp_path / 'absent'}:{second}")
    config = load_kubeconfig()
    assert config.server == "https://first" and config.token == "t1"  # first file's current-context and names
    assert load_kubeconfig(context="other").server == "https://d"  # names only in the second file still resolve


def test_home_kubeconfig_used_without_env(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".kube").mkdir()
    write(tmp_path / ".kube" / "config", [("c", {"server": "https://home"})], [], [("ctx", {"cluster": "c"})], "ctx")
    assert load_kubeconfig().server == "https://home"


async def test_client_from_kubeconfig(tmp_path):
    path = write(tmp_path / "config", [("c", {"server": "http://127.0.0.1:1"})], [("u", {"token": "tok"})],
                 [("ctx", {"cluster": "c", "user": "u", "namespace": "ns1"})], "ctx")
    client = await Client.from_kubeconfig(path)
    try:
        assert client.namespace == "ns1"
        assert client.config.token == "tok"
    finally:
        await client.close()


def test_in_cluster_config(tmp_path):
    (tmp_path / "token").write_text("sa-token\n")
    (tmp_path / "namespace").write_text("apps")
    (tmp_path / "ca.crt").write_text("CA")
    env = {"KUBERNETES_SERVICE_HOST": "10.43.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    config = load_incluster_config(tmp_path, env)
    assert config.server == "https://10.43.0.1:443"
    assert config.token == "sa-token" and config.namespace == "apps"
    assert config.ca_file == str(tmp_path / "ca.crt")
    with pytest.raises(KubeconfigError):
        load_incluster_config(tmp_path, {})
