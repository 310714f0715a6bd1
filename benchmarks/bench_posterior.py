"""The denoiser's fidelity to the exact posterior, per level and step, and the final images.

For every reference at full size and seed, the default preset (or ``--preset``/``--set``)
samples with the per-level backends it really uses on the device
(``diffusion.backends.level_backend``).
At every call of a fast level, on the SAME noisy input, a deterministic subsample of the
call's query patches (``--queries``) is scored against the exact posterior over every
entry of the level (float64 softmax of the closed form):

* ``rel_err``: |fast mean - exact mean| / |exact mean| per query patch (median, p90);
* ``mass``: exact posterior mass held by the entries the fast mean was weighed over
  (candidate steps only);
* ``top1``: fraction of queries whose exact best entry is among them;
* ``ess``: the exact posterior's effective sample size 1 / sum w^2 (median);
* ``weight_err``: |fast mean - exact posterior restricted to the same candidates| / |that|
  (0 up to rounding when the weights are right: it isolates the weighting from the search).

Then the final images are compared with the exact sampler's output on the same noise
(cached on disk, ``$GIGAPATCH_BENCH_CACHE``, keyed by reference/seed/sampler settings):
PSNR per level, and patch SWD / coherence to the reference and pixel diversity over the
seeds (``gigapatch.metrics``), fast over exact. The exact sampler takes minutes per sample
on a CPU: by default only cached exact runs are used (``--run-exact`` computes the missing
ones) and the result says how many references had one.

    python benchmarks/bench_posterior.py --out post.json                    # 10 places50 refs
    python benchmarks/bench_posterior.py --mutant temperature4 --no-final    # flags a mutant
    python benchmarks/bench_posterior.py --run-exact --seeds 0 1             # full comparison

JSON to stdout (and ``--out``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

#: the held-out set: places50 photos (188 x 250 and similar), the size users run
REFERENCES = [f"places50/{i}.jpg" for i in range(1, 11)]


def _exact_stats(xq, patches, log_counts, sq_norms, a: float, s: float, support):
    """Exact posterior of queries ``xq`` (q, D) over every entry, float64 softmax.

    Returns the exact means (q, D), ESS (q,), the mass on ``support`` (q,) or None, and
    whether the exact argmax is in ``support`` (q,) or None."""
    import torch

    logits = (2.0 * a * (xq @ patches.T) - a * a * sq_norms[None, :]).double() / (2.0 * s * s)
    logits = logits + log_counts.double()[None, :]
    w = torch.softmax(logits, 1)
    means = (w @ patches.double()).float()
    ess = 1.0 / (w * w).sum(1)
    if support is None:
        return means, ess, None, None, None
    uniq = [torch.unique(r) for r in support]
    mass = torch.stack([w[i, u].sum() for i, u in enumerate(uniq)])
    best = w.argmax(1)
    top1 = torch.stack([(u == best[i]).any() for i, u in enumerate(uniq)])
    # the exact posterior restricted to the same support: what correct weights would give
    on_support = torch.stack([torch.softmax(logits[i, u], 0) @ patches[u].double()
                              for i, u in enumerate(uniq)]).float()
    return means, ess, mass, top1, on_support


class _Probe:
    """Wraps a fast level's denoiser: after each call, scores a query subsample."""

    def __init__(self, inner, level: int, n_queries: int, log: list):
        self.inner = inner
        self.level = level
        self.n_queries = n_queries
        self.log = log
        self.step = 0

    def bind(self, **kw):
        return _Probe(self.inner.bind(**kw), self.level, self.n_queries, self.log)

    def __call__(self, x, s):
        import torch

        out = self.inner(x, s)
        rows, cols, mode, a, s_ = self.inner._grid
        q = rows.numel() * cols.numel()
        gen = torch.Generator().manual_seed(1000 * self.level + self.step)
        qid = torch.randperm(q, generator=gen)[:self.n_queries].sort().values
        xq, fast, support, mode = self.inner.query_posterior(x, qid)
        idx = self.inner.level.index
        ex, ess, mass, top1, on_sup = _exact_stats(xq, idx.patches, idx.log_counts,
                                                   idx.sq_norms, a, s_, support)
        err = (fast - ex).norm(dim=1) / ex.norm(dim=1).clamp_min(1e-12)
        rmse = ((fast - ex) ** 2).mean(1).sqrt() / 2  # in [0, 1] pixel units
        row = {"level": self.level, "step": self.step, "s": round(s_, 4), "mode": mode,
               "rel_err_median": float(err.median()), "rel_err_p90": float(err.quantile(0.9)),
               "rmse_median": float(rmse.median()), "ess_median": float(ess.median()),
               "entries": idx.size}
        if a > 0:  # what the switch from the dictionary reads (diffusion.fast.dictionary_ess)
            from gigapatch.diffusion.fast import dictionary_ess

            row["dict_ess"] = float(dictionary_ess(self.inner.level, s_))
        if mass is not None:
            row["mass_median"] = float(mass.median())
            row["top1"] = float(top1.float().mean())
            werr = (fast - on_sup).norm(dim=1) / on_sup.norm(dim=1).clamp_min(1e-12)
            row["weight_err_median"] = float(werr.median())
        self.log.append(row)
        self.step += 1
        return out


