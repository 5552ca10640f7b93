"""The report's regularization: each job's method and TV weight in the rows, the held-out scores behind every
weight chosen without the truth (or why none could be), the chosen weights in the headline; and a real
reconstruction with ``regularization: auto`` carried through to the study report (no mocks)."""

from __future__ import annotations

import csv
import io

from dagster import materialize_to_memory

from fly64_assets.core.artifacts import write_json
from fly64_assets.core.bookkeeping import QUALITY_RECORD, RECONSTRUCTION_RECORD, read_record
from fly64_assets.core.design import Dataset
from fly64_assets.core.report import page, tables
from fly64_assets.core.report.headline import headline
from fly64_assets.core.report.regularization import REGULARIZATION_INTRO, REGULARIZATION_TITLE, regularization_markdown
from fly64_assets.defs.inputs.assets import phase_c_patched, phase_d_overlap
from fly64_assets.defs.reconstruction.assets import QUALITY, ptychi_reconstruction
from fly64_assets.defs.report.assets import study_report
from fly64_assets_tests.report_records import hand_made_records
from fly64_assets_tests.support import study_resources

STUDY_ASSETS = [phase_c_patched, phase_d_overlap, ptychi_reconstruction]
CANDIDATES = (("off", 0.0), ("tv_0_003", 0.003), ("tv_0_01", 0.01), ("tv_0_03", 0.03), ("tv_0_1", 0.1), ("tv_0_3", 0.3))
DEVIANCES = {  # (dose, split) -> the held-out Poisson deviance per pixel of each candidate (docs/SCIENCE.md, standard)
    (1000, "train"): (0.2757, 0.2728, 0.2664, 0.2511, 0.2229, 0.2145),
    (1000, "test"): (0.2766, 0.2739, 0.2677, 0.2512, 0.2222, 0.2122),
    (10000, "train"): (0.3056, 0.2935, 0.2723, 0.2435, 0.2350, 0.2342),
    (10000, "test"): (0.2830, 0.2722, 0.2535, 0.2284, 0.2205, 0.2198),
    (100000, "train"): (0.4088, 0.3734, 0.3404, 0.3459, 0.3604, 0.3653),
    (100000, "test"): (0.3904, 0.3563, 0.3151, 0.3086, 0.3242, 0.3283),  # lowest 0.03, chosen 0.01 (one SE)
}
CHOSEN = {(1000, "train"): "tv_0_3", (1000, "test"): "tv_0_3", (10000, "train"): "tv_0_1", (10000, "test"): "tv_0_3",
          (100000, "train"): "tv_0_01", (100000, "test"): "tv_0_01"}
DENSE_NOTE = ("held-out coverage 0.08 < 0.5: the scan overlaps too little to validate a weight on held-out "
              "patterns; reconstructed with off")


def choice_record(dose: int, split: str) -> dict:
    """A ``RegularizationChoice.as_dict()`` (the keys the report reads) for a baseline job that chose."""
    deviances = DEVIANCES[(dose, split)]
    weights = dict(CANDIDATES)
    return {
        "chosen": CHOSEN[(dose, split)], "chosen_tv_weight": weights[CHOSEN[(dose, split)]],
        "lowest_deviance": CANDIDATES[deviances.index(min(deviances))][0],
        "candidates": [{"regularization": name, "tv_weight": weight, "poisson_deviance": deviance}
                       for (name, weight), deviance in zip(CANDIDATES, deviances)],
        "n_patterns": 128, "n_held_out": 13, "held_out_coverage": 0.97, "cost_factor": 1.74, "notes": [],
    }


