"""Everything `icn-node run` checks before it starts, so `icn-node config check` can check it too.

The settings themselves are validated when the file loads; these checks need
the machine: the key and token files, the engine's settings against the device
actually found (NF4 needs CUDA; the budgets must fit the hard limit), and the
addresses the node will bind (a port another program holds fails here, not
after the models have loaded).
"""

from __future__ import annotations

import socket

import multiaddr

from generation.config import GenerationSettings
from network.identity import IdentityError, load_key_file
from node.engine import EngineStartError, check_budget
from node.settings import NodeConfigError, NodeSettings
from node.web import read_token


def engine_problems(settings: GenerationSettings) -> list[str]:
    device = settings.resolved_device()
    problems = []
    if not device.startswith("cuda") and settings.models.precision.flux == "nf4":
        problems.append(
            f"generation.models.precision.flux: 'nf4' needs a CUDA device and this machine's is {device}; "
            "use 'fp32' (or the tiny CPU profile, generation/configs/tiny.yaml)"
        )
    if device.startswith("cuda"):
        try:
            check_budget(settings)
        except EngineStartError as exc:
            problems.append(str(exc))
    return problems


def _bindable(host: str, port: int) -> str | None:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host.strip("[]"), port))
        except OSError as exc:
            return f"{host}:{port}: {exc.strerror or exc}"
    return None


def address_problems(settings: NodeSettings) -> list[str]:
    problems = []
    for name, addr in (
        ("node.http_addr", settings.node.http_addr),
        ("http.public_addr", settings.http.public_addr),
    ):
        host, port = addr.rsplit(":", 1)
        if (problem := _bindable(host, int(port))) is not None:
            problems.append(f"{name}: cannot listen on {problem}")
    for addr in settings.network.listen:
        ma = multiaddr.Multiaddr(addr)
        host = ma.value_for_protocol("ip4") if "ip4" in addr else ma.value_for_protocol("ip6")
        if (problem := _bindable(str(host), int(ma.value_for_protocol("tcp")))) is not None:
            problems.append(f"network.listen: cannot listen on {problem}")
    return problems


def problems(settings: NodeSettings) -> list[str]:
    """Every reason `run` would refuse to start, in words an operator can act on."""
    out = []
    try:
        load_key_file(settings.node.key_file)
    except IdentityError as exc:
        out.append(f"node.key_file: {exc}")
    try:
        read_token(settings.http.token_file)
    except NodeConfigError as exc:
        out.append(str(exc))
    return out + engine_problems(settings.generation) + address_problems(settings)
