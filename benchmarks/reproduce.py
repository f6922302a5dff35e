"""Does DM2 beat independent training? Paired by seed, with 95 % t-intervals.

Every arm is one run of `dmml_tf.run.train` (what `main.py` runs), in this process, on
`emoji_styles` once per seed; the same seed draws the same
class split for every arm, so each arm is compared with independent training seed by
seed, and the mean paired difference is reported with its 95 % t-interval.

    # 1. Choose a setting on validation classes (held out of the training classes; the
    #    test classes are never touched), each candidate against independent training:
    python benchmarks/reproduce.py validation --seeds 0 1 2 --epochs 3
    # 2. The test comparison with the chosen setting (DM2's arms take its overrides):
    python benchmarks/reproduce.py test --epochs 3 --winner-of docs/results_validation.json

On icon_concepts (docs/results.md, "Protocol"), independent training is tuned first, then
every DM2 candidate of the `diversity` protocol runs on the schedule it chose:

    python benchmarks/reproduce.py grid --dataset icon_concepts
    python benchmarks/reproduce.py validation --dataset icon_concepts --protocol diversity \
        --epochs E --set train.learning_rate=LR
    python benchmarks/reproduce.py test --dataset icon_concepts --epochs E \
        --set train.learning_rate=LR --winner-of docs/results_icon_concepts_validation.json

each with `--work benchmarks/results/icon_concepts --out docs/results_icon_concepts` as
docs/results.md runs them. `--set` reaches every arm; `--winner-of`, the rule's winner,
reaches DM2's arms only.

`test` runs DM2 and independent training at equal epochs (5 seeds), independent training
at DM2's wall time (it gets the extra steps that DM2's slower step costs; 3 seeds), and
DM2 without each diversity (3 seeds; `--equal-epochs-only` skips these two). `losses`
runs both arms on the test classes with each metric loss of LOSSES at its paper's
settings (3 seeds; triplet's runs are `test`'s, read back):

    python benchmarks/reproduce.py losses --epochs 3 --work benchmarks/results

Finished runs are read back, so an interrupted sweep resumes where it stopped; a run
that `--work` holds with other settings than the sweep's stops it with the settings named
(another sweep's runs need their own `--work`). Writes
`<out>_<split>.json` (one record per comparison, network and metric, as fractions) and
`<out>_<split>.png` (the paired differences).
"""

import argparse
import csv
import json
import math
import re
import statistics
import sys
import time
from pathlib import Path

from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's dmml_tf, also when run from a git worktree
import dmml_tf  # noqa: E402,F401  first: it quiets TensorFlow's GPU probe without a GPU
import keras  # noqa: E402

from dmml_tf.cli import parse_args, resolve_config  # noqa: E402
from dmml_tf.config import config_to_dict  # noqa: E402
from dmml_tf.run import load_run, train  # noqa: E402

BASELINE = "independent"
INDEPENDENT = ["cohort.mutual=false"]
# Validation candidates, each on top of configs/<dataset>.yaml (rkd, lambda = 10,
# tau = 0.99 with a 100-step warm-up), one set per protocol.
# relational (emoji_styles' sweeps): similarity_kl: S2SD's weight 50 at temperature 1;
# at 0.1, lambda * T^2 kept at S2SD's 50 * 1^2 (the usual scaling of distillation by T^2).
RELATIONAL = {
    "rkd lambda=1": ["loss.relational_weight=1"],
    "rkd lambda=10": [],
    "rkd lambda=30": ["loss.relational_weight=30"],
    "rkd distance+angle(2) lambda=10": ["loss.angle_weight=2"],
    "similarity_kl T=1 lambda=50": ["loss.relational=similarity_kl",
                                    "loss.relational_temperature=1", "loss.relational_weight=50"],
    "similarity_kl T=0.1 lambda=0.5": ["loss.relational=similarity_kl",
                                       "loss.relational_temperature=0.1",
                                       "loss.relational_weight=0.5"],
    "rkd lambda=10 warm-up 30 steps": ["cohort.ema_warmup_steps=30"],
    "rkd lambda=10 warm-up 300 steps": ["cohort.ema_warmup_steps=300"],
}
# diversity (icon_concepts): options that keep a cohort diverse when its members start
# from one pretrained network, and how teachers are weighted; named before the runs.
COMBINED = ["model.dropout=0.3", "cohort.peer_weight=2", "cohort.own_shadow=false",
            "views.network_policies=[policy, strong_policy]", "loss.triplet_reduction=nonzero"]
