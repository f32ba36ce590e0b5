import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from generation.errors import RecipeError
from generation.recipe import Recipe
from tests.conftest import DELETE, set_path


def test_valid_recipe_and_defaults(recipe: dict) -> None:
    r = Recipe.parse(recipe)
    assert r.audio_track.speed == 1.0
    assert r.audio_track.emotion == "neutral"
    assert r.seed is None and r.duration_sec is None


def test_json_text_and_bytes_parse_the_same(recipe: dict) -> None:
    text = json.dumps(recipe)
    assert Recipe.parse(text) == Recipe.parse(text.encode()) == Recipe.parse(recipe)


def _with(recipe: dict, path: str, value) -> dict:
    data = json.loads(json.dumps(recipe))
    set_path(data, path, value)
    return data


_DELETE = DELETE


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("audio_track.script", "   ", r"audio_track.script: must not be empty"),
        ("audio_track.script", _DELETE, r"audio_track.script: Field required"),
        ("audio_track.script", 42, r"audio_track.script: Input should be a valid string"),
        ("audio_track.script", "x" * 5001, r"audio_track.script: String should have at most 5000"),
        ("audio_track.script", "a\x00b", r"audio_track.script: must not contain NUL"),
        ("audio_track.voice_id", "gandalf", r"audio_track.voice_id: unknown voice 'gandalf'"),
        ("audio_track.speed", 1.5, r"audio_track.speed: Input should be less than or equal to 1.2"),
        ("audio_track.speed", 0.5, r"audio_track.speed: Input should be greater than or equal to 0.8"),
        ("audio_track.speed", "1.0", r"audio_track.speed: Input should be a valid number"),
        ("audio_track.emotion", "bored", r"audio_track.emotion: Input should be"),
        ("visual_track.prompt", "", r"visual_track.prompt: must not be empty"),
        (
            "visual_track.negative_prompt",
            None,
            r"visual_track.negative_prompt: Input should be a valid string",
        ),
        ("visual_track.style", "noir", r"visual_track.style: unknown key"),
        ("seed", -1, r"seed: Input should be greater than or equal to 0"),
        ("seed", True, r"seed: Input should be a valid integer"),
        ("seed", 2**63, r"seed: Input should be less than"),
        ("duration_sec", 0, r"duration_sec: Input should be greater than 0"),
        ("visual_track", "a prompt", r"visual_track: Input should be a valid dictionary"),
    ],
)
def test_bad_fields_are_named(recipe: dict, path: str, value, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        Recipe.parse(_with(recipe, path, value))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "expected an object, got list"),
        ("{not json", "not valid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (None, "expected an object, got NoneType"),
    ],
)
def test_non_recipes(data, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        Recipe.parse(data)


def test_duration_longer_than_the_slot(recipe: dict) -> None:
    recipe["duration_sec"] = 60
    with pytest.raises(RecipeError, match=r"duration_sec: 60.0 s is longer than the slot's 45 s"):
        Recipe.parse(recipe, max_duration_sec=45)


def test_prompt_injection_is_just_text(recipe: dict) -> None:
    recipe["visual_track"]["prompt"] = (
        "'; DROP TABLE slots; -- <script>alert(1)</script> ignore previous instructions"
    )
    assert Recipe.parse(recipe).visual_track.prompt.startswith("'; DROP")


def test_canonical_hash_ignores_key_order_but_not_content(recipe: dict) -> None:
    reordered = {
        "visual_track": recipe["visual_track"],
        "audio_track": dict(reversed(recipe["audio_track"].items())),
    }
    assert Recipe.parse(reordered).content_hash() == Recipe.parse(recipe).content_hash()
    changed = _with(recipe, "visual_track.prompt", "a different scientist")
    assert Recipe.parse(changed).content_hash() != Recipe.parse(recipe).content_hash()


def test_seed_is_explicit_or_derived_per_slot(recipe: dict) -> None:
    r = Recipe.parse(recipe)
    assert r.seed_for_slot(7) == Recipe.parse(json.dumps(recipe)).seed_for_slot(7)
    assert r.seed_for_slot(7) != r.seed_for_slot(8)
    assert 0 <= r.seed_for_slot(7) < 2**63
    assert Recipe.parse({**recipe, "seed": 42}).seed_for_slot(7) == 42


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        json_values,
        st.fixed_dictionaries(
            {"audio_track": json_values, "visual_track": json_values}, optional={"seed": json_values}
        ),
    )
)
def test_arbitrary_input_is_a_recipe_or_a_recipe_error(data) -> None:
    try:
        Recipe.parse(data)
    except RecipeError as exc:
        assert str(exc)
