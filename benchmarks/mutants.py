"""Named mutants of the denoiser and sampler, and the tests that kill them.

Each mutant is a one-line source edit (a wrong temperature, a hard nearest neighbour, a
narrower fold window, ...). The script copies ``src/`` to a temporary folder, applies one
mutant there, runs the CPU test suite against the copy (``PYTHONPATH``) and reports which
tests fail. Every mutant must fail at least one test; a mutant whose source line is gone
(the code moved) is reported as NOT APPLIED and counts as a failure of this script.

    python benchmarks/mutants.py                      # every mutant, stop at the first failing test
    python benchmarks/mutants.py --all-failures        # list every failing test (slow)
    python benchmarks/mutants.py temperature4 nn1      # some mutants
    python benchmarks/mutants.py --list

The fidelity benchmark applies the same mutants (``bench_posterior.py --mutant NAME``) to
show that it flags them. JSON summary on stdout; exit status 1 when a mutant survives.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    """One source edit: replace ``old`` by ``new`` in ``path`` (relative to src/gigapatch)."""

    name: str
    what: str
    edits: tuple[tuple[str, str, str], ...]


MUTANTS = [
    Mutant("temperature4", "fast backend: candidate weights at 4x the temperature",
           (("diffusion/fast.py", "wts = torch.softmax(logits, 1)",
             "wts = torch.softmax(logits / 4.0, 1)"),)),
    Mutant("nn1", "fast backend: one candidate and no random probes (hard nearest neighbour)",
           (("diffusion/fast.py", "k = min(self.params.candidates, idx.size)", "k = 1"),
            ("diffusion/fast.py", "for j in range(self.params.probes):",
             "for j in range(0):"))),
    Mutant("window_half", "fold window std halved",
           (("diffusion/denoiser.py", "g = torch.exp(-(u * u) / (2.0 * rho * rho))",
             "g = torch.exp(-(u * u) / (2.0 * (rho / 2) * (rho / 2)))"),)),
    Mutant("no_blend", "coarse-to-fine blend removed (x_tilde = x_hat)",
           (("diffusion/sampling.py", "return x_hat - blur(x_hat) + coarse_up",
             "return x_hat"),)),
    Mutant("halo_short_exact", "halo one pixel short per denoiser call (exact/fused/fast "
           "levels: the receptive field P - 2 instead of P - 1)",
           (("diffusion/generator.py", "return patch_size - 1", "return patch_size - 2"),)),
    Mutant("halo_short_fast", "fast backend's extra halo one pixel short per step "
           "(query_stride > P - 1)",
           (("diffusion/fast.py", "return max(0, query_stride - (patch_size - 1)) * steps",
             "return max(0, query_stride - patch_size) * steps"),)),
    Mutant("noise_shift", "noise keyed one pixel to the right",
           (("diffusion/noise.py", "counter = (ys[:, None] << 32) + xs[None, :]",
             "counter = (ys[:, None] << 32) + xs[None, :] + 1"),)),
    Mutant("mult_exact", "multiplicities ignored by the exact denoiser",
           (("diffusion/denoiser.py",
             "bias = index.log_counts - (a * a * inv2s2) * index.sq_norms",
             "bias = 0 * index.log_counts - (a * a * inv2s2) * index.sq_norms"),)),
    Mutant("mult_fused", "multiplicities ignored by the fused (attention) denoiser",
           (("diffusion/denoiser.py", "(-0.5 * a * a * index.sq_norms + s * s * index.log_counts)",
             "(-0.5 * a * a * index.sq_norms + 0 * index.log_counts)"),)),
    Mutant("mult_fast", "multiplicities ignored by the fast backend's candidate weights",
           (("diffusion/fast.py", "* inv2s2 + idx.log_counts[sc]",
             "* inv2s2 + 0 * idx.log_counts[sc]"),)),
    Mutant("ess_no_mult", "fast backend: the dictionary ESS that ends the broad steps ignores "
           "the representatives' multiplicities",
           (("diffusion/fast.py",
             "w = torch.softmax(logits + dic.log_counts.double().cpu()[None, :], 1)",
             "w = torch.softmax(logits, 1)"),)),
    Mutant("expand_double", "fast backend: an expanded group's representative still counted "
           "beside its entries (the group's mass twice)",
           (("diffusion/fast.py", "ld.scatter_(1, top, -math.inf)",
             "ld.scatter_(1, top, ld.gather(1, top))"),)),
    Mutant("expand_mult", "fast backend: an expanded group's entries without their "
           "multiplicities",
           (("diffusion/fast.py", "bias_e = idx.log_counts - (a * a * inv2s2) * idx.sq_norms",
             "bias_e = 0 * idx.log_counts - (a * a * inv2s2) * idx.sq_norms"),)),
    Mutant("expand_mass", "fast backend: a subsampled group's entries stand for themselves "
           "only (the group's mass not kept)",
           (("diffusion/fast.py", "part = torch.log((cnt.to(torch.float32) / nl)",
             "part = 0 * torch.log((cnt.to(torch.float32) / nl)"),)),
    Mutant("expand_ess_ignored", "fast backend: groups expanded at every broad step "
           "(the reference ESS rule ignored)",
           (("diffusion/fast.py", "and dictionary_ess(lv, s) < prm.expand_below_ess",
             "and True"),)),
    Mutant("full_stride_ignored", "a small fast level keeps the configured query stride "
           "(denoiser.full_stride_pixels ignored)",
           (("diffusion/backends.py",
             "if out_hw[0] * out_hw[1] <= settings.full_stride_pixels:", "if False:"),)),
    Mutant("full_stride_tiles", "the tiled tasks build a small fast level with the run's "
           "settings instead of the level's",
           (("pipeline/tasks.py",
             "settings=level_settings(spec.denoiser, lv.out_hw), prior=pos)",
             "settings=spec.denoiser, prior=pos)"),)),
    Mutant("blocks_one_thread", "the fast backend's row blocks never use a second thread",
           (("diffusion/numerics.py",
             "workers = min(len(starts), torch.get_num_threads())", "workers = 1"),)),
    Mutant("blocks_unguarded", "row blocks on several threads without the one-BLAS-thread "
           "guard", (("diffusion/numerics.py",
                      "with one_blas_thread(), torch.inference_mode(inference)",
                      "with torch.inference_mode(inference)"),)),
    Mutant("blocks_modeless", "row blocks on several threads without the caller's inference "
           "mode", (("diffusion/numerics.py",
                     "with one_blas_thread(), torch.inference_mode(inference), "
                     "torch.set_grad_enabled(grad):", "with one_blas_thread():"),)),
    Mutant("ess_ignored", "fast backend: the ESS switch ignored (fixed broad step count)",
           (("diffusion/fast.py", "or dictionary_ess(lv, s) >= prm.broad_min_ess)",
             "or True)"),)),
    Mutant("reseed_off", "fast backend: later late steps without the nearest "
           "representatives' groups (propagation and probes alone)",
           (("diffusion/fast.py", "            reseed = 0 if exhaustive else min(self.params.reseed_groups,",
             "            reseed = 0 if True else min(self.params.reseed_groups,"),)),
    Mutant("reseed_chunk", "fast backend: each chunk's reseeded groups from the first "
           "chunk's queries", (("diffusion/fast.py",
                                "near, _ = _nearest(z[qid], keys, keys_sq, reseed, budget)",
                                "near, _ = _nearest(z[:qid.numel()], keys, keys_sq, reseed, "
                                "budget)"),)),
    # the composition priors (issue 13; on in the default preset)
    Mutant("usage_sign", "usage prior: used patches gain weight instead of losing it",
           (("diffusion/priors.py", "return (lc - float(strength) * torch.log1p(per_copy))",
             "return (lc + float(strength) * torch.log1p(per_copy))"),)),
    Mutant("position_x", "position prior: the horizontal term on with position_axes y",
           (("diffusion/priors.py",
             "weights = (lam / 2.0, lam / 2.0 if self.position_axes == \"xy\" else 0.0)",
             "weights = (lam / 2.0, lam / 2.0)"),)),
    Mutant("t0_ignored", "partial-noise start: the coarsest level starts from pure noise",
           (("diffusion/priors.py", "return (1.0 - t0) * clean + t0 * noise",
             "return noise"),)),
    Mutant("priors_on_torus", "a tileable output keeps the default's priors",
           (("pipeline/plan.py", "    if priors_dropped(config):\n",
             "    if False:\n"),)),
]
BY_NAME = {m.name: m for m in MUTANTS}


def apply(mutant: Mutant, dest: Path) -> list[str]:
    """Copy ``src/`` to ``dest/src`` with the mutant applied; returns the edits not found."""
    src = dest / "src"
    shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    missing = []
    for rel, old, new in mutant.edits:
        f = src / "gigapatch" / rel
        text = f.read_text()
        if text.count(old) != 1:
            missing.append(f"{rel}: {old!r} found {text.count(old)} times")
            continue
        f.write_text(text.replace(old, new))
    return missing


def run_tests(src: Path, tests: list[str], all_failures: bool) -> tuple[int, list[str], float]:
    """pytest on ``tests`` with ``src`` first on the path: (exit code, failed test ids, s)."""
    env = dict(os.environ, PYTHONPATH=str(src), PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf",
           "--no-header", *tests]
    if not all_failures:
        cmd.insert(4, "-x")
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    failed = [line.split(" ", 1)[1].split(" - ")[0] for line in proc.stdout.splitlines()
              if line.startswith("FAILED ")]
    return proc.returncode, failed, time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("names", nargs="*", help="mutants to run (default: all)")
    ap.add_argument("--tests", nargs="*", default=["tests"],
                    help="test paths to run against each mutant (default: the whole suite)")
    ap.add_argument("--all-failures", action="store_true",
                    help="run every test instead of stopping at the first failure")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args(argv)
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:18s} {m.what}")
        return 0
    names = args.names or [m.name for m in MUTANTS]
    results = []
    survived = 0
    for name in names:
        m = BY_NAME[name]
        with tempfile.TemporaryDirectory(prefix=f"mutant-{name}-") as tmp:
            missing = apply(m, Path(tmp))
            if missing:
                row = {"mutant": name, "what": m.what, "status": "NOT APPLIED",
                       "missing": missing}
                survived += 1
            else:
                rc, failed, dt = run_tests(Path(tmp) / "src", args.tests, args.all_failures)
                killed = rc != 0 and bool(failed)
                survived += not killed
                row = {"mutant": name, "what": m.what,
                       "status": "killed" if killed else f"SURVIVED (pytest exit {rc})",
                       "failed_tests": failed, "seconds": round(dt, 1)}
        results.append(row)
        print(f"{name:18s} {row['status']:10s} {', '.join(row.get('failed_tests', row.get('missing', [])))}",
              file=sys.stderr, flush=True)
    print(json.dumps({"mutants": results, "survived": survived}, indent=1))
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
