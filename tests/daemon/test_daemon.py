"""The daemon's promises: full syncs, crash safety, graceful drain, reload, retries, isolation."""

from __future__ import annotations

import re
import signal
import socket
import sqlite3
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from mirrord.store import JobKind, JobState
from tests.daemon.conftest import (
    REPOS,
    Corpus,
    DaemonEnv,
    all_tags_correct,
    destination_digest,
    mirrored_name,
    wait_until,
)
from tests.harness.faultproxy import FaultProxy

EVERY_TAG: dict[str, list[str]] = {repo: [] for repo in REPOS}  # skopeo: `[]` = all tags


def finished_copies(env: DaemonEnv) -> int:
    """Destination tags copied (or found up to date) at least once."""
    return len(
        {j.key for j in env.jobs() if j.kind is JobKind.COPY and j.state is JobState.SUCCEEDED}
    )


def settled(env: DaemonEnv, tags: int) -> bool:
    """Every tag copied, and nothing queued or running any more."""
    states = env.states()
    idle = states.get(JobState.QUEUED, 0) + states.get(JobState.RUNNING, 0) == 0
    return idle and finished_copies(env) == tags


def completed_uploads(proxy: FaultProxy) -> Counter[str]:
    """Blob uploads the destination accepted (201), by digest."""
    digests: Counter[str] = Counter()
    for record in proxy.records(method="PUT", path=r"/blobs/uploads/", status=201):
        match = re.search(r"digest=(sha256(?::|%3A)[0-9a-f]{64})", record.query)
        assert match is not None, record.query
        digests[match.group(1).replace("%3A", ":")] += 1
    return digests


def test_a_full_sync_of_64_tags_completes(
    daemon_env: tuple[DaemonEnv, FaultProxy, FaultProxy], corpus: Corpus
) -> None:
    env, _, dst_proxy = daemon_env
    env.write_config(env.skopeo_source(EVERY_TAG))
    env.start()
    wait_until(lambda: settled(env, len(corpus.tags)), within=120)
    assert all_tags_correct(corpus, env.destination)
    uploads = completed_uploads(dst_proxy)
    assert set(uploads) == set(corpus.blobs)  # every blob arrived: by upload or mount
    assert max(uploads.values()) == 1  # and none of them was uploaded twice
    mounts = [r for r in dst_proxy.records(method="POST", status=201) if "mount=" in r.query]
    assert mounts  # the shared base layer went to the other repositories by mount
    env.signal(signal.SIGTERM)
    assert env.wait() == 0


def test_sigkill_mid_sync_loses_nothing_and_sends_no_finished_blob_twice(
    daemon_env: tuple[DaemonEnv, FaultProxy, FaultProxy], corpus: Corpus
) -> None:
    env, _, dst_proxy = daemon_env
    dst_proxy.latency(0.05)  # slow enough to be caught mid-sync
    env.write_config(env.skopeo_source(EVERY_TAG), jobs=2)
    env.start()
    wait_until(lambda: 5 <= finished_copies(env) < len(corpus.tags), within=120, step=0.02)
    env.signal(signal.SIGKILL)
    env.wait()
    assert env.states().get(JobState.RUNNING, 0) > 0  # it really was killed mid-work
    dst_proxy.clear_rules()
    env.start()  # the restart takes back the dead process's jobs at once
    wait_until(lambda: settled(env, len(corpus.tags)), within=180)
    states = env.states()
    assert states.get(JobState.RUNNING, 0) == 0
    assert states.get(JobState.FAILED, 0) == 0
    assert all_tags_correct(corpus, env.destination)
    uploads = completed_uploads(dst_proxy)
    assert set(uploads) == set(corpus.blobs)
    assert max(uploads.values()) == 1, uploads.most_common(3)
    env.signal(signal.SIGTERM)
    assert env.wait() == 0


def test_sigterm_drains_running_copies_and_exits_zero(
    daemon_env: tuple[DaemonEnv, FaultProxy, FaultProxy], corpus: Corpus
) -> None:
    env, _, dst_proxy = daemon_env
    dst_proxy.latency(0.3, method="PUT", path=r"/manifests/")
    env.write_config(env.skopeo_source({REPOS[0]: []}), jobs=2)
    env.start()
    wait_until(lambda: env.states().get(JobState.RUNNING, 0) > 0, step=0.02)
    env.signal(signal.SIGTERM)
    assert env.wait(within=40) == 0
    states = env.states()
    assert states.get(JobState.RUNNING, 0) == 0  # finished or handed back, never stranded
    assert states.get(JobState.FAILED, 0) == 0
    handed_back = states.get(JobState.QUEUED, 0)
    env.start()  # what was handed back is done by the next start
    wait_until(lambda: env.states().get(JobState.QUEUED, 0) == 0, within=60)
    assert handed_back + finished_copies(env) > 0
    env.signal(signal.SIGTERM)
    assert env.wait() == 0


