"""iptables mode: Service virtual IPs become kernel DNAT rules, in kube-proxy's layout.

Chains (every one prefixed `PINNACE-`, so they never collide with kube-proxy's `KUBE-` chains):

nat table
  PREROUTING, OUTPUT   -> PINNACE-SERVICES
  PINNACE-SERVICES     one rule per ClusterIP:port and externalIP:port (jump to the service chain), then
                       `--dst-type LOCAL -> PINNACE-NODEPORTS`
  PINNACE-NODEPORTS    one rule per NodePort -> PINNACE-EXT-<hash>
  PINNACE-SVC-<hash>   per service port: all ready endpoints, picked by a `statistic --mode random`
                       cascade (probability 1/n, 1/(n-1), ..., 1) so each endpoint gets 1/n of the
                       new connections; with `sessionAffinity: ClientIP`, `recent --rcheck` rules first
  PINNACE-SVL-<hash>   the same over this node's ready endpoints (internal/externalTrafficPolicy Local)
  PINNACE-EXT-<hash>   NodePort and externalIP traffic: masquerade, then SVC (Cluster policy) or SVL
                       (Local policy: no masquerade, the client's address is preserved; traffic from
                       the node itself still goes to any endpoint, as kube-proxy does)
  PINNACE-SEP-<hash>   per endpoint: hairpin masquerade, `recent --set` (affinity), DNAT; past
                       `endpoint_chain_limit` endpoints (1,000) these rules go inline into the service
                       chains instead, which keeps a 10,000-endpoint sync well under a second
  POSTROUTING          -> PINNACE-POSTROUTING: MASQUERADE packets carrying the masquerade mark
filter table
  INPUT, FORWARD, OUTPUT (new connections) -> PINNACE-SERVICES: REJECT ClusterIPs with no endpoint
  INPUT, FORWARD (new connections) -> PINNACE-EXTERNAL-SERVICES: REJECT NodePorts/externalIPs likewise
  FORWARD -> PINNACE-FORWARD: accept DNATed connections even if the FORWARD policy is DROP

Masquerading: pods on one node share a bridge, so a reply from a backend pod to a client pod on the
same bridge would skip the node's conntrack (and so the reverse NAT) unless `br_netfilter` is on.
With `masquerade_all=None` (the default) the proxy masquerades every ClusterIP connection unless
`net.bridge.bridge-nf-call-iptables` is 1; with a `cluster_cidr` and masquerade_all False only
sources outside the cluster CIDR are masqueraded, as in kube-proxy.

Every sync writes one `iptables-restore --noflush` input covering both tables: only the chains whose
rules changed since the last sync (plus deletion of chains that are gone), so an incremental sync of a
big cluster stays small; a full sync rewrites every chain and removes leftovers found by
`iptables-save`. iptables mode here programs IPv4 only; IPv6 ClusterIPs and endpoints are ignored.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import hashlib
import ipaddress
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pinnace.proxy.model import Endpoint, ServicePort

log = logging.getLogger(__name__)

PREFIX = "PINNACE-"
SERVICES = "PINNACE-SERVICES"
NODEPORTS = "PINNACE-NODEPORTS"
MARK_MASQ = "PINNACE-MARK-MASQ"
POSTROUTING = "PINNACE-POSTROUTING"
EXTERNAL_SERVICES = "PINNACE-EXTERNAL-SERVICES"
FORWARD = "PINNACE-FORWARD"
DEFAULT_MASQUERADE_MARK = 0x4000

# (table, built-in chain, rule spec) jumps into our chains; inserted first, removed by cleanup().
JUMPS: tuple[tuple[str, str, str], ...] = (
    ("nat", "PREROUTING", f'-m comment --comment "pinnace service portals" -j {SERVICES}'),
    ("nat", "OUTPUT", f'-m comment --comment "pinnace service portals" -j {SERVICES}'),
    ("nat", "POSTROUTING", f'-m comment --comment "pinnace postrouting rules" -j {POSTROUTING}'),
    ("filter", "INPUT", f"-m conntrack --ctstate NEW -j {SERVICES}"),
    ("filter", "FORWARD", f"-m conntrack --ctstate NEW -j {SERVICES}"),
    ("filter", "OUTPUT", f"-m conntrack --ctstate NEW -j {SERVICES}"),
    ("filter", "INPUT", f"-m conntrack --ctstate NEW -j {EXTERNAL_SERVICES}"),
    ("filter", "FORWARD", f"-m conntrack --ctstate NEW -j {EXTERNAL_SERVICES}"),
    ("filter", "FORWARD", f"-j {FORWARD}"),
)

# table -> chain -> rule lines (each without the leading "-A CHAIN ")
Rules = dict[str, dict[str, tuple[str, ...]]]


def chain_name(kind: str, identity: str) -> str:
    """`PINNACE-<kind>-<16 base32 chars of sha256>`: stable, and within iptables' 28-character limit."""
    digest = hashlib.sha256(identity.encode()).digest()
    return f"{PREFIX}{kind}-{base64.b32encode(digest)[:16].decode()}"