def auto_records() -> list[dict]:
    """``hand_made_records`` with auto asked everywhere: the baseline chose (CHOSEN), dense could not (coverage)."""
    records = hand_made_records()
    for record in records:
        if record["status"] != "succeeded":
            continue
        if record["view"] == "baseline":
            choice = choice_record(record["dose"], record["split"])
        else:
            choice = {"chosen": "off", "chosen_tv_weight": 0.0, "lowest_deviance": None, "candidates": [],
                      "n_patterns": 24, "n_held_out": 0, "held_out_coverage": 0.08, "cost_factor": 1.0, "notes": [DENSE_NOTE]}
        record.update(requested_regularization="auto", tv_weight=choice["chosen_tv_weight"], regularization_choice=choice,
                      scan_area_lit=1.0 if record["view"] == "baseline" else 0.884)
    return records


def row_of(rows: list[dict], dose: int, view: str, split: str) -> dict:
    return next(r for r in rows if (r["dose"], r["view"], r["split"]) == (dose, view, split))


def method_of(rows: list[dict], dose: int, view: str, split: str) -> tuple[str | None, float | None]:
    row = row_of(rows, dose, view, split)
    return row["regularization"], row["tv_weight"]


def test_the_table_shows_every_candidates_deviance_the_lowest_in_bold_and_the_chosen_weight():
    text = regularization_markdown(auto_records())
    lines = text.splitlines()
    assert lines[0] == ("| dose | view | split | chosen w | w = 0 | w = 0.003 | w = 0.01 | w = 0.03 | w = 0.1 | w = 0.3 "
                        "| held out | coverage | cost |")
    assert "| 1e3 | baseline | train | 0.3 | 0.2757 | 0.2728 | 0.2664 | 0.2511 | 0.2229 | **0.2145** ✓ | 13/128 | 0.97 | 1.74× |" in lines
    # the one-standard-error rule kept a smaller weight than the lowest: both are marked
    assert "| 1e5 | baseline | test | 0.01 | 0.3904 | 0.3563 | 0.3151 ✓ | **0.3086** | 0.3242 | 0.3283 | 13/128 | 0.97 | 1.74× |" in lines
    assert sum(line.startswith("| 1e") for line in lines) == 6  # one row per baseline job; dense made no choice
    assert "Auto could not choose a weight for:" in text
    assert f"- 1e3 dense train: {DENSE_NOTE}" in lines and sum(line.startswith("- ") for line in lines) == 6

    # the columns are the candidates present, not a fixed grid
    records = auto_records()
    for record in records:
        if record.get("regularization_choice"):
            record["regularization_choice"]["candidates"] = record["regularization_choice"]["candidates"][::2]
    assert "| chosen w | w = 0 | w = 0.01 | w = 0.1 | held out |" in regularization_markdown(records)


def test_rows_carry_the_method_and_the_weight_run():
    records = auto_records()
    records[0].update(requested_regularization="tv_0_1", tv_weight=0.1, regularization_choice=None)  # 1e3 baseline train
    records[1].update(requested_regularization="off", tv_weight=0.0, regularization_choice=None)  # 1e3 baseline test
    rows = tables.quality_rows(records)
    assert tables.ROW_KEYS[-3:] == ("regularization", "tv_weight", "scan_area_lit")  # appended: old columns stay put
    assert method_of(rows, 1000, "baseline", "train") == ("fixed TV 0.1", 0.1)
    assert method_of(rows, 1000, "baseline", "test") == ("off", 0.0)
    assert method_of(rows, 10000, "baseline", "train") == ("auto → TV 0.1", 0.1)
    assert method_of(rows, 1000, "dense", "train") == ("auto → off (held-out coverage 0.08 < 0.5)", 0.0)
    assert method_of(rows, 1000, "sparse", "train") == (None, None)  # skipped: not reconstructed
    # a quality record written before the regularization was recorded still makes a row, without a method
    old = [{k: v for k, v in r.items() if k not in ("requested_regularization", "tv_weight", "regularization_choice")} for r in records]
    assert method_of(tables.quality_rows(old), 1000, "baseline", "train") == (None, None)

    parsed = list(csv.DictReader(io.StringIO(tables.rows_to_csv(rows))))
    assert list(parsed[0])[-3:] == ["regularization", "tv_weight", "scan_area_lit"]
    assert (parsed[6]["dose"], parsed[6]["view"], parsed[6]["split"], parsed[6]["regularization"]) == ("10000", "baseline", "train", "auto → TV 0.1")
    table = tables.rows_to_markdown(rows)  # the per-job table's area-lit and method columns
    assert "| 98 | 100 % | auto → TV 0.3 | " in table and "| 98 | 88 % | auto → off (held-out coverage" in table

    text = regularization_markdown(records)
    assert "Not asked to choose: fixed TV 0.1 (1 job), off (1 job)." in text and "| 1e3 | baseline |" not in text


