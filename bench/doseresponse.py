"""Benchmark the read-out: does the report recover the generator's EC50 on the demo plate?

    python bench/doseresponse.py [--seeds 0,1,2] [--out bench/results/doseresponse-runs]

For each generator seed the demo plate (:class:`pipeline.config.demo.DemoConfig`: 3 control
wells, one G1-arresting drug at 6 doses x 2 replicate wells, 6 time points of 21 x 128 x 128,
true EC50 1 uM, Hill 1.5) is generated and run end to end by ``spheroid run`` (U-Net
segmentation, phase calls, tracking, report). The same fits are also made on the generator's
truth (true phases and nucleus counts) as the baseline, measured in the same run: what the
read-out gives without segmentation and classification errors.

Target (PASS/FAIL), for every seed and both read-outs (G1 fraction at the first time
point, growth over the series): the report's EC50 within 1.5-fold of the true value and the
true value inside its 95 % confidence interval.
Writes ``bench/results/doseresponse.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

TARGET_FOLD = 1.5


def truth_fits(folder: Path, config) -> list[dict]:
    """The same 4PL fits on the generator's truth tables (baseline)."""
    import pandas as pd

    from pipeline.report.doseresponse import fit_dose_response
    from pipeline.synth import read_table

    drug = config.synth.drug
    rows = []
    for well in config.synth.wells:
        tab = read_table(folder / "example" / "truth" / f"{well}_nuclei.csv")
        counts = tab.groupby("t").size()
        rows.append({"well": well, "dose": drug.dose(well), "g1_fraction": (tab[tab["t"] == 0]["phase"] == "G1").mean(), "growth": counts.iloc[-1] / counts.iloc[0]})
    table = pd.DataFrame(rows)
    out = []
    for readout in config.report.dose_response.readouts:
        fit = fit_dose_response(table["dose"], table[readout], config.report.dose_response, drug=drug.name, unit=drug.unit, readout=readout)
        out.append(describe(fit, drug.ec50))
    return out


def describe(fit, true_ec50: float) -> dict:
    entry = {"readout": fit.readout, "status": fit.status, "ec50": fit.ec50, "ec50_low": fit.ec50_low, "ec50_high": fit.ec50_high, "hill": fit.hill}
    if fit.ok:
        entry["fold_error"] = max(fit.ec50 / true_ec50, true_ec50 / fit.ec50)
        entry["true_in_interval"] = bool(fit.ec50_low <= true_ec50 <= fit.ec50_high)
    return entry


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "doseresponse-runs")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from pipeline.config.demo import DemoConfig
    from pipeline.demo import run_demo

    results = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        config = DemoConfig()
        config = config.model_copy(update={"synth": config.synth.model_copy(update={"seed": seed})})
        if args.workers:
            config = config.model_copy(update={"cluster": config.cluster.model_copy(update={"n_workers": args.workers})})
        folder = args.out / f"seed{seed}"
        t0 = time.perf_counter()
        summary = run_demo(folder, config, progress=False)
        seconds = time.perf_counter() - t0
        pipeline_fits = [{k: v for k, v in f.items() if k not in ("drug", "unit", "true_ec50")} for f in summary["fits"]]
        entry = {"seed": seed, "seconds": round(seconds, 1), "stage_seconds": summary["seconds"], "evaluation": summary["evaluation"],
                 "report": pipeline_fits, "truth_baseline": truth_fits(folder, config)}
        results.append(entry)
        for f in pipeline_fits:
            print(f"seed {seed} {f['readout']:<12} {f['status']:<4} EC50 {f['ec50']:.3g} [{f['ec50_low']:.3g}, {f['ec50_high']:.3g}] "
                  f"fold {f.get('fold_error', float('nan')):.2f} true inside: {f.get('true_in_interval')}", flush=True)
        for f in entry["truth_baseline"]:
            print(f"seed {seed} truth {f['readout']:<12} {f['status']:<4} EC50 {f['ec50']:.3g} [{f['ec50_low']:.3g}, {f['ec50_high']:.3g}]", flush=True)
    ok = all(f["status"] == "ok" and f["fold_error"] <= TARGET_FOLD and f["true_in_interval"] for r in results for f in r["report"])
    verdict = "PASS" if ok else "FAIL"
    print(f"{verdict}: EC50 within {TARGET_FOLD}-fold with the true value inside the interval, {len(results)} seed(s) x {len(results[0]['report'])} read-out(s)")
    out = HERE / "results" / "doseresponse.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"target_fold": TARGET_FOLD, "true_ec50": DemoConfig().synth.drug.ec50, "verdict": verdict, "runs": results}, indent=2, default=float))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
