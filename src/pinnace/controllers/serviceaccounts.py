"""ServiceAccounts: every active namespace has a `default` ServiceAccount and the `kube-root-ca.crt`
ConfigMap (the cluster CA, so pods can verify the API server), re-created when deleted.

The CA comes from `ControllerConfig.root_ca` when given, else from the CA this manager itself trusts for
the API server (its client's kubeconfig). Without any CA (a plain-HTTP server) no ConfigMap is published.
"""

from __future__ import annotations

from pathlib import Path

from pinnace.client import AlreadyExists, Conflict, Forbidden, NotFound
from pinnace.controllers.base import BaseController
from pinnace.controllers.objects import Object, is_being_deleted, namespace_of

ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
DEFAULT_SERVICE_ACCOUNT = "default"


class ServiceAccountsController(BaseController):
    name = "serviceaccount"

    def setup(self) -> None:
        self.namespaces = self.informer("v1/namespaces")
        self.accounts = self.informer("v1/serviceaccounts", field_selector=f"metadata.name={DEFAULT_SERVICE_ACCOUNT}")
        self.configmaps = self.informer("v1/configmaps", field_selector=f"metadata.name={ROOT_CA_CONFIGMAP}")
        self.namespaces.add_handler(on_add=self.enqueue, on_update=lambda old, new: self.enqueue(new))
        for informer in (self.accounts, self.configmaps):
            informer.add_handler(on_update=lambda old, new: self._namespace_of(new),
                                 on_delete=self._namespace_of)
        self._ca: str | None = None

    def _namespace_of(self, obj: Object) -> None:
        if namespace_of(obj):
            self.enqueue(namespace_of(obj))

    def root_ca(self) -> str | None:
        if self._ca is None:
            if self.config.root_ca:
                self._ca = self.config.root_ca
            else:
                client_config = getattr(self.client, "config", None)
                if getattr(client_config, "ca_data", None):
                    self._ca = client_config.ca_data.decode()
                elif getattr(client_config, "ca_file", None):
                    self._ca = Path(client_config.ca_file).read_text()
        return self._ca

    async def reconcile(self, key: str) -> None:
        namespace = self.namespaces.get(key)
        if namespace is None or is_being_deleted(namespace):
            return  # a Terminating namespace refuses new objects
        if self.accounts.get(f"{key}/{DEFAULT_SERVICE_ACCOUNT}") is None:
            await self._create("v1/serviceaccounts", {"apiVersion": "v1", "kind": "ServiceAccount",
                                                      "metadata": {"name": DEFAULT_SERVICE_ACCOUNT, "namespace": key}})
        ca = self.root_ca()
        if ca is None:
            return
        current = self.configmaps.get(f"{key}/{ROOT_CA_CONFIGMAP}")
        wanted = {"ca.crt": ca}
        body: Object = {"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": ROOT_CA_CONFIGMAP, "namespace": key,
                                     "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be "
                                                     "used to verify the kube-apiserver when using internal endpoints "
                                                     "such as the internal service IP or kubernetes.default.svc. No "
                                                     "other usage is guaranteed across distributions of Kubernetes "
                                                     "clusters."}},
                        "data": wanted}
        if current is None:
            await self._create("v1/configmaps", body)
        elif current.get("data") != wanted:
            body["metadata"]["resourceVersion"] = current["metadata"].get("resourceVersion")
            try:
                await self.client.update("v1/configmaps", body, namespace=key)
            except (NotFound, Conflict):
                self.enqueue(key)

    async def _create(self, resource: str, body: Object) -> None:
        try:
            await self.client.create(resource, body, namespace=body["metadata"]["namespace"])
        except AlreadyExists:
            pass
        except Forbidden:
            pass  # the namespace began terminating meanwhile
        except NotFound:
            pass  # the namespace is gone
