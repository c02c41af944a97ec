"""A small operator written the way a user writes one with the official `kubernetes` client.

It watches a custom resource (list, then watch from the list's resourceVersion, re-watching when a
watch ends) and reconciles each object by patching its status subresource: `observedGeneration`,
a `phase` and a greeting computed from the spec. The test only creates, changes and deletes objects
and waits for the status the operator reports, as a user of the operator would.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

kubernetes = pytest.importorskip("kubernetes")
from kubernetes import client as k8s  # noqa: E402
from kubernetes import config, watch  # noqa: E402
from kubernetes.client.rest import ApiException  # noqa: E402
from urllib3.exceptions import ProtocolError  # noqa: E402

pytestmark = pytest.mark.timeout(60)

GROUP, VERSION, PLURAL = "greetings.example.com", "v1", "greeters"

GREETER_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PLURAL}.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": PLURAL, "singular": "greeter", "kind": "Greeter"},
        "versions": [
            {
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "name": {"type": "string"},
                                    "greeting": {"type": "string", "default": "Hello"},
                                },
                            },
                            "status": {
                                "type": "object",
                                "properties": {
                                    "phase": {"type": "string"},
                                    "message": {"type": "string"},
                                    "observedGeneration": {"type": "integer"},
                                },
                            },
                        },
                    }
                },
            }
        ],
    },
}


class GreeterOperator:
    """Level-triggered: every event leads to a reconcile of that object; reconciling twice is harmless."""

    def __init__(self, api_client: k8s.ApiClient, namespace: str) -> None:
        self.objects = k8s.CustomObjectsApi(api_client)
        self.namespace = namespace
        self.stopping = threading.Event()
        self.watcher: watch.Watch | None = None
        self.seen_deleted: list[str] = []
        self.thread = threading.Thread(target=self.run, name="greeter-operator", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self.watcher is not None:
            self.watcher.stop()
        self.thread.join(timeout=10)

    def run(self) -> None:
        listed = self.objects.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL)
        for obj in listed["items"]:
            self.reconcile(obj)
        resource_version = listed["metadata"]["resourceVersion"]
        while not self.stopping.is_set():
            self.watcher = watch.Watch()
            try:
                for event in self.watcher.stream(
                    self.objects.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self.namespace,
                    PLURAL,
                    resource_version=resource_version,
                    timeout_seconds=5,
                    allow_watch_bookmarks=True,
                ):
                    obj = event["object"]
                    resource_version = obj["metadata"]["resourceVersion"]
                    if event["type"] == "DELETED":
                        self.seen_deleted.append(obj["metadata"]["name"])
                    elif event["type"] in ("ADDED", "MODIFIED"):
                        self.reconcile(obj)
            except ProtocolError:
                if self.stopping.is_set():
                    return  # stop() closed the watch under us
                raise
            except ApiException as error:
                if error.status != 410:
                    raise
                # Too old a resourceVersion: list again, as client-go's reflector does.
                resource_version = self.objects.list_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL
                )["metadata"]["resourceVersion"]

    def reconcile(self, obj: dict) -> None:
        meta, spec = obj["metadata"], obj.get("spec") or {}
        if meta.get("deletionTimestamp"):
            return
        generation = meta.get("generation", 0)
        if (obj.get("status") or {}).get("observedGeneration") == generation:
            return  # this generation is reconciled already (our own status patch comes back here)
        status = {
            "phase": "Ready",
            "message": f"{spec.get('greeting', 'Hello')}, {spec.get('name', 'world')}!",
            "observedGeneration": generation,
        }
        try:
            self.objects.patch_namespaced_custom_object_status(
                GROUP, VERSION, self.namespace, PLURAL, meta["name"], {"status": status}
            )
        except ApiException as error:
            if error.status != 404:  # deleted meanwhile: nothing left to report on
                raise


def eventually(check: Callable[[], object], seconds: float = 10.0) -> object:
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "the operator did not converge"
        time.sleep(0.05)


@pytest.fixture
def api(kubeconfig):
    api_client = config.new_client_from_config(config_file=str(kubeconfig))
    yield api_client
    api_client.close()


def test_an_operator_watches_greeters_and_reports_their_status(api):
    extensions = k8s.ApiextensionsV1Api(api)
    objects = k8s.CustomObjectsApi(api)
    extensions.create_custom_resource_definition(GREETER_CRD)

    def established() -> bool:
        crd = extensions.read_custom_resource_definition(f"{PLURAL}.{GROUP}")
        conditions = (crd.status.conditions if crd.status else None) or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    eventually(established, seconds=1.0)
    # An object that exists before the operator starts is reconciled from the initial list.
    objects.create_namespaced_custom_object(
        GROUP,
        VERSION,
        "default",
        PLURAL,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Greeter",
            "metadata": {"name": "early"},
            "spec": {"name": "early bird"},
        },
    )
    operator = GreeterOperator(api, "default")
    operator.start()
    try:

        def status_of(name: str) -> dict:
            return (
                objects.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, name).get("status")
                or {}
            )

        eventually(lambda: status_of("early").get("message") == "Hello, early bird!")
        objects.create_namespaced_custom_object(
            GROUP,
            VERSION,
            "default",
            PLURAL,
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Greeter",
                "metadata": {"name": "alice"},
                "spec": {"name": "Alice"},
            },
        )
        eventually(
            lambda: (
                status_of("alice") == {"phase": "Ready", "message": "Hello, Alice!", "observedGeneration": 1}
            )
        )

        # A spec change moves the generation; the operator catches up with it.
        objects.patch_namespaced_custom_object(
            GROUP, VERSION, "default", PLURAL, "alice", {"spec": {"greeting": "Bonjour"}}
        )
        eventually(
            lambda: (
                status_of("alice")
                == {"phase": "Ready", "message": "Bonjour, Alice!", "observedGeneration": 2}
            )
        )
        # Its own status patches do not move the generation (the status subresource), so it settles.
        alice = objects.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "alice")
        assert alice["metadata"]["generation"] == 2

        objects.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "alice")
        eventually(lambda: "alice" in operator.seen_deleted)
        assert operator.thread.is_alive()
    finally:
        operator.stop()
    assert not operator.thread.is_alive()
