"""Recipes: the queue this node proposes from, and which recipe each slot plays.

A recipe reaches the queue from HTTP or gossip only once it is valid for the
network (`generation.recipe.network_recipe`): the same rule at every door, so
nothing queued here can fail a proposal later. A slot plays the recipe its
predecessor's certificate fixed, else the fallback programme.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from pathlib import Path

from consensus.ledger import Ledger
from consensus.messages import sha256
from generation.errors import RecipeError
from generation.recipe import Recipe, network_recipe
from network.topics import Topic, encode_recipe
from node.ports import Publisher

FALLBACK_RECIPE = {
    "audio_track": {
        "script": "You are watching the Interdimensional Cable Network.",
        "voice_id": "rick_c137",
    },
    "visual_track": {"prompt": "a test card with colour bars"},
}


def load_fallback(path: str | None) -> Recipe:
    """The operator's fallback programme (a file, checked like any recipe), or the built-in one."""
    if path is None:
        return Recipe.parse(FALLBACK_RECIPE)
    try:
        return network_recipe(Path(path).read_bytes())
    except OSError as exc:
        raise RecipeError(f"node.fallback_recipe: cannot read {path}: {exc}") from None


@functools.lru_cache(maxsize=64)
def _committed(data: bytes) -> Recipe:
    """A committed recipe, parsed once: the lifecycle and every schedule request read the same few."""
    return network_recipe(data)


def canonical_network_recipe(data: bytes) -> bool:
    """A proposal's next recipe: network-valid (`network_recipe`) and in canonical form."""
    try:
        return network_recipe(data).canonical_bytes() == data
    except RecipeError:
        return False


class RecipeQueue:
    def __init__(self, ledger: Ledger, fallback: Recipe, limit: int) -> None:
        self._ledger = ledger
        self.fallback = fallback
        self._limit = limit
        self._pending: OrderedDict[bytes, bytes] = OrderedDict()  # recipe hash -> canonical JSON

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def full(self) -> bool:
        """HTTP refuses (429) rather than push out a queued recipe; gossip drops the oldest."""
        return len(self._pending) >= self._limit

    def queue(self, recipe: Recipe) -> bytes:
        """Queue a network-valid recipe (oldest dropped beyond the limit); its hash."""
        data = recipe.canonical_bytes()
        key = sha256(data)
        if key not in self._pending:
            self._pending[key] = data
            while len(self._pending) > self._limit:
                self._pending.popitem(last=False)
        return key

    async def submit(self, recipe: Recipe, gossip: Publisher) -> bytes:
        """Publish, then queue: a recipe the network refuses (ValueError) never reaches a proposal."""
        await gossip.publish(Topic.RECIPES, encode_recipe(recipe))
        return self.queue(recipe)

    def committed(self, data: bytes) -> None:
        """A certificate fixed this recipe: no one needs to propose it again."""
        self._pending.pop(sha256(data), None)

    def next_recipe(self) -> bytes | None:
        """The oldest queued recipe no certificate has fixed yet."""
        committed = {c.value.next_recipe for c in self._ledger.recent.values() if c.value.next_recipe}
        for data in self._pending.values():
            if data not in committed:
                return data
        return None

    def recipe_for(self, slot: int) -> tuple[Recipe, str | None]:
        """What `slot` plays, and why it is the fallback when it is."""
        data = self._ledger.recipe(slot)
        if data is None:
            return self.fallback, "no recipe committed for this slot: fallback programme"
        try:
            return _committed(data), None
        except RecipeError as exc:  # a quorum agreed to it: a schema change, or more than f faulty directors
            return self.fallback, f"committed recipe unusable ({exc}): fallback programme"