@functools.lru_cache(maxsize=65536)
def _is_ipv4(ip: str | None) -> bool:
    """Only well-formed IPv4 addresses reach the rules: one bad address would fail the whole restore."""
    try:
        ipaddress.IPv4Address(ip)
    except ValueError:
        return False
    return True


def _proto(protocol: str) -> str:
    return protocol.lower()


@dataclass(frozen=True)
class RenderOptions:
    node_name: str | None = None
    masquerade_all: bool = True
    cluster_cidr: str | None = None
    masquerade_mark: int = DEFAULT_MASQUERADE_MARK
    endpoint_chain_limit: int = 1000  # above this many endpoints, DNATs go inline into service chains


def _cascade(
    rules: list[str],
    endpoints: Sequence[Endpoint],
    targets: dict[Endpoint, str],
    recent_names: dict[Endpoint, str],
    affinity: int | None,
    inline: bool,
) -> None:
    """Append the endpoint choice: affinity checks first, then the random cascade.

    `targets` are the rule endings per endpoint: `-j PINNACE-SEP-...`, or the DNAT itself when endpoint
    chains are inlined.
    """
    if affinity is not None:
        for ep in endpoints:
            if inline:
                # No endpoint chain to refresh the entry, so --update refreshes it on every hit.
                rules.append(f"-m recent --name {recent_names[ep]} --update --seconds {affinity} --reap "
                             f"--rsource {targets[ep]}")
            else:
                rules.append(f"-m recent --name {recent_names[ep]} --rcheck --seconds {affinity} --reap "
                             f"{targets[ep]}")
    n = len(endpoints)
    for i, ep in enumerate(endpoints):
        target = targets[ep]
        if inline and affinity is not None:
            # Matches run in order, so the endpoint is recorded only when the statistic picked it.
            target = f"-m recent --name {recent_names[ep]} --set --rsource {target}"
        if i < n - 1:
            # 1/(n-i) of what is left: every endpoint ends up with 1/n of all new connections.
            rules.append(f"-m statistic --mode random --probability {1.0 / (n - i):.10f} {target}")
        else:
            rules.append(target)


