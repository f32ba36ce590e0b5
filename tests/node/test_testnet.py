"""`icn-node testnet`: folders for a whole network, written from one description and started unedited."""

from __future__ import annotations

import http.client
import itertools
import json
import random
import signal
import socket
import stat
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

from network.identity import load_key_file
from node.settings import NodeSettings
from node.testnet import TestnetError, TestnetPlan, plan_nodes, write_testnet


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def load(folder: Path) -> NodeSettings:
    data = tomllib.loads((folder / "node.toml").read_text())
    return NodeSettings.from_mapping(data, origin=str(folder))


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_every_node_shares_one_chain_and_dials_the_validators_at_their_hosts(tmp_path: Path) -> None:
    plan = TestnetPlan(
        validators=4, observers=2, hosts=("10.0.0.1", "10.0.0.2", "127.0.0.1"), seed="lab", genesis_time=2e9
    )
    write_testnet(plan, tmp_path / "net")
    manifest = json.loads((tmp_path / "net" / "testnet.json").read_text())
    assert [n["role"] for n in manifest["nodes"]] == ["validator"] * 4 + ["observer"] * 2
    settings = [load(tmp_path / "net" / f"node{k}") for k in range(6)]
    assert len({s.chain.genesis().chain_id for s in settings}) == 1  # one genesis for all
    keys = [load_key_file(tmp_path / "net" / f"node{k}" / "node.key") for k in range(6)]
    validators = [v.public_key for v in settings[0].chain.validators]
    assert validators == [k.public_key.hex() for k in keys[:4]]
    assert settings[0].chain.directors_per_slot == 4
    # regions default to the host; node k on host k mod 3, the jth node on a host at base port + j
    assert [v.region for v in settings[0].chain.validators] == [
        "10.0.0.1",
        "10.0.0.2",
        "127.0.0.1",
        "10.0.0.1",
    ]
    assert settings[3].network.listen == ("/ip4/0.0.0.0/tcp/4002",)  # a LAN host: every interface
    assert settings[2].network.listen == ("/ip4/127.0.0.1/tcp/4001",)  # loopback stays loopback
    assert settings[3].node.http_addr == "127.0.0.1:9465" and settings[3].http.public_addr == "127.0.0.1:8081"
    for k, s in enumerate(settings):
        dialled = {a.split("/p2p/")[1]: a.split("/p2p/")[0] for a in s.network.bootstrap}
        expected = {str(keys[v].peer_id) for v in range(4) if v != k}
        assert set(dialled) == expected
        if k != 3:
            assert dialled[str(keys[3].peer_id)] == "/ip4/10.0.0.1/tcp/4002"
        for name in ("node.key", "api.token"):
            assert stat.S_IMODE((tmp_path / "net" / f"node{k}" / name).stat().st_mode) == 0o600


def test_a_seed_and_a_genesis_time_write_the_same_bytes_again_and_no_seed_fresh_keys(tmp_path: Path) -> None:
    plan = TestnetPlan(validators=3, observers=1, hosts=("127.0.0.1",), seed="again", genesis_time=2e9)
    write_testnet(plan, tmp_path / "a")
    write_testnet(plan, tmp_path / "b")
    assert tree(tmp_path / "a") == tree(tmp_path / "b")
    unseeded = TestnetPlan(validators=3, observers=1, hosts=("127.0.0.1",), genesis_time=2e9)
    first, second = plan_nodes(unseeded), plan_nodes(unseeded)
    assert {n.identity.seed for n in first}.isdisjoint(n.identity.seed for n in second)


