"""The docs name real things: every test that docs/RELIABILITY.md cites exists."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_test_named_in_the_reliability_table_exists():
    cited = []
    current_file = None
    for cell in re.findall(r"`([^`]*::[^`]*)`", (ROOT / "docs" / "RELIABILITY.md").read_text()):
        test_file, _, name = cell.partition("::")
        current_file = test_file or current_file  # "::test_x" continues the file named before it
        cited.append((current_file, name.rstrip("…").rstrip("_")))
    assert len(cited) > 20
    missing = [
        (test_file, name)
        for test_file, name in cited
        if not re.search(rf"def {re.escape(name)}", (ROOT / "fly64_assets_tests" / test_file).read_text())
    ]
    assert missing == []
