"""The study report: what the fly64 study says about dose and overlap (see the spec, "Quality"), from plain
"quality records", one per (dose, view, split) job, as the ``reconstruction_quality`` asset writes them::

    {"dose": 1000, "view": "baseline", "split": "train",
     "status": "succeeded" | "skipped" | "failed" | "missing" | ...,
     "reason": str | None, "n_patterns": int | None,
     "amplitude_mae": float, ..., "frc_resolution_fraction": float,   # metrics only when succeeded
     "requested_regularization": "auto" | "off" | "tv_0_1" | ..., "tv_weight": float,  # the TV weight run
     "regularization_choice": dict | None}   # regularization.RegularizationChoice.as_dict() when auto was asked

One job per module: :mod:`.records` (the records' vocabulary), :mod:`.tables` (the grid's table, the train/test
replicates, CSV and Markdown), :mod:`.regularization`, :mod:`.fits` (the dose exponent, convergence verdicts),
:mod:`.headline`, :mod:`.figures` and :mod:`.page` (the UI's Markdown and the HTML page). Pure Python, NumPy and
matplotlib, markdown-it-py and Jinja2: no Dagster.
"""
