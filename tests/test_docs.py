"""docs/results.md and the README's results tables agree with the committed results files, and
every measured number on them comes from those files (tinydan.experiments.docs)."""
import json
import math
import re
import shutil
from pathlib import Path

import pytest

from tinydan.experiments import docs

ROOT = Path(__file__).resolve().parents[1]
NUMBER = re.compile(r"\d+(?:\.\d+)?(?:e[-+]?\d+)?")
# inputs, options and machine facts: not measurements
FIXED = {"config", "versions", "machine", "sizes", "quick", "threads_requested"}
REGENERATE = "run `python -m tinydan.experiments.docs` and commit docs/results.md and README.md"


def _copy_tree(dst: Path) -> Path:
    """The files the generator reads (results, README, page, lesson 03) copied under dst."""
    for f in [*(ROOT / "docs" / "results").rglob("*.json"), ROOT / "README.md",
              ROOT / "docs" / "results.md"]:
        target = dst / f.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, target)
    return dst


def _perturb(obj, key=None):
    """Every measured float x -> 1.1 x + 0.05 sign(x) sqrt|x| + 0.001 (not a scaling, so ratios
    move too; equal values stay equal) and int n -> n + 1 (strings and FIXED kept)."""
    if key in FIXED:
        return obj
    if isinstance(obj, dict):
        return {k: _perturb(v, k) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_perturb(v, key) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return obj + 1
    return obj * 1.1 + 0.05 * math.copysign(math.sqrt(abs(obj)), obj) + 0.001


def _fixed_numbers(obj, key=None, inside=False) -> set:
    """Number tokens the perturbation leaves alone: in strings, and under the FIXED keys."""
    inside = inside or key in FIXED
    if isinstance(obj, dict):
        return set().union(*[_fixed_numbers(v, k, inside) for k, v in obj.items()],
                           *[_fixed_numbers(k, None, inside) for k in obj])
    if isinstance(obj, list):
        return set().union(set(), *[_fixed_numbers(v, key, inside) for v in obj])
    if isinstance(obj, str) or (inside and obj is not None and not isinstance(obj, bool)):
        return set(NUMBER.findall(str(obj)))
    return set()


def test_pages_agree_with_the_committed_results():
    problems = docs.check(ROOT)
    assert not problems, "; ".join(problems) + f": {REGENERATE}"


def test_check_fails_when_a_results_file_changes(tmp_path):
    root = _copy_tree(tmp_path)
    assert docs.check(root) == []
    path = root / docs.REGRESSION
    res = json.loads(path.read_text())
    res["models"]["net0 (meta-learned DANs)"]["final"]["mean"] *= 1.5
    path.write_text(json.dumps(res))
    problems = docs.check(root)
    assert any("docs/results.md" in p for p in problems), problems
    assert any("results:regression" in p for p in problems), problems
    assert docs.main(["--check", "--root", str(root)]) == 1
    assert docs.main(["--root", str(root)]) == 0                 # regenerating fixes both
    assert docs.check(root) == []


def test_check_fails_when_the_page_is_edited_by_hand(tmp_path):
    root = _copy_tree(tmp_path)
    page = root / docs.PAGE
    page.write_text(page.read_text().replace("± ", "± 0", 1))
    assert docs.check(root) == ["docs/results.md differs from the results files"]
    readme = root / docs.README
    text = readme.read_text()
    readme.write_text(text.replace("<!-- /results:ucil -->", "0.5\n<!-- /results:ucil -->"))
    assert any("results:ucil" in p for p in docs.check(root))


def test_every_measured_number_comes_from_a_results_file(tmp_path):
    """Perturb every measured value in a copy of the results files: every number on the page
    must change, except those in strings, configs and machine facts of the files and the
    paper's section numbers."""
    root = _copy_tree(tmp_path)
    page, regions = docs.render(root)
    allowed = {"3.1", "4.1", "6.1", "3.2", "4.2", "6.2", "95", "4", "0"}
    for f in (root / "docs" / "results").rglob("*.json"):
        res = json.loads(f.read_text())
        allowed |= _fixed_numbers(res)
        f.write_text(json.dumps(_perturb(res)))
    page2, regions2 = docs.render(root)
    for name, before, after in [("docs/results.md", page, page2),
                                *((f"README {k}", regions[k], regions2[k]) for k in regions)]:
        a, b = NUMBER.findall(before), NUMBER.findall(after)
        assert len(a) == len(b), f"{name}: the perturbed page has another shape"
        stuck = sorted({x for x, y in zip(a, b) if x == y and x not in allowed})
        assert not stuck, f"{name}: numbers not read from any results file: {stuck}"


def test_the_zero_predictor_is_stated_once():
    res = json.loads((ROOT / docs.REGRESSION).read_text())
    text = docs.fmt_ci(*docs.zero_predictor(res))
    page = (ROOT / docs.PAGE).read_text()
    assert page.count(text) == 1, f"the zero predictor's {text} should appear once on the page"
    assert "predicting 0" in page


def test_number_formats():
    assert docs.fmt(0.058942) == "0.0589" and docs.fmt(1.3631) == "1.36" and docs.fmt(0) == "0"
    assert docs.fmt(None) == "n/a" and docs.fmt(float("nan")) == "n/a"
    assert docs.fmt_ci(0.006979, 0.007780) == "0.00698 ± 0.00778"
    assert docs.fmt_ci(1.3631, 0.5035) == "1.36 ± 0.50"
    assert docs.fmt_ci(0.0, 0.0) == "0 ± 0"


@pytest.mark.parametrize("name", ["figure1.png", "figure2.png", "figure3.png"])
def test_readme_figures_are_committed_and_small(name):
    path = ROOT / "docs" / "figures" / name
    assert path.exists(), f"{path} is missing: python -m tinydan.experiments.docs --figures"
    assert path.stat().st_size < 200_000, f"{name} is {path.stat().st_size} bytes: shrink it"
    assert f"docs/figures/{name}" in (ROOT / "README.md").read_text()


def test_readme_is_short_and_nothing_cites_private_material():
    """README at most 200 lines; no file of README, docs, the package or the lessons cites the
    design brief, work sessions, pre-registrations, /tmp or a folder outside the repository."""
    import re
    root = Path(__file__).resolve().parents[1]
    assert len((root / "README.md").read_text().splitlines()) <= 200
    pattern = re.compile(r"\bSPEC\b|[Ss]ession [0-9]|PREREG|/tmp/|\.\./shared")
    files = [root / "README.md", *(root / "docs").rglob("*"), *(root / "tinydan").rglob("*.py"),
             *(root / "lessons").rglob("*.py"), *(root / "lessons").rglob("*.ipynb")]
    hits = [f"{p.relative_to(root)}:{i + 1}" for p in files if p.is_file()
            and p.suffix in (".md", ".py", ".ipynb", ".json")
            for i, line in enumerate(p.read_text(errors="replace").splitlines())
            if pattern.search(line)]
    assert not hits, f"remove these citations: {hits[:20]}"


def test_committed_results_and_phenotypes_name_no_machine_paths():
    """Provenance in the committed results and shipped phenotypes is relative to the repository:
    an absolute path would name the machine a run happened on, and mean nothing elsewhere."""
    import json
    from tinydan.checkpoint import load_checkpoint
    root = Path(__file__).resolve().parents[1]

    def absolute(value):
        text = json.dumps(value)
        return [m for m in ('"/', " /", "=/") if m in text]
    bad = [str(p.relative_to(root)) for p in (root / "docs" / "results").rglob("results.json")
           if absolute(json.loads(p.read_text()))]
    bad += [str(p.relative_to(root)) for p in (root / "tinydan" / "phenotypes").glob("*.npz")
            if absolute(load_checkpoint(p)[1])]
    assert not bad, f"absolute paths in {bad}"