DIVERSITY = {
    "default (rkd lambda=10, peers and shadows)": [],
    "head dropout 0.3": ["model.dropout=0.3"],
    "peer above shadows (2:1, own shadow off)": ["cohort.peer_weight=2", "cohort.own_shadow=false"],
    "peers only": ["cohort.teachers=peers"],
    "strong view for member 1": ["views.network_policies=[policy, strong_policy]"],
    "nonzero triplet reduction": ["loss.triplet_reduction=nonzero"],
    "lambda=30": ["loss.relational_weight=30"],
    "three members": ["cohort.members=3"],
    "combined (dropout, peer above shadows, strong view, nonzero)": COMBINED,
}
PROTOCOLS = {"relational": RELATIONAL, "diversity": DIVERSITY}
# grid: independent training's learning rates; each runs GRID_EPOCHS[-1] epochs at a
# constant rate, evaluated after each epoch count of GRID_EPOCHS (the same weights as a
# run of that length).
GRID_LEARNING_RATES = (1e-4, 3e-4, 1e-3)
GRID_EPOCHS = (2, 4, 6, 8)
# Test: DESIGN's ablations; peers teach through model diversity, shadows through temporal.
ABLATIONS = {
    "dm2 without model diversity": ["cohort.own_seeds=false", "cohort.teachers=shadows"],
    "dm2 without temporal diversity": ["cohort.teachers=peers"],
    "dm2 without view diversity": ["cohort.view_diversity=false"],
}
# losses: the metric losses compared, each at its paper's settings (loss.metric_options unset).
LOSSES = ("contrastive", "multi_similarity", "proxy_anchor", "arcface", "triplet")
NETWORKS = ("members", "ensemble", "shadow_ensemble")
METRICS = ("recall@1", "map@r")
# Settings a finished run may differ in and still be read back: they change where it is
# (runs may be moved) or how fast it evaluates, not what it learns or measures.
NOT_COMPARED = ("run_directory", "evaluate.batch_size")


def run_arm(arm, overrides, seed, args):
    """One training run, as `main.py` makes it; its metrics.json (read back if it finished
    before)."""
    slug = "".join(c if c.isalnum() or c in "=.-" else "_" for c in arm)
    split = "test" if args.split in ("test", "losses") else "validation"  # data.split
    sweep = "test" if args.split == "losses" else args.split  # triplet's runs are test's
    run_directory = args.work / sweep / slug / f"seed{seed}"
    settings = [f"seed={seed}", f"train.epochs={args.epochs}", f"run_directory={run_directory}",
                "export.enabled=false", "evaluate.every_epochs=0", f"data.split={split}",
                *args.overrides, *overrides]
    command = ["--dataset", args.dataset, *(i for s in settings for i in ("--set", s))]
    config_file = ROOT / "configs" / f"{args.dataset}.yaml"  # this checkout's, whatever the cwd
    command += ["--config", str(config_file)] if config_file.is_file() else []
    config = resolve_config(parse_args(command))
    folder = config.run_folder()
    metrics = folder / "metrics.json"
    if metrics.is_file():
        changed = changed_settings(load_run(folder), config)
        if changed:
            sys.exit(f"{folder} holds a finished run of other settings than this "
                     f"sweep's {arm}, seed {seed} ({'; '.join(changed)}): give this sweep "
                     f"its own --work")
    else:
        print(f"-- {arm}, seed {seed}", flush=True)
        started = time.time()
        train(config)
        keras.backend.clear_session()  # the next run builds its cohort in a fresh graph
        print(f"   {time.time() - started:.0f} s", flush=True)
    run = json.loads(metrics.read_text())
    run["gradient_ratio"] = last_gradient_ratio(folder / "history.csv")
    evaluations = folder / "evaluation_history.json"
    if evaluations.is_file():
        run["evaluations"] = {entry["epoch"]: entry["results"]
                              for entry in json.loads(evaluations.read_text())}
    return run


