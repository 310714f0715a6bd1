"""A running tile moves its level's progress bar step by step (issue 12: a 5120 px CPU
tile of the default preset takes ~20 minutes, and a bar counting whole tiles sat at 0/1
for all of it, with no ETA).

Mutants killed: the tile's sampler callback not wired (no fractions reported); the
runner not binding ``on_step`` (same); a fraction off by one step (``i / n``: the last step
never reaches 1); the completion crediting a whole tile on top of the fractions already
shown (the bar overshoots its total); fractions of one tile credited to another's label;
pixels changed by the reporting."""

import numpy as np

from gigapatch.pipeline import read_result
from gigapatch.pipeline.progress import TileProgress

from .tiny import OVERRIDES, run as _run

STEPS = int(next(o for o in OVERRIDES if o.startswith("sampler.steps=")).split("=")[1])


def test_fractions_and_completions_add_up_to_the_tasks(capsys):
    prog = TileProgress({"level 1/2": 2, "level 2/2": 1}, {}, enabled=True)
    prog.advance("level 1/2", "a", 0.25)
    prog.advance("level 1/2", "a", 0.5)
    prog.advance("level 1/2", "b", 0.5)
    prog.advance("level 1/2", "a", 0.4)          # never backwards
    assert prog.shown("level 1/2") == 1.0 and prog.shown("level 2/2") == 0.0
    assert abs(prog.bars["level 1/2"].n - 1.0) < 1e-9
    prog.update("level 1/2", key="a")            # credits the remaining half of "a"
    assert prog.shown("level 1/2") == 1.5
    assert prog.update("level 1/2", key="b") is True
    assert abs(prog.bars["level 1/2"].n - 2.0) < 1e-9  # exactly its total, no overshoot
    prog.update("level 2/2")                     # a task that reported no steps
    assert abs(prog.bars["level 2/2"].n - 1.0) < 1e-9
    prog.close()
    assert "2.0/2" in capsys.readouterr().err


def test_a_tiled_run_reports_every_step_of_every_tile(ref, cfg, tiled64, tmp_path,
                                                      monkeypatch):
    calls: dict[tuple[str, str], list[float]] = {}
    real = TileProgress.advance

    def spy(self, label, key, fraction):
        calls.setdefault((label, key), []).append(fraction)
        return real(self, label, key, fraction)

    monkeypatch.setattr(TileProgress, "advance", spy)
    res = _run(ref, cfg, tmp_path / "run", tile=64, workers=2)
    expected = [(i + 1) / STEPS for i in range(STEPS)]
    assert calls, "no step was reported"
    tiles = {k for k in calls}
    assert all(v == expected for v in calls.values()), calls
    # one entry per level tile the run computed, each under its own level's label
    for label, key in tiles:
        level = int(label.split()[1].split("/")[0]) - 1
        assert f"-L{level}-" in key
    assert len(tiles) == sum(len(g) for g in res.plan.grids)
    assert np.array_equal(read_result(tmp_path / "run"), tiled64[1])
