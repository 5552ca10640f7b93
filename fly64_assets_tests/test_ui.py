"""The study end to end through the real UI: `dagster dev`, a backfill of all 18 partitions, a real browser.

The session's ``dagster dev`` stack (conftest.py: the demo synthetic tree, 5 LSQML epochs, its own
``DAGSTER_HOME``) and its backfill, launched exactly as the UI's "Materialize all" dialog does (GraphQL
``launchPartitionBackfill`` with the five assets and all 18 partition keys). The tests check the outcome through
GraphQL, then open the asset graph, the reconstruction's partitions and checks, and the study report in headless
Chromium (Debian's, driven by Playwright: no browser download) and assert what a person would see there.
Screenshots go to ``$FLY64_TEST_ARTIFACTS/ui`` (else the session's temporary folder), with the server's log.

Without Chromium the tests skip (a failure under CI: ``.ci/run`` installs Chromium).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from urllib.parse import quote

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from fly64_assets.core.bookkeeping import RECONSTRUCTED, SKIPPED
from fly64_assets.core.design import ALL_DATASETS, DOSES
from fly64_assets.defs.reconstruction.partitions import RANGE_END_TAG, RANGE_START_TAG
from fly64_assets_tests.dagster_dev import CHECK_EXECUTIONS, UI_BACKFILL_ASSETS, StudyServer

pytestmark = pytest.mark.timeout(1200)  # the first test here may wait for the session's server and backfill

RECONSTRUCTION = "ptychi_reconstruction"
INPUT_CHECK = "input_data001"
PARTITIONED_ASSETS = {"ptychi_reconstruction", "reconstruction_quality"}
SKIP_REASON = "sparse view not written by Phase D"
SPARSE_KEYS = sorted(dataset.partition_key for dataset in ALL_DATASETS if dataset.view == "sparse")
VIEWPORT = {"width": 1920, "height": 1080}
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
PAGE_TIMEOUT_MS = 90_000

PARTITION_STATS = """
query Stats($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode { partitionStats { numMaterialized numPartitions numFailed numMaterializing } }
  }
}"""

# True once the page's visible text has not changed for `quietMs` (spinners gone, data loaded).
TEXT_UNCHANGED_FOR = """quietMs => {
    const text = document.body ? document.body.innerText : '';
    const seen = window.__fly64Settle;
    if (!seen || seen.text !== text) {
        window.__fly64Settle = {text, since: performance.now()};
        return false;
    }
    return performance.now() - seen.since >= quietMs;
}"""
DECODED_REPORT_IMAGES = (
    "[...document.querySelectorAll('img[src^=\"data:image/png\"]')].filter(i => i.complete && i.naturalWidth > 0).length"
)


def find_chromium() -> str | None:
    """The Chromium executable (env FLY64_CHROMIUM, else the first of the usual names on PATH)."""
    configured = os.environ.get("FLY64_CHROMIUM")
    if configured:
        return configured if Path(configured).exists() else shutil.which(configured)
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium_or_skip() -> str:
    executable = find_chromium()
    if executable is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium); the UI test needs a real browser")
    return executable


def asset_key(name: str) -> dict:
    return {"path": [name]}


def run_tags(run: dict) -> dict[str, str]:
    return {tag["key"]: tag["value"] for tag in run["tags"]}


@pytest.fixture(scope="module")
def page(study_server, study_backfill):
    """One page of Debian's headless Chromium, driven by Playwright (which stops the browser and its driver)."""
    executable = chromium_or_skip()
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root.
        browser = playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"], headless=True
        )
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            yield page
        finally:
            browser.close()


def visible_text(page: Page) -> str:
    """What a person reads: the page's visible text."""
    return page.locator("body").inner_text()


def wait_for_text(page: Page, *needles: str, timeout_ms: float = 60_000) -> str:
    """Wait until every needle is in the visible text, then until that text has stopped changing; returns it."""
    for needle in needles:
        expect(page.locator("body")).to_contain_text(needle, use_inner_text=True, timeout=timeout_ms)
    page.evaluate("delete window.__fly64Settle")
    page.wait_for_function(TEXT_UNCHANGED_FOR, arg=1500, polling=250, timeout=30_000)
    return visible_text(page)


def open_page(page: Page, study: StudyServer, path: str, *needles: str) -> str:
    """Go to a UI page, wait until it shows every needle and has stopped changing; returns its visible text."""
    page.goto(study.server.url + path, wait_until="load")
    return wait_for_text(page, *needles, timeout_ms=PAGE_TIMEOUT_MS)


# --- the backfill, through GraphQL ----------------------------------------------------------------------