def changed_settings(saved, asked):
    """`key: saved -> asked` for each setting of a finished run that this sweep would set
    otherwise, but for those of NOT_COMPARED."""
    def flat(values, prefix=""):
        for key, value in values.items():
            if isinstance(value, dict):
                yield from flat(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    saved, asked = dict(flat(config_to_dict(saved))), dict(flat(config_to_dict(asked)))
    return [f"{key}: {value!r} -> {asked[key]!r}" for key, value in saved.items()
            if key not in NOT_COMPARED and value != asked[key]]


def last_gradient_ratio(history):
    """The last epoch's relational / triplet gradient ratio, averaged over the members."""
    with open(history) as file:
        last = list(csv.DictReader(file))[-1]
    ratios = [float(v) for k, v in last.items() if k.endswith("_gradient_ratio")
              and not k.startswith("val_") and v not in ("", "NA")]
    return statistics.mean(ratios) if ratios else float("nan")


def before_training(run):
    """A run's results of its members' initial weights, named as its trained networks'
    (empty for runs older than that evaluation)."""
    return {name.removesuffix(" before training"): values for name, values in run.items()
            if name.endswith(" before training")}


def network_metrics(run, network):
    """One run's metrics of `network`; `members` averages the online members."""
    if network != "members":
        return run[network]
    members = [v for name, v in run.items() if re.fullmatch(r"member\d+", name)]
    return {m: statistics.mean(v[m] for v in members) for m in METRICS}


def paired_interval(differences, confidence=0.95):
    """(mean, low, high): the mean paired difference and its two-sided t-interval."""
    mean = statistics.mean(differences)
    if len(differences) < 2:
        return mean, float("nan"), float("nan")
    half = (stats.t.ppf(0.5 + confidence / 2, len(differences) - 1)
            * statistics.stdev(differences) / math.sqrt(len(differences)))
    return mean, mean - half, mean + half


def compare(comparison, budget, runs, baseline_runs):
    """Records of `runs` minus `baseline_runs`, seed by seed, per network and metric."""
    records = []
    for network in NETWORKS:
        for metric in METRICS:
            differences = [network_metrics(r, network)[metric] - network_metrics(b, network)[metric]
                           for r, b in zip(runs, baseline_runs)]
            mean, low, high = paired_interval(differences)
            records.append({"comparison": comparison, "budget": budget, "network": network,
                            "metric": metric, "seeds": len(differences), "mean": mean,
                            "low": low, "high": high, "differences": differences})
    return records


def selection_score(records, comparison):
    """The rule written in docs/results_emoji_styles.md and docs/results.md before each validation sweep: the mean of the
    members' and the ensemble's mean paired Recall@1 differences."""
    picked = {r["network"]: r["mean"] for r in records if r["comparison"] == comparison
              and r["metric"] == "recall@1"}
    return (picked["members"] + picked["ensemble"]) / 2


def validation(args):
    baseline = [run_arm(BASELINE, INDEPENDENT, seed, args) for seed in args.seeds]
    records, summary = [], {BASELINE: {  # its level, to read the differences against
        f"{n} {m}": statistics.mean(network_metrics(r, n)[m] for r in baseline)
        for n in NETWORKS for m in METRICS}}
    candidates = PROTOCOLS[args.protocol]
    for name in args.candidates or list(candidates):
        runs = [run_arm(name, candidates[name], seed, args) for seed in args.seeds]
        comparison = f"{name} - {BASELINE}"
        records += compare(comparison, "equal_epochs", runs, baseline)
        summary[name] = {"score": selection_score(records, comparison),
                         "gradient_ratio": statistics.mean(r["gradient_ratio"] for r in runs),
                         "training_seconds": statistics.mean(r["seconds"]["training"] for r in runs)}
        save(args, records, summary)  # after each candidate, so a partial sweep is readable
    print(f"\nchosen by the rule (highest mean of members' and ensemble's Recall@1 gain): "
          f"{chosen(summary)}")


def chosen(summary):
    """The candidate a validation sweep's rule chooses: the highest score."""
    return max((name for name in summary if "score" in summary[name]),
               key=lambda name: summary[name]["score"])


def winner(validation_json):
    """The name and overrides of the candidate a validation sweep's results chose."""
    name = chosen(json.loads(Path(validation_json).read_text())["summary"])
    return name, next(c[name] for c in PROTOCOLS.values() if name in c)


def level(results):
    """The grid's score of one evaluation: the mean of the members' mean Recall@1 and the
    ensemble's Recall@1."""
    return (network_metrics(results, "members")["recall@1"] + results["ensemble"]["recall@1"]) / 2


def grid(args):
    """Independent training's learning rate and epochs, by the rule written before the
    sweep: the highest mean `level` over the seeds, on validation classes; ties go to
    fewer epochs, then the smaller rate."""
    args.epochs = GRID_EPOCHS[-1]
    summary, records = {}, []
    for rate in GRID_LEARNING_RATES:
        overrides = [*INDEPENDENT, f"train.learning_rate={rate}",
                     f"evaluate.every_epochs={GRID_EPOCHS[0]}"]
        runs = [run_arm(f"{BASELINE} lr={rate:g}", overrides, seed, args) for seed in args.seeds]
        for epochs in GRID_EPOCHS:
            levels = [level(run["evaluations"][epochs]) for run in runs]
            members = [network_metrics(run["evaluations"][epochs], "members")["recall@1"] for run in runs]
            ensemble = [run["evaluations"][epochs]["ensemble"]["recall@1"] for run in runs]
            summary[f"lr={rate:g} epochs={epochs}"] = {
                "learning_rate": rate, "epochs": epochs, "score": statistics.mean(levels),
                "levels": levels, "members recall@1": statistics.mean(members),
                "ensemble recall@1": statistics.mean(ensemble),
                "before training": statistics.mean(level(before_training(run)) for run in runs)}
        save(args, records, summary)
    best = max(summary.values(), key=lambda row: (round(row["score"], 6), -row["epochs"],
                                                   -row["learning_rate"]))
    summary["chosen"] = {"learning_rate": best["learning_rate"], "epochs": best["epochs"]}
    save(args, records, summary)
    print(f"\nchosen by the rule (highest mean level on validation classes): "
          f"lr={best['learning_rate']:g}, {best['epochs']} epochs")


def wall_time_steps(dm2_runs, independent_runs):
    """Training steps that give independent training DM2's training wall time."""
    def seconds_per_step(runs):
        return statistics.mean(r["seconds"]["training"] / r["training_steps"] for r in runs)

    return round(dm2_runs[0]["training_steps"] * seconds_per_step(dm2_runs)
                 / seconds_per_step(independent_runs))


def test(args):
    dm2, alone = [], []
    for seed in args.seeds:  # seed by seed, so a stopped sweep leaves whole pairs
        dm2.append(run_arm(args.dm2_arm, args.dm2_overrides, seed, args))
        alone.append(run_arm(BASELINE, INDEPENDENT, seed, args))
        records = compare("dm2 - independent", "equal_epochs", dm2, alone)
        save(args, records, {})
    if args.equal_epochs_only:
        return
    few = args.seeds[:args.ablation_seeds]
    steps = wall_time_steps(dm2, alone)
    epochs = math.ceil(steps * args.epochs / dm2[0]["training_steps"])
    longer = [f"train.epochs={epochs}", f"train.max_steps_per_epoch={math.ceil(steps / epochs)}"]
    args_longer = argparse.Namespace(**{**vars(args), "epochs": epochs})
    equal_time = [run_arm(f"{BASELINE} {steps} steps", INDEPENDENT + longer, seed, args_longer)
                  for seed in few]
    records += compare("dm2 - independent", "equal_wall_time", dm2[:len(few)], equal_time)
    summary = {"independent steps at equal wall time": steps, "dm2 steps": dm2[0]["training_steps"]}
    for name, overrides in ABLATIONS.items():
        # on top of the winner's overrides (an ablation that one of them sets is that run again)
        arm = name.replace("dm2", args.dm2_arm, 1)
        runs = [run_arm(arm, [*args.dm2_overrides, *overrides], seed, args) for seed in few]
        records += compare(f"{name} - dm2", "equal_epochs", runs, dm2[:len(few)])
        records += compare(f"{name} - independent", "equal_epochs", runs, alone[:len(few)])
        save(args, records, summary)


def losses(args):
    """DM2 against independent training, seed by seed, with each loss of LOSSES as the
    members' metric loss; the summary keeps each arm's level."""
    records, summary = [], {}
    for loss in args.losses:
        # triplet is the default loss: its arms are the `test` comparison's runs
        prefix = "" if loss == "triplet" else f"{loss} "
        arms = {"dm2": [f"loss.metric={loss}"], BASELINE: [*INDEPENDENT, f"loss.metric={loss}"]}
        runs = {arm: [] for arm in arms}
        for seed in args.seeds:
            for arm, overrides in arms.items():
                runs[arm].append(run_arm(prefix + arm, overrides, seed, args))
        records += compare(f"{loss}: dm2 - independent", "equal_epochs", runs["dm2"], runs[BASELINE])
        summary[loss] = {arm: level_of(arm_runs) for arm, arm_runs in runs.items()}
        save(args, records, summary)
    print(f"\n{losses_table(records, summary)}", flush=True)


def level_of(runs):
    """Mean over `runs` of the members' and ensemble's metrics, after training and (where
    the runs have it) before, and of the training time."""
    levels = {f"{n} {m}": statistics.mean(network_metrics(r, n)[m] for r in runs)
              for n in ("members", "ensemble") for m in METRICS}
    if all(before_training(r) for r in runs):
        levels |= {f"{n} recall@1 before training": statistics.mean(
            network_metrics(before_training(r), n)["recall@1"] for r in runs)
            for n in ("members", "ensemble")}
    return levels | {"training_seconds": statistics.mean(r["seconds"]["training"] for r in runs)}


def losses_table(records, summary):
    """Markdown, one row per loss: the members' Recall@1 before training, each arm's Recall@1
    (members' mean, ensemble) and DM2's paired gains in Recall@1 and MAP@R, in points."""
    def gain(r):
        return f"{100 * r['mean']:+.1f} [{100 * r['low']:+.1f}, {100 * r['high']:+.1f}]"

    lines = ["| loss | members R@1: before training | independent | DM2 | DM2 − independent | "
             "ensemble R@1: independent | DM2 | DM2 − independent | "
             "members MAP@R: DM2 − independent | ensemble MAP@R: DM2 − independent |",
             "|---" * 10 + "|"]
    for loss, arms in summary.items():
        cells = {(r["network"], r["metric"]): r for r in records
                 if r["comparison"] == f"{loss}: dm2 - independent"}
        before = arms["dm2"].get("members recall@1 before training")
        row = [loss, "—" if before is None else f"{100 * before:.1f}"]
        for network in ("members", "ensemble"):
            row += [f"{100 * arms[arm][f'{network} recall@1']:.1f}" for arm in (BASELINE, "dm2")]
            row.append(gain(cells[network, "recall@1"]))
        row += [gain(cells[network, "map@r"]) for network in ("members", "ensemble")]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def table(records):
    """Markdown: one row per comparison and budget, cells `mean [low, high]` in points."""
    header = [f"{n} {m}" for n in NETWORKS for m in METRICS]
    lines = ["| comparison | budget | seeds | " + " | ".join(header) + " |",
             "|---" * (len(header) + 3) + "|"]
    rows = {}
    for r in records:
        rows.setdefault((r["comparison"], r["budget"], r["seeds"]), {})[
            f"{r['network']} {r['metric']}"] = r
    for (comparison, budget, seeds), cells in rows.items():
        text = [f"{100 * c['mean']:+.1f} [{100 * c['low']:+.1f}, {100 * c['high']:+.1f}]"
                for c in (cells[h] for h in header)]
        lines.append(f"| {comparison} | {budget} | {seeds} | " + " | ".join(text) + " |")
    return "\n".join(lines)


def plot(records, path):
    """Paired Recall@1 differences with their 95 % intervals, one row per comparison."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picked = [r for r in records if r["metric"] == "recall@1"]
    rows = list(dict.fromkeys((r["comparison"], r["budget"]) for r in picked))
    figure, axis = plt.subplots(figsize=(9, 0.5 * len(rows) + 1.5))
    for offset, (network, color) in zip((-0.25, 0.0, 0.25), zip(NETWORKS, ("#4C72B0", "#55A868", "#DD8452"))):
        for y, row in enumerate(rows):
            r = next(r for r in picked if (r["comparison"], r["budget"]) == row and r["network"] == network)
            axis.errorbar(100 * r["mean"], y + offset, xerr=[[100 * (r["mean"] - r["low"])],
                                                            [100 * (r["high"] - r["mean"])]],
                          fmt="o", color=color, capsize=3, label=network if y == 0 else None)
    axis.axvline(0.0, color="#999999", linewidth=1)
    axis.set_yticks(range(len(rows)), [f"{c} ({b.replace('_', ' ')})" for c, b in rows])
    axis.invert_yaxis()
    axis.set_xlabel("Recall@1 difference (points): paired mean, 95 % t-interval")
    axis.legend(loc="best", fontsize=8)
    figure.savefig(path, dpi=120, bbox_inches="tight")  # the long row labels stay whole
    plt.close(figure)


def save(args, records, summary):
    out = Path(f"{args.out}_{args.split}")
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.json").write_text(json.dumps(
        {"records": records, "summary": summary, "seeds": args.seeds, "epochs": args.epochs,
         "overrides": args.overrides, "dm2_overrides": args.dm2_overrides}, indent=1))
    if records:  # the grid has no paired differences to plot
        plot(records, f"{out}.png")
    written = f"{out}.json" + (f", {out}.png" if records else "")
    print(f"\n{table(records)}\n\n{json.dumps(summary, indent=1)}\n-> {written}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("split", choices=["grid", "validation", "test", "losses"],
                        help="grid: independent training's learning rate and epochs (validation "
                        "classes); validation: DM2 candidates; test: the chosen setting; "
                        "losses: DM2 against independent training per metric loss (test classes)")
    parser.add_argument("--dataset", default="emoji_styles")
    parser.add_argument("--seeds", type=int, nargs="+", help="default: 0 1 2 for validation, "
                        "0 1 2 3 4 for test")
    parser.add_argument("--ablation-seeds", type=int, default=3,
                        help="test: seeds (the first ones) for equal wall time and ablations")
    parser.add_argument("--equal-epochs-only", action="store_true",
                        help="test: only DM2 against independent training at equal epochs")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--protocol", choices=list(PROTOCOLS), default="relational",
                        help="validation: the set of candidates")
    parser.add_argument("--candidates", nargs="+", choices=[n for c in PROTOCOLS.values() for n in c],
                        help="validation: some of the protocol's candidates (default: all)")
    parser.add_argument("--losses", nargs="+", choices=LOSSES, default=list(LOSSES),
                        help="losses: some of the metric losses (default: all)")
    parser.add_argument("--winner-of", type=Path, metavar="VALIDATION_JSON",
                        help="test: DM2's arms (not independent training's) take the overrides "
                        "of the candidate that this validation sweep's rule chose")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="an override for every arm, e.g. the chosen setting")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "reproduce")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    args = parser.parse_args()
    if args.winner_of and args.split != "test":
        parser.error("--winner-of is for `test` only")
    # DM2's runs are named after a winner that changes the config: another setting's DM2
    # runs can share --work.
    args.dm2_arm, args.dm2_overrides = "dm2", []
    if args.winner_of:
        name, args.dm2_overrides = winner(args.winner_of)
        args.dm2_arm = f"dm2 {name}" if args.dm2_overrides else "dm2"
        print(f"DM2 runs the candidate {args.winner_of} chose: {name} {args.dm2_overrides}")
    args.seeds = args.seeds or ([0, 1, 2, 3, 4] if args.split == "test" else [0, 1, 2])
    started = time.time()
    {"grid": grid, "validation": validation, "test": test, "losses": losses}[args.split](args)
    print(f"{len(args.seeds)} seeds, {args.epochs} epochs, split={args.split}, "
          f"{time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
