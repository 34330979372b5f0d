"""Which model version answers a request, and which one shadows it, from model state.

Routing is a pure function of the folded ``ModelState`` and the request's key (an entity
or request id), so every worker, in every process, routes a key the same way:

* A key falls in one of 10,000 buckets, from the blake2b hash of the key salted with the
  model name and the canary version. The canary gets the buckets below
  ``canary_percent * 100``: a key in the canary at 5 percent stays in it at 25, and each
  new canary version draws a new set of keys.
* The shadow draws its own bucket, from a hash with another salt (``person``), so the
  keys shadowed are independent of the keys sent to the canary. A shadowed key is also
  scored by the shadow version, whose answer is logged and never returned.
* With no champion yet, every key goes to the canary, if one runs; with neither, there
  is nothing to route to and ``route`` returns None (the caller rejects the request).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from models.lifecycle import ModelEvent, ModelState, apply

__all__ = ["BUCKETS", "ModelRouter", "Route", "RouteKind", "bucket", "route"]

BUCKETS = 10_000

RouteKind = Literal["champion", "canary"]

_CANARY_SALT = b"headrace.canary"  # blake2b's person: at most 16 bytes
_SHADOW_SALT = b"headrace.shadow"


@dataclass(frozen=True, slots=True)
class Route:
    decision_version: str  # the version whose answer is returned
    route: RouteKind
    shadow_version: str | None  # also scored, never returned; None when not shadowed
    state_sequence: int  # the lifecycle sequence the decision was taken at, for replay


def bucket(key: str, *, salt: str, person: bytes) -> int:
    """The key's bucket in ``[0, BUCKETS)``, the same in every process."""
    digest = hashlib.blake2b(
        salt.encode() + b"\x00" + key.encode(), digest_size=8, person=person
    ).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def _share_buckets(percent: float) -> int:
    return round(percent * BUCKETS / 100)


def _in_canary(state: ModelState, key: str) -> bool:
    if state.canary is None:
        return False
    if state.champion is None:
        return True
    salt = f"{state.model}\x00{state.canary}"
    return bucket(key, salt=salt, person=_CANARY_SALT) < _share_buckets(state.canary_percent)


def _in_shadow(state: ModelState, key: str) -> bool:
    if state.shadow is None:
        return False
    salt = f"{state.model}\x00{state.shadow}"
    shadow_buckets = _share_buckets(state.shadow_fraction * 100)
    return bucket(key, salt=salt, person=_SHADOW_SALT) < shadow_buckets


def route(state: ModelState, key: str) -> Route | None:
    """Where ``key``'s request goes; None when no version serves (see the module doc)."""
    shadow = state.shadow if _in_shadow(state, key) else None
    if state.canary is not None and _in_canary(state, key):
        return Route(state.canary, "canary", shadow, state.sequence)
    if state.champion is not None:
        return Route(state.champion, "champion", shadow, state.sequence)
    return None


class ModelRouter:
    """The routing state of a worker: folds ``model.events`` as they arrive, routes keys.

    A thin holder around ``apply`` and ``route`` for the agent that consumes the log.
    """

    def __init__(self, states: Mapping[str, ModelState] | None = None) -> None:
        self._states: dict[str, ModelState] = dict(states or {})

    def apply(self, event: ModelEvent) -> bool:
        """Fold one event in; False when it was ignored (a duplicate or not valid)."""
        state = self.state(event.model)
        after = apply(state, event)
        if after is state:
            return False
        self._states[event.model] = after
        return True

    def state(self, model: str) -> ModelState:
        return self._states.get(model) or ModelState(model)

    def states(self) -> dict[str, ModelState]:
        return dict(self._states)

    def route(self, model: str, key: str) -> Route | None:
        return route(self.state(model), key)
