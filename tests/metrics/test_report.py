"""evaluate() and its table."""

from __future__ import annotations

import json
import math


from gigapatch.metrics import evaluate, format_table


def test_evaluate_report_and_table(ref, shifted, noise):
    rep = evaluate(ref, [shifted, noise], names=["shifted", "noise"], nn_queries=512,
                   max_patches=20_000, swd_directions=64)
    rows = {r["name"]: r for r in rep["samples"]}
    assert rows["noise"]["swd"] > rows["shifted"]["swd"]
    assert rows["noise"]["copy32"] == 0.0
    assert set(rep["summary"]) == {"swd", "fd", "coherence", "completeness", "copy32", "copy64"}
    assert rep["summary"]["swd"]["n"] == 2
    assert rep["diversity"]["pixel"] > 0 and rep["diversity"]["pairwise_swd"] > 0
    text = format_table(rep)
    assert "shifted" in text and "mean +- std" in text and "diversity" in text
    assert format_table(rep, markdown=True).startswith("| sample |")
    json.dumps(rep)  # JSON-able as it is


def test_evaluate_with_exact_and_tiles(ref):
    rep = evaluate(ref, [ref, ref], metrics=["swd"], exact=ref, tile_size=32, diversity=True,
                   swd_directions=32)
    assert rep["summary"]["psnr"]["mean"] == math.inf
    assert rep["samples"][0]["max_abs_diff"] == 0.0
    assert "seam" in rep["samples"][0]
    assert rep["diversity"]["pixel"] == 0.0
    assert "inf" in format_table(rep)
