"""Does DM2 beat independent training, and does each diversity contribute?

Runs `main.py` on `emoji_styles` once per arm and seed, all arms with the same budget
(epochs, batch, image size), and writes a table (mean +- std over seeds) and a bar chart:

    python benchmarks/reproduce.py --seeds 0 1 2 --epochs 3 --out docs/results
    python benchmarks/reproduce.py --split validation ...   # choose settings on held-out
                                                           # training classes, never test

Arms: (a) the pretrained backbone without fine-tuning, (b) two members trained
independently (`cohort.mutual=false`), (c) full DM2, (d)-(f) DM2 without model, temporal
or view diversity. Extra `--set` overrides apply to every arm.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARMS = {
    "independent": ["cohort.mutual=false"],
    "dm2": [],
    # DESIGN §1: peers teach through model diversity, shadows through temporal diversity.
    "dm2 - model diversity": ["cohort.model_diversity=false", "cohort.teachers=shadows"],
    "dm2 - temporal diversity": ["cohort.teachers=peers"],
    "dm2 - view diversity": ["cohort.view_diversity=false"],
}
METRICS = ("recall@1", "recall@2", "recall@4", "recall@8", "map@r")


def run_arm(arm, seed, args, work):
    """One training run through the command line; returns its metrics.json."""
    run_directory = work / arm.replace(" ", "_") / f"seed{seed}"
    metrics = run_directory / args.dataset / "metrics.json"
    if metrics.is_file():  # finished earlier: a rerun resumes the sweep
        return json.loads(metrics.read_text())
    overrides = [f"seed={seed}", f"train.epochs={args.epochs}", f"run_directory={run_directory}",
                 "export.enabled=false",
                 "evaluate.every_epochs=0", f"data.split={args.split}",
                 *ARMS[arm], *args.overrides]
    command = [sys.executable, str(ROOT / "main.py"), "--dataset", args.dataset]
    command += [item for override in overrides for item in ("--set", override)]
    started = time.time()
    print(f"-- {arm}, seed {seed}", flush=True)
    subprocess.run(command, check=True, cwd=ROOT)
    print(f"   {time.time() - started:.0f} s", flush=True)
    return json.loads(metrics.read_text())


def members_mean(run):
    """One run's metrics averaged over its online members."""
    members = [values for name, values in run.items() if name.startswith("member")]
    return {m: statistics.mean(v[m] for v in members) for m in METRICS if m in members[0]}


def summarise(runs):
    """{row: {metric: (mean, std)}}: members averaged over members, ensembles as they are."""
    rows = {}

    def add(row, values_per_seed):
        rows[row] = {}
        for metric in METRICS:
            values = [v[metric] for v in values_per_seed if metric in v]
            if values:
                std = statistics.stdev(values) if len(values) > 1 else 0.0
                rows[row][metric] = (statistics.mean(values), std)

    first_arm = next(iter(runs))
    add("pretrained (not fine-tuned)", [r["pretrained (not fine-tuned)"] for r in runs[first_arm]])
    for arm, seeds in runs.items():
        add(f"{arm}: members", [members_mean(r) for r in seeds])
        add(f"{arm}: ensemble", [r["ensemble"] for r in seeds])
        if "shadow_ensemble" in seeds[0]:  # every arm keeps EMA shadows, mutual or not
            add(f"{arm}: shadow ensemble", [r["shadow_ensemble"] for r in seeds])
    return rows


def markdown_table(rows):
    metrics = [m for m in METRICS if any(m in values for values in rows.values())]
    lines = ["| | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for row, values in rows.items():
        cells = [f"{100 * values[m][0]:.1f} ± {100 * values[m][1]:.1f}" for m in metrics]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_differences(runs, baseline="independent"):
    """Recall@1 of each arm minus the baseline's, in points, seed by seed.

    The same seed draws the same class split for every arm, so these differences are free
    of the split's share of the seed spread.
    """
    if baseline not in runs:
        return ""
    lines = [f"| Recall@1 minus {baseline} | members | ensemble | shadow ensemble |",
             "|---|---|---|---|"]
    for arm, seeds in runs.items():
        if arm == baseline:
            continue
        cells = []
        for pick in (members_mean, lambda run: run["ensemble"], lambda run: run["shadow_ensemble"]):
            deltas = [100 * (pick(r)["recall@1"] - pick(b)["recall@1"])
                      for r, b in zip(seeds, runs[baseline])]
            cells.append(", ".join(f"{d:+.1f}" for d in deltas)
                         + f" (mean {statistics.mean(deltas):+.1f})")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bar_chart(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    means = [100 * rows[n]["recall@1"][0] for n in names]
    stds = [100 * rows[n]["recall@1"][1] for n in names]
    colors = ["#999999" if "pretrained" in n else "#4C72B0" if "members" in n
              else "#DD8452" if "shadow" in n else "#55A868" for n in names]
    figure, axis = plt.subplots(figsize=(9, 0.45 * len(names) + 1.2))
    axis.barh(names[::-1], means[::-1], xerr=stds[::-1], color=colors[::-1], capsize=3)
    axis.set_xlabel("Recall@1 (%), mean ± std over seeds")
    axis.set_xlim(min(means) - 5, max(means) + 3)
    for y, (mean, std) in enumerate(zip(means[::-1], stds[::-1])):
        axis.text(mean + std + 0.2, y, f"{mean:.1f}", va="center", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="emoji_styles")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--split", choices=["test", "validation"], default="test")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "reproduce")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    args = parser.parse_args()

    started = time.time()
    work = args.work / args.split
    runs = {arm: [run_arm(arm, seed, args, work) for seed in args.seeds] for arm in args.arms}
    rows = summarise(runs)
    # Against independent training: does DM2 help? Against full DM2: does each diversity?
    table = "\n\n".join(filter(None, [markdown_table(rows), paired_differences(runs, "independent"),
                                     paired_differences(runs, "dm2")]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    bar_chart(rows, Path(f"{args.out}_{args.split}.png"))
    Path(f"{args.out}_{args.split}.json").write_text(json.dumps(
        {"rows": rows, "runs": runs, "args": {k: str(v) for k, v in vars(args).items()},
         "wall_seconds": time.time() - started}, indent=1))
    print(f"\n{table}\n\n{len(args.seeds)} seeds, {args.epochs} epochs, split={args.split}, "
          f"{time.time() - started:.0f} s; chart: {args.out}_{args.split}.png")


if __name__ == "__main__":
    main()
