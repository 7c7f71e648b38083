"""Test support for configuration and planning: fixture paths and an in-memory tag lister."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path

from mirrord.errors import MirrordError, NameUnknown
from mirrord.plan import PlanInput, plan
from mirrord.refs import ImageReference
from mirrord.registry.options import RegistryOptions

FIXTURES = Path(__file__).parent / "fixtures"
REPO_ROOT = Path(__file__).resolve().parents[2]


class FakeRegistries:
    """Registry contents as `{"registry/repo": [tags]}`; listing an unknown repo is NameUnknown.

    Records every listing (with the options it was given) and the peak number in flight.
    """

    def __init__(
        self,
        contents: Mapping[str, Sequence[str]],
        failures: Mapping[str, MirrordError] | None = None,
        delay: float = 0.0,
    ) -> None:
        self.contents = {k: list(v) for k, v in contents.items()}
        self.failures = dict(failures or {})
        self.delay = delay
        self.calls: list[tuple[str, RegistryOptions]] = []
        self.in_flight = 0
        self.peak = 0

    async def __call__(self, repository: ImageReference, options: RegistryOptions) -> list[str]:
        self.calls.append((repository.name, options))
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            if repository.name in self.failures:
                raise self.failures[repository.name]
            if repository.name not in self.contents:
                raise NameUnknown(f"{repository.name}: repository name not known to registry")
            return list(self.contents[repository.name])
        finally:
            self.in_flight -= 1


async def copies(config: PlanInput, registries: FakeRegistries) -> list[tuple[str, str]]:
    """The planned (source, destination) pairs, in plan order."""
    result = await plan(config, registries)
    return [(str(r.source), str(r.destination)) for r in result.requests]


def pairs(*items: tuple[str, str]) -> list[tuple[str, str]]:
    """Expected pairs, normalised as references and sorted the way the planner sorts."""
    normal = [(str(ImageReference.parse(s)), str(ImageReference.parse(d))) for s, d in items]
    return sorted(normal, key=lambda p: (p[1], p[0]))
