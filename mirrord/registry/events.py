"""What the registry client and the transfer engine report as they work.

Metrics implement this; the default ignores it."""

from __future__ import annotations


class Observer:
    """Callbacks from the registry client. Labels are bounded: hosts and method classes only.

    Method classes: ping, token, manifest_head, manifest_get, manifest_put, manifest_delete,
    blob_head, blob_get, upload, mount, tags, catalog.
    """

    def request(self, registry: str, method_class: str, status: int) -> None:
        """One HTTP exchange finished with `status`."""

    def transferred(self, registry: str, direction: str, nbytes: int) -> None:
        """Blob bytes read from (`read`) or written to (`write`) a registry."""

    def rate_limited(self, registry: str, retry_after: float | None) -> None:
        """A 429 arrived; `retry_after` is the pause it asked for, if any."""

    def ratelimit_remaining(self, registry: str, remaining: int) -> None:
        """A `ratelimit-remaining` header (Docker Hub) was seen."""

    def blob_placed(self, outcome: str) -> None:
        """A blob was decided: skipped_known, skipped_head, mounted, uploaded, ..., failed."""

    def transfers_changed(self, delta: int) -> None:
        """A blob stream started (+1) or ended (-1)."""

    def digest_mismatch(self, registry: str) -> None:
        """Content from `registry` did not match its descriptor (digest or size)."""

    def tls_mode(self, registry: str, mode: str) -> None:
        """The first exchange with a registry settled how it is reached: verify, insecure
        (HTTPS without certificate checks) or plain-http."""


class Observers(Observer):
    """Reports every callback to several observers (the metrics and a progress display)."""

    def __init__(self, *targets: Observer) -> None:
        self.targets = targets

    def request(self, registry: str, method_class: str, status: int) -> None:
        for target in self.targets:
            target.request(registry, method_class, status)

    def transferred(self, registry: str, direction: str, nbytes: int) -> None:
        for target in self.targets:
            target.transferred(registry, direction, nbytes)

    def rate_limited(self, registry: str, retry_after: float | None) -> None:
        for target in self.targets:
            target.rate_limited(registry, retry_after)

    def ratelimit_remaining(self, registry: str, remaining: int) -> None:
        for target in self.targets:
            target.ratelimit_remaining(registry, remaining)

    def blob_placed(self, outcome: str) -> None:
        for target in self.targets:
            target.blob_placed(outcome)

    def transfers_changed(self, delta: int) -> None:
        for target in self.targets:
            target.transfers_changed(delta)

    def digest_mismatch(self, registry: str) -> None:
        for target in self.targets:
            target.digest_mismatch(registry)

    def tls_mode(self, registry: str, mode: str) -> None:
        for target in self.targets:
            target.tls_mode(registry, mode)


NULL_OBSERVER = Observer()
