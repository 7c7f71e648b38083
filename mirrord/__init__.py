"""mirrord: keep container registries mirrored."""

__version__ = "0.1.0"