def _instrumented_run(api, ref, cfg, seed, device, n_queries):
    """The preset's run with every fast level probed: (levels, per-step rows, backends)."""
    import torch

    log: list = []
    backends_used: dict[int, str] = {}
    from gigapatch.diffusion import generator

    real = generator.level_denoiser  # what generator.sample_levels builds each level with

    def build(ref_level, backend, **kw):
        den = real(ref_level, backend, **kw)
        lvl = len(backends_used)
        backends_used[lvl] = backend
        if backend == "fast":
            return _Probe(den, lvl, n_queries, log)
        return den

    generator.level_denoiser = build
    try:
        t = time.perf_counter()
        levels = api.sample_levels(ref, ref.shape[:2], cfg, seed=seed, device=device)
        dt = time.perf_counter() - t
    finally:
        generator.level_denoiser = real
    imgs = [((lv.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).cpu().numpy() for lv in levels]
    torch.set_num_threads(torch.get_num_threads())
    return imgs, log, [backends_used[k] for k in sorted(backends_used)], dt


def _summarise_steps(rows: list[dict]) -> list[dict]:
    """Median over references of each (level, step)'s medians."""
    keys = sorted({(r["level"], r["step"]) for r in rows})
    out = []
    for lv, st in keys:
        sel = [r for r in rows if r["level"] == lv and r["step"] == st]
        row = {"level": lv, "step": st, "s": sel[0]["s"], "mode": sel[0]["mode"],
               "n": len(sel)}
        for k in ("rel_err_median", "rel_err_p90", "rmse_median", "ess_median", "dict_ess",
                  "mass_median",
                  "top1", "weight_err_median"):
            vals = [r[k] for r in sel if k in r]
            if vals:
                row[k] = round(float(np.median(vals)), 4)
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--refs", nargs="*", default=REFERENCES)
    ap.add_argument("--seeds", type=int, nargs="*", default=[0])
    ap.add_argument("--queries", type=int, default=256,
                    help="query patches scored against the exact posterior per call")
    ap.add_argument("--preset", default=None, help="config preset of the compared runs")
    ap.add_argument("--set", dest="sets", action="append", default=[],
                    help="override for the compared runs, section.key=value (repeatable)")
    ap.add_argument("--mutant", default=None,
                    help="run on a copy of src/ with a named mutant applied (mutants.py)")
    ap.add_argument("--no-final", action="store_true",
                    help="skip the final-image comparison with the exact sampler")
    ap.add_argument("--run-exact", action="store_true",
                    help="compute exact runs missing from the cache (minutes each on a CPU)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    tmp = None
    if args.mutant:
        from mutants import BY_NAME, apply

        tmp = tempfile.TemporaryDirectory(prefix="bench-mutant-")
        missing = apply(BY_NAME[args.mutant], Path(tmp.name))
        if missing:
            raise SystemExit(f"mutant {args.mutant} not applicable: {missing}")
        sys.path.insert(0, str(Path(tmp.name) / "src"))
    import torch

    import gigapatch.api as api
    from _common import CACHE, emit_result, find_reference, load_scaled, make_config
    from gigapatch.metrics import coherence, patch_swd, pixel_diversity, psnr

    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device("cpu")
    cfg = make_config(args.sets, args.preset)
    exact_cfg = make_config()
    per_ref, steps_all = [], []
    n_exact = 0
    for name in args.refs:
        ref = load_scaled(find_reference(name), 1.0)
        runs = []
        for seed in args.seeds:
            fa, log, backends, dt = _instrumented_run(api, ref, cfg, seed, dev, args.queries)
            for r in log:
                r["ref"] = name
                r["seed"] = seed
            steps_all += log
            ex = None
            if not args.no_final:
                ex = _exact_levels(name, ref, exact_cfg, seed, dev, CACHE, args.run_exact)
            runs.append((seed, fa, ex, dt))
        row = {"ref": name, "hw": list(ref.shape[:2]), "backends": backends,
               "seconds_fast": float(np.mean([r[3] for r in runs]))}
        fin = [r for r in log if r["level"] == len(backends) - 1]
        row["finest_rel_err_median"] = [round(r["rel_err_median"], 4) for r in fin]
        have = [r for r in runs if r[2] is not None]
        if have:
            n_exact += 1
            row["exact_seeds"] = [r[0] for r in have]
            row["psnr_per_level"] = np.mean([[psnr(a, b) for a, b in zip(r[1], r[2])]
                                             for r in have], 0).round(2).tolist()
            for key, fn in (("swd", patch_swd), ("coherence", coherence)):
                row[f"{key}_fast"] = float(np.mean([float(fn(r[1][-1], ref)) for r in have]))
                row[f"{key}_exact"] = float(np.mean([float(fn(r[2][-1], ref)) for r in have]))
            if len(have) > 1:
                row["diversity_fast"] = float(pixel_diversity([r[1][-1] for r in have], ref))
                row["diversity_exact"] = float(pixel_diversity([r[2][-1] for r in have], ref))
        per_ref.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    steps = _summarise_steps(steps_all)
    fast_steps = [r for r in steps_all if r["mode"] != "mean"]
    summary = {
        "references": len(per_ref), "references_with_exact": n_exact,
        "rel_err_median_all_steps": float(np.median([r["rel_err_median"] for r in fast_steps]))
        if fast_steps else None,
        "rel_err_worst_step": max((r["rel_err_median"] for r in steps if "rel_err_median" in r),
                                  default=None),
        "weight_err_worst_step": max((r["weight_err_median"] for r in steps
                                      if "weight_err_median" in r), default=None),
        "mass_median_candidate_steps": float(np.median([r["mass_median"] for r in steps_all
                                                        if "mass_median" in r]))
        if any("mass_median" in r for r in steps_all) else None,
        "top1_mean_candidate_steps": float(np.mean([r["top1"] for r in steps_all
                                                    if "top1" in r]))
        if any("top1" in r for r in steps_all) else None,
        "seconds_fast": float(np.mean([r["seconds_fast"] for r in per_ref])),
    }
    with_ex = [r for r in per_ref if "psnr_per_level" in r]
    if with_ex:
        summary["psnr_finest_mean"] = float(np.mean([r["psnr_per_level"][-1] for r in with_ex]))
        summary["psnr_finest_min"] = float(np.min([r["psnr_per_level"][-1] for r in with_ex]))
        for key in ("swd", "coherence", "diversity"):
            sel = [r for r in with_ex if f"{key}_fast" in r]
            if sel:
                summary[f"{key}_ratio"] = float(np.mean([r[f"{key}_fast"] for r in sel]) /
                                                np.mean([r[f"{key}_exact"] for r in sel]))
    result = {"benchmark": "posterior", "date": time.strftime("%Y-%m-%d %H:%M"),
              "device": str(dev), "threads": torch.get_num_threads(),
              "load": os.getloadavg()[0], "torch": torch.__version__,
              "preset": args.preset, "overrides": args.sets, "mutant": args.mutant,
              "queries": args.queries, "seeds": args.seeds, "summary": summary,
              "per_step": steps, "per_reference": per_ref}
    emit_result(result, args.out)
    if tmp is not None:
        tmp.cleanup()
    return result


def _exact_levels(name, ref, cfg, seed, dev, cache: Path, run: bool):
    """The exact sampler's levels from the cache (or computed with ``run``), else None."""
    from _common import exact_cache_path, exact_cached

    if not run and not exact_cache_path(name, cfg, seed, 1.0).exists():
        return None
    return exact_cached(name, ref, cfg, seed, dev, 1.0)[0]


if __name__ == "__main__":
    main()
