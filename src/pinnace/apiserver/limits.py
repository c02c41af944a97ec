"""Per-user request limits: a token bucket per user (429 with Retry-After when empty), a cap on the
watches one user holds open, and a cap on the nesting depth of request bodies.

kube-apiserver's API Priority and Fairness shares capacity between flows; pinnace keeps the part users
notice: one noisy user is slowed down with proper 429s while others, and `system:masters` (exempt, as
APF's `exempt` priority level), keep going. The global in-flight limit stays in the server middleware.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field

from pinnace.apiserver.errors import BadRequest, TooManyRequests

MAX_DEPTH = 200  # deep CRD schemas stay well below; deeper bodies only exhaust parsers and encoders


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


@dataclass
class UserLimits:
    qps: float = 100.0  # per user; 0 turns the rate limit off
    burst: int = 200
    max_watches: int = 250  # open watches per user; 0: unlimited
    exempt_groups: frozenset[str] = frozenset({"system:masters"})
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _watches: dict[str, int] = field(default_factory=dict)

    def exempt(self, user: object) -> bool:
        return any(g in self.exempt_groups for g in getattr(user, "groups", ()))

    def take(self, user: object) -> None:
        """Spend one request of the user's budget, or raise 429 saying when to come back."""
        if not self.qps or self.exempt(user):
            return
        name = getattr(user, "name", "")
        now = time.monotonic()
        bucket = self._buckets.get(name)
        if bucket is None:
            if len(self._buckets) > 100_000:
                self._buckets.clear()  # bounded memory under a flood of distinct names
            bucket = self._buckets[name] = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.stamp) * self.qps)
        bucket.stamp = now
        if bucket.tokens < 1.0:
            retry = max(1, math.ceil((1.0 - bucket.tokens) / self.qps))
            raise TooManyRequests(f"Too many requests from user {name!r}, please try again later.", retry_after=retry)
        bucket.tokens -= 1.0

    def open_watch(self, user: object) -> str | None:
        """Count one more watch for the user; returns the key to release, None when not counted."""
        if not self.max_watches or self.exempt(user):
            return None
        name = getattr(user, "name", "")
        count = self._watches.get(name, 0)
        if count >= self.max_watches:
            raise TooManyRequests(f"Too many open watches for user {name!r} (limit {self.max_watches}).", retry_after=5)
        self._watches[name] = count + 1
        return name

    def close_watch(self, name: str | None) -> None:
        if name is None:
            return
        left = self._watches.get(name, 1) - 1
        if left > 0:
            self._watches[name] = left
        else:
            self._watches.pop(name, None)


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def check_depth(body: bytes, limit: int = MAX_DEPTH) -> None:
    """Reject bodies nested deeper than `limit` before a recursive parser or encoder meets them.

    Flow nesting (JSON, flow-style YAML): strings are cut out and everything but brackets dropped
    (both in C), so only the brackets are walked. Block-style YAML nests by indentation (and by
    `- - -` sequences on one line): a stack of indentation levels measures it.
    """
    if body.count(b"[") + body.count(b"{") > limit:
        depth = 0
        for byte in _STRING.sub(b"", body).translate(None, _NOT_BRACKETS):
            if byte in (0x5B, 0x7B):
                depth += 1
                if depth > limit:
                    raise BadRequest(f"the request body is nested more than {limit} levels deep")
            else:
                depth -= 1
    if body.count(b"\n") > limit // 2 and body.lstrip()[:1] not in (b"{", b"["):
        _check_block_depth(body, limit)


def _check_block_depth(body: bytes, limit: int) -> None:
    indents: list[int] = []
    for line in body.split(b"\n"):
        stripped = line.lstrip(b" ")
        if not stripped or stripped.startswith(b"#"):
            continue
        indent = len(line) - len(stripped)
        while indents and indents[-1] >= indent:
            indents.pop()
        indents.append(indent)
        dashes = 0
        while stripped.startswith(b"- "):
            dashes += 1
            stripped = stripped[2:].lstrip(b" ")
        if 2 * (len(indents) + dashes) > limit:  # each level is a mapping or sequence plus its value
            raise BadRequest(f"the request body is nested more than {limit // 2} levels deep")