def render(service_ports: Iterable[ServicePort], options: RenderOptions) -> Rules:
    """The complete PINNACE rule set for these service ports (pure; the unit tests' subject)."""
    mark = f"{options.masquerade_mark:#x}"
    nat: dict[str, list[str]] = {
        SERVICES: [],
        NODEPORTS: [],
        MARK_MASQ: [f"-j MARK --or-mark {mark}"],
        POSTROUTING: [
            f"-m mark ! --mark {mark}/{mark} -j RETURN",
            # Clear the mark so a packet re-entering the stack (e.g. after IPsec) is not masqueraded twice.
            f"-j MARK --xor-mark {mark}",
            '-m comment --comment "pinnace service traffic requiring SNAT" -j MASQUERADE',
        ],
    }
    filter_services: list[str] = []
    filter_external: list[str] = []
    filter_forward = [
        f"-m mark --mark {mark}/{mark} -j ACCEPT",
        "-m conntrack --ctstate DNAT -j ACCEPT",
    ]
    node = options.node_name
    service_ports = list(service_ports)
    # Large clusters drop the per-endpoint chains (kube-proxy likewise simplifies its rules past 1,000
    # endpoints): iptables-restore (nft) slows down with chains times rules, and 10,000 endpoint
    # chains take seconds to load where the same DNATs inlined into the service chains take 0.3 s.
    inline = sum(len(sp.endpoints) for sp in service_ports) > options.endpoint_chain_limit

    for sp in service_ports:
        if not _is_ipv4(sp.cluster_ip):
            continue
        proto = _proto(sp.protocol)
        match = f"-p {proto} -m {proto}"
        comment = f'-m comment --comment "{sp.id}"'
        ready = [e for e in sp.ready_endpoints if _is_ipv4(e.ip)]
        local = [e for e in ready if e.node_name == node]
        internal = local if sp.internal_local else ready
        external = local if sp.external_local else ready
        svc = chain_name("SVC", sp.id)
        svl = chain_name("SVL", sp.id)
        ext = chain_name("EXT", sp.id)
        sep_names = {e: chain_name("SEP", f"{sp.id}/{e.address}") for e in ready}
        if inline:
            targets = {e: f"-p {proto} -j DNAT --to-destination {e.address}" for e in ready}
            hairpin = [] if options.masquerade_all else [f"-s {e.ip}/32 -j {MARK_MASQ}" for e in ready]
        else:
            targets = {e: f"-j {sep_names[e]}" for e in ready}
            hairpin = []
            for ep in ready:
                # No comments and as few rules as possible here: endpoint chains are most of the rule
                # set, and iptables-restore's cost grows with chains times rules.
                recent = f"-m recent --name {sep_names[ep]} --set --rsource " if sp.session_affinity_seconds else ""
                rules = [f"-p {proto} {recent}-j DNAT --to-destination {ep.address}"]
                if not options.masquerade_all:
                    # Hairpin: a pod reaching itself through its Service must get the reply via the node.
                    rules.insert(0, f"-s {ep.ip}/32 -j {MARK_MASQ}")
                nat[sep_names[ep]] = rules
        if ready:
            rules = list(hairpin)
            _cascade(rules, ready, targets, sep_names, sp.session_affinity_seconds, inline)
            nat[svc] = rules
        if local and (sp.internal_local or sp.external_local):
            rules = list(hairpin)
            _cascade(rules, local, targets, sep_names, sp.session_affinity_seconds, inline)
            nat[svl] = rules
        internal_chain = svl if sp.internal_local else svc

        destination = f"-d {sp.cluster_ip}/32 {match} --dport {sp.port}"
        if internal:
            if options.masquerade_all:
                nat[SERVICES].append(f"{comment} {destination} -j {MARK_MASQ}")
            elif options.cluster_cidr:
                nat[SERVICES].append(f"{comment} ! -s {options.cluster_cidr} {destination} -j {MARK_MASQ}")
            nat[SERVICES].append(f"{comment} {destination} -j {internal_chain}")
        else:
            filter_services.append(
                f'-m comment --comment "{sp.id} has no endpoints" {destination} -j REJECT --reject-with icmp-port-unreachable'
            )

        has_external = bool(sp.node_port or sp.external_ips)
        if has_external and (external or (sp.external_local and ready)):
            rules = []
            if sp.external_local:
                # Traffic from the node itself or from pods has no client address worth keeping.
                rules.append(f"-m addrtype --src-type LOCAL -j {MARK_MASQ}")
                rules.append(f"-m addrtype --src-type LOCAL -j {svc}")
                if options.cluster_cidr:
                    rules.append(f"-s {options.cluster_cidr} -j {svc}")
                if local:
                    rules.append(f"-j {svl}")
            else:
                rules.append(f"-j {MARK_MASQ}")
                rules.append(f"-j {svc}")
            nat[ext] = rules
            for ip in sp.external_ips:
                if _is_ipv4(ip):
                    nat[SERVICES].append(f"{comment} -d {ip}/32 {match} --dport {sp.port} -j {ext}")
            if sp.node_port:
                nat[NODEPORTS].append(f"{comment} {match} --dport {sp.node_port} -j {ext}")
        elif has_external and not ready:
            reject = "-j REJECT --reject-with icmp-port-unreachable"
            for ip in sp.external_ips:
                if _is_ipv4(ip):
                    filter_external.append(f"{comment} -d {ip}/32 {match} --dport {sp.port} {reject}")
            if sp.node_port:
                filter_external.append(f"{comment} -m addrtype --dst-type LOCAL {match} --dport {sp.node_port} {reject}")

    # NodePorts last, so a ClusterIP that happens to be local is matched by its own rule first.
    # Not for 127.0.0.0/8: DNATing a loopback source out of the node is dropped as martian (kube-proxy
    # needs route_localnet for that, a host-wide sysctl pinnace leaves alone), so localhost:NodePort is
    # refused rather than left hanging.
    nat[SERVICES].append(f"! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j {NODEPORTS}")
    return {
        "filter": {
            SERVICES: tuple(filter_services),
            EXTERNAL_SERVICES: tuple(filter_external),
            FORWARD: tuple(filter_forward),
        },
        "nat": {chain: tuple(rules) for chain, rules in nat.items()},
    }


