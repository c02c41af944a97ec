"""ControllerRevisions: the template history of DaemonSets and StatefulSets (what `kubectl rollout
history|undo` reads for them).

A revision is named `<owner>-<hash>`; its `data` is the patch that puts the template back
(`{"spec": {"template": {..., "$patch": "replace"}}}`, as Kubernetes stores it), its `revision` a number
that grows. Returning to an older template re-uses that revision object and moves it to the next number.
Unused revisions beyond `revisionHistoryLimit` (10) are deleted, oldest first.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from pinnace.client import AlreadyExists, NotFound
from pinnace.controllers.objects import (
    CONTROLLER_REVISION_HASH,
    Object,
    canonical,
    is_controlled_by,
    name_of,
    namespace_of,
    owner_reference,
    stable_hash,
)

RESOURCE = "apps/v1/controllerrevisions"


def template_hash(template: Mapping[str, Any]) -> str:
    stripped = canonical(template)
    labels = (stripped.get("metadata") or {}).get("labels")
    if labels:
        labels.pop(CONTROLLER_REVISION_HASH, None)
    return stable_hash(stripped)


def revision_data(template: Mapping[str, Any]) -> Object:
    return {"spec": {"template": {**copy.deepcopy(dict(template)), "$patch": "replace"}}}


def template_of(revision: Mapping[str, Any]) -> Object:
    template = copy.deepcopy(((revision.get("data") or {}).get("spec") or {}).get("template") or {})
    template.pop("$patch", None)
    return template


async def sync_revisions(client: Any, owner: Object, revisions: list[Object]) -> tuple[Object, list[Object]]:
    """Make sure the owner's current template has a revision; returns (that revision, all revisions)."""
    template = owner["spec"]["template"]
    digest = template_hash(template)
    name = f"{name_of(owner)}-{digest}"
    highest = max((int(r.get("revision") or 0) for r in revisions), default=0)
    current = next((r for r in revisions if name_of(r) == name), None)
    if current is not None:
        if int(current.get("revision") or 0) < highest:
            current = await client.patch(RESOURCE, name, {"revision": highest + 1}, namespace=namespace_of(owner),
                                         patch_type="merge")
            revisions = [current if name_of(r) == name else r for r in revisions]
        return current, revisions
    selector_labels = (owner["spec"].get("selector") or {}).get("matchLabels") or {}
    body = {"apiVersion": "apps/v1", "kind": "ControllerRevision",
            "metadata": {"name": name, "namespace": namespace_of(owner),
                         "labels": {**selector_labels, CONTROLLER_REVISION_HASH: digest},
                         "ownerReferences": [owner_reference(owner)]},
            "data": revision_data(template), "revision": highest + 1}
    try:
        current = await client.create(RESOURCE, body, namespace=namespace_of(owner))
    except AlreadyExists:
        current = await client.get(RESOURCE, name, namespace=namespace_of(owner))
        if not is_controlled_by(current, owner):
            raise
    return current, [*revisions, current]


async def trim_history(client: Any, owner: Object, revisions: list[Object], in_use: set[str]) -> None:
    limit = owner["spec"].get("revisionHistoryLimit")
    limit = 10 if limit is None else int(limit)
    unused = sorted((r for r in revisions if name_of(r) not in in_use), key=lambda r: int(r.get("revision") or 0))
    for revision in unused[: max(0, len(unused) - limit)]:
        try:
            await client.delete(RESOURCE, name_of(revision), namespace=namespace_of(revision))
        except NotFound:
            pass