def test_it_refuses_to_overwrite_and_force_replaces_only_a_testnet(tmp_path: Path) -> None:
    plan = TestnetPlan(validators=2, observers=0, hosts=("127.0.0.1",), seed="x", genesis_time=2e9)
    out = tmp_path / "net"
    write_testnet(plan, out)
    with pytest.raises(TestnetError, match="--force"):
        write_testnet(plan, out)
    (out / "node0" / "extra").write_text("operator's file")
    write_testnet(plan, out, force=True)
    assert not (out / "node0" / "extra").exists()
    other = tmp_path / "home"
    other.mkdir()
    (other / "precious").write_text("not ours")
    with pytest.raises(TestnetError, match="not a testnet folder"):
        write_testnet(plan, other, force=True)
    assert (other / "precious").read_text() == "not ours"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"validators": 0}, "--validators"),
        ({"validators": 10**9}, "--validators"),
        ({"observers": -1}, "--observers"),
        ({"hosts": ("db.example",)}, "not an IP address"),
        ({"hosts": ()}, "no host"),
        ({"p2p_port": 65535, "validators": 3}, "65535"),
        ({"http_port": 4002}, "overlap"),
        ({"engine": "huge"}, "default or tiny"),
        ({"regions": ("x" * 65,)}, "1..64"),
    ],
)
def test_a_bad_description_is_refused_with_what_to_change(tmp_path: Path, change: dict, message: str) -> None:
    fields = {"validators": 2, "observers": 0, "hosts": ("127.0.0.1",), "genesis_time": 2e9, **change}
    with pytest.raises(TestnetError, match=message):
        write_testnet(TestnetPlan(**fields), tmp_path / "net")
    assert not (tmp_path / "net").exists()


def test_the_cli_says_what_is_wrong_and_exits_2(tmp_path: Path) -> None:
    bad = cli("testnet", "--validators", "2", "--hosts", "my-laptop", "--out", "net", cwd=tmp_path)
    assert bad.returncode == 2 and "not an IP address" in bad.stderr
    assert not (tmp_path / "net").exists()


def _free_base(count: int, rng: random.Random) -> int:
    """A base port with `count` free ports above it, below Linux's ephemeral range (32768 on), so that no
    outgoing connection's own port can take one between this check and the node's bind."""
    for _ in range(200):
        base = rng.randrange(20000, 32000 - count)
        socks = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


def _schedule(port: int) -> dict[int, str]:
    """slot -> media (the certified candidate) of every committed slot a node's public face lists ({} while it is starting)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/schedule.json", timeout=5) as response:
            data = json.loads(response.read())
    except (OSError, http.client.HTTPException, ValueError):
        return {}
    return {s["slot"]: s["media"] for s in data["slots"] if s.get("committed")}


@pytest.mark.slow
def test_the_written_folders_start_unedited_and_the_network_commits_slots(tmp_path: Path) -> None:
    """Issue 22's start test: 4 validators, each started unedited with the command the
    written README's table gives (`icn-node run --config nodeK/node.toml`, from the testnet's folder),
    commit slots and agree on them."""
    rng = random.Random()
    bases = [_free_base(4, rng) for _ in range(3)]
    while any(abs(a - b) < 4 for a, b in itertools.combinations(bases, 2)):  # three disjoint ranges
        bases = [_free_base(4, rng) for _ in range(3)]
    made = cli(
        "testnet", "--validators", "4", "--out", "net", "--engine", "tiny",
        "--slot-sec", "30", "--start-in", "40", "--p2p-port", str(bases[0]), "--http-port", str(bases[1]),
        "--public-port", str(bases[2]), cwd=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    manifest = json.loads((tmp_path / "net" / "testnet.json").read_text())
    readme = (tmp_path / "net" / "README.md").read_text()
    assert all(f"`icn-node run --config {n['node']}/node.toml`" in readme for n in manifest["nodes"])
    procs, logs = [], []
    for node in manifest["nodes"]:
        folder = tmp_path / "net" / node["node"]
        log = open(folder / "run.log", "w")  # noqa: SIM115 - handed to the process
        logs.append(log)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "node.cli", "run", "--config", "node.toml"],
                cwd=folder,
                stdout=log,
                stderr=log,
            )  # fmt: skip
        )
    ports = [int(node["public"].rsplit(":", 1)[1]) for node in manifest["nodes"]]
    try:
        deadline, agreed = time.time() + 240, {}
        while time.time() < deadline and all(p.poll() is None for p in procs):
            time.sleep(2.0)
            views = [_schedule(port) for port in ports]
            common = set.intersection(*(set(v) for v in views))
            agreed = {slot: views[0][slot] for slot in common if len({v[slot] for v in views}) == 1}
            if len(agreed) >= 2:
                break
        tails = "\n".join(f"{n['node']}: {(tmp_path / 'net' / n['node'] / 'run.log').read_text()[-1500:]}"
                          for n in manifest["nodes"])  # fmt: skip
        assert len(agreed) >= 2, tails  # every node, the observer too, holds the same two committed slots
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
        codes = [p.wait(timeout=60) for p in procs]
        for log in logs:
            log.close()
    assert codes == [0, 0, 0, 0]
