"""mirrord vs skopeo sync, same corpus, same run: `.venv/bin/python -m bench.run`.

For each repetition and each link (loopback, and a WAN-like proxy with 40 ms RTT and
400 Mbit/s in front of the source), both tools sync the corpus cold (into an empty
destination) and then warm (nothing changed):

    skopeo sync --src yaml --dest docker --all --preserve-digests SYNC.yaml DEST/mirror
    mirrord sync --src yaml --dest docker --all SYNC.yaml DEST/mirror   (same arguments)

Each run is a child process: wall time and CPU (user+sys) come from wait4(), peak RSS from
the child's own VmHWM (tests/harness/procmem.py: wait4's would include this script's). The
destination registry's own read counter (Linux `rchar`) measures bytes uploaded, so no relay
competes with the tools for CPU; the registries' access logs count requests. mirrord is
byte-compiled first, as an installed package is. Medians over the repetitions, ratios from the same run. Extra parts:
2,000 small tags warm, and one 1 GiB layer (peak RSS).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.corpus import Corpus, cached_source
from tests.harness.procmem import PeakRss
from tests.harness.registry import RegistryServer

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
MIRRORD = [sys.executable, "-m", "mirrord"]
WAN_RTT_MS, WAN_MBIT = 40, 400
_REQUEST = re.compile(r'"(GET|HEAD|PUT|POST|PATCH|DELETE) /v2/')


@dataclass
class Measure:
    wall: float
    cpu: float
    rss_mib: float
    uploaded: int
    requests_src: int
    requests_dst: int
    ok: bool


@dataclass
class Results:
    runs: dict[tuple[str, str, str], list[Measure]] = field(default_factory=dict)

    def add(self, link: str, tool: str, phase: str, measure: Measure) -> None:
        self.runs.setdefault((link, tool, phase), []).append(measure)

    def median(self, link: str, tool: str, phase: str, attr: str) -> float:
        values: list[float] = [getattr(m, attr) for m in self.runs[(link, tool, phase)]]
        return statistics.median(values)


class Proxy:
    """bench/wanproxy.py as a child process (its CPU is never charged to the tools)."""

    def __init__(self, upstream: str, stats: Path, rtt_ms: float = 0, mbit: float = 0) -> None:
        self.port = _free_port()
        self.stats = stats
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "bench" / "wanproxy.py"),
                "--listen",
                f"127.0.0.1:{self.port}",
                "--upstream",
                upstream,
                "--rtt-ms",
                str(rtt_ms),
                "--mbit",
                str(mbit),
                "--stats",
                str(stats),
            ],
        )
        _wait_port(self.port)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=10)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int) -> None:
    import socket

    for _ in range(200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {port}")


def count_requests(log: Path, since: int) -> tuple[int, int]:
    """(requests logged after byte offset `since`, new offset)."""
    data = log.read_bytes()
    return len(_REQUEST.findall(data[since:].decode(errors="replace"))), len(data)


def run_child(
    argv: list[str], env: dict[str, str] | None = None
) -> tuple[float, float, float, bool]:
    """(wall, cpu, peak RSS MiB, ok) of one child process."""
    os.sync()  # the previous run's dirty pages are written back before this one starts
    with tempfile.TemporaryFile() as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
        peak = PeakRss(process.pid)  # Popen returns once the child has exec'd
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        rss = peak.stop() / 2**20
        stderr.seek(0)
        errors = stderr.read().decode(errors="replace")
    ok = os.waitstatus_to_exitcode(status) == 0
    if not ok:
        print(f"  ! {' '.join(argv[:4])} failed:\n{errors[-2000:]}", flush=True)
    return wall, usage.ru_utime + usage.ru_stime, rss, ok


def sync_file(work: Path, source_host: str, corpus: Corpus) -> Path:
    lines = [f"{source_host}:", "  tls-verify: false", "  images:"]
    lines += [f"    {repo}: []" for repo in corpus.repos]
    path = work / "sync.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def command(tool: str, yaml_file: Path, dest: str, state: Path) -> list[str]:
    common = ["--src", "yaml", "--dest", "docker", "--all", "--dest-tls-verify=false"]
    if tool == "skopeo":
        return ["skopeo", "sync", *common, "--preserve-digests", str(yaml_file), f"{dest}/mirror"]
    return [
        *MIRRORD,
        "sync",
        *common,
        "-q",
        "--state-db",
        str(state),
        str(yaml_file),
        f"{dest}/mirror",
    ]


def one_tool(
    tool: str,
    link: str,
    source: RegistryServer,
    source_host: str,
    corpus: Corpus,
    work: Path,
    results: Results,
) -> None:
    """A cold then a warm sync into a fresh destination."""
    dest = RegistryServer(work / f"dest-{tool}-{link}", "anonymous")
    dest.start()
    yaml_file = sync_file(work, source_host, corpus)
    state = work / f"state-{tool}-{link}.db"
    src_offset = source.log_path.stat().st_size  # the source's log grows over every run
    dst_offset = 0
    try:
        for phase in ("cold", "warm"):
            before = dest.bytes_received()
            wall, cpu, rss, ok = run_child(command(tool, yaml_file, dest.host, state))
            uploaded = dest.bytes_received() - before
            src_requests, src_offset = count_requests(source.log_path, src_offset)
            dst_requests, dst_offset = count_requests(dest.log_path, dst_offset)
            measure = Measure(wall, cpu, rss, uploaded, src_requests, dst_requests, ok)
            results.add(link, tool, phase, measure)
            print(
                f"  {link:8} {tool:7} {phase}: {wall:7.2f}s cpu {cpu:6.2f}s rss {rss:5.0f} MiB "
                f"up {uploaded / 2**20:7.1f} MiB req {src_requests}+{dst_requests}"
                f"{'' if ok else '  FAILED'}",
                flush=True,
            )
    finally:
        dest.stop()
        shutil.rmtree(dest.workdir, ignore_errors=True)


def row(results: Results, key: tuple[str, str, str], unique: int) -> str:
    link, tool, phase = key

    def m(attr: str) -> float:
        return results.median(link, tool, phase, attr)

    requests = m("requests_src") + m("requests_dst")
    return (
        f"{link:8} {phase:5} {tool:8} {m('wall'):8.2f} {m('cpu'):7.2f} {m('rss_mib'):8.0f} "
        f"{m('uploaded') / unique:13.2f} {requests:9.0f}"
    )


def ratio_line(results: Results, link: str, phase: str, bound: float) -> str:
    wall = results.median(link, "mirrord", phase, "wall")
    ratio = wall / results.median(link, "skopeo", phase, "wall")
    cpu = results.median(link, "mirrord", phase, "cpu") / max(
        results.median(link, "skopeo", phase, "cpu"), 1e-9
    )
    extra = f", {wall / bound:.2f}x the bandwidth bound" if (link, phase) == ("wan", "cold") else ""
    return f"{'':8} {phase:5} mirrord/skopeo: wall {ratio:.2f}x, cpu {cpu:.2f}x{extra}"


def print_table(results: Results, corpus: Corpus) -> None:
    unique = corpus.unique_bytes
    bound = unique / (WAN_MBIT * 1e6 / 8)
    print(
        f"\ncorpus: {len(corpus.tags)} tags, {len(corpus.repos)} repositories, "
        f"{unique / 2**20:.0f} MiB unique; WAN bandwidth bound {bound:.1f}s\n"
    )
    head = (
        f"{'link':8} {'phase':5} {'tool':8} {'wall s':>8} {'cpu s':>7} {'rss MiB':>8} "
        f"{'upload/unique':>13} {'requests':>9}"
    )
    print(head)
    print("-" * len(head))
    for link in ("loopback", "wan"):
        for phase in ("cold", "warm"):
            keys = [(link, tool, phase) for tool in ("skopeo", "mirrord")]
            present = [key for key in keys if key in results.runs]
            for key in present:
                print(row(results, key, unique))
            if len(present) == 2:
                print(ratio_line(results, link, phase, bound))
        print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--links", default="loopback,wan")
    parser.add_argument("--tools", default="skopeo,mirrord")
    parser.add_argument("--extras", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "mirrord")], check=True)
    source, corpus = cached_source(OUT)
    work = OUT / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    results = Results()
    wan = Proxy(source.host, work / "wan.json", WAN_RTT_MS, WAN_MBIT)
    try:
        for rep in range(args.repeat):
            print(f"repetition {rep + 1}/{args.repeat}", flush=True)
            for link in args.links.split(","):
                host = source.host if link == "loopback" else wan.host
                for tool in args.tools.split(","):
                    one_tool(tool, link, source, host, corpus, work, results)
        print_table(results, corpus)
        if args.extras:
            from bench.extras import run_extras

            run_extras(work)
    finally:
        wan.stop()
        source.stop()


if __name__ == "__main__":
    main()
