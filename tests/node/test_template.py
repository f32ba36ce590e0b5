"""The config `icn-node init` writes is rendered from the typed settings and parses back to them."""

from __future__ import annotations

import tomllib

from pydantic import BaseModel

from node.settings import ChainSection, NodeSection, NodeSettings, ValidatorEntry
from node.template import render

KEY = "ab" * 32


def settings(**chain: object) -> NodeSettings:
    return NodeSettings(
        node=NodeSection(key_file="node.key"),
        chain=ChainSection(
            genesis_time=1_800_000_000.0,
            validators=(ValidatorEntry(public_key=KEY, region="eu", reputation=1.0),),
            **chain,
        ),
    )


def parse(text: str) -> NodeSettings:
    return NodeSettings.from_mapping(tomllib.loads(text), origin="rendered")


def scalar_keys(model: BaseModel, prefix: str = "") -> list[str]:
    out: list[str] = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            out += scalar_keys(value, f"{prefix}{name}.")
        elif isinstance(value, tuple) and value and isinstance(value[0], BaseModel):
            for item in value:
                out += scalar_keys(item, f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


def test_the_rendered_template_parses_back_to_the_defaults() -> None:
    s = settings()
    text = render(s, config_name="node.toml")
    assert parse(text) == s
    assert parse(text).agreement == NodeSettings.model_fields["agreement"].default


def test_every_setting_is_written_with_its_description() -> None:
    s = settings()
    text = render(s, config_name="node.toml")
    for dotted in scalar_keys(s):
        key = dotted.rsplit(".", 1)[-1]
        assert f"\n{key} = " in text or f"# {key}: not set" in text, dotted
    assert "# where libp2p listens. Loopback reaches only this machine" in text  # exposure, from the field
    assert "timeout_delta = 0.5" in text and "# added per round" in text


def test_values_that_need_quoting_survive_the_round_trip() -> None:
    s = settings(seed='quote " backslash \\ tab \t snow \u2603', slot_sec=45.5, cooldown_slots=3)
    s = s.model_copy(update={"agreement": s.agreement.model_copy(update={"threshold_b": 1e-7})})
    assert parse(render(s, config_name="x.toml")) == s
