"""Policy types by name (``bc``, ``act``, ``diffusion``): look up a class, build a policy from dataset features.

``Policy.load`` dispatches through :func:`policy_class`; the training CLI builds with
:func:`make_policy`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from policies.base import Policy
from policies.config import PolicyConfig
from policies.errors import PolicyError


def _policies() -> dict[str, type[Policy]]:
    # Imported here so importing the registry (and ``Policy.load``) stays cheap and acyclic.
    from policies.act import ACTPolicy
    from policies.bc import BCPolicy
    from policies.diffusion import DiffusionPolicy

    return {p.name: p for p in (BCPolicy, ACTPolicy, DiffusionPolicy)}


def available_policies() -> list[str]:
    """Names of the registered policy types."""
    return sorted(_policies())


def policy_class(name: str) -> type[Policy]:
    """The Policy subclass registered as ``name``; PolicyError naming the choices otherwise."""
    policies = _policies()
    if name not in policies:
        raise PolicyError(f"unknown policy type '{name}'; expected one of {sorted(policies)}")
    return policies[name]


def make_config(
    name: str,
    input_features: Mapping[str, Sequence[int]],
    output_features: Mapping[str, Sequence[int]],
    **overrides: Any,
) -> PolicyConfig:
    """A config of type ``name`` for these features, with keyword overrides of its defaults."""
    cls = policy_class(name).config_class
    data = {"input_features": {k: list(v) for k, v in input_features.items()},
            "output_features": {k: list(v) for k, v in output_features.items()}, **overrides}
    return cls.from_dict(data, source=f"{name} policy config")


def make_policy(
    name: str,
    input_features: Mapping[str, Sequence[int]],
    output_features: Mapping[str, Sequence[int]],
    stats: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> Policy:
    """Build a fresh policy of type ``name`` for the given features and normalisation statistics."""
    config = make_config(name, input_features, output_features, **overrides)
    return policy_class(name)(config, stats)
