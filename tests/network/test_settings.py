import pytest

from network.settings import NetworkConfigError, NetworkSettings
from tests.network.conftest import settings


def test_settings_name_the_bad_key() -> None:
    for table, needle in [
        ({"listen": ["not an address"]}, "listen: "),
        ({"listen": ["/ip4/127.0.0.1/udp/4001"]}, "TCP only"),
        ({"bootstrap": ["/ip4/127.0.0.1/tcp/4001"]}, "must end in /p2p/"),
        ({"gossip": {"degree": 3, "degree_low": 4}}, "degree_low <= degree"),
        ({"gossip": {"heartbeat_sec": 0}}, "gossip.heartbeat_sec"),
        ({"media": {"max_file_bytes": 1}}, "media.max_file_bytes"),
        ({"colour": "blue"}, "colour: unknown key"),
    ]:
        with pytest.raises(NetworkConfigError, match=needle):
            NetworkSettings.from_mapping(table, origin="node.toml [network]")
    with pytest.raises(NetworkConfigError, match="expected a table"):
        NetworkSettings.from_mapping(["x"])
    assert settings().gossip.heartbeat_sec == 0.25
