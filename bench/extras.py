"""Two more measurements: 2,000 small tags warm, and the peak RSS of one 1 GiB layer copy."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from bench.run import run_child
from tests.harness.images import ImageBuilder
from tests.harness.registry import RegistryServer
from tests.harness.skopeo import seed

MIRRORD = [sys.executable, "-m", "mirrord"]
SMALL_TAGS = 2000


def many_small_tags(work: Path) -> None:
    """2,000 tags (one small image each tag points to) synced, then synced again unchanged."""
    src = RegistryServer(work / "small-src", "anonymous")
    dst = RegistryServer(work / "small-dst", "anonymous")
    src.start()
    dst.start()
    try:
        builder = ImageBuilder("small-tags", work / "small-store")
        image = builder.image("small")
        seed(builder.write_layout(work / "small-layout", {"v0": image}), "v0", src, "many/small:v0")
        for i in range(1, SMALL_TAGS):
            src.tag_on_disk("many/small", f"v{i}", image.digest)
        yaml_file = work / "small.yaml"
        yaml_file.write_text(f"{src.host}:\n  tls-verify: false\n  images:\n    many/small: []\n")
        argv = [
            *MIRRORD,
            "sync",
            "--src",
            "yaml",
            "--dest",
            "docker",
            "--dest-tls-verify=false",
            "-q",
            "--state-db",
            str(work / "small.db"),
            str(yaml_file),
            dst.host,
        ]
        for phase in ("cold", "warm", "warm"):
            wall, cpu, rss, ok = run_child(argv)
            print(
                f"  {SMALL_TAGS} small tags {phase}: {wall:.2f}s (cpu {cpu:.2f}s, rss {rss:.0f} MiB)"
                f"{'' if ok else ' FAILED'}",
                flush=True,
            )
    finally:
        src.stop()
        dst.stop()


def one_big_layer(work: Path) -> None:
    """Peak RSS of `mirrord copy` for an image with a single 1 GiB layer."""
    src = RegistryServer(work / "big-src", "anonymous")
    dst = RegistryServer(work / "big-dst", "anonymous")
    src.start()
    dst.start()
    try:
        builder = ImageBuilder("big-layer", work / "big-store")
        image = builder.image("big", layers=[builder.layer("big", size=1 << 30)])
        seed(builder.write_layout(work / "big-layout", {"v1": image}), "v1", src, "big/one:v1")
        shutil.rmtree(work / "big-store")
        argv = [
            *MIRRORD,
            "copy",
            "-q",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            f"docker://{src.host}/big/one:v1",
            f"docker://{dst.host}/big/one:v1",
        ]
        wall, cpu, rss, ok = run_child(argv)
        print(
            f"  1 GiB layer copy: {wall:.2f}s (cpu {cpu:.2f}s), peak RSS {rss:.0f} MiB"
            f"{'' if ok else ' FAILED'}",
            flush=True,
        )
    finally:
        src.stop()
        dst.stop()


def run_extras(work: Path) -> None:
    print("extras:", flush=True)
    many_small_tags(work)
    one_big_layer(work)
