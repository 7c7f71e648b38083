import pytest

from mirrord.errors import InvalidReference
from mirrord.refs import ImageReference, check_digest, digest_hex
from mirrord.transports.location import DockerLocation, LocalLocation, parse_location

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "registry", "repo", "tag", "digest"),
    [
        ("busybox", "docker.io", "library/busybox", None, None),
        ("busybox:1.36", "docker.io", "library/busybox", "1.36", None),
        ("index.docker.io/foo/bar:v1", "docker.io", "foo/bar", "v1", None),
        ("localhost:5000/x/y@" + D, "localhost:5000", "x/y", None, D),
        ("quay.io/coreos/etcd:v3.5.0@" + D, "quay.io", "coreos/etcd", "v3.5.0", D),
        ("127.0.0.1:5000/a", "127.0.0.1:5000", "a", None, None),
        ("localhost/a", "localhost", "a", None, None),
    ],
)
def test_references_normalise_like_docker(
    text: str, registry: str, repo: str, tag: str | None, digest: str | None
) -> None:
    ref = ImageReference.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repo, tag, digest)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Busybox",
        "a/../b",
        "a:b:c",
        "x@sha256:../../etc/passwd",
        "x@sha256:" + "A" * 64,
        "x:" + "t" * 129,
        "a b",
        "x@md5:abc",
    ],
)
def test_invalid_references_are_refused_with_the_reference_named(text: str) -> None:
    with pytest.raises(InvalidReference):
        ImageReference.parse(text)


def test_digest_grammar_is_strict_before_building_paths() -> None:
    assert digest_hex(D) == "a" * 64
    for bad in ("sha256:../../x", "sha256:" + "a" * 63, "SHA256:" + "a" * 64, "sha256:" + "g" * 64):
        with pytest.raises(InvalidReference):
            check_digest(bad)


def test_reference_round_trips_through_str() -> None:
    ref = ImageReference.parse("quay.io/a/b:1@" + D)
    assert ImageReference.parse(str(ref)) == ref


def test_locations_parse_skopeo_spellings() -> None:
    docker = parse_location("docker://busybox")
    assert isinstance(docker, DockerLocation)
    assert docker.ref.tag == "latest"
    oci = parse_location("oci:/tmp/x:v1")
    assert oci == LocalLocation("oci", __import__("pathlib").Path("/tmp/x"), "v1")
    with pytest.raises(InvalidReference, match="expected docker://"):
        parse_location("busybox:latest")
