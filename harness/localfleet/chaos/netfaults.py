"""NetworkChaos as packet rules inside a pod's network namespace (entered with `nsenter --net=PATH`).

- partition: nftables drops of every packet to (direction to), from (from) or both ways between the pod
  and its peers (the target pods' addresses and externalTargets); no peers means every address.
- loss: nftables `numgen random mod 100 < P` drops, the same directions and peers.
- bandwidth: a tc tbf qdisc on the pod's eth0 (egress), Chaos Mesh's rate/limit/buffer/peakrate/minburst.
- delay, duplicate, corrupt (and netem): a tc netem qdisc on eth0 where the kernel has netem; where it
  has not, the injection fails with tc's own words, recorded on the record (NotInjected).
Each chaos object owns one nftables table per pod (`inet chaos_<uid>`), so a revert deletes exactly it.
Rules go into the selected pods only (Chaos Mesh mirrors from/both rules at the target pods too); a drop
at one end of a link stops the traffic both ways all the same.
"""

import ctypes
import ctypes.util
import functools
import ipaddress
import os
import socket
import subprocess
import threading

from harness.localfleet.chaos.records import parse_duration

DEVICE = "eth0"
PRIORITY = -300  # before anything kube-proxy or CNI plugins hook in
TIMEOUT_S = 10.0
NETEM = ("delay", "duplicate", "corrupt", "netem")
CLONE_NEWNET = 0x40000000
RATE_UNITS = {"bps": 1, "kbps": 10**3, "mbps": 10**6, "gbps": 10**9, "tbps": 10**12}


class InjectionError(RuntimeError):
    """A rule could not be applied or removed; the message says why, for the record's event."""


def table_name(chaos_uid: str) -> str:
    return "chaos_" + chaos_uid.replace("-", "")[:16]


def peers(addresses: list[str]) -> list[str]:
    """Networks from pod IPs, CIDRs and host names (resolved here); InjectionError for one that is none."""
    found = []
    for text in addresses:
        try:
            found.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError:
            try:
                found += sorted({info[4][0] for info in socket.getaddrinfo(text, None, socket.AF_INET)})
            except OSError as error:
                raise InjectionError(f"externalTargets: cannot resolve {text!r}: {error}") from None
    return [p for p in found if ipaddress.ip_network(p).version == 4]


def nft_script(table: str, action: str, direction: str, networks: list[str], loss_percent: float) -> str:
    """The nftables table of a partition or loss between the pod and `networks` (all when empty)."""
    verdict = "drop" if action == "partition" else f"numgen random mod 100 < {round(loss_percent)} drop"
    lines = [f"table inet {table} {{"]
    if networks:
        lines += [
            "  set peers {",
            "    type ipv4_addr; flags interval",
            f"    elements = {{ {', '.join(networks)} }}",
            "  }",
        ]
    hooks = {"to": [("output", "oifname", "daddr")], "from": [("input", "iifname", "saddr")]}
    hooks["both"] = hooks["to"] + hooks["from"]
    if direction not in hooks:
        raise InjectionError(f"direction {direction!r} is not one of to, from, both")
    for hook, interface, field in hooks[direction]:
        match = f"ip {field} @peers " if networks else ""
        lines += [
            f"  chain {hook} {{",
            f"    type filter hook {hook} priority {PRIORITY}; policy accept;",
            f'    {interface} != "lo" {match}{verdict}',
            "  }",
        ]
    return "\n".join([*lines, "}"]) + "\n"


def rate_bits(rate: str) -> int:
    """Bits per second from Chaos Mesh's rate ("1mbps", "100kbps": tc's units, bits)."""
    text = rate.strip().lower()
    for unit in sorted(RATE_UNITS, key=len, reverse=True):
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * RATE_UNITS[unit])
    raise InjectionError(f"bandwidth.rate {rate!r} is not a rate such as 1mbps")


def tbf_args(bandwidth: dict) -> list[str]:
    args = [
        "tbf",
        "rate",
        f"{rate_bits(bandwidth['rate'])}bit",
        "burst",
        str(bandwidth["buffer"]),
        "limit",
        str(bandwidth["limit"]),
    ]
    if bandwidth.get("peakrate"):
        args += ["peakrate", f"{bandwidth['peakrate']}bit", "mtu", str(bandwidth.get("minburst") or 1500)]
    return args


