"""Every result says what made it, and the UI shows what an upgrade of pty-chi or of our reconstruction code
invalidates: real reconstructions through Dagster, read back from their records, their materializations and
Dagster's own GraphQL API (what the UI asks), on a code location loaded by a real code server."""

from __future__ import annotations

from importlib import metadata

import pytest
from dagster import AssetKey, DagsterInstance, instance_for_test
from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql

from fly64_assets import launch
from fly64_assets.core.bookkeeping import QUALITY_RECORD, RECONSTRUCTION_RECORD, read_record
from fly64_assets.core.design import Dataset
from fly64_assets.core.options import ReconstructionOptions
from fly64_assets.core.provenance import syntax_fingerprint, science_version
from fly64_assets.defs.compute import StudyCompute
from fly64_assets.defs.reconstruction.versions import RECONSTRUCTION_CODE_VERSION

DATASET = Dataset(100000, "baseline", "train")
OPTIONS = ReconstructionOptions(epochs=3, regularization="off")
STALENESS = """
query Staleness($key: AssetKeyInput!, $partitions: [String!]!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      staleStatusByPartition(partitions: $partitions)
      staleCausesByPartition(partitions: $partitions) { reason category }
    }
  }
}"""
UPGRADED_LOCATION = """
from dagster import Definitions, map_asset_specs

from fly64_assets.definitions import defs as study
from fly64_assets.defs.reconstruction.assets import ptychi_reconstruction

UPGRADE = "ptychi 99.0.0, torch 2.14.1, code 00000000"
(upgraded,) = map_asset_specs(
    lambda spec: spec.replace_attributes(code_version=UPGRADE) if spec.key.to_user_string() == "ptychi_reconstruction" else spec,
    [ptychi_reconstruction],
)
defs = Definitions(
    assets=[upgraded if asset is ptychi_reconstruction else asset for asset in study.assets],
    asset_checks=study.asset_checks, resources=study.resources,
)
"""


@pytest.fixture
def reconstructed(study_paths, monkeypatch):
    """One partition reconstructed and scored through Dagster in its own instance, its inputs observed first (as
    ``fly64 run`` does); the roots in the environment, where a code server loading the location reads them."""
    monkeypatch.setenv("FLY64_PHASE_C_ROOT", study_paths.phase_c_root)
    monkeypatch.setenv("FLY64_PHASE_D_ROOT", study_paths.phase_d_root)
    monkeypatch.setenv("FLY64_ARTIFACT_ROOT", study_paths.artifact_root)
    with instance_for_test() as instance:
        launch.observe_inputs(study_paths, instance)
        (outcome,) = launch.reconstruct(study_paths, [DATASET], OPTIONS, instance, compute=StudyCompute(workers=0))
        assert outcome.success, outcome.error
        yield study_paths, instance, outcome.run_id


def _staleness(location_file, instance: DagsterInstance, asset: str) -> tuple[str, list[str]]:
    with define_out_of_process_context(str(location_file), "defs", instance) as context:
        result = execute_dagster_graphql(
            context, STALENESS, {"key": {"path": [asset]}, "partitions": [DATASET.partition_key]}
        )
    node = result.data["assetNodeOrError"]
    return node["staleStatusByPartition"][0], [cause["reason"] for cause in node["staleCausesByPartition"][0]]


def test_every_record_and_materialization_names_what_made_it(reconstructed):
    paths, instance, run_id = reconstructed
    folder = paths.artifact_dir(DATASET)
    for record in (read_record(folder, RECONSTRUCTION_RECORD), read_record(folder, QUALITY_RECORD)):
        made_by = record["provenance"]
        software = made_by["software"]
        assert {name: software[name] for name in ("numpy", "torch", "ptychi", "dagster")} == {
            name: metadata.version(name) for name in ("numpy", "torch", "ptychi", "dagster")
        }
        assert software["fly64_assets"]["version"] == metadata.version("fly64_assets")
        assert len(software["fly64_assets"]["git_commit"]) == 40 and isinstance(software["fly64_assets"]["git_dirty"], bool)
        assert made_by["dagster_run_id"] == run_id
        assert made_by["device"] == "cpu" and made_by["device_model"] == made_by["machine"]["cpu"] != ""
    materialization = instance.fetch_materializations(AssetKey("ptychi_reconstruction"), limit=1).records[0]
    event = materialization.asset_materialization
    assert event.partition == DATASET.partition_key
    assert f"pty-chi {metadata.version('ptychi')}, torch {metadata.version('torch')}" in event.metadata["made by"].value
    assert event.metadata["provenance"].value["dagster_run_id"] == run_id
    assert event.tags["dagster/code_version"] == RECONSTRUCTION_CODE_VERSION


@pytest.mark.timeout(420)
def test_the_ui_shows_a_reconstruction_stale_after_an_upgrade_and_fresh_before(reconstructed, tmp_path):
    paths, instance, _ = reconstructed
    current = tmp_path / "current_location.py"
    current.write_text("from fly64_assets.definitions import defs\n")
    upgraded = tmp_path / "upgraded_location.py"
    upgraded.write_text(UPGRADED_LOCATION)

    assert _staleness(current, instance, "ptychi_reconstruction") == ("FRESH", [])
    assert _staleness(current, instance, "reconstruction_quality") == ("FRESH", [])
    status, causes = _staleness(upgraded, instance, "ptychi_reconstruction")
    assert status == "STALE" and causes == ["has a new code version"]

    # a changed input file, once observed, is a new data version of the partition's one parent
    input_path = paths.input_path(DATASET)
    input_path.write_bytes(input_path.read_bytes() + b"\0")
    launch.observe_inputs(paths, instance)
    status, causes = _staleness(current, instance, "ptychi_reconstruction")
    assert status == "STALE" and causes and all("new data version" in cause or "dependency data version" in cause for cause in causes)


def test_the_code_version_follows_code_not_comments_or_formatting(tmp_path):
    plain = tmp_path / "plain.py"
    plain.write_text('def f(x):\n    """Doc."""\n    return x + 1\n')
    reworded = tmp_path / "reworded.py"
    reworded.write_text('def f(x):  # a comment\n    """Another doc."""\n\n    return (x +\n            1)\n')
    changed = tmp_path / "changed.py"
    changed.write_text('def f(x):\n    """Doc."""\n    return x + 2\n')
    assert syntax_fingerprint(plain) == syntax_fingerprint(reworded) != syntax_fingerprint(changed)
    assert RECONSTRUCTION_CODE_VERSION.startswith(f"ptychi {metadata.version('ptychi')}, torch {metadata.version('torch')}, code ")
    assert science_version(("quality.py",)) != RECONSTRUCTION_CODE_VERSION
