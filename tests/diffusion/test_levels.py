"""Level count and level shapes."""

from __future__ import annotations

from gigapatch.diffusion.levels import auto_level_count, level_sizes


def test_auto_levels_match_the_paper():
    assert auto_level_count((186, 248), 15) == 4
    assert auto_level_count((15, 40), 15) == 1
    shapes = level_sizes((186, 248), (186, 496), 15, 4)
    assert [out_hw for _, out_hw in shapes] == [(24, 62), (47, 124), (93, 248), (186, 496)]
    # an output too small for the coarse levels drops them
    assert len(level_sizes((186, 248), (40, 40), 15, 4)) == 2
