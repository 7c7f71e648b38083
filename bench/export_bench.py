"""Benchmark: `mirrord export` from a local registry-storage pool vs `skopeo copy` to `dir:`.

    .venv/bin/python bench/export_bench.py [--runs 3] [--workdir /tmp/mirrord-export-bench]

1. Generates the corpus: 24 repositories, 70 tags, about 400 MiB of unique layers, three base
   layers shared across repositories, every 5th repository multi-arch (an OCI index, two
   platforms). Written as OCI layouts, then pushed by skopeo into a real `docker-registry`:
   the pool's storage is Distribution's own.
2. Times, alternating, in the same run:
   - skopeo: `skopeo copy --all docker://POOL/REPO:TAG dir:OUT/REPO:TAG` per image, one after
     the other (what the sync.sh pipeline does before hard-linking by hand);
   - mirrord: `mirrord export LIST BUNDLE --from registry-storage:POOL` (one CLI process,
     startup included: a registry-storage bundle, blobs hard-linked);
   - for reference, `mirrord export` from the registry over HTTP (`--from docker://POOL`,
     bytes copied and verified), and packing the bundle into a `.tar`.
   Before each, the previous output is deleted and the filesystem synced (not timed).
3. Prints medians (wall, client CPU) and the ratio mirrord/skopeo.
The corpus and pool are kept in --workdir and reused by the next run.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness.images import Image, ImageBuilder
from tests.harness.registry import RegistryServer
from tests.harness.skopeo import run_skopeo, seed

MiB = 1 << 20
REPOS = 24
TAGS = 70
PREFIX = "pool"
MIRRORD = str(Path(sys.executable).with_name("mirrord"))


@dataclass(frozen=True)
class Measure:
    wall: float
    cpu: float


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(action: Callable[[], None]) -> Measure:
    cpu, start = children_cpu(), time.perf_counter()
    action()
    return Measure(time.perf_counter() - start, children_cpu() - cpu)


# -- the corpus -------------------------------------------------------------------------------


def tag_plan() -> list[tuple[int, str]]:
    """(repository index, tag) for 70 tags over 24 repositories (22 x 3, 2 x 2)."""
    plan = []
    for repo in range(REPOS):
        for n in range(3 if repo < TAGS - 2 * REPOS else 2):
            plan.append((repo, f"1.{n}"))
    return plan[:TAGS]


def build(builder: ImageBuilder) -> dict[str, Image]:
    """`repo-NN:TAG` -> image. ~400 MiB unique: 3 bases (60 MiB) + 3.5-4.5 MiB per image."""
    bases = [builder.layer(f"base-{i}", size=(30 - 10 * i) * MiB) for i in range(3)]
    images = {}
    for repo, tag in tag_plan():
        base, name = bases[repo % 3], f"repo-{repo:02d}"
        if repo % 5 == 0:
            children = [
                builder.image(
                    f"{name}:{tag}/{arch}",
                    layers=[base, builder.layer(f"{name}:{tag}/{arch}", size=7 * MiB // 2)],
                    platform=f"linux/{arch}",
                )
                for arch in ("amd64", "arm64")
            ]
            images[f"{name}:{tag}"] = builder.index(f"{name}:{tag}", children)
        else:
            layer = builder.layer(f"{name}:{tag}", size=9 * MiB // 2)
            images[f"{name}:{tag}"] = builder.image(
                f"{name}:{tag}", layers=[base, layer], kind="docker" if repo % 2 else "oci"
            )
    return images


def prepare(workdir: Path) -> tuple[RegistryServer, dict[str, Image], int]:
    """The pool registry (started), its images, and the corpus' unique bytes."""
    builder = ImageBuilder("export-bench", workdir / "store")
    images = build(builder)
    unique: dict[str, int] = {}
    for image in images.values():
        unique.update(image.blobs)
    pool = RegistryServer(workdir / "pool")
    pool.start()
    marker = workdir / "seeded"
    if not marker.exists():
        print(
            f"seeding {len(images)} images ({sum(unique.values()) / MiB:.0f} MiB) with skopeo...",
            flush=True,
        )
        for i, (name, image) in enumerate(images.items()):
            repo, tag = name.split(":")
            layout = builder.write_layout(workdir / "layouts" / f"{i:02d}", {tag: image})
            seed(layout, tag, pool, f"{PREFIX}/{repo}:{tag}", timeout=600)
        marker.write_text("ok")
    return pool, images, sum(unique.values())


