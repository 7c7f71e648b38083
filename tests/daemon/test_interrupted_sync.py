"""`mirrord sync --once` stopped before its run ends (Ctrl-C, `--command-timeout`): the jobs
it was running go back to the queue, not left `running` under a process that has exited.
"""

from __future__ import annotations

import signal
import subprocess
import sys

from mirrord.store import JobState
from tests.daemon.conftest import REPOS, Corpus, DaemonEnv, wait_until
from tests.harness.faultproxy import FaultProxy


def as_from_a_shell() -> None:
    """In the child: Ctrl-C's signal as a shell leaves it (default action, not blocked),
    whatever the test process inherited."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def start_sync(env: DaemonEnv, *flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mirrord", *flags, "sync", "--config", str(env.config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=as_from_a_shell,
    )


def test_ctrl_c_during_sync_once_hands_its_running_jobs_back(
    daemon_env: tuple[DaemonEnv, FaultProxy, FaultProxy], corpus: Corpus
) -> None:
    env, src_proxy, _ = daemon_env
    src_proxy.stall(method="GET", path=r"/blobs/sha256:")  # every copy hangs on its first blob
    env.write_config(env.skopeo_source({REPOS[0]: ["v0.0.0", "v1.0.0"]}), jobs=2)
    process = start_sync(env)
    try:
        wait_until(lambda: env.states().get(JobState.RUNNING, 0) == 2, within=60, step=0.05)
        process.send_signal(signal.SIGINT)  # Ctrl-C
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0, stderr
    states = env.states()
    assert states.get(JobState.RUNNING, 0) == 0, (
        f"after Ctrl-C: {states} (jobs stranded as running by an exited process)\n{stderr}"
    )


def test_a_sync_once_that_hits_its_command_timeout_hands_its_running_jobs_back(
    daemon_env: tuple[DaemonEnv, FaultProxy, FaultProxy], corpus: Corpus
) -> None:
    env, src_proxy, _ = daemon_env
    src_proxy.stall(method="GET", path=r"/blobs/sha256:")
    env.write_config(env.skopeo_source({REPOS[1]: ["v0.0.0", "v1.0.0"]}), jobs=2)
    process = start_sync(env, "--command-timeout", "4")
    try:
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert "timed out" in stderr, stderr
    states = env.states()
    assert states.get(JobState.RUNNING, 0) == 0, (
        f"after --command-timeout: {states} (jobs stranded as running)\n{stderr}"
    )
