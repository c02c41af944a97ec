"""What the kubectl-like sub-commands share: connecting, naming resources, reading manifests, printing.

Resource types are resolved through the server's discovery, as kubectl does: plural, singular, kind and
short names (`po`, `deploy`, `svc`), optionally qualified by group (`deployments.apps`). Tables come
from the server (`as=Table`), so `pinnace get` shows the same columns as `kubectl get`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pinnace.cli.common import print_columns
from pinnace.client import Client

TABLE_ACCEPT = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


def add_connection_flags(parser: argparse.ArgumentParser, namespaced: bool = True) -> None:
    parser.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--context", default=None, help="kubeconfig context")
    if namespaced:
        parser.add_argument("-n", "--namespace", default=None, help="namespace (default: the context's)")


async def connect(args: argparse.Namespace) -> Client:
    from pinnace.cli.main import CliError
    from pinnace.client.kubeconfig import KubeconfigError

    try:
        client = await Client.from_kubeconfig(args.kubeconfig, args.context)
    except (KubeconfigError, OSError) as error:
        raise CliError(f"cannot load the kubeconfig: {error}") from error
    if getattr(args, "namespace", None):
        client.namespace = args.namespace
    return client


@dataclass(frozen=True)
class ResourceType:
    resource: str  # "apps/v1/deployments"
    group_version: str
    plural: str
    kind: str
    namespaced: bool
    aliases: tuple[str, ...] = ()  # singular name and short names

    @property
    def qualified(self) -> str:
        group = self.group_version.rsplit("/", 1)[0] if "/" in self.group_version else ""
        return f"{self.plural}.{group}" if group else self.plural


async def discover(client: Client) -> list[ResourceType]:
    """Every top-level resource the server serves, preferred versions first (cached per client)."""
    if id(client) in _discovered:
        return _discovered[id(client)]
    result: list[ResourceType] = []
    group_versions = ["v1"]
    groups = await client.request("GET", "/apis")
    for group in groups.get("groups", []):
        preferred = group.get("preferredVersion", {}).get("groupVersion")
        versions = [v["groupVersion"] for v in group.get("versions", [])]
        group_versions += [preferred] + [v for v in versions if v != preferred] if preferred else versions
    for group_version in group_versions:
        try:
            resources = await client.api_resources(group_version)
        except Exception:  # an unavailable group only hides its resources, as with kubectl
            continue
        for plural, info in resources.items():
            if "/" in plural:
                continue
            aliases = tuple(n for n in [info.get("singularName", ""), *info.get("shortNames", [])] if n)
            result.append(ResourceType(f"{group_version}/{plural}", group_version, plural, info.get("kind", ""),
                                       bool(info.get("namespaced")), aliases))
    _discovered[id(client)] = result
    return result


_discovered: dict[int, list[ResourceType]] = {}


async def resolve_type(client: Client, name: str) -> ResourceType:
    from pinnace.cli.main import CliError

    wanted = name.lower()
    group = ""
    if "." in wanted:
        wanted, group = wanted.split(".", 1)
    for candidate in await discover(client):
        candidate_group = candidate.group_version.rsplit("/", 1)[0] if "/" in candidate.group_version else ""
        if group and candidate_group != group and not candidate_group.startswith(group):
            continue
        names = {candidate.plural, candidate.kind.lower(), *candidate.aliases}
        if wanted in names:
            return candidate
    raise CliError(f'the server doesn\'t have a resource type "{name}"')


async def type_for_object(client: Client, obj: dict) -> ResourceType:
    from pinnace.cli.main import CliError

    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not api_version or not kind:
        raise CliError("every object needs apiVersion and kind")
    for candidate in await discover(client):
        if candidate.group_version == api_version and candidate.kind == kind:
            return candidate
    raise CliError(f'no matches for kind "{kind}" in version "{api_version}"')


def split_type_and_names(words: list[str]) -> list[tuple[str, list[str]]]:
    """`pods a b`, `pod/a deploy/b`, `pods,svc` -> [(type, [names])]."""
    if not words:
        return []
    if all("/" in word for word in words):
        pairs: dict[str, list[str]] = {}
        for word in words:
            kind, _, name = word.partition("/")
            pairs.setdefault(kind, []).append(name)
        return list(pairs.items())
    first, names = words[0], words[1:]
    return [(kind, names) for kind in first.split(",")]


def read_manifests(sources: Iterable[str], recursive: bool = False) -> list[dict]:
    """Objects from files, directories (their .yaml/.yml/.json files) and `-` (stdin); Lists are flattened."""
    from pinnace.cli.main import CliError

    documents: list[dict] = []

    def load(text: str, origin: str) -> None:
        try:
            for document in yaml.safe_load_all(text):
                if document is None:
                    continue
                if not isinstance(document, dict):
                    raise CliError(f"{origin}: a manifest must be a mapping, not {type(document).__name__}")
                if document.get("kind", "").endswith("List") and "items" in document:
                    documents.extend(document["items"])
                else:
                    documents.append(document)
        except yaml.YAMLError as error:
            raise CliError(f"{origin}: invalid YAML: {error}") from error

    for source in sources:
        if source == "-":
            load(sys.stdin.read(), "stdin")
            continue
        path = Path(source)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            for file in sorted(path.glob(pattern)):
                if file.suffix in (".yaml", ".yml", ".json") and file.is_file():
                    load(file.read_text(), str(file))
        elif path.is_file():
            load(path.read_text(), str(path))
        else:
            raise CliError(f'the path "{source}" does not exist')
    return documents


async def get_table(client: Client, path: str, params: dict[str, str] | None = None) -> dict:
    """A Table from the server (the columns kubectl shows)."""
    from pinnace.client.errors import error_from_status

    async with client.session.get(client.server + path, params=params or {}, headers={"Accept": TABLE_ACCEPT}) as response:
        body = json.loads(await response.read() or b"{}")
        if response.status >= 400:
            raise error_from_status(body, response.status)
        return body


def print_table(tables: list[dict], wide: bool = False, show_namespace: bool = False, show_labels: bool = False,
                no_headers: bool = False, kind_prefix: str = "") -> None:
    """Print Tables as kubectl does: its columns, three spaces apart (a `rich` table on a terminal)."""
    rows: list[list[str]] = []
    header: list[str] = []
    for table in tables:
        columns = [(i, c) for i, c in enumerate(table.get("columnDefinitions", [])) if wide or c.get("priority", 0) == 0]
        header = (["NAMESPACE"] if show_namespace else []) + [c["name"].upper() for _, c in columns]
        if show_labels:
            header.append("LABELS")
        for row in table.get("rows", []):
            cells = [format_cell(row["cells"][i]) for i, _ in columns]
            metadata = (row.get("object") or {}).get("metadata", {})
            if kind_prefix and cells:
                cells[0] = f"{kind_prefix}/{cells[0]}"
            if show_namespace:
                cells.insert(0, metadata.get("namespace", ""))
            if show_labels:
                cells.append(",".join(f"{k}={v}" for k, v in sorted((metadata.get("labels") or {}).items())) or "<none>")
            rows.append(cells)
    if not rows:
        return
    print_columns(rows if no_headers else [header, *rows], header=not no_headers)


def format_cell(value: Any) -> str:
    if value is None:
        return "<none>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "<none>"
    return str(value)


def dump(obj: Any, output: str) -> None:
    if output == "json":
        print(json.dumps(obj, indent=4))
    else:
        print(yaml.safe_dump(obj, sort_keys=False, default_flow_style=False).rstrip())
