"""The transfer engine's levers, seen from outside: the persistent blob index drives mounts
across runs, a 429 storm pauses every worker together, immutable tags cost no request."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys

from mirrord.store import JobState
from mirrord.store.records import BlobState
from tests.daemon.conftest import REPOS, Corpus, DaemonEnv, destination_digest, mirrored_name
from tests.harness.faultproxy import FaultProxy, MakeFaultProxy


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


def test_a_long_retry_after_sends_the_job_back_to_the_queue_and_frees_its_slot(
    daemon_env: tuple[DaemonEnv, FaultProxy, FaultProxy],
    corpus: Corpus,
    fault_proxy: MakeFaultProxy,
) -> None:
    env, paused, _ = daemon_env
    other = fault_proxy(corpus.registry)  # the same images, as a second registry
    paused.respond(429, path=r"/manifests/", retry_after=4, times=1)
    files = []
    for name, host, repo, tags in (
        ("paused", paused.host, REPOS[1], ["v0.0.0"]),
        ("other", other.host, REPOS[2], ["v0.0.0", "v1.0.0", "v2.0.0"]),
    ):
        tls = "" if host == env.source else "  tls-verify: false\n"  # plain HTTP, as in skopeo
        path = env.workdir / f"{name}.yaml"
        path.write_text(f"'{host}':\n{tls}  images:\n    {repo}: {tags}\n")
        files.append(f"  - file: {path}\n")
    # One job slot: the paused registry's job must not hold it while the other's wait.
    env.write_config("".join(files), jobs=1, limits="defer-after: 1s")
    done = sync(env)
    assert done.returncode == 0, done.stderr
    for repo, tag in [(REPOS[1], "v0.0.0"), *((REPOS[2], f"v{n}.0.0") for n in range(3))]:
        image = corpus.tags[f"{repo}:{tag}"]
        assert destination_digest(env.destination, mirrored_name(repo), tag) == image.digest
    [limited] = paused.records(status=429)
    pause = (limited.started, limited.started + 4.0)
    assert [r for r in paused.records() if pause[0] < r.started < pause[1]] == []
    meanwhile = [r for r in other.records(path=r"/manifests/") if pause[0] < r.started < pause[1]]
    assert meanwhile, "the other registry's jobs waited for the paused one's slot"
    [deferred] = [
        job for job in env.jobs() if job.key.endswith(f"{mirrored_name(REPOS[1])}:v0.0.0")
    ]
    assert (deferred.state, deferred.attempts) == (JobState.SUCCEEDED, 1)  # the wait was free


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
