"""`pinnace apply | get | describe | delete | scale | events`: kubectl's habits for users without kubectl.

`apply` is server-side apply (field manager `pinnace`, taking over conflicting fields as
`kubectl apply --server-side --force-conflicts` does): the server creates missing objects, updates
changed ones and removes fields this manager applied before and no longer does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
from typing import Any

from pinnace.cli.common import print_columns
from pinnace.cli.kube import (
    add_connection_flags,
    connect,
    dump,
    get_table,
    print_table,
    read_manifests,
    resolve_type,
    split_type_and_names,
    type_for_object,
)
from pinnace.client import ApiError, NotFound
from pinnace.client.rest import resource_path

FIELD_MANAGER = "pinnace"


def register(subparsers: argparse._SubParsersAction) -> None:
    apply = subparsers.add_parser("apply", help="create or update objects from manifests (server-side apply)")
    add_connection_flags(apply)
    apply.add_argument("-f", "--filename", action="append", required=True, help="file, directory or - for stdin")
    apply.add_argument("-R", "--recursive", action="store_true")
    apply.add_argument("--dry-run", choices=("none", "server"), default="none")
    apply.set_defaults(func=run_apply)

    get = subparsers.add_parser("get", help="list or show objects")
    add_connection_flags(get)
    get.add_argument("words", nargs="*", help="TYPE [NAME...] or TYPE/NAME...")
    get.add_argument("-f", "--filename", action="append", default=[])
    get.add_argument("-o", "--output", choices=("wide", "yaml", "json", "name"), default=None)
    get.add_argument("-l", "--selector", default=None)
    get.add_argument("--field-selector", default=None)
    get.add_argument("-A", "--all-namespaces", action="store_true")
    get.add_argument("-w", "--watch", action="store_true")
    get.add_argument("--show-labels", action="store_true")
    get.add_argument("--no-headers", action="store_true")
    get.set_defaults(func=run_get)

    describe = subparsers.add_parser("describe", help="show an object with its events")
    add_connection_flags(describe)
    describe.add_argument("words", nargs="+", help="TYPE NAME or TYPE/NAME")
    describe.set_defaults(func=run_describe)

    delete = subparsers.add_parser("delete", help="delete objects")
    add_connection_flags(delete)
    delete.add_argument("words", nargs="*", help="TYPE [NAME...] or TYPE/NAME...")
    delete.add_argument("-f", "--filename", action="append", default=[])
    delete.add_argument("-l", "--selector", default=None)
    delete.add_argument("--all", action="store_true")
    delete.add_argument("--cascade", choices=("background", "foreground", "orphan"), default="background")
    delete.add_argument("--grace-period", type=int, default=None)
    delete.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True)
    delete.set_defaults(func=run_delete)

    scale = subparsers.add_parser("scale", help="set the replicas of a Deployment, ReplicaSet or StatefulSet")
    add_connection_flags(scale)
    scale.add_argument("words", nargs="+", help="TYPE NAME or TYPE/NAME")
    scale.add_argument("--replicas", type=int, required=True)
    scale.set_defaults(func=run_scale)

    events = subparsers.add_parser("events", help="list events, oldest first")
    add_connection_flags(events)
    events.add_argument("-A", "--all-namespaces", action="store_true")
    events.add_argument("--for", dest="for_object", default=None, help="TYPE/NAME: only this object's events")
    events.set_defaults(func=run_events)


async def run_apply(args: argparse.Namespace) -> int:
    objects = read_manifests(args.filename, args.recursive)
    client = await connect(args)
    failures = 0
    try:
        for obj in objects:
            kind_type = await type_for_object(client, obj)
            name = obj.get("metadata", {}).get("name")
            label = f"{name_prefix(kind_type)}/{name}"
            try:
                existing = None
                with contextlib.suppress(NotFound):
                    existing = await client.get(kind_type.resource, name, obj["metadata"].get("namespace"))
                result = await client.apply(kind_type.resource, obj, obj["metadata"].get("namespace"),
                                            field_manager=FIELD_MANAGER, force=True, dry_run=args.dry_run == "server")
            except ApiError as error:
                print(f"error: {label}: {error}")
                failures += 1
                continue
            suffix = " (server dry run)" if args.dry_run == "server" else ""
            if existing is None:
                print(f"{label} created{suffix}")
            elif _desired_state(existing) == _desired_state(result):
                print(f"{label} unchanged{suffix}")
            else:
                print(f"{label} configured{suffix}")
    finally:
        await client.close()
    return 1 if failures else 0


def _desired_state(obj: dict) -> dict:
    """What an apply can change: the object without its status and write bookkeeping (a controller may
    write status between our read and our apply)."""
    metadata = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in ("resourceVersion", "managedFields")}
    return {**{k: v for k, v in obj.items() if k != "status"}, "metadata": metadata}


async def run_get(args: argparse.Namespace) -> int:
    from pinnace.cli.main import CliError

    client = await connect(args)
    try:
        targets: list[tuple[Any, list[str]]] = []
        for obj in read_manifests(args.filename):
            targets.append((await type_for_object(client, obj), [obj["metadata"]["name"]]))
        for type_name, names in split_type_and_names(args.words):
            targets.append((await resolve_type(client, type_name), names))
        if not targets:
            raise CliError("you must specify the type of resource to get")
        several_types = len({t.resource for t, _ in targets}) > 1
        for kind_type, names in targets:
            namespace = None if (args.all_namespaces or not kind_type.namespaced) else client.namespace
            if args.output in ("yaml", "json", "name"):
                if names:
                    items = [await client.get(kind_type.resource, name, namespace) for name in names]
                else:
                    listed = await client.list(kind_type.resource, namespace, args.selector, args.field_selector)
                    items = listed.get("items", [])
                if args.output == "name":
                    for item in items:
                        print(f"{name_prefix(kind_type)}/{item['metadata']['name']}")
                elif names and len(items) == 1:
                    dump(items[0], args.output)
                else:
                    dump({"apiVersion": "v1", "kind": "List", "items": items}, args.output)
                continue
            params: dict[str, str] = {}
            if args.selector:
                params["labelSelector"] = args.selector
            if args.field_selector:
                params["fieldSelector"] = args.field_selector
            tables = []
            if names:
                for name in names:
                    tables.append(await get_table(client, resource_path(kind_type.resource, namespace, name), params))
            else:
                tables.append(await get_table(client, resource_path(kind_type.resource, namespace), params))
            if not any(t.get("rows") for t in tables) and not args.watch:
                where = "" if namespace is None else f" in {namespace} namespace"
                print(f"No resources found{where}.")
                continue
            print_table(tables, wide=args.output == "wide", show_namespace=namespace is None and kind_type.namespaced,
                        show_labels=args.show_labels, no_headers=args.no_headers,
                        kind_prefix=name_prefix(kind_type) if several_types else "")
            if args.watch:
                version = tables[-1].get("metadata", {}).get("resourceVersion")
                await watch_rows(client, kind_type, namespace, version, args)
    finally:
        await client.close()
    return 0


def name_prefix(kind_type) -> str:
    """`pod`, `deployment.apps`: how `-o name` spells a type."""
    group = kind_type.group_version.rsplit("/", 1)[0] if "/" in kind_type.group_version else ""
    return f"{kind_type.kind.lower()}.{group}" if group else kind_type.kind.lower()


async def watch_rows(client, kind_type, namespace, version, args) -> None:
    from pinnace.cli.kube import TABLE_ACCEPT

    params = {"watch": "true", "resourceVersion": version or "0"}
    if args.selector:
        params["labelSelector"] = args.selector
    import json

    async with client.session.get(client.server + resource_path(kind_type.resource, namespace), params=params,
                                  headers={"Accept": TABLE_ACCEPT}, timeout=None) as response:
        columns = None
        async for line in response.content:
            if not line.strip():
                continue
            event = json.loads(line)
            table = event.get("object", {})
            if table.get("kind") != "Table":
                continue
            columns = table.get("columnDefinitions") or columns
            table["columnDefinitions"] = columns or []
            print_table([table], wide=args.output == "wide", show_namespace=namespace is None and kind_type.namespaced,
                        no_headers=True)


async def run_describe(args: argparse.Namespace) -> int:
    client = await connect(args)
    try:
        for type_name, names in split_type_and_names(args.words):
            kind_type = await resolve_type(client, type_name)
            namespace = client.namespace if kind_type.namespaced else None
            if not names:
                names = [item["metadata"]["name"] for item in (await client.list(kind_type.resource, namespace))["items"]]
            for name in names:
                obj = await client.get(kind_type.resource, name, namespace)
                describe_object(obj)
                await describe_events(client, obj)
                print()
    finally:
        await client.close()
    return 0


def describe_object(obj: dict) -> None:
    import yaml

    metadata = obj.get("metadata", {})
    print(f"Name:         {metadata.get('name')}")
    if metadata.get("namespace"):
        print(f"Namespace:    {metadata['namespace']}")
    labels = metadata.get("labels") or {}
    print("Labels:       " + ("\n              ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "<none>"))
    annotations = {k: v for k, v in (metadata.get("annotations") or {}).items()
                   if k != "kubectl.kubernetes.io/last-applied-configuration"}
    print("Annotations:  " + ("\n              ".join(f"{k}: {v}" for k, v in sorted(annotations.items())) or "<none>"))
    print(f"Created:      {metadata.get('creationTimestamp')}")
    for section in ("spec", "status", "data"):
        if obj.get(section):
            print(f"{section.capitalize()}:")
            text = yaml.safe_dump(obj[section], sort_keys=False, default_flow_style=False).rstrip()
            print("\n".join("  " + line for line in text.splitlines()))


async def describe_events(client, obj: dict) -> None:
    metadata = obj.get("metadata", {})
    selector = f"involvedObject.name={metadata.get('name')},involvedObject.uid={metadata.get('uid')}"
    try:
        events = (await client.list("v1/events", metadata.get("namespace") or None, field_selector=selector))["items"]
    except ApiError:
        events = []
    print_events(events)


def print_events(events: list[dict], show_object: bool = False) -> None:
    if not events:
        print("Events:       <none>")
        return
    print("Events:")
    now = datetime.datetime.now(datetime.UTC)
    rows = [["Type", "Reason", "Age", "From", *(["Object"] if show_object else []), "Message"]]
    for event in sorted(events, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or ""):
        stamp = event.get("lastTimestamp") or event.get("eventTime") or event.get("metadata", {}).get("creationTimestamp")
        age = human_age(now, stamp)
        count = event.get("count") or 1
        if count > 1:
            age = f"{age} (x{count})"
        source = event.get("source", {}).get("component") or event.get("reportingComponent", "")
        involved = event.get("involvedObject", {})
        rows.append([event.get("type", ""), event.get("reason", ""), age, source,
                     *([f"{involved.get('kind', '').lower()}/{involved.get('name', '')}"] if show_object else []),
                     event.get("message", "")])
    print_columns(rows, gap=2, indent="  ")


def human_age(now: datetime.datetime, stamp: str | None) -> str:
    if not stamp:
        return "<unknown>"
    try:
        when = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return "<unknown>"
    seconds = int((now - when).total_seconds())
    if seconds < 120:
        return f"{max(seconds, 0)}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


async def run_delete(args: argparse.Namespace) -> int:
    from pinnace.cli.main import CliError

    client = await connect(args)
    policy = args.cascade.capitalize()
    try:
        targets: list[tuple[Any, str | None, str | None]] = []
        for obj in read_manifests(args.filename):
            kind_type = await type_for_object(client, obj)
            namespace = obj["metadata"].get("namespace") or (client.namespace if kind_type.namespaced else None)
            targets.append((kind_type, obj["metadata"]["name"], namespace))
        for type_name, names in split_type_and_names(args.words):
            kind_type = await resolve_type(client, type_name)
            namespace = client.namespace if kind_type.namespaced else None
            if names:
                targets += [(kind_type, name, namespace) for name in names]
            elif args.all or args.selector:
                listed = await client.list(kind_type.resource, namespace, args.selector)
                targets += [(kind_type, item["metadata"]["name"], namespace) for item in listed["items"]]
            else:
                raise CliError("resource(s) were provided, but no name was specified; use --all or -l")
        if not targets:
            raise CliError("nothing to delete: give TYPE NAME, -f FILE, -l SELECTOR or --all")
        deleted = []
        for kind_type, name, namespace in targets:
            try:
                await client.delete(kind_type.resource, name, namespace, grace_period_seconds=args.grace_period,
                                    propagation_policy=policy)
            except NotFound:
                print(f'Error from server (NotFound): {kind_type.qualified} "{name}" not found')
                continue
            print(f'{kind_type.kind.lower()} "{name}" deleted')
            deleted.append((kind_type, name, namespace))
        if args.wait:
            await asyncio.gather(*(wait_gone(client, t, n, ns) for t, n, ns in deleted))
    finally:
        await client.close()
    return 0


async def wait_gone(client, kind_type, name: str, namespace: str | None, timeout: float = 120.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        try:
            await client.get(kind_type.resource, name, namespace)
        except NotFound:
            return
        await asyncio.sleep(0.2)


async def run_scale(args: argparse.Namespace) -> int:
    client = await connect(args)
    try:
        for type_name, names in split_type_and_names(args.words):
            kind_type = await resolve_type(client, type_name)
            for name in names:
                await client.patch(kind_type.resource, name, {"spec": {"replicas": args.replicas}},
                                   client.namespace, "merge", subresource="scale")
                print(f"{name_prefix(kind_type)}/{name} scaled")
    finally:
        await client.close()
    return 0


async def run_events(args: argparse.Namespace) -> int:
    client = await connect(args)
    try:
        selector = None
        if args.for_object:
            type_name, _, name = args.for_object.partition("/")
            kind_type = await resolve_type(client, type_name)
            selector = f"involvedObject.kind={kind_type.kind},involvedObject.name={name}"
        namespace = None if args.all_namespaces else client.namespace
        events = (await client.list("v1/events", namespace, field_selector=selector))["items"]
        if not events:
            print("No events found." if namespace is None else f"No events found in {namespace} namespace.")
        else:
            print_events(events, show_object=True)
    finally:
        await client.close()
    return 0
