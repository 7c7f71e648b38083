"""The transfer engine's levers, seen from outside: the persistent blob index drives mounts
across runs, a 429 storm pauses every worker together, immutable tags cost no request."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys

from mirrord.store.records import BlobState
from tests.daemon.conftest import REPOS, Corpus, DaemonEnv, destination_digest
from tests.harness.faultproxy import FaultProxy


def sync(env: DaemonEnv) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mirrord", "sync", "--config", str(env.config)],
        capture_output=True,
        text=True,
        timeout=180,
    )


def uploads(proxy: FaultProxy) -> int:
    return proxy.count(method="PUT", path=r"/blobs/uploads/", status=201)


def test_the_blob_index_survives_a_restart_and_drives_mounts_on_the_next_run(
    daemon_env: tuple[DaemonEnv, FaultProxy, FaultProxy], corpus: Corpus
) -> None:
    env, _, dst_proxy = daemon_env
    repo = REPOS[0]
    env.write_config(env.skopeo_source({repo: ["v0.0.0"]}))
    assert sync(env).returncode == 0
    first_uploads = uploads(dst_proxy)
    assert first_uploads == len(corpus.tags[f"{repo}:v0.0.0"].blobs)
    with contextlib.closing(sqlite3.connect(env.workdir / "mirrord.db")) as db:
        states = db.execute("SELECT state, source FROM blob_locations")
        # The accepted manifest marks its blobs referenced (ECR mounts only those).
        assert set(states) == {(int(BlobState.REFERENCED), "manifest-put")}
    # A second process, a new destination repository for the same image: every blob is known
    # to the database from the first run, so it is mounted, not sent.
    naming = "  - file: {}\n    prefix: other\n".format(env.workdir / "sync.yaml")
    env.write_config(naming)
    dst_proxy.clear_records()
    done = sync(env)
    assert done.returncode == 0, done.stderr
    assert uploads(dst_proxy) == 0
    mounted = [r for r in dst_proxy.records(method="POST", status=201) if "mount=" in r.query]
    assert len(mounted) == len(corpus.tags[f"{repo}:v0.0.0"].blobs)
    assert dst_proxy.count(method="HEAD", path=r"/blobs/") == 0  # the index answered, not HEADs
    assert destination_digest(env.destination, "other/web", "v0.0.0")


def test_a_429_storm_with_retry_after_pauses_every_worker_together(
    daemon_env: tuple[DaemonEnv, FaultProxy, FaultProxy], corpus: Corpus
) -> None:
    env, src_proxy, _ = daemon_env
    repo = REPOS[1]
    src_proxy.respond(429, path=r"/manifests/", retry_after=2, times=1)
    env.write_config(env.skopeo_source({repo: []}), jobs=8)
    done = sync(env)
    assert done.returncode == 0, done.stderr
    [limited] = src_proxy.records(status=429)
    quiet_until = limited.started + 2.0
    grace = 0.25  # requests already on the wire when the 429 came back
    early = [
        r
        for r in src_proxy.records()
        if limited.started + grace < r.started < quiet_until and r.status != 429
    ]
    assert early == [], [(r.method, r.path, r.started - limited.started) for r in early]
    assert len(src_proxy.records(path=r"/manifests/")) > len(corpus.tags_of(repo))


def test_immutable_tags_already_mirrored_cost_no_request(
    daemon_env: tuple[DaemonEnv, FaultProxy, FaultProxy], corpus: Corpus
) -> None:
    env, src_proxy, dst_proxy = daemon_env
    repo = REPOS[2]
    source = env.skopeo_source({repo: ["v0.0.0", "v1.0.0"]})
    env.write_config(source + "    immutable-tags: true\n")
    assert sync(env).returncode == 0
    src_proxy.clear_records()
    dst_proxy.clear_records()
    done = sync(env)
    assert done.returncode == 0, done.stderr
    assert "2 unchanged" in done.stderr
    manifest_requests = src_proxy.count(path=r"/manifests/") + dst_proxy.count(path=r"/manifests/")
    assert manifest_requests == 0
