"""Every benchmark at a tiny size, started as a user starts it: `python benchmarks/x.py` in a
subprocess from an empty directory. Each must finish and print its result line with
plausible numbers, so a broken benchmark fails the suite. The numbers are not timings to
trust (tiny sizes, a busy machine): only their shape and sign are checked."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted((ROOT / "benchmarks").glob("*.py"))
# The smallest cohort that trains: two-convolution members on 24 emoji classes at 32 px
# (as `main.py --smoke`), in seconds instead of the default MobileNetV2's minutes.
TINY = ["model.backbone=tiny_cnn", "model.weights=null", "data.max_classes=24",
        "data.image_size=32", "data.classes_per_batch=4"]
NUMBER = r"(\d+\.\d+)"


def settings(overrides):
    return [arg for override in overrides for arg in ("--set", override)]


def run_benchmark(script, *args, cwd):
    """The benchmark's stdout; fails the test unless it exits with 0."""
    # `python benchmarks/x.py` puts benchmarks/, not the project, on sys.path: dmml_tf must
    # come from the installation (install.sh installs it in editable mode).
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *map(str, args)],
                            cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


def line(pattern, stdout):
    """The match of `pattern` on a whole line of `stdout`; fails the test without one."""
    match = re.search(f"^{pattern}$", stdout, re.MULTILINE)
    assert match, f"no line matches {pattern!r} in:\n{stdout[-3000:]}"
    return match


@pytest.mark.slow
@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda path: path.stem)
def test_benchmark_help(script, tmp_path):
    # The runs below use few options; this also formats every option's help.
    assert "usage:" in run_benchmark(script.name, "--help", cwd=tmp_path)


@pytest.mark.slow
def test_default_run_script_parses_and_times_main():
    # It runs the full default job (minutes): only its syntax and what it times are checked.
    script = ROOT / "benchmarks" / "default_run.sh"
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert re.search(r'^/usr/bin/time -v -o "\$out/time.txt" python "\$root/main.py"',
                     script.read_text(), re.MULTILINE)


@pytest.mark.slow
@pytest.mark.parametrize("sweep, regimes, chosen", [("third", 3, "epochs_8"),
                                                    ("fourth", 2, "scratch_epochs_8")])
def test_regimes_on_committed_results(sweep, regimes, chosen, tmp_path):
    stdout = run_benchmark("regimes.py", sweep, cwd=tmp_path)
    assert stdout.startswith("| regime | backbone before training |")
    # A regime whose committed results are missing is left out of the table silently.
    rows = re.findall(r"^\| [^|]+ \| \d+\.\d \| .* \| (?:yes|no) \|$", stdout, re.MULTILINE)
    assert len(rows) == regimes, stdout
    line(f"chosen by the rule: {chosen}", stdout)  # docs/results_emoji_styles.md's choice


@pytest.mark.slow
def test_search(tmp_path):
    # 20,000 vectors: the smallest gallery that ScaNN searches with a tree
    # (`evaluate.exact_below`), what the benchmark is about.
    stdout = run_benchmark("search.py", "--sizes", 20000, "--queries", 50, cwd=tmp_path)
    assert "scann/exact" in stdout and "recall@10" in stdout
    row = line(r"\s+20,000\s+(\w+)\s+[\d.]+\s+(\d+)\s+(\d+)\s+(\d+)\s+" + NUMBER + r"x\s+" + NUMBER,
               stdout)
    mode, *speeds, ratio, recall = row.groups()
    assert mode in ("tree", "brute_force")
    assert all(int(qps) > 0 for qps in speeds) and float(ratio) > 0
    assert 0.9 <= float(recall) <= 1.0  # clustered vectors: ScaNN finds nearly all 10
    line(r"peak memory \(RSS\): \d+\.\d\d GiB", stdout)


@pytest.mark.slow
def test_evaluation_gallery(tmp_path):
    stdout = run_benchmark("evaluation.py", "gallery", "--images", 2000, "--classes", 50,
                           cwd=tmp_path)
    line(r"2,000 images of 50 classes, dim 128, backend scann: \d+ s", stdout)
    recall = float(line(r"recall@1 (\d\.\d{4})  recall@2 .*", stdout).group(1))
    assert 0.5 < recall <= 1.0  # 40 images a class, cosine about 0.3 within one, 0 across
    line(r"peak memory \(RSS\) .* GiB before evaluating.*", stdout)


@pytest.mark.slow
def test_evaluation_cohort(tmp_path):
    stdout = run_benchmark("evaluation.py", "cohort", *settings(TINY), cwd=tmp_path)
    line(r"\d+ test images, 5 networks run; forward passes alone: .*", stdout)
    first, without = line(f"first evaluation / forward passes: {NUMBER} \\({NUMBER} without "
                          "compiling\\)", stdout).groups()
    later = line(f"evaluation / forward passes: {NUMBER}", stdout).group(1)
    assert float(first) > float(without) > 0 and float(later) > 0


