"""A regime sweep's table and its rule's choice, from the committed validation results.

    python benchmarks/regimes.py third     # or: fourth

Reads docs/results_regime_<regime>_validation.json (written by `reproduce.py validation`)
and the independent runs' metrics.json under benchmarks/results/regimes/<regime>/. The
rule (docs/results_emoji_styles.md, written before the runs): a regime qualifies only if its
independent training learns (its ensemble's mean Recall@1 above the backbone's before
training); among those, the highest mean of the members' and the ensemble's mean paired
Recall@1 difference. Prints a markdown table and the chosen regime.
"""

import argparse
import json
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CANDIDATE = "rkd lambda=10"
SWEEPS = {
    "third": {
        "lr_1e-3": "fine-tune, lr 1e-3, 3 epochs",
        "scratch": "from scratch, lr 1e-3, 3 epochs",
        "epochs_8": "fine-tune, lr 1e-4, 8 epochs",
    },
    "fourth": {
        "scratch_epochs_8": "from scratch, lr 1e-3, 8 epochs",
        "lr_3e-4": "fine-tune, lr 3e-4, 3 epochs",
    },
}


def points(record):
    return f"{100 * record['mean']:+.1f} [{100 * record['low']:+.1f}, {100 * record['high']:+.1f}]"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", choices=list(SWEEPS))
    sweep = SWEEPS[parser.parse_args().sweep]
    print("| regime | backbone before training | independent: members | independent: ensemble "
          "| DM2 − independent: members | ensemble | shadow ensemble | members MAP@R "
          "| rule score | qualifies |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    score = {}
    for name, label in sweep.items():
        summary_file = ROOT / "docs" / f"results_regime_{name}_validation.json"
        if not summary_file.is_file():
            continue
        results = json.loads(summary_file.read_text())
        record = {(r["network"], r["metric"]): r for r in results["records"]}
        independent = results["summary"]["independent"]
        runs = sorted((ROOT / "benchmarks/results/regimes" / name / "validation/independent")
                      .glob("seed*/*/metrics.json"))
        backbone = statistics.mean(json.loads(run.read_text())["pretrained (not fine-tuned)"]
                                   ["recall@1"] for run in runs)
        qualifies = independent["ensemble recall@1"] > backbone
        if qualifies:
            score[name] = results["summary"][CANDIDATE]["score"]
        print(f"| {label} | {100 * backbone:.1f} | {100 * independent['members recall@1']:.1f} "
              f"| {100 * independent['ensemble recall@1']:.1f} "
              f"| {points(record['members', 'recall@1'])} | {points(record['ensemble', 'recall@1'])} "
              f"| {points(record['shadow_ensemble', 'recall@1'])} | {points(record['members', 'map@r'])} "
              f"| {100 * results['summary'][CANDIDATE]['score']:+.1f} | {'yes' if qualifies else 'no'} |")
    print(f"\nchosen by the rule: {max(score, key=score.get) if score else 'none qualifies'}")


if __name__ == "__main__":
    main()
