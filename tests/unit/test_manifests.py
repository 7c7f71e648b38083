import json

import pytest

from mirrord.errors import InvalidManifest, UnsupportedOperation
from mirrord.manifests import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    compute_digest,
    parse_manifest,
    select_instance,
    select_subset,
    subset_index,
)
from mirrord.model import Platform

D1, D2, D3, D4 = (f"sha256:{c * 64}" for c in "1234")


def image(media_type: str = OCI_MANIFEST) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": D1,
            "size": 10,
        },
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": D2, "size": 20}
        ],
    }
    return json.dumps(doc).encode()


def index() -> bytes:
    entries = [
        {
            "mediaType": OCI_MANIFEST,
            "digest": D1,
            "size": 1,
            "platform": {"os": "linux", "architecture": "amd64"},
        },
        {
            "mediaType": OCI_MANIFEST,
            "digest": D2,
            "size": 1,
            "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
        },
        {
            "mediaType": OCI_MANIFEST,
            "digest": D3,
            "size": 1,
            "platform": {"os": "unknown", "architecture": "unknown"},
            "annotations": {
                "vnd.docker.reference.type": "attestation-manifest",
                "vnd.docker.reference.digest": D2,
            },
        },
    ]
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()


def test_image_manifest_lists_config_then_layers_and_keeps_bytes() -> None:
    raw = image()
    m = parse_manifest(raw, OCI_MANIFEST)
    assert [b.digest for b in m.blobs] == [D1, D2]
    assert m.raw == raw
    assert m.digest == compute_digest(raw)


def test_digest_mismatch_is_refused_before_parsing() -> None:
    with pytest.raises(InvalidManifest, match="digest mismatch"):
        parse_manifest(image(), OCI_MANIFEST, D4)


@pytest.mark.parametrize(
    ("raw", "content_type", "message"),
    [
        (b'{"schemaVersion": 2, "layers": [], "layers": []}', OCI_MANIFEST, "duplicate"),
        (image(OCI_MANIFEST), DOCKER_MANIFEST, "contradicts"),
        (b'{"manifests": [], "layers": []}', "", "ambiguous"),
        (b"[1]", OCI_MANIFEST, "not a JSON object"),
        (b"{" * 100000, OCI_MANIFEST, "not valid JSON"),
        (b"x" * (4 * 1024 * 1024 + 1), OCI_MANIFEST, "larger than"),
        (
            json.dumps(
                {"mediaType": OCI_MANIFEST, "layers": [{"digest": "sha256:../../x", "size": 1}]}
            ).encode(),
            OCI_MANIFEST,
            "invalid digest",
        ),
        (
            json.dumps(
                {"mediaType": OCI_MANIFEST, "layers": [{"digest": D1, "size": -1}]}
            ).encode(),
            OCI_MANIFEST,
            "invalid size",
        ),
    ],
)
def test_hostile_manifests_are_refused_with_a_reason(
    raw: bytes, content_type: str, message: str
) -> None:
    with pytest.raises(InvalidManifest, match=message):
        parse_manifest(raw, content_type)


def test_schema1_is_refused_as_unsupported() -> None:
    with pytest.raises(UnsupportedOperation, match="schema1"):
        parse_manifest(b'{"schemaVersion": 1, "fsLayers": []}', "application/json")


def test_system_platform_picks_one_instance_exact_variant_first() -> None:
    idx = parse_manifest(index(), OCI_INDEX)
    assert select_instance(idx, Platform("linux", "arm64", "v8")).digest == D2
    assert select_instance(idx, Platform("linux", "amd64")).digest == D1
    with pytest.raises(UnsupportedOperation, match="available: linux/amd64"):
        select_instance(idx, Platform("windows", "amd64"))


def test_subset_keeps_attestations_of_kept_entries_and_has_a_new_digest() -> None:
    idx = parse_manifest(index(), OCI_INDEX)
    kept = select_subset(idx, (Platform("linux", "arm64"),))
    assert [c.digest for c in kept] == [D2, D3]
    sub = subset_index(idx, kept)
    assert sub.digest != idx.digest
    assert [c.digest for c in sub.children] == [D2, D3]
