"""`pinnace logs | exec | rollout | top`: working with running pods and Deployments.

`exec` speaks the WebSocket channel protocol (`v5.channel.k8s.io`, falling back to v4): one byte of
channel (0 stdin, 1 stdout, 2 stderr, 3 error Status, 255 close in v5) before each message.
`rollout undo` does what kubectl does: it copies the template of the ReplicaSet of the wanted revision
back into the Deployment with a JSON patch, and the Deployment controller rolls out to it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import aiohttp

from pinnace.cli.common import print_columns
from pinnace.cli.kube import add_connection_flags, connect, resolve_type, split_type_and_names
from pinnace.client import ApiError, NotFound
from pinnace.client.rest import resource_path

REVISION = "deployment.kubernetes.io/revision"
CHANGE_CAUSE = "kubernetes.io/change-cause"


def register(subparsers: argparse._SubParsersAction) -> None:
    logs = subparsers.add_parser("logs", help="print a container's logs")
    add_connection_flags(logs)
    logs.add_argument("pod", help="POD or TYPE/NAME")
    logs.add_argument("-c", "--container", default=None)
    logs.add_argument("-f", "--follow", action="store_true")
    logs.add_argument("--tail", type=int, default=None)
    logs.add_argument("-p", "--previous", action="store_true")
    logs.add_argument("--timestamps", action="store_true")
    logs.set_defaults(func=run_logs)

    execute = subparsers.add_parser("exec", help="run a command in a container")
    add_connection_flags(execute)
    execute.add_argument("pod")
    execute.add_argument("-c", "--container", default=None)
    execute.add_argument("-i", "--stdin", action="store_true")
    execute.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    execute.set_defaults(func=run_exec)

    rollout = subparsers.add_parser("rollout", help="manage a Deployment's rollout")
    actions = rollout.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, text in (("status", "wait for the rollout to finish"), ("history", "list revisions"),
                         ("undo", "roll back to the previous (or a given) revision"),
                         ("restart", "restart every pod"), ("pause", "pause the rollout"), ("resume", "resume it")):
        sub = actions.add_parser(action, help=text)
        add_connection_flags(sub)
        sub.add_argument("target", help="deployment/NAME")
        if action == "undo":
            sub.add_argument("--to-revision", type=int, default=0)
        if action == "status":
            sub.add_argument("--timeout", type=float, default=600.0)
        sub.set_defaults(func=run_rollout)

    top = subparsers.add_parser("top", help="CPU and memory of nodes or pods (metrics.k8s.io)")
    add_connection_flags(top)
    top.add_argument("what", choices=("nodes", "node", "pods", "pod"))
    top.add_argument("-A", "--all-namespaces", action="store_true")
    top.set_defaults(func=run_top)


async def pod_name(client, target: str) -> str:
    """POD, pod/POD or deployment/NAME (its first pod, as kubectl picks one)."""
    if "/" not in target:
        return target
    (type_name, names), = split_type_and_names([target])
    kind_type = await resolve_type(client, type_name)
    if kind_type.kind == "Pod":
        return names[0]
    owner = await client.get(kind_type.resource, names[0])
    selector = ",".join(f"{k}={v}" for k, v in owner["spec"]["selector"].get("matchLabels", {}).items())
    pods = (await client.list("v1/pods", client.namespace, label_selector=selector))["items"]
    running = [p for p in pods if p.get("status", {}).get("phase") == "Running"] or pods
    if not running:
        from pinnace.cli.main import CliError

        raise CliError(f"no pods found for {target}")
    return sorted(running, key=lambda p: p["metadata"]["creationTimestamp"])[0]["metadata"]["name"]


async def run_logs(args: argparse.Namespace) -> int:
    client = await connect(args)
    try:
        name = await pod_name(client, args.pod)
        params = {}
        if args.container:
            params["container"] = args.container
        if args.follow:
            params["follow"] = "true"
        if args.tail is not None:
            params["tailLines"] = str(args.tail)
        if args.previous:
            params["previous"] = "true"
        if args.timestamps:
            params["timestamps"] = "true"
        url = client.server + resource_path("v1/pods", client.namespace, name, "log")
        async with client.session.get(url, params=params, timeout=aiohttp.ClientTimeout(total=None)) as response:
            if response.status >= 400:
                from pinnace.client.errors import error_from_status

                raise error_from_status(json.loads(await response.read()), response.status)
            async for chunk in response.content.iter_any():
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
    finally:
        await client.close()
    return 0


async def run_exec(args: argparse.Namespace) -> int:
    from pinnace.cli.main import CliError

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise CliError("you must give a command: pinnace exec POD -- COMMAND [ARGS...]")
    client = await connect(args)
    try:
        name = await pod_name(client, args.pod)
        params: list[tuple[str, str]] = [("command", word) for word in command]
        params += [("stdout", "true"), ("stderr", "true")]
        if args.stdin:
            params.append(("stdin", "true"))
        if args.container:
            params.append(("container", args.container))
        url = client.server + resource_path("v1/pods", client.namespace, name, "exec")
        return await exec_stream(client, url, params, args.stdin)
    finally:
        await client.close()


async def exec_stream(client, url: str, params: list[tuple[str, str]], with_stdin: bool) -> int:
    protocols = ("v5.channel.k8s.io", "v4.channel.k8s.io")
    async with client.session.ws_connect(url, params=params, protocols=protocols, method="GET") as ws:
        exit_code = 0
        if with_stdin:
            data = await asyncio.to_thread(sys.stdin.buffer.read)
            await ws.send_bytes(b"\x00" + data)
            if ws.protocol == "v5.channel.k8s.io":
                await ws.send_bytes(b"\xff\x00")  # close stdin
        async for message in ws:
            if message.type != aiohttp.WSMsgType.BINARY or not message.data:
                continue
            channel, payload = message.data[0], message.data[1:]
            if channel == 1:
                sys.stdout.buffer.write(payload)
                sys.stdout.flush()
            elif channel == 2:
                sys.stderr.buffer.write(payload)
                sys.stderr.flush()
            elif channel == 3 and payload:
                status = json.loads(payload)
                if status.get("status") != "Success":
                    exit_code = 1
                    for cause in status.get("details", {}).get("causes", []):
                        if cause.get("reason") == "ExitCode":
                            exit_code = int(cause.get("message", 1))
                    if exit_code == 1 and status.get("message"):
                        print(f"error: {status['message']}", file=sys.stderr)
        return exit_code


def revisions_of(deployment: dict, replicasets: list[dict]) -> list[tuple[int, dict]]:
    uid = deployment["metadata"]["uid"]
    owned = [rs for rs in replicasets
             if any(ref.get("uid") == uid for ref in rs["metadata"].get("ownerReferences", []))]
    return sorted((int(rs["metadata"].get("annotations", {}).get(REVISION, "0")), rs) for rs in owned)


async def run_rollout(args: argparse.Namespace) -> int:
    from pinnace.cli.main import CliError

    client = await connect(args)
    try:
        (type_name, names), = split_type_and_names([args.target])
        kind_type = await resolve_type(client, type_name)
        if kind_type.kind != "Deployment":
            raise CliError(f"rollout {args.action} supports deployments here, not {kind_type.qualified}")
        name = names[0]
        resource, namespace = kind_type.resource, client.namespace
        if args.action == "status":
            return await rollout_status(client, resource, name, namespace, args.timeout)
        deployment = await client.get(resource, name, namespace)
        if args.action == "history":
            replicasets = (await client.list("apps/v1/replicasets", namespace))["items"]
            print(f"deployment.apps/{name}")
            print("REVISION  CHANGE-CAUSE")
            for revision, rs in revisions_of(deployment, replicasets):
                cause = rs["metadata"].get("annotations", {}).get(CHANGE_CAUSE, "<none>")
                print(f"{revision:<9} {cause}")
        elif args.action == "undo":
            replicasets = (await client.list("apps/v1/replicasets", namespace))["items"]
            history = revisions_of(deployment, replicasets)
            current = int(deployment["metadata"].get("annotations", {}).get(REVISION, "0"))
            wanted = args.to_revision or max((r for r, _ in history if r != current), default=0)
            match = [rs for r, rs in history if r == wanted]
            if not match:
                raise CliError(f"unable to find the specified revision {wanted}" if args.to_revision
                               else "no rollout history found for deployment " + name)
            template = json.loads(json.dumps(match[0]["spec"]["template"]))
            template["metadata"].get("labels", {}).pop("pod-template-hash", None)
            await client.patch(resource, name, [{"op": "replace", "path": "/spec/template", "value": template}],
                               namespace, "json")
            print(f"deployment.apps/{name} rolled back")
        elif args.action == "restart":
            import datetime

            stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            patch = {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": stamp}}}}}
            await client.patch(resource, name, patch, namespace, "strategic")
            print(f"deployment.apps/{name} restarted")
        elif args.action in ("pause", "resume"):
            await client.patch(resource, name, {"spec": {"paused": args.action == "pause"}}, namespace, "merge")
            print(f"deployment.apps/{name} {'paused' if args.action == 'pause' else 'resumed'}")
    finally:
        await client.close()
    return 0


def rollout_progress(deployment: dict) -> tuple[bool, str]:
    """(done, message) as `kubectl rollout status` words it."""
    name = deployment["metadata"]["name"]
    spec, status = deployment.get("spec", {}), deployment.get("status", {})
    if deployment["metadata"].get("generation", 0) > status.get("observedGeneration", 0):
        return False, "Waiting for deployment spec update to be observed..."
    for condition in status.get("conditions", []):
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            return True, f'error: deployment "{name}" exceeded its progress deadline'
    replicas = spec.get("replicas", 1)
    updated = status.get("updatedReplicas", 0)
    total = status.get("replicas", 0)
    available = status.get("availableReplicas", 0)
    if updated < replicas:
        return False, f'Waiting for deployment "{name}" rollout to finish: {updated} out of {replicas} new replicas have been updated...'
    if total > updated:
        return False, f'Waiting for deployment "{name}" rollout to finish: {total - updated} old replicas are pending termination...'
    if available < updated:
        return False, f'Waiting for deployment "{name}" rollout to finish: {available} of {updated} updated replicas are available...'
    return True, f'deployment "{name}" successfully rolled out'


async def rollout_status(client, resource: str, name: str, namespace: str, timeout: float) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last = ""
    while loop.time() < deadline:
        deployment = await client.get(resource, name, namespace)
        done, message = rollout_progress(deployment)
        if message != last:
            print(message)
            last = message
        if done:
            return 1 if message.startswith("error:") else 0
        await asyncio.sleep(0.5)
    print("error: timed out waiting for the condition")
    return 1


async def run_top(args: argparse.Namespace) -> int:
    from pinnace.cli.main import CliError

    client = await connect(args)
    try:
        if args.what.startswith("node"):
            try:
                metrics = (await client.request("GET", "/apis/metrics.k8s.io/v1beta1/nodes"))["items"]
            except (NotFound, ApiError) as error:
                raise CliError(f"Metrics API not available: {error}") from error
            rows = [["NAME", "CPU(cores)", "MEMORY(bytes)"]]
            for item in metrics:
                rows.append([item["metadata"]["name"], item["usage"]["cpu"], item["usage"]["memory"]])
        else:
            path = "/apis/metrics.k8s.io/v1beta1/pods" if args.all_namespaces else \
                f"/apis/metrics.k8s.io/v1beta1/namespaces/{client.namespace}/pods"
            try:
                metrics = (await client.request("GET", path))["items"]
            except (NotFound, ApiError) as error:
                raise CliError(f"Metrics API not available: {error}") from error
            rows = [(["NAMESPACE"] if args.all_namespaces else []) + ["NAME", "CPU(cores)", "MEMORY(bytes)"]]
            for item in metrics:
                cpu = sum(parse_cpu_nanos(c["usage"]["cpu"]) for c in item.get("containers", []))
                memory = sum(parse_memory(c["usage"]["memory"]) for c in item.get("containers", []))
                rows.append(([item["metadata"]["namespace"]] if args.all_namespaces else [])
                             + [item["metadata"]["name"], f"{cpu // 1_000_000}m", f"{memory // (1024 * 1024)}Mi"])
        print_columns(rows)
    finally:
        await client.close()
    return 0


def parse_cpu_nanos(value: str) -> int:
    from pinnace.api.quantity import parse_quantity

    return int(parse_quantity(value) * 1_000_000_000)


def parse_memory(value: str) -> int:
    from pinnace.api.quantity import parse_quantity

    return int(parse_quantity(value))
