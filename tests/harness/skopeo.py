"""skopeo, the peer and the verifier: seed registries from layouts and check what landed.

Every call has a timeout, never reads the user's auth files (`--no-creds` unless credentials
are given), and fails with a `SkopeoError` carrying the command (credentials redacted), the
exit status and the end of stderr.

skopeo 1.9's `oci:DIR:TAG` only finds index entries whose media type is an OCI one, so Docker
schema2 manifests and manifest lists cannot be addressed by tag. `seed` therefore copies from
a one-entry view of the layout (own `index.json`, `blobs` linked), addressed without a tag;
with `--preserve-digests` the bytes, digests and Docker media types arrive unchanged.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from .images import Layout
from .registry import Credentials

DEFAULT_TIMEOUT = 120.0


class SkopeoError(RuntimeError):
    """skopeo failed or timed out."""

    def __init__(self, command: Sequence[str], returncode: int | None, stderr: str) -> None:
        self.command = list(command)
        self.returncode = returncode
        self.stderr = stderr
        status = "timed out" if returncode is None else f"exited with {returncode}"
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        super().__init__(f"`{' '.join(command)}` {status}:\n{tail}")


class Endpoint(Protocol):
    """Where skopeo connects: a `RegistryServer` or a `FaultProxy` in front of one."""

    @property
    def host(self) -> str: ...

    @property
    def cert_dir(self) -> Path | None: ...


def run_skopeo(
    *args: str, timeout: float = DEFAULT_TIMEOUT, secrets: Sequence[str] = ()
) -> subprocess.CompletedProcess[bytes]:
    """Run `skopeo ARGS...`; raise `SkopeoError` on failure (with `secrets` masked)."""
    binary = shutil.which("skopeo")
    if binary is None:
        raise SkopeoError(["skopeo", *args], -1, "skopeo is not on PATH: install Debian `skopeo`")
    command = [binary, *args]
    shown = [_mask(arg, secrets) for arg in ["skopeo", *args]]
    try:
        result = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise SkopeoError(shown, None, _text(exc.stderr)) from exc
    if result.returncode != 0:
        raise SkopeoError(shown, result.returncode, _text(result.stderr))
    return result


def seed(
    layout_dir: Path | Layout,
    tag: str,
    registry: Endpoint,
    repo_ref: str,
    *,
    creds: Credentials | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """`skopeo copy --all --preserve-digests` the layout's `tag` to `registry/repo_ref`.

    `repo_ref` is `repo:tag` or a bare `repo` (then the layout tag is reused).
    """
    directory = layout_dir.path if isinstance(layout_dir, Layout) else layout_dir
    ref = repo_ref if ":" in repo_ref.rsplit("/", 1)[-1] else f"{repo_ref}:{tag}"
    with tempfile.TemporaryDirectory(prefix="seed-", dir=directory.parent) as view:
        source = _single_entry_view(directory, tag, Path(view))
        run_skopeo(
            "copy",
            "--all",
            "--preserve-digests",
            *_dest_args(registry, creds),
            f"oci:{source}",
            f"docker://{registry.host}/{ref}",
            timeout=timeout,
            secrets=_secrets(creds),
        )


def seed_layout(
    layout: Layout, registry: Endpoint, repo: str, *, creds: Credentials | None = None
) -> None:
    """Seed every tag of `layout` into `registry/repo` under the same tag names."""
    for tag in layout.tags:
        seed(layout, tag, registry, f"{repo}:{tag}", creds=creds)


def inspect_raw(
    registry: Endpoint, repo_ref: str, *, creds: Credentials | None = None, config: bool = False
) -> bytes:
    """The manifest (or with `config`, the config blob) exactly as the registry serves it."""
    extra = ["--config"] if config else []
    result = run_skopeo(
        "inspect",
        "--raw",
        *extra,
        *_src_args(registry, creds, prefix=""),
        f"docker://{registry.host}/{repo_ref}",
        secrets=_secrets(creds),
    )
    return result.stdout


def copy_to_oci(
    registry: Endpoint,
    repo_ref: str,
    dest_dir: Path,
    *,
    creds: Credentials | None = None,
    tag: str = "latest",
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """Pull `repo_ref` (all instances) into an OCI layout; skopeo checks every digest.

    Docker manifests are converted to OCI on the way, so the layout's manifest digests may
    differ from the registry's; the layer and config bytes are the ones served.
    """
    run_skopeo(
        "copy",
        "--all",
        *_src_args(registry, creds, prefix="src-"),
        f"docker://{registry.host}/{repo_ref}",
        f"oci:{dest_dir}:{tag}",
        timeout=timeout,
        secrets=_secrets(creds),
    )


def list_tags(registry: Endpoint, repo: str, *, creds: Credentials | None = None) -> list[str]:
    """Tags of `registry/repo`, as skopeo lists them (it follows pagination)."""
    result = run_skopeo(
        "list-tags",
        *_src_args(registry, creds, prefix=""),
        f"docker://{registry.host}/{repo}",
        secrets=_secrets(creds),
    )
    tags: list[str] = json.loads(result.stdout)["Tags"]
    return tags


def _single_entry_view(layout: Path, tag: str, view: Path) -> Path:
    index = json.loads((layout / "index.json").read_bytes())
    matches = [
        entry
        for entry in index["manifests"]
        if entry.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag
    ]
    if len(matches) != 1:
        raise KeyError(f"{layout} has {len(matches)} entries tagged {tag!r}")
    entry = {k: v for k, v in matches[0].items() if k != "annotations"}
    (view / "oci-layout").write_bytes((layout / "oci-layout").read_bytes())
    (view / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    (view / "blobs").symlink_to((layout / "blobs").resolve())
    return view


def _dest_args(registry: Endpoint, creds: Credentials | None) -> list[str]:
    return _src_args(registry, creds, prefix="dest-")


def _src_args(registry: Endpoint, creds: Credentials | None, *, prefix: str) -> list[str]:
    if registry.cert_dir is None:
        tls = [f"--{prefix}tls-verify=false"]
    else:
        tls = [f"--{prefix}cert-dir", str(registry.cert_dir)]
    auth = [f"--{prefix}creds", creds.joined()] if creds else [f"--{prefix}no-creds"]
    return tls + auth


def _secrets(creds: Credentials | None) -> list[str]:
    return [creds.password] if creds else []


def _mask(arg: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            arg = arg.replace(secret, "***")
    return arg


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data
