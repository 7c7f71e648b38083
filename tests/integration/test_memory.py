"""Memory is bounded by configuration, not by layer size: `mirrord copy` of an image with a
512 MiB layer between two real registries stays far below the layer's size in peak RSS."""

from __future__ import annotations

import pytest

from tests.harness.images import ImageBuilder
from tests.harness.registry import MakeRegistry
from tests.harness.skopeo import inspect_raw
from tests.integration.support import (
    MiB,
    Mirrord,
    dest_flags,
    docker_ref,
    src_flags,
)

LAYER_SIZE = 512 * MiB
RSS_BOUND = 200 * MiB  # about memory, not speed: the layer alone is 2.5 times this


@pytest.mark.slow
def test_copying_a_512_MiB_layer_keeps_peak_rss_flat(
    image_builder: ImageBuilder,
    make_registry: MakeRegistry,
    cli: Mirrord,
) -> None:
    big = image_builder.layer("big", size=LAYER_SIZE)
    image = image_builder.image("big", layers=[big])
    source, dest = make_registry("anonymous"), make_registry("anonymous")
    source.push_on_disk("big/app", "v1", image, image_builder)  # no 512 MiB upload to set up

    result = cli(
        "copy",
        *src_flags(source),
        *dest_flags(dest),
        docker_ref(source, "big/app:v1"),
        docker_ref(dest, "big/app:v1"),
        timeout=300,
    ).ok()

    print(
        f"\npeak RSS of `mirrord copy` with a {LAYER_SIZE // MiB} MiB layer: "
        f"{result.max_rss / MiB:.1f} MiB"
    )
    assert result.max_rss < RSS_BOUND
    assert big.size > LAYER_SIZE  # tar and gzip framing come on top of the payload
    assert f"{big.digest[:19]} (" in result.stdout
    assert "uploaded" in result.stdout
    assert dest.blob_path(big.digest).stat().st_size == big.size
    assert inspect_raw(dest, "big/app:v1") == image.manifest