@pytest.mark.slow
def test_input_pipeline(tmp_path):
    # 64 small JPEGs in 8 classes, half of them training classes: enough for 4 x 4 batches.
    # A proxy loss: the benchmark gives its cohort the training classes' proxies.
    stdout = run_benchmark("input_pipeline.py", *settings([*TINY, "loss.metric=proxy_anchor"]),
                           "--photos", 64,
                           "--photo-size", "64x48", "--batches", 2, "--steps", 2, cwd=tmp_path)
    pipeline = line(f"input pipeline \\(read, decode 64x48 JPEG, .*\\): +{NUMBER} images/s", stdout)
    step = line(f"DM2 train step \\(.*\\): +{NUMBER} images/s", stdout)
    ratio = line(f"ratio pipeline / train step: {NUMBER} \\(goal >= 3\\)", stdout)
    assert float(pipeline.group(1)) > 0 and float(step.group(1)) > 0
    assert float(ratio.group(1)) > 0


@pytest.mark.slow
def test_train_step(tmp_path):
    # XLA and mixed precision each trace more cohorts: minutes more even at this size.
    # A proxy loss: every cohort it builds gets the training classes' proxies.
    stdout = run_benchmark("train_step.py", *settings([*TINY, "loss.metric=proxy_anchor"]),
                           "--steps", 2, "--rounds", 1,
                           "--fit-steps", 2, "--skip", "xla", "precision", cwd=tmp_path)
    dm2 = line(f"DM2 / 2 single-member steps: {NUMBER} \\(goal <= 1.20\\)", stdout)
    fit = line(f"fit step / benchmark step: {NUMBER} \\(goal <= 1.1; .*\\)", stdout)
    ratios = line(f"DM2 step with gradient ratios on every step / on every 10th "
                  f"\\(train.log_every_steps; median steps\\): {NUMBER}", stdout)
    assert float(dm2.group(1)) > 0 and float(fit.group(1)) > 0 and float(ratios.group(1)) > 0
    line(r"  callbacks +[+-]\d+\.\d{3} s/step \(checkpoints, TensorBoard, CSV, guards\)", stdout)


CANDIDATE = "rkd lambda=10"


@pytest.fixture(scope="module")
def validation_sweep(tmp_path_factory):
    """`reproduce.py validation` at its smallest: one seed, one candidate, 1 epoch of 2
    steps of the tiny cohort; its finished runs also serve member_agreement.py."""
    cwd = tmp_path_factory.mktemp("reproduce")
    stdout = run_benchmark("reproduce.py", "validation", "--seeds", 0, "--candidates", CANDIDATE,
                           "--epochs", 1, "--work", "work", "--out", "out/results",
                           *settings([*TINY, "train.max_steps_per_epoch=2"]), cwd=cwd)
    return cwd, stdout


@pytest.mark.slow
def test_reproduce_validation(validation_sweep):
    cwd, stdout = validation_sweep
    line(f"chosen by the rule \\(highest mean of members' and ensemble's Recall@1 gain\\): "
         f"{CANDIDATE}", stdout)
    line(r"\| comparison \| budget \| seeds \| members recall@1 \| .*", stdout)
    # One seed: a mean difference, no interval.
    line(f"\\| {CANDIDATE} - independent \\| equal_epochs \\| 1 \\|"
         + r"( [+-]\d+\.\d \[\+nan, \+nan\] \|){6}", stdout)
    line(r"1 seeds, 1 epochs, split=validation, \d+ s", stdout)
    results = json.loads((cwd / "out/results_validation.json").read_text())
    assert len(results["records"]) == 6  # 3 networks x 2 metrics
    assert results["seeds"] == [0] and results["epochs"] == 1
    assert 0 < results["summary"]["independent"]["members recall@1"] <= 1
    assert -1 <= results["summary"][CANDIDATE]["score"] <= 1
    assert (cwd / "out/results_validation.png").is_file()


@pytest.mark.slow
def test_reproduce_reads_back_only_runs_of_its_own_settings(validation_sweep):
    cwd, _ = validation_sweep
    sweep = ["reproduce.py", "validation", "--seeds", 0, "--candidates", CANDIDATE,
             "--work", "work", "--out", "out/again"]
    tiny = settings([*TINY, "train.max_steps_per_epoch=2"])
    metrics = cwd / "work/validation/independent/seed0/emoji_styles/metrics.json"
    before = metrics.read_text()
    # Another evaluation batch size changes nothing the runs measured: read back, no training.
    stdout = run_benchmark(*sweep, "--epochs", 1, *tiny, "--set", "evaluate.batch_size=8", cwd=cwd)
    assert "-- independent, seed 0" not in stdout
    line(r"1 seeds, 1 epochs, split=validation, \d+ s", stdout)
    # Another schedule in the same --work: a clear error before any training.
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / sweep[0]),
                             *map(str, sweep[1:]), "--epochs", "2", *tiny],
                            cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert ("work/validation/independent/seed0/emoji_styles holds a finished run of other "
            "settings than this sweep's independent, seed 0 (train.epochs: 1 -> 2): give this "
            "sweep its own --work") in result.stderr
    assert "-- independent, seed 0" not in result.stdout
    assert metrics.read_text() == before