def restore_text(
    rules: Rules,
    previous: Rules | None = None,
    existing: dict[str, set[str]] | None = None,
    jumps: Iterable[tuple[str, str, str]] = (),
) -> str:
    """`iptables-restore --noflush` input turning `previous` (or `existing` chains) into `rules`.

    Chains whose rules are unchanged since `previous` are left out; chains in `previous` or `existing`
    but not in `rules` are flushed and deleted; `jumps` are inserted at the top of built-in chains.
    """
    out: list[str] = []
    for table in ("filter", "nat"):
        chains = rules.get(table, {})
        old = (previous or {}).get(table, {})
        stale = (set(old) | (existing or {}).get(table, set())) - set(chains)
        if previous is None:
            changed = list(chains)
        else:
            changed = [c for c, r in chains.items() if old.get(c) != r]
        table_jumps = [(chain, spec) for t, chain, spec in jumps if t == table]
        if not changed and not stale and not table_jumps:
            continue
        out.append(f"*{table}")
        # Declaring a chain with --noflush creates it or empties it: the atomic "replace" of a chain.
        out.extend(f":{c} - [0:0]" for c in changed)
        out.extend(f":{c} - [0:0]" for c in sorted(stale))
        for chain in changed:
            prefix = f"-A {chain} "
            out.extend(prefix + r for r in chains[chain])
        out.extend(f"-X {c}" for c in sorted(stale))
        out.extend(f"-I {chain} 1 {spec}" for chain, spec in table_jumps)
        out.append("COMMIT")
    return "\n".join(out) + "\n" if out else ""


def parse_save(text: str) -> tuple[dict[str, set[str]], dict[str, list[tuple[str, str]]]]:
    """From `iptables-save` output: our chains per table, and built-in rules jumping into them."""
    chains: dict[str, set[str]] = {}
    jumps: dict[str, list[tuple[str, str]]] = {}
    table = ""
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
            chains.setdefault(table, set())
            jumps.setdefault(table, [])
        elif line.startswith(":" + PREFIX):
            chains[table].add(line[1:].split(" ", 1)[0])
        elif line.startswith("-A ") and f"-j {PREFIX}" in line:
            chain, spec = line[3:].split(" ", 1)
            if not chain.startswith(PREFIX):
                jumps[table].append((chain, spec))
    return chains, jumps


def _normalise(spec: str) -> str:
    return spec.replace('"', "")


@dataclass
class SyncResult:
    duration: float
    rule_count: int
    chain_count: int
    full: bool


