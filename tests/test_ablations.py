"""Ablation studies, resume of interrupted studies, the authors config and the report (tiny sizes)."""
import json

import numpy as np
import pytest

from tinydan.experiments import ablations
from tinydan.experiments.ablation_studies import SIZES, run_study  # noqa: F401
from tinydan.experiments.ablations import deploy_plastic
from tinydan.experiments.configs import build_regression_net, regression_config
from tinydan.regression import build_parser, deploy, main, meta_train, new_trainer
from tinydan.tasks import EVAL_SEED, SineSequence, sample_functions

pytestmark = [pytest.mark.regression, pytest.mark.meta, pytest.mark.dan]   # DANs and Algorithm 1

QUIET = {"quiet": True, "log": lambda *a: None}
PNGS = {"models": ["deployment_total_loss.png", "deployment_memory_loss.png"],
        "sharing": ["meta_training_sharing.png"], "channels": ["meta_training_channels.png"],
        "meta-grad": ["meta_grad_validation.png", "meta_grad_meta_loss.png"],
        "baselines": ["deployment_total_loss.png", "deployment_memory_loss.png"]}


@pytest.fixture(scope="module")
def all_studies(tmp_path_factory):
    """`ablate --study all` on the tiny config and sizes, inline (workers 0)."""
    out = tmp_path_factory.mktemp("ablate") / "all"
    assert main(["ablate", "--study", "all", "--config", "tiny", "--sizes", "tiny", "--out", str(out),
                 "--workers", "0", "--quiet"]) == 0
    return out


def test_every_study_runs_end_to_end_and_writes_its_files(all_studies):
    out = all_studies
    for study, pngs in PNGS.items():
        res = json.loads((out / study / "results.json").read_text())
        assert res["study"] == study and res["config"]["name"] == "tiny" and "versions" in res
        assert res["command"].startswith("python -m tinydan.regression ablate --study all")
        assert (out / study / "results.md").read_text().startswith(f"# Ablation `{study}`")
        for png in pngs:
            assert (out / study / png).stat().st_size > 1000, (study, png)
        for model, s in res["models"].items():
            assert s["n_sequences"] >= 3 and len(s["memory"]["mean"]) == 5, (study, model)
            assert all(c is not None for c in s["memory"]["ci"])           # CIs over functions
    res = {s: json.loads((out / s / "results.json").read_text()) for s in PNGS}
    assert len(res["models"]["models"]) == 6 and all(f"net{i}" in " ".join(res["models"]["models"])
                                                     for i in range(6))
    assert set(res["sharing"]["models"]) == {"global", "per_layer", "unique"}
    assert set(res["channels"]["models"]) == {"n_channels = 1", "n_channels = 3"}
    assert set(res["meta-grad"]["models"]) == {"first_order", "one_step"}
    assert len(res["baselines"]["models"]) == 6
    assert res["baselines"]["baselines"]["ewc"]["lambda"] in SIZES["tiny"].ewc_lambdas
    # net0 is the same deployment in both studies that show it (same phenotype, same functions)
    net0_m = next(v for k, v in res["models"]["models"].items() if k.startswith("net0"))
    net0_b = next(v for k, v in res["baselines"]["models"].items() if k.startswith("net0"))
    assert net0_m["final"]["values"] == net0_b["final"]["values"]
    # the phenotype was meta-trained once, for every study
    assert (out / "phenotype" / "phenotype.npz").exists()
    assert json.loads((out / "results.json").read_text())["study"] == "all"


def test_rerunning_a_finished_study_recomputes_nothing(all_studies, monkeypatch):
    def boom(spec):
        raise AssertionError("a finished cell was recomputed")
    for fn in ("_cell_deploy_net", "_cell_baseline", "_cell_joint", "_cell_warp"):
        monkeypatch.setattr(ablations, fn, boom)
    # one study of the `all` folder, with the phenotype that `all` made
    assert main(["ablate", "--study", "baselines", "--config", "tiny", "--sizes", "tiny", "--out",
                 str(all_studies / "baselines"), "--phenotype",
                 str(all_studies / "phenotype" / "phenotype.npz"), "--workers", "0", "--quiet"]) == 0
    res = json.loads((all_studies / "baselines" / "results.json").read_text())
    assert len(res["cells"]) == 6 and all(c["cached"] for c in res["cells"].values())