def test_backfill_of_the_whole_study_ends_successful(study_server, study_backfill):
    backfill = study_backfill.backfill
    print(f"backfill {study_backfill.backfill_id}: {backfill['status']} in {study_backfill.seconds:.0f} s")
    assert backfill["status"] == "COMPLETED_SUCCESS", backfill
    assert backfill["error"] is None
    statuses = {"/".join(s["assetKey"]["path"]): s for s in backfill["assetBackfillData"]["assetBackfillStatuses"]}
    assert set(statuses) == set(UI_BACKFILL_ASSETS)
    for name in PARTITIONED_ASSETS:
        counts = statuses[name]
        assert (counts["numPartitionsTargeted"], counts["numPartitionsMaterialized"]) == (18, 18), counts
        assert (counts["numPartitionsFailed"], counts["numPartitionsInProgress"]) == (0, 0), counts
    for name in set(UI_BACKFILL_ASSETS) - PARTITIONED_ASSETS:
        assert statuses[name]["materialized"] and not statuses[name]["failed"], statuses[name]
    runs = backfill["runs"]
    assert all(run["status"] == "SUCCESS" for run in runs), [(run_tags(r), r["status"]) for r in runs]
    # BackfillPolicy.single_run: one run per dose (a range of its 6 partitions), then one for the summaries.
    ranges = sorted((run_tags(run).get(RANGE_START_TAG, "-"), run_tags(run).get(RANGE_END_TAG, "-")) for run in runs)
    assert len(runs) == 4, ranges
    assert ranges == sorted([("-", "-")] + [(f"{dose}|baseline_train", f"{dose}|sparse_test") for dose in DOSES]), ranges

    stats = study_server.server.graphql(PARTITION_STATS, {"key": asset_key(RECONSTRUCTION)})["assetNodeOrError"]["partitionStats"]
    assert stats == {"numMaterialized": 18, "numPartitions": 18, "numFailed": 0, "numMaterializing": 0}


def test_the_six_sparse_skips_are_warn_checks_with_their_reason(study_server, study_backfill):
    executions = study_server.server.graphql(CHECK_EXECUTIONS, {"key": asset_key(RECONSTRUCTION), "check": INPUT_CHECK})["assetCheckExecutions"]
    backfill_runs = {run["runId"] for run in study_backfill.backfill["runs"]}
    latest: dict[str, dict] = {}
    for execution in sorted(executions, key=lambda e: e["timestamp"]):
        if execution["runId"] in backfill_runs:
            # Per-partition checks carry their partition; otherwise the run's partition tag says which one.
            assert execution["partition"], "every input_data001 result names its partition"
            latest[execution["partition"]] = execution
    assert sorted(latest) == sorted(dataset.partition_key for dataset in ALL_DATASETS)
    warned = {key: e for key, e in latest.items() if not e["evaluation"]["success"]}
    assert sorted(warned) == SPARSE_KEYS
    for key, execution in warned.items():
        evaluation = execution["evaluation"]
        assert execution["status"] == "FAILED" and evaluation["severity"] == "WARN", (key, execution)
        assert SKIP_REASON in evaluation["description"], (key, evaluation["description"])
    passed = {key: e for key, e in latest.items() if e["evaluation"]["success"]}
    assert len(passed) == 12 and all(e["status"] == "SUCCEEDED" for e in passed.values())


def test_skips_reach_the_summaries_and_the_report(study_server, study_backfill):
    artifacts = study_server.root / "artifacts"
    skips = json.loads((artifacts / "skip_summary.json").read_text())
    assert skips["skipped_count"] == 6 and skips["missing_phase_d_count"] == 6
    assert all(SKIP_REASON in job["reason"] for job in skips["skipped_jobs"])
    manifest = json.loads((artifacts / "reconstruction_manifest.json").read_text())
    assert sorted(r["status"] for r in manifest["execution_results"]) == [RECONSTRUCTED] * 12
    assert len(manifest["missing_jobs"]) == 6
    assert (artifacts / "report" / "study_report.html").is_file()


# --- what a person sees ---------------------------------------------------------------------------------


def test_asset_graph_shows_the_study(study_server, page):
    open_page(page, study_server, "/asset-groups", "inputs", "reconstruction", "summaries", "report")
    page.keyboard.press("Alt+KeyE")  # the graph's "Expand all groups" shortcut (⌥E)
    text = wait_for_text(page, "phase_c_patched", "skip_summary", "study_report", "18 partitions")
    page.screenshot(path=study_server.kept / "01_asset_graph.png")
    assert "Materialize all (5)" in text
    assert text.count("18 partitions") >= 2  # ptychi_reconstruction and reconstruction_quality
    assert "100% filled" in text
    assert "Failed" not in text


def test_partitions_page_shows_18_partitions_all_materialized(study_server, page):
    text = open_page(
        page, study_server, f"/assets/{RECONSTRUCTION}?view=partitions", "18 Partitions Selected", "Materialized (18)"
    )
    page.screenshot(path=study_server.kept / "02_reconstruction_partitions.png")
    for label in ("Failed (0)", "Materializing (0)", "Missing (0)"):
        assert label in text
    for key in ("1000", "10000", "100000", "baseline_train", "baseline_test", "dense_train", "dense_test", "sparse_train", "sparse_test"):
        assert key in text.split("\n"), key


