"""Level count and level shapes."""

from __future__ import annotations

from gigapatch.diffusion.levels import auto_level_count, plan_level_shapes


def test_auto_levels_match_the_paper():
    assert auto_level_count((186, 248), 15) == 4
    assert auto_level_count((15, 40), 15) == 1
    shapes = plan_level_shapes((186, 248), (186, 496), 15, 4)
    assert [s.out_hw for s in shapes] == [(24, 62), (47, 124), (93, 248), (186, 496)]
    # an output too small for the coarse levels drops them
    assert len(plan_level_shapes((186, 248), (40, 40), 15, 4)) == 2