def test_the_headline_names_the_weights_chosen_per_dose():
    clause = "; TV weight chosen without the truth: 0.3 at 1e3, 0.1/0.3 at 1e4, 0.01 at 1e5"  # 1e4: train/test differ
    line = headline(tables.quality_rows(auto_records()))
    assert f"expected -1/4{clause}." in line
    assert line.count(". ") == 1  # still two sentences
    assert line.replace(clause, "") == headline(tables.quality_rows(hand_made_records()))  # otherwise unchanged


def test_a_flat_choice_is_marked_as_such_in_the_table_the_method_and_the_headline():
    """Issue 20: a choice whose held-out scores could not tell the weights apart says so, and the headline does not
    present it as a weight the data chose; records without the verdict (older ones) read as before."""
    records = auto_records()
    for record in records:
        if (record["dose"], record["view"]) == (100000, "baseline"):
            record["regularization_choice"]["evidence"] = "flat"
        elif record.get("regularization_choice", {}).get("candidates"):
            record["regularization_choice"]["evidence"] = "clear"
    text = regularization_markdown(records)
    assert "| 1e5 | baseline | test | 0.01 (flat evidence) | 0.3904 |" in text
    assert "| 1e3 | baseline | train | 0.3 | 0.2757 |" in text
    assert "*flat evidence*: every candidate scored within one standard error of the lowest" in text
    rows = tables.quality_rows(records)
    assert method_of(rows, 100000, "baseline", "train") == ("auto → TV 0.01 (flat evidence)", 0.01)
    assert method_of(rows, 1000, "baseline", "train") == ("auto → TV 0.3", 0.3)
    assert "0.3 at 1e3, 0.1/0.3 at 1e4, 0.01 (flat evidence) at 1e5." in headline(rows)
    assert "flat" not in regularization_markdown(auto_records())


def test_without_auto_the_section_says_which_method_ran():
    records = hand_made_records()
    for record in records:
        if record["status"] == "succeeded":
            record.update(requested_regularization="off", tv_weight=0.0, regularization_choice=None)
    assert regularization_markdown(records) == "All 12 reconstructions ran with regularization off; none asked for auto."
    records[0].update(requested_regularization="tv_0_03", tv_weight=0.03)
    assert regularization_markdown(records) == (
        "No reconstruction asked for auto; they ran with: fixed TV 0.03 (1 job), off (11 jobs).")
    assert regularization_markdown([]) == "No reconstruction has been scored."


def test_the_pages_show_the_section_after_the_convergence_notes():
    records = auto_records()
    rows = tables.quality_rows(records)
    section = regularization_markdown(records)
    convergence = ["At 1e3, phase MAE vs epoch: baseline stops improving after ~40 epochs."]
    text = page.report_markdown(headline(rows), tables.rows_to_markdown(rows), {}, {}, convergence=convergence,
                                regularization=section)
    assert f"### {REGULARIZATION_TITLE}\n\n{REGULARIZATION_INTRO}\n\n{section}" in text
    assert text.index("### Convergence") < text.index(f"### {REGULARIZATION_TITLE}") < text.index("### Quality per job")
    html = page.html_page("study", text)
    assert "<strong>0.2145</strong> ✓" in html and "held-out coverage 0.08 &lt; 0.5" in html and "docs/SCIENCE.md" in html
    section_html = html[html.index('<section id="regularization-chosen-without-the-truth">'):html.index('<section id="quality-per-job">')]
    assert section_html.count("<tr>") == 1 + 6 and 'class="unscored"' not in section_html  # bold marks a value, not a row


