"""image-syncer configs: accepted as is, converted, and both plan the same copies."""

from __future__ import annotations

from pathlib import Path

import pytest

from mirrord.config import load_config
from mirrord.config.imagesyncer import convert_files, dump_config, holds_secrets, load_image_syncer
from mirrord.errors import ConfigError
from mirrord.registry.options import TLSMode
from tests.config.support import FIXTURES, FakeRegistries, copies, pairs

SYNCER = FIXTURES / "image-syncer"
DIGEST = "sha256:14b267eb38aa85fd12d0e168fffa2d8a6187ac53a14a0212b0d4fce8d729598c"
CONTENTS = {
    "quay.io/coreos/kube-rbac-proxy": ["v0.9", "v1.0", "v1.1", "v2.0", "aaa"],
    "quay.io/coreos/flannel": ["v0.12.0", "v0.13.0", "v0.13.0-amd64", "v0.14.1", "latest"],
    "quay.io/coreos/etcd": ["v3.5.0", "v3.5.1"],
}


def expected_copies() -> list[tuple[str, str]]:
    """image-syncer's rules applied by hand to CONTENTS."""
    src, dst = "quay.io/coreos", "quay.io/ruohe"
    proxy = CONTENTS[f"{src}/kube-rbac-proxy"]
    return pairs(
        *((f"{src}/kube-rbac-proxy:{t}", f"{dst}/kube-rbac-proxy:{t}") for t in proxy),
        (f"{src}/kube-rbac-proxy@{DIGEST}", f"{dst}/kube-rbac-proxy@{DIGEST}"),
        (f"{src}/kube-rbac-proxy:v1.1", f"{dst}/kube-rbac-proxy1:v1.1"),
        (f"{src}/kube-rbac-proxy:v1.1", f"{dst}/kube-rbac-proxy2:v1.1"),
        *(
            (f"{src}/flannel:{t}", f"{dst}/flannel:{t}")
            for t in ("v0.13.0", "v0.13.0-amd64", "v0.14.1")
        ),
        ("docker.io/library/nginx:1.25", f"{dst}/nginx:1.25"),
        ("docker.io/library/nginx:1.26", f"{dst}/nginx:1.26"),
    )


@pytest.fixture(autouse=True)
def quay_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUAY_PASSWORD", "from-the-environment")


async def test_accepted_as_is() -> None:
    config = load_image_syncer(SYNCER / "images.yaml", SYNCER / "auth.yaml")
    assert await copies(config, FakeRegistries(CONTENTS)) == expected_copies()
    assert config.platforms.mode.value == "all"


async def test_converted_config_plans_the_same(tmp_path: Path) -> None:
    data = convert_files(SYNCER / "images.yaml", SYNCER / "auth.yaml")
    out = tmp_path / "mirrord.yaml"
    out.write_text(dump_config(data, "images.yaml"))
    converted = load_config(out)
    direct = load_image_syncer(SYNCER / "images.yaml", SYNCER / "auth.yaml")
    registries = FakeRegistries(CONTENTS)
    assert await copies(converted, registries) == await copies(direct, registries)
    assert await copies(converted, registries) == expected_copies()


def test_credentials(tmp_path: Path) -> None:
    config = load_image_syncer(SYNCER / "images.yaml", SYNCER / "auth.yaml")
    quay = config.registry_options("quay.io").credentials
    hub = config.registry_options("docker.io").credentials
    assert quay is not None
    assert quay.password is not None
    assert (quay.username, quay.password.reveal()) == ("ruohe", "from-the-environment")
    assert hub is not None
    assert hub.password is not None
    assert hub.password.reveal() == "plain-inline-password"
    data = convert_files(SYNCER / "images.yaml", SYNCER / "auth.yaml")
    assert data["destination"]["credentials"] == {
        "username": "ruohe",
        "password-env": "QUAY_PASSWORD",
    }
    assert holds_secrets(data)


async def test_one_config_file_in_json() -> None:
    config = load_image_syncer(SYNCER / "config.json")
    assert config.registry_options("quay.io").tls is TLSMode.SKOPEO_NO_VERIFY
    assert await copies(config, FakeRegistries(CONTENTS)) == pairs(
        ("quay.io/coreos/kube-rbac-proxy:v1.0", "quay.io/ruohe/kube-rbac-proxy:v1.0"),
        ("quay.io/coreos/kube-rbac-proxy:v2.0", "quay.io/ruohe/kube-rbac-proxy:v2.0"),
        ("quay.io/coreos/etcd:v3.5.0", "quay.io/ruohe/etcd:v3.5.0"),
        ("quay.io/coreos/etcd:v3.5.1", "quay.io/ruohe/etcd:v3.5.1"),
    )


@pytest.mark.parametrize(
    ("images", "problem"),
    [
        (
            "a.io/x:1: a.io/y:2\n",
            "1: \"a.io/x:1\": 'a.io/y:2' renames tags 1: mirrord keeps tag names",
        ),
        (
            "a.io/x:1,2: a.io/y:2,1\n",
            "1: \"a.io/x:1,2\": 'a.io/y:2,1' renames tags 1, 2: mirrord keeps tag names",
        ),
        (
            "a.io/x: a.io/y:latest\n",
            "1: \"a.io/x\": 'a.io/y:latest' renames tags (all): mirrord keeps tag names",
        ),
        (
            "a.io/x:/(/: a.io/y\n",
            "1: \"a.io/x:/(/\": invalid tag regex '(': missing ) in '('",
        ),
        ("a.io/x:1,-bad: a.io/y\n", "1: \"a.io/x:1,-bad\": invalid tag '-bad' in 'a.io/x:1,-bad'"),
        (
            "a.io/x:1: [a.io/y, b.io/y]\n",
            "1: destinations are on several registries (a.io, b.io): "
            "mirrord mirrors into one; split the file",
        ),
        ("a.io/x:1: {a: b}\n", '1: "a.io/x:1": expected a destination reference or a list of them'),
    ],
)
def test_what_cannot_be_converted(tmp_path: Path, images: str, problem: str) -> None:
    path = tmp_path / "images.yaml"
    path.write_text(images)
    with pytest.raises(ConfigError) as err:
        convert_files(path)
    assert [p.removeprefix(f"{path}:") for p in err.value.problems] == [problem]


def test_namespaces_with_different_credentials(tmp_path: Path) -> None:
    # image-syncer's own README example: quay.io and quay.io/coreos hold different accounts.
    auth = tmp_path / "auth.yaml"
    auth.write_text(
        "quay.io: {username: xxx, password: xxxxxxxxx, insecure: true}\n"
        "quay.io/coreos: {username: abc, password: xxxxxxxxx, insecure: true}\n"
    )
    with pytest.raises(ConfigError) as err:
        convert_files(SYNCER / "images.yaml", auth)
    assert err.value.problems == (
        f"{SYNCER / 'images.yaml'}:1: auth: quay.io, quay.io/coreos give quay.io different "
        "credentials; mirrord keeps one set per registry",
    )
    assert "xxxxxxxxx" not in str(err.value.problems)
