"""What mirrord last wrote to a destination tag."""

from __future__ import annotations

from mirrord.store import Store
from tests.store.support import FakeClock

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


async def test_a_copied_tag_is_remembered_and_a_check_keeps_the_copy_time(
    store: Store, clock: FakeClock
) -> None:
    tags = store.tags
    assert await tags.get("reg", "app", "1.0") is None
    await tags.record("reg", "app", "1.0", D1, source_ref="docker.io/app:1.0", source_name="hub")
    copied_at = clock.now
    clock.advance(60)
    await tags.record("reg", "app", "1.0", D1, source_ref="docker.io/app:1.0", copied=False)
    state = await tags.get("reg", "app", "1.0")
    assert state is not None
    assert (state.digest, state.copied_at, state.checked_at) == (D1, copied_at, clock.now)


async def test_a_new_copy_replaces_the_digest(store: Store, clock: FakeClock) -> None:
    tags = store.tags
    await tags.record("reg", "app", "latest", D1, source_ref="src/app:latest")
    clock.advance(5)
    await tags.record("reg", "app", "latest", D2, source_ref="src/app:latest", source_name="s")
    state = await tags.get("reg", "app", "latest")
    assert state is not None
    assert (state.digest, state.copied_at, state.source_name) == (D2, clock.now, "s")
    assert await tags.forget("reg", "app", "latest")
    assert await tags.get("reg", "app", "latest") is None