# --------------------------------------------------------------------------------------------------
# a real reconstruction with regularization auto, through to the study report
# --------------------------------------------------------------------------------------------------


def test_a_choice_made_by_a_real_reconstruction_reaches_the_report(study_paths, instance):
    dataset = Dataset(1000, "baseline", "train")
    folder = study_paths.artifact_dir(dataset)
    config = {"epochs": 10, "regularization": "auto", "convergence_every": 3}
    assert materialize_to_memory(
        STUDY_ASSETS, partition_key=dataset.partition_key, resources=study_resources(study_paths),
        run_config={"ops": {"ptychi_reconstruction": {"config": config}}}, instance=instance,
    ).success
    quality = read_record(folder, QUALITY_RECORD)
    choice = quality["regularization_choice"]
    assert quality["requested_regularization"] == "auto" and len(choice["candidates"]) == 6
    assert quality["tv_weight"] == choice["chosen_tv_weight"]

    result = materialize_to_memory([study_report], resources=study_resources(study_paths), instance=instance)
    assert result.success
    output = result.output_for_node("study_report")
    assert method_of(output["rows"], 1000, "baseline", "train")[1] == choice["chosen_tv_weight"]
    assert method_of(output["rows"], 1000, "baseline", "train")[0].startswith("auto → ")
    (line,) = [line for line in output["regularization"].splitlines() if line.startswith("| 1e3 | baseline | train |")]
    for candidate in choice["candidates"]:
        assert f"{candidate['poisson_deviance']:.4f}" in line
    assert line.count("**") == 2 and "✓" in line
    within = [c for c in choice["candidates"]  # the rule's evidence: the excess ± error of each close candidate
              if c["regularization"] != choice["lowest_deviance"] and c["excess_over_lowest"] <= c["excess_standard_error"]]
    for candidate in within:
        assert f"(+{candidate['excess_over_lowest']:.4f} ± {candidate['excess_standard_error']:.4f})" in line
    assert line.count("(+") == len(within)
    assert f"TV weight chosen without the truth: {choice['chosen_tv_weight']:g} at 1e3" in output["headline"]
    # the convergence verdict rests on the epochs before the chosen weight's TV phase (the last of the 10 epochs)
    note = output["convergence_notes"][0]
    assert choice["final_tv_epochs"] == (1 if choice["chosen_tv_weight"] else 0)
    if choice["chosen_tv_weight"]:
        assert note.startswith("At 1e3, phase MAE vs epoch: baseline (train only) before TV "), note
        assert "epoch 9" in note and "— TV in the last epoch: " in note and "at epoch 10);" in note, note
    else:
        assert "TV" not in note, note
    report_dir = study_paths.artifact_file("report")
    assert (report_dir / "regularization.md").read_text() == output["regularization"]
    assert REGULARIZATION_TITLE in (report_dir / "study_report.html").read_text()

    # a reconstruction record written before the regularization was recorded is still scored, without it
    record = read_record(folder, RECONSTRUCTION_RECORD)
    old = {k: v for k, v in record.items() if k not in ("requested_regularization", "regularization")}
    old["options"] = {k: v for k, v in old["options"].items() if k != "regularization"}
    write_json(folder / RECONSTRUCTION_RECORD, old)
    assert materialize_to_memory(STUDY_ASSETS, partition_key=dataset.partition_key, resources=study_resources(study_paths),
                                 instance=instance, selection=[QUALITY]).success
    rescored = read_record(folder, QUALITY_RECORD)
    assert [rescored[k] for k in ("requested_regularization", "tv_weight", "regularization_choice")] == [None, None, None]
    assert rescored["phase_mae"] == quality["phase_mae"]
