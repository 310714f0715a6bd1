"""The run plan: per-level global/tiled modes, the halo derived from the sampler's
parameters, the run key."""


def test_halo_is_derived_from_sampler_parameters(monkeypatch):
    from gigapatch.config import load_config
    from gigapatch.diffusion.generator import level_halo
    from gigapatch.diffusion.pyramid import BLUR_RADIUS
    from gigapatch.pipeline import plan as plan_mod

    for p, t in [(5, 3), (15, 10), (7, 1)]:
        cfg = load_config("default", [f"sampler.patch_size={p}", f"sampler.steps={t}"])
        want = t * (p - 1) + (t - 1) * BLUR_RADIUS
        want += want % 2
        assert plan_mod.sampler_halo(cfg, True) == want == level_halo(p, t, True)
        assert plan_mod.sampler_halo(cfg, False) == t * (p - 1) + (t * (p - 1)) % 2
    # a backend's extra halo comes from the diffusion package, not from the pipeline
    monkeypatch.setattr(plan_mod, "backend_extra_halo", lambda cfg, backend: 7)
    cfg = load_config("default", ["sampler.patch_size=5", "sampler.steps=3"])
    assert plan_mod.sampler_halo(cfg, True) == level_halo(5, 3, True) + 8


def test_plan_global_and_tiled_levels():
    from gigapatch.config import load_config
    from gigapatch.pipeline import make_plan

    cfg = load_config("default", ["sampler.patch_size=5", "sampler.steps=3",
                                  "tiling.global_max_pixels=5000"])
    plan = make_plan((40, 44), (130, 150), 3, cfg, seed=0, ref_digest="x", tile=64,
                     force_tiled=None)
    modes = [lv.mode for lv in plan.levels]
    assert modes[0] == "global" and modes[-1] == "tiled"
    assert all(lv.halo == 0 for lv in plan.levels if lv.mode == "global")
    assert plan.levels[-1].grid.shape == (3, 3)
    forced = make_plan((40, 44), (130, 150), 3, cfg, seed=0, ref_digest="x", tile=64,
                       force_tiled=True)
    assert all(lv.mode == "tiled" for lv in forced.levels)
    assert forced.run_key != plan.run_key
    other_seed = make_plan((40, 44), (130, 150), 3, cfg, seed=1, ref_digest="x", tile=64,
                           force_tiled=True)
    assert other_seed.run_key != forced.run_key
