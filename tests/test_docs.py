"""README.md and docs/*.md: links resolve, the README stays short and self-contained, the
defaults it states are the shipped config's, and the configuration reference names every
config key."""

import dataclasses
import re
import typing
from pathlib import Path

import pytest

from dmml_tf.config import Config, load_config

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_BYTES = 12_288

# [text](target) and ![alt](target); the target stops at whitespace or ")" (an optional
# "title" after it is ignored).
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = re.compile(r"^(?:https?://|mailto:)", re.IGNORECASE)
NUMBER = r"(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"


def without_code(text):
    """`text` without fenced code blocks (their brackets are code, not links)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)


def relative_links(page):
    """The relative link targets of `page`, `#anchor` suffixes stripped."""
    targets = []
    for target in LINK.findall(without_code(page.read_text())):
        if EXTERNAL.match(target) or target.startswith("#"):
            continue
        targets.append(target.split("#", 1)[0])
    return targets


def test_pages_are_found():
    names = {page.name for page in PAGES}
    assert {"README.md", "method.md", "configuration.md", "distributed.md",
            "serving.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_relative_links_resolve(page):
    missing = [target for target in relative_links(page)
               if not (page.parent / target).exists()]
    assert not missing, f"{page.relative_to(ROOT)} links to missing files: {missing}"


def test_link_pattern_reads_both_forms():
    text = ("see [the method](docs/method.md#views), ![plot](docs/results_test.png), "
            "[site](https://example.com/x) and [top](#quick-start)")
    found = [t for t in LINK.findall(text) if not EXTERNAL.match(t) and not t.startswith("#")]
    assert found == ["docs/method.md#views", "docs/results_test.png"]


def test_readme_is_short():
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes, at most {README_MAX_BYTES}"


def test_readme_links_nothing_internal():
    text = README.read_text()
    assert "../shared" not in text
    assert "DESIGN.md" not in text and "STYLE.md" not in text


def stated(symbol):
    """The numbers the README states as `<symbol> = <number>`."""
    return [float(n) for n in re.findall(rf"{symbol}\s*=\s*{NUMBER}", README.read_text())]


def test_readme_states_the_shipped_lambda_and_tau():
    config = load_config(ROOT / "configs" / "emoji_styles.yaml")
    lambdas, taus = stated("λ"), stated("τ")
    assert lambdas and taus, "README.md should state the default λ and τ as `λ = …`, `τ = …`"
    assert all(value == config.loss.relational_weight for value in lambdas), lambdas
    assert all(value == config.cohort.ema_decay for value in taus), taus


def test_configuration_reference_names_every_key():
    """docs/configuration.md names every top-level key, and every section under its own
    heading with each of its keys."""
    text = (ROOT / "docs" / "configuration.md").read_text()
    missing = []
    for name, kind in typing.get_type_hints(Config).items():
        if not dataclasses.is_dataclass(kind):
            missing += [] if f"`{name}`" in text else [name]
            continue
        heading = f"\n## `{name}`\n"
        if heading not in text:
            missing.append(f"section {name}")
            continue
        body = text.split(heading, 1)[1].split("\n## ", 1)[0]
        missing += [f"{name}.{key}" for key in typing.get_type_hints(kind) if f"`{key}`" not in body]
    assert not missing, f"docs/configuration.md does not describe: {missing}"


DEFAULT_RUN = ROOT / "benchmarks" / "results" / "default_run" / "time.txt"


def measured_default_run(text):
    """(`XmYYs`, `N.N GB`): wall time and peak memory from `/usr/bin/time -v` output."""
    clock = re.search(r"Elapsed \(wall clock\) time .*?: (?:(\d+):)?(\d+):(\d+(?:\.\d+)?)", text)
    hours, minutes, seconds = clock.groups()
    total = round(int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds))
    kbytes = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    return f"{total // 60}m{total % 60:02d}s", f"{kbytes / 2**20:.1f} GB"


def test_measured_default_run_reads_time_output():
    text = ("\tElapsed (wall clock) time (h:mm:ss or m:ss): 11:07.52\n"
            "\tMaximum resident set size (kbytes): 5347737\n")
    assert measured_default_run(text) == ("11m08s", "5.1 GB")
    assert measured_default_run(text.replace("11:07.52", "1:02:03.4"))[0] == "62m03s"


def test_readme_and_config_state_the_last_measured_run_time():
    """benchmarks/default_run.sh writes the measurement; both places quote it."""
    wall, memory = measured_default_run(DEFAULT_RUN.read_text())
    first_line = (ROOT / "configs" / "emoji_styles.yaml").read_text().splitlines()[0]
    for place, text in (("README.md", README.read_text()),
                        ("the first line of configs/emoji_styles.yaml", first_line)):
        assert wall in text and memory in text, (
            f"{place} should state the last measured run: {wall}, {memory} peak memory")