def test_sighup_while_draining_keeps_the_config_the_daemon_stops_with(
    daemon_env: tuple[DaemonEnv, FaultProxy, FaultProxy], corpus: Corpus
) -> None:
    """A reload racing a stop: the draining daemon does not take on a new config (it would
    build new registry pools and a new schedule only to close them); it says so and stops
    cleanly, and a SIGHUP after its last log line does not kill it either."""
    env, _, dst_proxy = daemon_env
    dst_proxy.latency(2.0, method="PUT", path=r"/manifests/")  # the drain lasts
    env.write_config(env.skopeo_source({REPOS[0]: []}), jobs=2)
    env.start()
    wait_until(lambda: _copies_running(env), step=0.02)
    env.signal(signal.SIGTERM)
    wait_until(lambda: "stopping: draining" in env.log.read_text(), step=0.02)
    env.write_config(env.skopeo_source({REPOS[0]: [], REPOS[1]: []}), jobs=4)
    env.signal(signal.SIGHUP)
    wait_until(lambda: "mirrord stopped" in env.log.read_text(), step=0.01)
    env.signal(signal.SIGHUP)  # after the loop's handlers: it must not kill the process
    assert env.wait(within=40) == 0
    log = env.log.read_text()
    assert "reload ignored: mirrord is stopping" in log
    assert "configuration reloaded" not in log
    assert env.states().get(JobState.FAILED, 0) == 0


def _copies_running(env: DaemonEnv) -> bool:
    return any(j.kind is JobKind.COPY and j.state is JobState.RUNNING for j in env.jobs())


def test_a_database_failure_stops_the_daemon_with_exit_1_so_systemd_restarts_it(
    daemon_env: tuple[DaemonEnv, FaultProxy, FaultProxy], corpus: Corpus
) -> None:
    env, _, _ = daemon_env
    env.write_config(env.skopeo_source({REPOS[0]: []}))
    env.start()
    wait_until(lambda: finished_copies(env) == len(corpus.tags_of(REPOS[0])), within=120)
    # The queue's table disappears under the running daemon (as a lost disk or database would):
    # its next claim fails. Exit 0 here would keep `Restart=on-failure` from restarting it.
    with sqlite3.connect(env.database.removeprefix("sqlite:///"), timeout=30) as db:
        db.execute("ALTER TABLE jobs RENAME TO jobs_gone")
    assert env.wait(within=60) == 1
    log = env.log.read_text()
    assert re.search(r"background task (workers|reaper) died", log)
    assert "no such table: jobs" in log


def test_sighup_with_a_broken_config_keeps_the_old_one_and_a_good_one_applies(
    daemon_env: tuple[DaemonEnv, FaultProxy, FaultProxy], corpus: Corpus
) -> None:
    env, _, _ = daemon_env
    first, second = REPOS[0], REPOS[1]
    env.write_config(env.skopeo_source({first: ["v0.0.0"]}))
    env.start()
    wait_until(lambda: finished_copies(env) == 1)
    good = env.config.read_text()
    env.config.write_text(good.replace("limits:", "limitz:"))
    env.signal(signal.SIGHUP)
    wait_until(lambda: "reload refused" in env.log.read_text())
    assert "limitz" in env.log.read_text()  # the log names what was wrong
    assert env.api("/healthz")["status"] == "ok"
    env.write_config(env.skopeo_source({first: ["v0.0.0"], second: ["v1.0.0"]}))
    env.signal(signal.SIGHUP)
    wait_until(lambda: "configuration reloaded" in env.log.read_text())
    assert env.mirrord("enqueue").returncode == 0  # sync now, with the new config
    wait_until(lambda: destination_digest(env.destination, mirrored_name(second), "v1.0.0"))
    env.signal(signal.SIGTERM)
    assert env.wait() == 0