@pytest.mark.slow
def test_member_agreement(validation_sweep):
    cwd, _ = validation_sweep
    runs = [Path("work/validation") / arm / "seed0/emoji_styles"
            for arm in ("independent", CANDIDATE.replace(" ", "_"))]
    stdout = run_benchmark("member_agreement.py", *runs, cwd=cwd)
    line(r"\| run \| member0 R@1 \| member1 R@1 \| same neighbour \| both right \| one right "
         r"\| ensemble R@1 \|", stdout)
    for run in runs:
        row = line(re.escape(f"| {run} |") + r"( \d+\.\d \|){6}", stdout).group(0)
        member0, member1, *_, ensemble = (float(cell) for cell in row.split("|")[2:-1])
        # The same weights and test images as the run's own evaluation (exact search).
        metrics = json.loads((cwd / run / "metrics.json").read_text())
        for name, value in (("member0", member0), ("member1", member1), ("ensemble", ensemble)):
            assert value == pytest.approx(100 * metrics[name]["recall@1"], abs=0.06), name


@pytest.mark.slow
def test_reproduce_losses(tmp_path):
    """`reproduce.py losses` with one proxy loss and one seed: both arms train with it, on
    the test classes, and the summary keeps each arm's level."""
    stdout = run_benchmark("reproduce.py", "losses", "--seeds", 0, "--losses", "proxy_anchor",
                           "--epochs", 1, "--work", "work", "--out", "out/results",
                           *settings([*TINY, "train.max_steps_per_epoch=2"]), cwd=tmp_path)
    line(r"\| proxy_anchor: dm2 - independent \| equal_epochs \| 1 \|"
         r"( [+-]\d+\.\d \[\+nan, \+nan\] \|){6}", stdout)
    line(r"\| loss \| members R@1: before training \| independent \| DM2 \| .*", stdout)
    line(r"\| proxy_anchor( \| \d+\.\d){3} \| [+-]\d+\.\d \[\+nan, \+nan\]( \| \d+\.\d){2}"
         r"( \| [+-]\d+\.\d \[\+nan, \+nan\]){3} \|", stdout)
    results = json.loads((tmp_path / "out/results_losses.json").read_text())
    assert len(results["records"]) == 6
    for arm in ("dm2", "independent"):
        config = (tmp_path / f"work/test/proxy_anchor_{arm}/seed0/emoji_styles/config.yaml").read_text()
        assert "metric: proxy_anchor" in config and "split: test" in config
        assert 0 < results["summary"]["proxy_anchor"][arm]["members recall@1"] <= 1
    assert (tmp_path / "out/results_losses.png").is_file()


@pytest.mark.slow
def test_reproduce_test_runs_dm2_with_the_validation_winner(tmp_path):
    """`test --winner-of`: DM2 takes the overrides of the candidate with the highest score
    (its runs named after it); independent training keeps the schedule alone."""
    (tmp_path / "validation.json").write_text(json.dumps({"summary": {
        "independent": {"members recall@1": 0.5},
        "rkd lambda=10": {"score": 0.01}, "rkd lambda=30": {"score": 0.02},
        "rkd lambda=1": {"score": -0.01}}}))
    stdout = run_benchmark("reproduce.py", "test", "--seeds", 0, "--equal-epochs-only",
                           "--winner-of", "validation.json", "--epochs", 1, "--work", "work",
                           "--out", "out/results",
                           *settings([*TINY, "train.max_steps_per_epoch=2"]), cwd=tmp_path)
    line(r"DM2 runs the candidate validation.json chose: rkd lambda=30 "
         r"\['loss.relational_weight=30'\]", stdout)
    configs = {arm: (tmp_path / f"work/test/{arm}/seed0/emoji_styles/config.yaml").read_text()
               for arm in ("dm2_rkd_lambda=30", "independent")}
    assert "relational_weight: 30.0" in configs["dm2_rkd_lambda=30"] and "mutual: true" in configs["dm2_rkd_lambda=30"]
    assert "relational_weight: 10.0" in configs["independent"]
    assert "mutual: false" in configs["independent"]
    results = json.loads((tmp_path / "out/results_test.json").read_text())
    assert results["dm2_overrides"] == ["loss.relational_weight=30"]
