"""What an operator reads from a running daemon: /metrics, /api/status, /api/jobs, `mirrord status`.

Every test runs the real `mirrord run` against real registries and asserts the values a user
would look at on a dashboard, not the internals that produce them.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from tests.harness.faultproxy import MakeFaultProxy
from tests.harness.images import ImageBuilder
from tests.harness.registry import MakeRegistry
from tests.ops.conftest import StartDaemon
from tests.ops.support import (
    Samples,
    daemon_config,
    mirrord_cli,
    seed_images,
    skopeo_source,
)

MiB = 1 << 20


def assert_labels_bounded(samples: Samples, forbidden: tuple[str, ...]) -> None:
    """No label value is a URL, a digest, userinfo, a repository or a tag."""
    for sample in samples.rows:
        for key, value in sample.labels.items():
            assert "://" not in value, sample
            assert "@" not in value, sample
            assert "sha256" not in value, sample
            assert value not in forbidden, (key, sample)


async def test_a_sync_shows_tags_bytes_mounts_and_last_success(
    tmp_path: Path,
    make_registry: MakeRegistry,
    image_builder: ImageBuilder,
    start_daemon: StartDaemon,
) -> None:
    source, mirror = make_registry(), make_registry()
    base = image_builder.layer("base", size=2 * MiB)  # in both repositories: uploaded once
    images = {
        f"app/{repo}:{tag}": image_builder.image(
            f"{repo}-{tag}", layers=[base, image_builder.layer(f"{repo}-{tag}")]
        )
        for repo, tag in (("one", "v1"), ("one", "v2"), ("two", "v1"))
    }
    unique_bytes = seed_images(image_builder, source, tmp_path, images)
    unique_blobs = len({d for image in images.values() for d in image.blobs})
    apps = skopeo_source(tmp_path, "apps", source.host, {"app/one": [], "app/two": ["v1"]})
    config = daemon_config(tmp_path, destination=mirror.host, sources=[apps])

    started = time.time()
    daemon = start_daemon(config)
    await daemon.wait_healthy()
    samples = await daemon.wait_for_metrics(
        lambda s: s.value("mirrord_source_last_run_status", source="apps", status="succeeded") == 1
    )

    assert samples.value("mirrord_tags_total", result="copied") == 3
    assert samples.value("mirrord_tags_total", result="skipped") == 0
    assert samples.value("mirrord_destination_written_bytes_total", registry=mirror.host) == (
        unique_bytes
    )
    assert samples.value("mirrord_source_read_bytes_total", registry=source.host) == unique_bytes
    assert samples.value("mirrord_blobs_total", outcome="uploaded") == unique_blobs
    assert samples.value("mirrord_blobs_total", outcome="mounted") > 0
    assert samples.value("mirrord_blobs_total", outcome="failed") == 0
    assert samples.value("mirrord_blobs_total") == 3 * 3  # every image has 3 blobs
    last_success = samples.value("mirrord_source_last_success_timestamp_seconds", source="apps")
    assert started <= last_success <= time.time()
    assert samples.value("mirrord_source_pending_jobs", source="apps") == 0
    assert samples.value("mirrord_jobs_finished_total", kind="copy", outcome="copied") == 3
    assert samples.value("mirrord_jobs_finished_total", outcome="failed") == 0
    assert samples.value("mirrord_job_duration_seconds_count", kind="copy") == 3
    assert samples.value("mirrord_jobs", state="succeeded") == 4  # 3 copies + 1 listing
    assert samples.value("mirrord_queue_depth") == 0
    assert samples.value("mirrord_transfers_in_flight") == 0
    assert (
        samples.value(
            "mirrord_registry_requests_total",
            registry=mirror.host,
            method="manifest_put",
            status="201",
        )
        == 3
    )
    assert samples.value("mirrord_registry_tls_mode", registry=mirror.host, mode="plain-http") == 1
    assert samples.value("mirrord_scheduler_running") == 1
    assert samples.value("mirrord_build_info") == 1
    assert_labels_bounded(samples, ("v1", "v2", "app/one", "app/two", "mirror/one"))

    # Nothing changed at the source: the next run skips every tag and moves no bytes.
    await mirrord_cli("enqueue", "--config", str(config))
    samples = await daemon.wait_for_metrics(
        lambda s: s.value("mirrord_tags_total", result="skipped") == 3
    )
    assert samples.value("mirrord_tags_total", result="copied") == 3
    assert samples.value("mirrord_destination_written_bytes_total") == unique_bytes

    # `mirrord status` reads the database and shows what /api/status shows (once the second
    # run is closed: the metrics may see its last job before the run's own status changes).
    api = await daemon.wait_for_api(
        "/api/status", lambda facts: [r["status"] for r in facts["runs"]] == ["succeeded"] * 2
    )
    shown = json.loads((await mirrord_cli("status", "--config", str(config), "--json")).stdout)
    for facts in (api, shown):
        facts.pop("oldest_queued_seconds")
    assert shown == api
    assert [s["name"] for s in api["sources"]] == ["apps"]
    assert api["sources"][0]["last_run_status"] == "succeeded"
    assert daemon.stop() == 0


async def test_a_failing_source_shows_in_failure_counters_and_api_reasons(
    tmp_path: Path,
    make_registry: MakeRegistry,
    image_builder: ImageBuilder,
    fault_proxy: MakeFaultProxy,
    start_daemon: StartDaemon,
) -> None:
    source, mirror = make_registry(), make_registry()
    seed_images(
        image_builder,
        source,
        tmp_path,
        {
            "app/good:v1": image_builder.image("good"),
            "app/broken:v1": image_builder.image("broken", layers=[image_builder.layer("big")]),
            "app/fragile:v1": image_builder.image("fragile"),
        },
    )
    flaky = fault_proxy(source)
    flaky.respond(404, method="GET", path="/v2/app/broken/blobs/")  # the source lost a layer
    corrupt = fault_proxy(source)
    corrupt.corrupt(method="GET", path="/blobs/")  # every blob arrives with one byte flipped
    sources = [
        skopeo_source(tmp_path, "good", source.host, {"app/good": ["v1"]}),
        skopeo_source(tmp_path, "broken", flaky.host, {"app/broken": ["v1"]}),
        skopeo_source(tmp_path, "missing", source.host, {"app/good": ["no-such-tag"]}),
        skopeo_source(tmp_path, "corrupt", corrupt.host, {"app/fragile": ["v1"]}),
    ]
    daemon = start_daemon(daemon_config(tmp_path, destination=mirror.host, sources=sources))
    await daemon.wait_healthy()
    samples = await daemon.wait_for_metrics(
        lambda s: (
            s.value("mirrord_source_last_run_status", status="running") == 0
            and s.value("mirrord_source_last_run_status") == 4
        )
    )

    failed = {"kind": "copy", "outcome": "failed"}
    assert samples.value("mirrord_jobs_finished_total", **failed, reason="blob_unknown") == 1
    assert samples.value("mirrord_jobs_finished_total", **failed, reason="manifest_unknown") == 1
    assert samples.value("mirrord_jobs_finished_total", **failed, reason="digest_mismatch") == 1
    # A blob is refused, re-fetched once and refused again (its siblings may be too).
    assert samples.value("mirrord_digest_mismatches_total", registry=corrupt.host) >= 2
    assert samples.value("mirrord_digest_mismatches_total", registry=source.host) == 0
    assert samples.value("mirrord_jobs_finished_total", kind="copy", outcome="copied") == 1
    assert samples.value("mirrord_blobs_total", outcome="failed") >= 1
    assert (
        samples.value(
            "mirrord_registry_requests_total", registry=flaky.host, method="blob_get", status="404"
        )
        >= 1
    )
    assert samples.value("mirrord_jobs", state="failed") == 3
    for name, last in (
        ("good", "succeeded"),
        ("broken", "failed"),
        ("missing", "failed"),
        ("corrupt", "failed"),
    ):
        assert samples.value("mirrord_source_last_run_status", source=name, status=last) == 1
    assert samples.has("mirrord_source_last_success_timestamp_seconds", source="good")
    assert not samples.has("mirrord_source_last_success_timestamp_seconds", source="broken")

    status, body = await daemon.get("/api/jobs?state=failed")
    assert status == 200
    reasons = {job["source"]: (job["reason"], job["error"]) for job in body["jobs"]}
    assert reasons.keys() == {"broken", "missing", "corrupt"}
    assert reasons["corrupt"][0] == "digest_mismatch"
    assert reasons["broken"][0] == "blob_unknown"
    assert "404" in reasons["broken"][1]
    assert reasons["missing"][0] == "manifest_unknown"
    assert "no-such-tag" in reasons["missing"][1]
    _, facts = await daemon.get("/api/status")
    assert {job["reason"] for job in facts["recent_failures"]} == {
        "blob_unknown",
        "manifest_unknown",
        "digest_mismatch",
    }
    assert daemon.stop() == 0

    # One log line per job outcome, with the facts as fields.
    outcomes = [r for r in daemon.log_records() if r.get("logger") == "mirrord.worker"]
    by_source = {(r["source"], r["kind"]): r for r in outcomes}
    assert by_source["good", "copy"]["outcome"] == "copied"
    assert by_source["good", "copy"]["digest"].startswith("sha256:")
    assert by_source["broken", "copy"]["reason"] == "blob_unknown"
    assert by_source["broken", "copy"]["level"] == "error"
    assert len([r for r in outcomes if r["kind"] == "copy"]) == 4


async def test_rate_limits_show_as_429s_backoff_and_remaining_quota(
    tmp_path: Path,
    make_registry: MakeRegistry,
    image_builder: ImageBuilder,
    fault_proxy: MakeFaultProxy,
    start_daemon: StartDaemon,
) -> None:
    source, mirror = make_registry(), make_registry()
    seed_images(image_builder, source, tmp_path, {"app/hub:v1": image_builder.image("hub")})
    hub = fault_proxy(source)
    hub.respond(
        429,
        path="/manifests/",
        retry_after=120,
        headers={"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "0;w=21600"},
    )
    sources = [skopeo_source(tmp_path, "hub", hub.host, {"app/hub": ["v1"]})]
    config = daemon_config(tmp_path, destination=mirror.host, sources=sources)
    daemon = start_daemon(config, "--drain", "1")
    await daemon.wait_healthy()

    deferred = {"kind": "copy", "outcome": "retried", "reason": "rate_limited"}
    samples = await daemon.wait_for_metrics(
        lambda s: (
            s.value("mirrord_registry_rate_limited_total", registry=hub.host) >= 1
            and s.value("mirrord_registry_backoff_seconds", registry=hub.host) > 0
            # The job waits out the 2-minute pause in the queue, not in a slot.
            and s.value("mirrord_jobs_finished_total", **deferred) == 1
            and s.value("mirrord_jobs", state="queued") == 1
        )
    )
    assert 60 < samples.value("mirrord_registry_backoff_seconds", registry=hub.host) <= 120
    assert samples.value("mirrord_registry_ratelimit_remaining", registry=hub.host) == 0
    assert daemon.stop(signal.SIGTERM) == 0