def test_skipped_partition_page_shows_the_reason(study_server, page):
    key = "1000|sparse_train"
    text = open_page(page, study_server, f"/assets/{RECONSTRUCTION}?view=partitions&partition={quote(key, safe='')}", key, SKIP_REASON)
    page.screenshot(path=study_server.kept / "03_skipped_partition_1000_sparse_train.png")
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    assert SKIPPED in lines, "the partition's metadata shows status skipped"
    assert "sparse_train.npz absent" in text


def test_reconstructed_partition_page_shows_its_preview(study_server, page):
    key = "100000|baseline_train"
    text = open_page(page, study_server, f"/assets/{RECONSTRUCTION}?view=partitions&partition={quote(key, safe='')}", key, "final_loss", "preview")
    page.screenshot(path=study_server.kept / "04_reconstructed_partition_100000_baseline_train.png")
    assert RECONSTRUCTED in text.split("\n")


def test_checks_tab_lists_six_warnings_and_twelve_passes(study_server, page):
    open_page(page, study_server, f"/assets/{RECONSTRUCTION}?view=checks", INPUT_CHECK, "Execution history")
    page.screenshot(path=study_server.kept / "05_input_check_overview.png")
    execution_history = page.get_by_text("Execution history", exact=True)
    expect(execution_history).to_be_visible()
    execution_history.click()
    text = wait_for_text(page, "DATA-001 satisfied", SKIP_REASON)
    page.screenshot(path=study_server.kept / "06_input_check_history.png", full_page=True)
    assert text.count(SKIP_REASON) == 6, text
    assert text.count("DATA-001 satisfied") == 12, text


def test_study_report_page_renders_its_images(study_server, page):
    open_page(page, study_server, "/assets/study_report", "headline", "[Show Markdown]")
    page.screenshot(path=study_server.kept / "07_study_report.png")
    show_markdown = page.get_by_text("[Show Markdown]", exact=True)
    expect(show_markdown).to_be_visible()
    show_markdown.click()
    wait_for_text(page, "FRC resolution against dose", "Quality per job")
    page.wait_for_function(f"({DECODED_REPORT_IMAGES}) >= 2", timeout=60_000)  # the report's images decoded
    images = page.evaluate(
        "[...document.querySelectorAll('img[src^=\"data:image/png\"]')]"
        ".map(i => ({alt: i.alt, width: i.naturalWidth, height: i.naturalHeight, shown: i.getBoundingClientRect().width}))"
    )
    by_name = {image["alt"]: image for image in images}
    assert {"metrics_vs_dose.png", "resolution_vs_dose.png", "phase_grid.png"} <= set(by_name), images
    assert all(image["width"] > 100 and image["height"] > 100 and image["shown"] > 100 for image in by_name.values()), images
    page.locator('img[alt="metrics_vs_dose.png"]').evaluate("image => image.scrollIntoView({block: 'center'})")
    page.screenshot(path=study_server.kept / "08_study_report_markdown.png")
    page.locator('img[alt="phase_grid.png"]').evaluate("image => image.scrollIntoView({block: 'center'})")
    page.screenshot(path=study_server.kept / "09_study_report_phase_grid.png")
    text = visible_text(page)
    assert text.count(SKIP_REASON) == 6, "the report's table lists each skipped job with its reason"

    # The same report as a file (rendered from the same Markdown): at 1,400 px its tables fit the window, and each
    # skipped job says its reason once across its row.
    report_page = page.context.browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        report_page.goto((study_server.root / "artifacts" / "report" / "study_report.html").as_uri(), wait_until="load")
        report_page.wait_for_function(f"({DECODED_REPORT_IMAGES}) >= 3", timeout=60_000)
        assert report_page.locator(".lead p").first.inner_text().startswith("Over the train and test splits")
        rows = report_page.evaluate(
            "Object.fromEntries([...document.querySelectorAll('section')].map(s => [s.id, s.querySelectorAll('tbody tr').length]))"
        )
        assert rows["quality-per-dose-and-view-two-replicates"] == 9 and rows["quality-per-job"] == 18, rows
        assert rows["frc-resolution-against-dose-fitted-exponents"] == 4, rows
        figures = set(report_page.evaluate("[...document.images].map(i => i.alt)"))
        assert {"metrics_vs_dose.png", "resolution_vs_dose.png", "phase_grid.png"} <= figures, figures
        skipped = report_page.locator("#quality-per-job tr.unscored td[colspan]").all_inner_texts()
        assert len(skipped) == 6 and all(SKIP_REASON in reason for reason in skipped), skipped
        assert report_page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
        report_page.screenshot(path=study_server.kept / "10_study_report_file.png", full_page=True)
    finally:
        report_page.close()