def test_an_interrupted_study_recomputes_only_the_missing_cells(tmp_path, monkeypatch):
    cfg, sizes = regression_config("tiny"), SIZES["tiny"]
    real = ablations._cell_meta_curve
    calls = []

    def interrupted(spec):
        if calls:
            raise KeyboardInterrupt("interrupted after the first cell")
        calls.append(spec["config"]["sharing"])
        return real(spec)

    monkeypatch.setattr(ablations, "_cell_meta_curve", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_study("sharing", cfg, tmp_path, sizes, workers=0, **QUIET)
    assert [p.stem for p in (tmp_path / "cells").glob("*.json")] == ["global-seed0"]
    assert not (tmp_path / "results.json").exists()

    def counting(spec):
        calls.append(spec["config"]["sharing"])
        return real(spec)

    monkeypatch.setattr(ablations, "_cell_meta_curve", counting)
    calls.clear()
    res = run_study("sharing", cfg, tmp_path, sizes, workers=0, **QUIET)
    assert calls == ["per_layer", "unique"]                      # only the missing cells
    assert [res["cells"][k]["cached"] for k in ("global-seed0", "per_layer-seed0", "unique-seed0")] \
        == [True, False, False]
    calls.clear()                 # another setting (held-out functions) changes every cell's key
    run_study("sharing", cfg, tmp_path, sizes.replace(eval_functions=2), workers=0, **QUIET)
    assert sorted(calls) == ["global", "per_layer", "unique"]


def test_a_study_runs_on_any_executor(tmp_path):
    """run_study takes any concurrent.futures.Executor (a cluster's, say): here a plain process
    pool that records what it was given; the cells and results are those of the local pool."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    class Recording(ProcessPoolExecutor):
        submitted: list = []

        def submit(self, fn, /, *args, **kwargs):
            self.submitted.append(args[0])
            return super().submit(fn, *args, **kwargs)

    cfg = regression_config("tiny")
    sizes = SIZES["tiny"].replace(sharings=("global", "unique"))
    with Recording(max_workers=2, mp_context=multiprocessing.get_context("fork")) as pool:
        res = run_study("sharing", cfg, tmp_path / "x", sizes, executor=pool, **QUIET)
    assert sorted(Recording.submitted) == ["_cell_meta_curve"] * 2
    local = run_study("sharing", cfg, tmp_path / "y", sizes, workers=0, **QUIET)
    for name, m in res["models"].items():                # the same numbers (timings aside)
        assert m["final"] == local["models"][name]["final"] and m["R_mean"] == local["models"][name]["R_mean"]


def test_plastic_deployment_with_frozen_phi_is_the_fixed_deployment():
    cfg = regression_config("tiny")
    tr = new_trainer(cfg, 0)
    f = sample_functions(cfg, np.random.default_rng(EVAL_SEED), 3, "test")
    fixed = deploy(tr.net, tr.theta0, f, cfg)["R"]
    before = tr.net.state_dict()
    assert np.allclose(deploy_plastic(tr.net, tr.theta0, f, cfg, phi_lr=0.0)["R"], fixed,
                       rtol=1e-3, atol=1e-6)
    plastic = deploy_plastic(tr.net, tr.theta0, f, cfg)["R"]
    assert not np.allclose(plastic, fixed, rtol=1e-3)            # phi learned at deployment ...
    assert all(np.array_equal(before[k], v) for k, v in tr.net.state_dict().items())  # ... per copy


def test_authors_config_builds_and_meta_trains_one_tiny_epoch(tmp_path):
    full = regression_config("authors")
    net = build_regression_net(full)
    assert net.num_parameters() == 752 and net.output_scale == 5.0 and net.vec_activation == "tanh"
    assert set(net.skips) == {(0, 2), (0, 3), (1, 3)}         # every pair of non-adjacent layers
    theta = net.init_synapses(1, np.random.default_rng(0))
    for k, v in theta.items():                                 # Xavier-uniform, zero biases
        if k.endswith("bias"):
            assert not v.any()
        else:
            fan_in, fan_out = v.shape[1:]
            assert np.abs(v).max() <= np.sqrt(6 / (fan_in + fan_out)) + 1e-7
    a = build_parser().parse_args(["meta-train", "--config", "authors"])
    assert a.config == "authors"
    # the target family: (a0 sin(r0 x + p0) + a1 cos(r1 x + p1)) / 2 with 3% noise in training
    rng = np.random.default_rng(1)
    train, test = sample_functions(full, rng, 400, "train"), sample_functions(full, rng, 400, "test")
    assert train.a.min() >= 0.1 and train.a.max() <= 0.9 and train.r.max() > np.pi / 2
    assert test.r.min() >= np.pi / 6 and test.r.max() <= np.pi / 2
    assert set(np.unique(train.p)) == set(range(-5, 5))
    x = np.linspace(-5, 5, 11)[None].repeat(2, 0)
    f2 = train.subset([0, 1])
    y = 0.5 * (f2.a[:, :1] * np.sin(f2.r[:, :1] * x + f2.p[:, :1]) +
               f2.a[:, 1:] * np.cos(f2.r[:, 1:] * x + f2.p[:, 1:]))
    assert np.allclose(f2(x), y)
    grid = f2(np.linspace(-5, 5, 1000)[None].repeat(2, 0))
    assert np.allclose(f2.noise, 0.03 * (grid.max(1) - grid.min(1)))
    seq = SineSequence(train.subset(range(50)), rng, steps=10, batch=5)
    xs, ys = (np.stack(v)[..., 0].transpose(1, 0, 2).reshape(50, -1) for v in zip(*seq.inner_batches()))
    resid = ys - train.subset(range(50))(xs)                                # (functions, points)
    assert 0.5 < (resid / train.noise[:50, None]).std() < 1.5              # noisy targets
    xe, ye = seq.eval_points(20)
    assert np.allclose(ye[..., 0], train.subset(range(50))(xe[..., 0]))    # noise-free evaluation

    cfg = regression_config("authors", nodes=(1, 8, 8, 1), n_channels=6, dan_hidden=(5, 4),
                            meta_updates=3, meta_epochs=1, val_every=1, val_functions=3)
    tr = new_trainer(cfg, 0)
    tr.run_epoch()
    assert tr.optimizer.t == 3 * 5 * 10                       # 3 meta-updates per inner step
    assert np.isfinite(tr.history["meta_loss"][0])
    ph = meta_train(cfg, 0, tmp_path / "run", workers=0, **QUIET)
    assert ph.meta["history"]["epoch"] == [1] and np.isfinite(ph.meta["best_val"])
    with pytest.raises(ValueError, match="one_step"):
        regression_config("authors", meta_grad="one_step")


def test_report_collects_two_runs_into_one_markdown_file(all_studies, tmp_path):
    run = tmp_path / "run"
    assert main(["run", "--config", "tiny", "--epochs", "1", "--eval-functions", "2", "--out",
                 str(run), "--quiet"]) == 0
    report = tmp_path / "docs" / "report.md"
    assert main(["report", str(run), str(all_studies), "--out", str(report)]) == 0
    text = report.read_text()
    assert "Regression run, config `tiny`" in text and f"Folder: `{run}`" in text
    assert text.count("Command: `python -m tinydan.regression ") == 6     # how each was made
    for study in PNGS:
        assert f"Ablation `{study}`" in text
    assert text.count("Command: `python -m tinydan.regression ablate --study ") == 5
    links = [line[line.index("(") + 1:-1] for line in text.splitlines() if line.startswith("![")]
    assert len(links) >= 12 and all((report.parent / link).is_file() for link in links)
    assert text.split("## Versions")[1].count("| `") == 6           # one row per result folder
    with pytest.raises(SystemExit):
        main(["report", str(tmp_path / "docs")])                      # no results there


@pytest.mark.parametrize("argv,msg", [
    (["ablate", "--study", "nope"], "invalid choice"),
    (["ablate", "--channels", "0,3"], "positive whole numbers"),
    (["ablate", "--phenotype", "/nonexistent.npz"], "does not exist"),
    (["report"], "the following arguments are required"),
])
def test_ablate_and_report_bad_arguments_give_clear_errors(argv, msg, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert msg in capsys.readouterr().err


def test_cells_in_worker_processes_give_the_inline_results(tmp_path):
    """Cells run on the other cores when there are some; results and dependencies are the same."""
    cfg, sizes = regression_config("tiny"), SIZES["tiny"]
    common = {"config": cfg.to_dict(), "seed": 0, "n_eval": 2, "lr_grid": sizes.lr_grid,
              "buffer_size": 4, "replay_batch": 2}
    cells = [ablations.Cell("ewc", "_cell_baseline", dict(common, method="ewc", ewc_lambdas=(1.0, 10.0)),
                            needs=("naive",)),                  # listed first, runs second
             ablations.Cell("naive", "_cell_baseline", dict(common, method="naive"))]
    inline = ablations.run_cells("t", cells, tmp_path / "a", workers=0, **QUIET)
    pooled = ablations.run_cells("t", cells, tmp_path / "b", workers=2, **QUIET)
    for name in ("naive", "ewc"):
        assert inline[name]["result"] == pooled[name]["result"]
    assert pooled["ewc"]["result"]["lr"] == pooled["naive"]["result"]["lr"]
