"""What a source is read against: the resolved selection options (`Choices`) and the source's
context (`SourceContext`). Plain dataclasses, without pydantic, so that reading an image list
(`mirrord export`) does not pay for the config models.  [pure]"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from mirrord.config.naming import Destination, Naming
from mirrord.model import PlatformPolicy
from mirrord.tagregex import TagRegex

if TYPE_CHECKING:
    from mirrord.config.extensions import SelectionOptions

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Choices:
    """The resolved selection options at one level."""

    exclude: TagRegex | None = None
    keep_latest: int | None = None
    platforms: PlatformPolicy = field(default_factory=PlatformPolicy.all)
    immutable: bool | TagRegex = False

    def over(self, options: SelectionOptions | None) -> Choices:
        """These choices with whatever `options` sets replacing them."""
        if options is None:
            return self
        return replace(
            self,
            exclude=_pick(options.exclude, self.exclude),
            keep_latest=_pick(options.keep_latest, self.keep_latest),
            platforms=_pick(options.platforms, self.platforms),
            immutable=_pick(options.immutable_tags, self.immutable),
        )


def _pick(new: T | None, old: T) -> T:
    return old if new is None else new


@dataclass(frozen=True, slots=True)
class SourceContext:
    """What a source file is read against: its name, the destination, the inherited options."""

    name: str
    destination: Destination
    naming: Naming = Naming.BASENAME
    suffix: str = ""
    choices: Choices = field(default_factory=Choices)
    base_dir: Path = Path()