def test_a_transient_503_is_retried_and_a_missing_tag_fails_alone(
    daemon_env: tuple[DaemonEnv, FaultProxy, FaultProxy], corpus: Corpus
) -> None:
    env, src_proxy, _ = daemon_env
    repo = REPOS[2]
    # More 503s in a row than one request retries: a job attempt fails and is retried later.
    src_proxy.respond(503, path=rf"/{repo}/manifests/(v\d|sha256)", times=7)
    env.write_config(env.skopeo_source({repo: ["v0.0.0", "v1.0.0", "no-such-tag"]}), jobs=1)
    env.start()
    wait_until(lambda: env.states().get(JobState.FAILED, 0) == 1 and finished_copies(env) == 2)
    [failed] = [job for job in env.jobs() if job.state is JobState.FAILED]
    assert failed.key.endswith(":no-such-tag")
    assert failed.reason == "manifest_unknown"
    assert failed.attempts == 1  # permanent: not retried
    listing = env.mirrord("jobs", "--state", "failed")
    assert "no-such-tag" in listing.stdout
    assert "manifest_unknown" in listing.stdout
    retried = [job for job in env.jobs() if job.state is JobState.SUCCEEDED and job.attempts > 1]
    assert retried  # the 503s cost attempts, not the result
    assert src_proxy.count(status=503) == 7
    env.signal(signal.SIGTERM)
    assert env.wait() == 0


def test_systemd_hears_ready_only_once_a_reload_is_safe_and_stopping_on_sigterm(
    daemon_env: tuple[DaemonEnv, FaultProxy, FaultProxy],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Type=notify: systemd holds a `reload` back until READY=1. Before the signal handlers
    are in, SIGHUP's default action would kill the daemon (exit 129, which
    Restart=on-failure does not restart)."""
    env, _, _ = daemon_env
    env.write_config(env.skopeo_source({REPOS[0]: ["v0.0.0"]}))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(60)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    with notify:
        env.start()
        assert notify.recv(256) == b"READY=1"
        env.signal(signal.SIGHUP)  # the moment systemd would let `reload` through
        wait_until(lambda: "configuration reloaded" in env.log.read_text())
        env.signal(signal.SIGTERM)
        assert notify.recv(256) == b"STOPPING=1"
    assert env.wait() == 0


def test_sighup_applies_a_new_http_token_and_names_settings_that_need_a_restart(
    daemon_env: tuple[DaemonEnv, FaultProxy, FaultProxy],
) -> None:
    env, _, _ = daemon_env
    token_file = env.workdir / "http.token"
    token_file.write_text("old-token-1\n")
    token_file.chmod(0o600)
    sources = env.skopeo_source({REPOS[0]: ["v0.0.0"]})
    env.write_config(sources, extra="http: {token-file: http.token}\n")
    env.start()

    def status(token: str) -> int:
        request = urllib.request.Request(
            f"http://{env.listen}/api/status", headers={"Authorization": f"Bearer {token}"}
        )
        try:
            with urllib.request.urlopen(request) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    assert status("old-token-1") == 200
    token_file.write_text("new-token-2\n")  # the old one leaked: revoke it
    env.config.write_text(env.config.read_text().replace("level: info", "level: debug"))
    env.signal(signal.SIGHUP)
    wait_until(lambda: "configuration reloaded" in env.log.read_text())
    assert (status("old-token-1"), status("new-token-2")) == (401, 200)
    assert "log changed: it takes effect when mirrord restarts" in env.log.read_text()
    env.signal(signal.SIGTERM)
    assert env.wait() == 0


def test_reloads_do_not_leak_the_connections_of_the_pools_they_replace(
    daemon_env: tuple[DaemonEnv, FaultProxy, FaultProxy],
) -> None:
    env, _, _ = daemon_env
    env.write_config(env.skopeo_source({REPOS[0]: ["v0.0.0"]}))
    process = env.start()
    wait_until(lambda: settled(env, 1))

    def sockets() -> int:
        fds = Path(f"/proc/{process.pid}/fd")
        return sum(1 for fd in fds.iterdir() if str(fd.readlink()).startswith("socket:"))

    def reload_and_sync(n: int) -> None:
        env.signal(signal.SIGHUP)
        wait_until(lambda: env.log.read_text().count("configuration reloaded") == n)
        assert env.mirrord("enqueue").returncode == 0
        wait_until(lambda: len({j.run_id for j in env.jobs()}) == n + 1 and settled(env, 1))

    reload_and_sync(1)  # connections of a warm daemon: one pool, open
    before = sockets()
    for n in range(2, 7):  # each leaked pool held ~6 sockets
        reload_and_sync(n)
    assert sockets() <= before + 2  # each replaced pool closed, not kept until exit
    env.signal(signal.SIGTERM)
    assert env.wait() == 0