@dataclass
class IptablesProxier:
    """Programs the rules for a set of service ports into the kernel (the current network namespace,
    or `netns` when given: the tests run one per network namespace they create)."""

    options: RenderOptions = field(default_factory=RenderOptions)
    netns: str | None = None
    masquerade_all: bool | None = None  # None: decide from br_netfilter at the first sync
    _applied: Rules | None = None
    _udp_endpoints: dict[str, set[str]] = field(default_factory=dict)
    _first_udp_sync: bool = True
    rule_count: int = 0

    def _argv(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv] if self.netns else list(argv)

    async def _run(self, *argv: str, stdin: str | None = None, check: bool = True) -> str:
        proc = await asyncio.create_subprocess_exec(
            *self._argv(*argv),
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {err.decode().strip()}")
        return out.decode()

    async def _decide_masquerade_all(self) -> bool:
        if self.masquerade_all is not None:
            return self.masquerade_all
        value = await self._run("cat", "/proc/sys/net/bridge/bridge-nf-call-iptables", check=False)
        return value.strip() != "1"

    async def sync(self, service_ports: Sequence[ServicePort], full: bool = False) -> SyncResult:
        start = time.monotonic()
        if self._applied is None:
            full = True
            masquerade_all = await self._decide_masquerade_all()
            self.options = dataclasses.replace(self.options, masquerade_all=masquerade_all)
        rules = render(service_ports, self.options)
        if full:
            existing, present = parse_save(await self._run("iptables-save"))
            missing = [
                (table, chain, spec)
                for table, chain, spec in JUMPS
                if (chain, _normalise(spec)) not in {(c, _normalise(s)) for c, s in present.get(table, [])}
            ]
            text = restore_text(rules, None, existing, missing)
        else:
            text = restore_text(rules, self._applied)
        if text:
            await self._run("iptables-restore", "--noflush", stdin=text)
        self._applied = rules
        await self._flush_stale_udp(service_ports)
        self.rule_count = sum(len(r) for t in rules.values() for r in t.values())
        chain_count = sum(len(t) for t in rules.values())
        return SyncResult(time.monotonic() - start, self.rule_count, chain_count, full)

    async def _flush_stale_udp(self, service_ports: Sequence[ServicePort]) -> None:
        """Delete UDP conntrack entries that would keep sending datagrams to a removed endpoint.

        UDP has no connection teardown, so a client that keeps sending would stay pinned to a dead
        endpoint (or to the REJECT verdict from before the first endpoint appeared) forever.
        """
        current: dict[str, set[str]] = {}
        addresses: dict[str, list[tuple[str, str]]] = {}
        for sp in service_ports:
            if sp.protocol != "UDP" or not _is_ipv4(sp.cluster_ip):
                continue
            current[sp.id] = {e.ip for e in sp.ready_endpoints}
            targets = [("--orig-dst", sp.cluster_ip or "")] + [("--orig-dst", ip) for ip in sp.external_ips]
            if sp.node_port:
                targets.append(("--orig-port-dst", str(sp.node_port)))
            addresses[sp.id] = targets
        commands: list[list[str]] = []
        for sp_id, ips in current.items():
            before = self._udp_endpoints.get(sp_id)
            if before is None:
                if self._first_udp_sync:
                    continue  # nothing to learn from: an entry from before this proxy ran is rare
                before = set()  # a new service port: entries made while it did not exist go too
            for flag, value in addresses[sp_id]:
                if not before and ips:
                    commands.append(["conntrack", "-D", "-p", "udp", flag, value])
                for gone in before - ips:
                    commands.append(["conntrack", "-D", "-p", "udp", flag, value, "--dst-nat", gone])
        self._udp_endpoints = current
        self._first_udp_sync = False
        if commands:
            # conntrack exits 1 when nothing matched; that is the common case and harmless.
            await asyncio.gather(*(self._run(*c, check=False) for c in commands))

    async def cleanup(self) -> None:
        """Remove every PINNACE chain and every jump into them (`pinnace proxy --cleanup`)."""
        existing, present = parse_save(await self._run("iptables-save"))
        out: list[str] = []
        for table in ("filter", "nat"):
            chains = existing.get(table, set())
            jumps = present.get(table, [])
            if not chains and not jumps:
                continue
            out.append(f"*{table}")
            out.extend(f":{c} - [0:0]" for c in sorted(chains))
            out.extend(f"-D {chain} {spec}" for chain, spec in jumps)
            out.extend(f"-X {c}" for c in sorted(chains))
            out.append("COMMIT")
        if out:
            await self._run("iptables-restore", "--noflush", stdin="\n".join(out) + "\n")
        self._applied = None
        self._udp_endpoints = {}
        self._first_udp_sync = True
