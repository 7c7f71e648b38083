"""`mirrord sync --config FILE`: the nightly one-shot, its exit codes, and operator commands."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from mirrord.store import JobState
from tests.daemon.conftest import (
    REPOS,
    Corpus,
    DaemonEnv,
    destination_digest,
    mirrored_name,
    wait_until,
)
from tests.harness.faultproxy import FaultProxy


def sync(env: DaemonEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mirrord", "sync", "--config", str(env.config), *args],
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_all_succeeded_exits_0_and_reports_every_tag(
    daemon_env: tuple[DaemonEnv, FaultProxy, FaultProxy], corpus: Corpus
) -> None:
    env, _, _ = daemon_env
    repo = REPOS[0]
    env.write_config(env.skopeo_source({repo: []}))
    report, digests = env.workdir / "report.json", env.workdir / "digests.txt"
    done = sync(env, "--report", str(report), "--digestfile", str(digests))
    assert done.returncode == 0, done.stderr
    tags = corpus.tags_of(repo)
    entries = [e for e in json.loads(report.read_text())["jobs"] if e["kind"] == "copy"]
    assert sorted(e["destination"].rsplit(":", 1)[1] for e in entries) == sorted(tags)
    for entry in entries:
        tag = entry["destination"].rsplit(":", 1)[1]
        assert entry["digest"] == tags[tag].digest
        assert entry["state"] == "succeeded"
    lines = digests.read_text().splitlines()
    assert len(lines) == len(tags)
    assert all(line.split()[1].startswith("docker://") for line in lines)
    again = sync(env)  # nothing changed: every tag is skipped
    assert again.returncode == 0
    assert f"0 copied, {len(tags)} unchanged, 0 failed" in again.stderr


def test_some_failed_exits_3_and_names_them_then_retry_fixes_them(
    daemon_env: tuple[DaemonEnv, FaultProxy, FaultProxy], corpus: Corpus
) -> None:
    env, _, _ = daemon_env
    repo = REPOS[1]
    env.write_config(env.skopeo_source({repo: ["v0.0.0", "not-yet"]}))
    done = sync(env)
    assert done.returncode == 3
    assert "not-yet" in done.stderr
    assert "manifest_unknown" in done.stderr
    assert destination_digest(env.destination, mirrored_name(repo), "v0.0.0")
    corpus.registry.tag_on_disk(repo, "not-yet", corpus.tags[f"{repo}:v0.0.0"].digest)
    retried = env.mirrord("retry", "--failed")
    assert retried.returncode == 0, retried.stderr
    assert sync(env).returncode == 0  # the retried job runs along with the new run
    assert destination_digest(env.destination, mirrored_name(repo), "not-yet")
    assert not [j for j in env.jobs() if j.state is JobState.QUEUED]


def test_history_is_bounded_from_one_nightly_sync_to_the_next(
    daemon_env: tuple[DaemonEnv, FaultProxy, FaultProxy], corpus: Corpus
) -> None:
    env, _, _ = daemon_env
    repo = REPOS[2]
    per_run = len(corpus.tags_of(repo)) + 1  # a copy job per tag and the listing
    env.write_config(env.skopeo_source({repo: []}), extra=f"history: {{keep-jobs: {per_run}}}\n")
    report = env.workdir / "report.json"
    for _ in range(3):
        done = sync(env, "--report", str(report))
        assert done.returncode == 0, done.stderr
        assert len(json.loads(report.read_text())["jobs"]) == per_run  # reported in full
    jobs = env.jobs()
    assert len(jobs) == per_run  # three runs' worth without the bound
    assert len({job.run_id for job in jobs}) == 1


def test_a_bad_config_exits_2_naming_file_line_and_key(
    daemon_env: tuple[DaemonEnv, FaultProxy, FaultProxy],
) -> None:
    env, _, _ = daemon_env
    env.write_config(env.skopeo_source({REPOS[0]: []}), extra="retyr: {attempts: 3}\n")
    done = sync(env)
    assert done.returncode == 2
    assert "config.yaml:" in done.stderr
    assert "retyr" in done.stderr
    assert "did you mean" in done.stderr.lower()
    assert "retry" in done.stderr
    assert "Traceback" not in done.stderr


def test_status_and_cancel_work_against_the_database_of_a_running_daemon(
    daemon_env: tuple[DaemonEnv, FaultProxy, FaultProxy], corpus: Corpus
) -> None:
    """A cancelled copy stops: it used to run on until the next lease renewal (20 s), push
    the tag, and be logged and counted as copied."""
    env, _, dst_proxy = daemon_env
    stall = 8.0  # blob uploads hang this long: the copy is cancelled before they return
    dst_proxy.stall(method="PUT", path=r"/blobs/uploads/", seconds=stall)
    env.write_config(env.skopeo_source({REPOS[2]: ["v0.0.0"]}))
    env.start()
    wait_until(lambda: dst_proxy.count(method="PUT", path=r"/blobs/uploads/") > 0)
    status = env.mirrord("status", "--json")
    assert status.returncode == 0
    assert json.loads(status.stdout)["queue"]["running"] == 1
    [running] = [j for j in env.jobs() if j.state is JobState.RUNNING]
    assert env.mirrord("cancel", str(running.id)).returncode == 0
    wait_until(lambda: "cancelled while running" in env.log.read_text())
    assert env.api("/api/status")["queue"]["cancelled"] == 1
    # its open upload sessions were cancelled, not left for the registry's purge
    wait_until(lambda: dst_proxy.count(method="DELETE", path=r"/blobs/uploads/") >= 1)
    time.sleep(stall + 1)  # the stalled uploads have returned: a copy still running goes on
    assert dst_proxy.count(method="PUT", path=r"/manifests/") == 0  # the tag was not pushed
    env.signal(signal.SIGTERM)
    assert env.wait() == 0
    assert f"{running.key}: copied" not in env.log.read_text()


def test_a_job_cancelled_by_an_operator_makes_the_sync_exit_3_naming_it(
    daemon_env: tuple[DaemonEnv, FaultProxy, FaultProxy], corpus: Corpus
) -> None:
    env, _, dst_proxy = daemon_env
    dst_proxy.stall(method="PUT", path=r"/manifests/", seconds=30)
    env.write_config(env.skopeo_source({REPOS[2]: ["v0.0.0"]}))
    nightly = subprocess.Popen(
        [sys.executable, "-m", "mirrord", "sync", "--config", str(env.config)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: env.states().get(JobState.RUNNING, 0) == 1)
        [running] = [j for j in env.jobs() if j.state is JobState.RUNNING]
        assert env.mirrord("cancel", str(running.id)).returncode == 0
        _, stderr = nightly.communicate(timeout=120)
    finally:
        nightly.kill()
    assert nightly.returncode == 3, stderr  # not "every job succeeded"
    assert f"cancelled: {running.key}: cancelled" in stderr
    assert "1 cancelled" in stderr