def netem_args(spec: dict) -> list[str]:
    """tc netem parameters for delay, duplicate and corrupt (and netem, which may combine them)."""
    args = ["netem"]
    delay = spec.get("delay") or {}
    if delay.get("latency"):
        args += ["delay", f"{parse_duration(delay['latency']) * 1000:g}ms"]
        if delay.get("jitter"):
            args += [f"{parse_duration(delay['jitter']) * 1000:g}ms"]
    for name in ("loss", "duplicate", "corrupt"):
        value = (spec.get(name) or {}).get(name)
        if value:
            args += [name, f"{value}%"]
    return args


def run(netns: str, argv: list[str], stdin: str = "") -> str:
    """Run argv in the network namespace at path netns; InjectionError with its stderr when it fails."""
    done = subprocess.run(
        ["nsenter", f"--net={netns}", "--", *argv],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    if done.returncode != 0:
        raise InjectionError(f"{' '.join(argv[:3])}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


@functools.cache
def _nftables() -> ctypes.CDLL | None:
    """nft's own library (libnftables), or None where only the nft program is installed."""
    name = ctypes.util.find_library("nftables")
    if not name:
        return None
    lib = ctypes.CDLL(name, use_errno=True)
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
    for function in (
        "nft_ctx_buffer_output",
        "nft_ctx_buffer_error",
        "nft_ctx_free",
        "nft_ctx_get_error_buffer",
    ):
        getattr(lib, function).argtypes = [ctypes.c_void_p]
    return lib


def _nft_in_thread(lib: ctypes.CDLL, netns: str, script: str, outcome: dict) -> None:
    """Enter the namespace (setns moves only the calling thread) and run the script there."""
    try:
        fd = os.open(netns, os.O_RDONLY)
        try:
            if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns {netns}: {os.strerror(ctypes.get_errno())}")
        finally:
            os.close(fd)
        context = lib.nft_ctx_new(0)
        try:
            lib.nft_ctx_buffer_output(context)
            lib.nft_ctx_buffer_error(context)
            if lib.nft_run_cmd_from_buffer(context, script.encode()) != 0:
                outcome["error"] = (lib.nft_ctx_get_error_buffer(context) or b"").decode().strip()
        finally:
            lib.nft_ctx_free(context)
    except OSError as error:
        outcome["error"] = str(error)


def nft(netns: str, script: str) -> None:
    """Run an nft script in the namespace at path netns: through libnftables from a thread of this process
    (no program to start, which counts under load), else through `nsenter nft -f -`."""
    lib = _nftables()
    if lib is None:
        run(netns, ["nft", "-f", "-"], script)
        return
    outcome: dict[str, str] = {}
    worker = threading.Thread(target=_nft_in_thread, args=(lib, netns, script, outcome), name="nft")
    worker.start()
    worker.join(TIMEOUT_S)
    if worker.is_alive() or outcome.get("error"):
        raise InjectionError(f"nft: {outcome.get('error') or 'no answer in time'}")


def apply(netns: str, chaos_uid: str, spec: dict, networks: list[str]) -> str:
    """Install the fault in the network namespace at path netns; return the mechanism used, for the
    record's event."""
    action = spec["action"]
    if action in ("partition", "loss"):
        loss = float((spec.get("loss") or {}).get("loss") or 0)
        script = nft_script(table_name(chaos_uid), action, spec.get("direction") or "to", networks, loss)
        nft(netns, script)
        return f"nftables table inet {table_name(chaos_uid)}: {action} {spec.get('direction') or 'to'}"
    if action == "bandwidth":
        run(netns, ["tc", "qdisc", "replace", "dev", DEVICE, "root", *tbf_args(spec["bandwidth"])])
        return f"tc tbf on {DEVICE}"
    if action in NETEM:
        args = netem_args(spec)
        try:
            run(netns, ["tc", "qdisc", "replace", "dev", DEVICE, "root", *args])
        except InjectionError as error:
            raise InjectionError(f"tc netem is needed for {action} and failed here ({error})") from None
        return f"tc {' '.join(args)} on {DEVICE}"
    raise InjectionError(f"action {action!r} is not supported")


def recover(netns: str, chaos_uid: str, spec: dict) -> None:
    """Remove what apply installed; harmless when it is not there."""
    if spec["action"] in ("partition", "loss"):
        try:
            nft(netns, f"delete table inet {table_name(chaos_uid)}")
        except InjectionError as error:
            if "No such file or directory" not in str(error):
                raise
    else:
        kind = "tbf" if spec["action"] == "bandwidth" else "netem"
        if f"qdisc {kind} " in run(netns, ["tc", "qdisc", "show", "dev", DEVICE, "root"]):
            run(netns, ["tc", "qdisc", "del", "dev", DEVICE, "root"])
