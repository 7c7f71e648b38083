"""Benchmark: `mirrord export` from a local registry-storage pool vs `skopeo copy` to `dir:`.

    .venv/bin/python bench/export_bench.py [--runs 3] [--samples 3] [--workdir DIR]

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
   Each writes into a new directory after a `sync` (not timed); outputs are deleted only
   after the last measurement (ext4 scans past recently freed inodes when it allocates, which
   would charge one contender for the files the other just deleted). mirrord is byte-compiled
   first, as `pip install` does. The short mirrord export is sampled `--samples` times a round.
3. Prints medians (wall, client CPU), the spread, and the ratio mirrord/skopeo.
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
    parser.add_argument(
        "--samples", type=int, default=3, help="mirrord export (from storage) runs per round"
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/mirrord-export-bench"))
    args = parser.parse_args()
    workdir: Path = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    compile_package()
    pool, images, unique = prepare(workdir)
    outputs = workdir / "out"
    shutil.rmtree(outputs, ignore_errors=True)
    try:
        list_file = workdir / "images-list.txt"
        list_file.write_text("".join(f"{name}\n" for name in images))
        storage = f"registry-storage:{pool.storage_dir}:{PREFIX}"
        registry = f"docker://{pool.host}/{PREFIX}"
        results: dict[str, list[Measure]] = {}
        sizes: dict[str, int] = {}

        def run(label: str, action: Callable[[Path], None], name: str = "") -> None:
            # A new directory per action, and no deletion before the last measurement: ext4
            # scans past inodes freed in the last minutes when it allocates new ones, which
            # would charge the thousands skopeo's output held to the next contender.
            out = outputs / str(sum(map(len, results.values())))
            out.mkdir(parents=True)
            # Nothing dirty at the start: mirrord's one syncfs (its bundle's durability
            # point) must not flush the gigabytes skopeo wrote just before.
            os.sync()
            results.setdefault(label, []).append(timed(lambda: action(out / name)))
            target = out / name
            sizes[label] = bytes_under(out) if target.is_dir() else target.stat().st_size

        for i in range(args.runs):
            print(f"run {i + 1}/{args.runs}", flush=True)
            run(
                "skopeo copy --all … dir: (per image)", lambda out: skopeo_to_dir(pool, images, out)
            )
            # A short run feels every load spike of a shared machine: sample it more often.
            for _ in range(args.samples):
                run(
                    "mirrord export --from registry-storage:",
                    lambda out: mirrord_export(list_file, out, storage),
                    "b",
                )
            run(
                "mirrord export --from docker:// (copies)",
                lambda out: mirrord_export(list_file, out, registry, "--src-tls-verify=false"),
                "b",
            )
            run(
                "mirrord export … BUNDLE.tar (packed)",
                lambda out: mirrord_export(list_file, out, storage),
                "b.tar",
            )
        report(results, sizes, unique, len(images))
    finally:
        pool.stop()
        shutil.rmtree(outputs, ignore_errors=True)


def compile_package() -> None:
    """Byte-compile mirrord, as `pip install` does: with PYTHONDONTWRITEBYTECODE set (as in
    some CI images) an editable install would otherwise compile every module on every run."""
    package = Path(__file__).resolve().parent.parent / "mirrord"
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=True)


def report(
    results: dict[str, list[Measure]], sizes: dict[str, int], unique: int, count: int
) -> None:
    print(f"\ncorpus: {count} tags, {REPOS} repositories, {unique / MiB:.0f} MiB unique")
    print("medians, measured alternately in this run; n = samples, range = min-max wall")
    header = f"{'':42} {'n':>3} {'wall s':>8} {'range s':>13} {'CPU s':>7} {'new MiB':>8}"
    print(f"{header} {'vs skopeo':>10}")
    skopeo = statistics.median(m.wall for m in next(iter(results.values())))
    for label, measures in results.items():
        walls = [m.wall for m in measures]
        wall, cpu = statistics.median(walls), statistics.median(m.cpu for m in measures)
        spread = f"{min(walls):.2f}-{max(walls):.2f}"
        print(
            f"{label:42} {len(walls):3} {wall:8.2f} {spread:>13} {cpu:7.2f} "
            f"{sizes[label] / MiB:8.0f} {wall / skopeo:10.3f}"
        )
    print("(new MiB: data written; hard links to the pool write none)")


if __name__ == "__main__":
    main()