# -- the contenders ---------------------------------------------------------------------------


def skopeo_to_dir(pool: RegistryServer, images: dict[str, Image], out: Path) -> None:
    for name in images:
        run_skopeo(
            "copy",
            "--all",
            "--src-tls-verify=false",
            "--src-no-creds",
            f"docker://{pool.host}/{PREFIX}/{name}",
            f"dir:{out / name}",
            timeout=600,
        )


def mirrord_export(list_file: Path, bundle: Path, source: str, *extra: str) -> None:
    subprocess.run(
        [MIRRORD, "export", "-q", str(list_file), str(bundle), "--from", source, *extra],
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=600,
    )


def bytes_under(path: Path) -> int:
    """Bytes of the files written under `path`; a hard link to the pool wrote no data."""
    return sum(
        st.st_size for p in path.rglob("*") if p.is_file() and (st := p.stat()).st_nlink == 1
    )


def main() -> None:
    # SIGTERM unwinds like Ctrl-C, so the pool registry is stopped on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/mirrord-export-bench"))
    args = parser.parse_args()
    workdir: Path = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    pool, images, unique = prepare(workdir)
    try:
        list_file = workdir / "images-list.txt"
        list_file.write_text("".join(f"{name}\n" for name in images))
        storage = f"registry-storage:{pool.storage_dir}:{PREFIX}"
        registry = f"docker://{pool.host}/{PREFIX}"
        out = workdir / "out"
        results: dict[str, list[Measure]] = {}
        sizes: dict[str, int] = {}

        def run(label: str, action: Callable[[], None], target: Path) -> None:
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            # Each contender starts with nothing dirty: mirrord's one syncfs (its bundle's
            # durability point) must not pay for the gigabytes skopeo wrote just before.
            os.sync()
            results.setdefault(label, []).append(timed(action))
            sizes[label] = bytes_under(out) if target.is_dir() else target.stat().st_size

        for i in range(args.runs):
            print(f"run {i + 1}/{args.runs}", flush=True)
            run(
                "skopeo copy --all … dir: (per image)",
                lambda: skopeo_to_dir(pool, images, out),
                out,
            )
            run(
                "mirrord export --from registry-storage:",
                lambda: mirrord_export(list_file, out / "b", storage),
                out,
            )
            run(
                "mirrord export --from docker:// (copies)",
                lambda: mirrord_export(list_file, out / "b", registry, "--src-tls-verify=false"),
                out,
            )
            run(
                "mirrord export … BUNDLE.tar (packed)",
                lambda: mirrord_export(list_file, out / "b.tar", storage),
                out / "b.tar",
            )
        report(results, sizes, unique, len(images))
    finally:
        pool.stop()


def report(
    results: dict[str, list[Measure]], sizes: dict[str, int], unique: int, count: int
) -> None:
    runs = len(next(iter(results.values())))
    print(f"\ncorpus: {count} tags, {REPOS} repositories, {unique / MiB:.0f} MiB unique")
    print(f"medians of {runs} runs, measured alternately in this run")
    print(f"{'':44} {'wall s':>8} {'CPU s':>8} {'new bytes MiB':>14} {'vs skopeo':>10}")
    skopeo = statistics.median(m.wall for m in next(iter(results.values())))
    for label, measures in results.items():
        wall = statistics.median(m.wall for m in measures)
        cpu = statistics.median(m.cpu for m in measures)
        print(f"{label:44} {wall:8.2f} {cpu:8.2f} {sizes[label] / MiB:14.0f} {wall / skopeo:10.3f}")
    print("(new bytes: data written, hard links to the pool not counted)")


if __name__ == "__main__":
    main()
