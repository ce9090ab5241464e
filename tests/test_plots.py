"""The paper's figures: each writes a PNG, returns a Figure, and refuses bad shapes clearly."""

import json

import numpy as np
import pytest
from matplotlib.figure import Figure

from tinydan.continual import summarize
from tinydan.plots import (moving_average, plot_curves, plot_function_fits, plot_function_grid, plot_loss_matrix,
                           plot_meta_training, plot_reconstruction_panels)

pytestmark = pytest.mark.regression

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path):
    data = path.read_bytes()
    return len(data) > 1000 and data[:8] == PNG_MAGIC


@pytest.fixture
def summary():
    rng = np.random.default_rng(0)
    return summarize(rng.uniform(0.0, 1.0, size=(8, 5, 5)))


def test_loss_matrix_from_a_json_summary(tmp_path, summary):
    summary = json.loads(json.dumps(summary))
    path = tmp_path / "sub" / "R.png"
    fig = plot_loss_matrix(summary["R_mean"], path, "net0: mean R over 8 functions")
    assert isinstance(fig, Figure) and _is_png(path)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "loss on sub-task j" and ax.get_ylabel() == "after sub-task i"
    assert len(ax.texts) == 25  # one number per cell
    assert ax.texts[0].get_text() == format(summary["R_mean"][0][0], ".3g")
    assert len(fig.axes) == 2  # the heat map and its colorbar


def test_loss_matrix_labels_log_scale_and_bad_shapes(tmp_path):
    R = np.array([[0.01, 1.0], [0.1, 0.02]])
    fig = plot_loss_matrix(R, tmp_path / "R.png", "digits", task_labels=["0", "1"], log=True)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["0", "1"]
    with pytest.raises(ValueError, match=r"\(T, T\).*\(2, 3\)"):
        plot_loss_matrix(np.ones((2, 3)), tmp_path / "x.png", "bad")
    with pytest.raises(ValueError, match=r"R.mean\(axis=0\)"):
        plot_loss_matrix(np.ones((4, 3, 3)), tmp_path / "x.png", "bad")
    with pytest.raises(ValueError, match="one label per sub-task"):
        plot_loss_matrix(R, tmp_path / "x.png", "bad", task_labels=["a"])
    assert not (tmp_path / "x.png").exists()


def test_curves_with_bands_from_pairs_and_summary_entries(tmp_path, summary):
    curves = {"net0": (np.array([0.1, 0.2, 0.3]), np.array([0.01, 0.02, np.nan])),
              "net3": (np.array([1.0, 1.1, 1.2]), np.array([0.1, 0.1, 0.1]))}
    path = tmp_path / "memory.png"
    fig = plot_curves(curves, path, "after sub-task i", "memory loss", "memory over deployment", logy=True)
    assert isinstance(fig, Figure) and _is_png(path)
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["net0", "net3"]
    assert len(ax.collections) == 2  # one CI band per model
    assert ax.get_yscale() == "log"
    fig2 = plot_curves({"net0": summary["transfer"]}, tmp_path / "transfer.png", "i", "transfer", "t")
    assert _is_png(tmp_path / "transfer.png") and isinstance(fig2, Figure)


def test_curves_refuse_bad_shapes(tmp_path):
    with pytest.raises(ValueError, match="same shape"):
        plot_curves({"a": (np.zeros(3), np.zeros(4))}, tmp_path / "x.png", "x", "y", "t")
    with pytest.raises(ValueError, match="same length T"):
        plot_curves({"a": (np.zeros(3), np.zeros(3)), "b": (np.zeros(4), np.zeros(4))}, tmp_path / "x.png",
                    "x", "y", "t")
    with pytest.raises(ValueError, match=r"\(mean, half_width\)"):
        plot_curves({"a": np.zeros(3)}, tmp_path / "x.png", "x", "y", "t")


def test_moving_average_by_hand():
    np.testing.assert_allclose(moving_average([1.0, 3.0, 5.0, 7.0], 2), [1.0, 2.0, 4.0, 6.0])
    np.testing.assert_allclose(moving_average([1.0, np.nan, 5.0], 3), [1.0, 1.0, 3.0])
    with pytest.raises(ValueError, match="positive integer"):
        moving_average([1.0], 0)


def test_meta_training_raw_faint_and_smoothed_bold(tmp_path):
    rng = np.random.default_rng(0)
    steps = np.arange(500)
    one_run = np.exp(-steps / 200) + 0.05 * rng.normal(size=500)
    seeds = np.exp(-steps / 150)[None] + 0.05 * rng.normal(size=(3, 500))
    path = tmp_path / "meta.png"
    fig = plot_meta_training({"one_step": (steps, one_run), "first_order (3 seeds)": (steps, seeds)}, path,
                             "meta-training", smooth=25)
    assert isinstance(fig, Figure) and _is_png(path)
    lines = fig.axes[0].get_lines()
    assert len(lines) == (1 + 1) + (3 + 1)
    bold = [line for line in lines if line.get_linewidth() > 2]
    assert len(bold) == 2
    np.testing.assert_allclose(bold[0].get_ydata(), moving_average(one_run, 25))
    with pytest.raises(ValueError, match=r"\(runs, n\)"):
        plot_meta_training({"x": (steps, one_run[:10])}, tmp_path / "x.png", "t")


def _fit(seed=0, T=5, P=200):
    rng = np.random.default_rng(seed)
    x = np.linspace(-5, 5, P)
    y = 1.5 * np.sin(0.8 * x + rng.uniform(-5, 5))
    windows = np.array([[-5, -3], [-3, -1], [-1, 1], [1, 3], [3, 5]], dtype=float)[:T]
    preds = np.stack([y * (k + 1) / T + 0.1 * rng.normal(size=P) for k in range(T)])
    return x, y, preds, windows


def test_function_fits_panel(tmp_path):
    x, y, preds, windows = _fit()
    path = tmp_path / "fits.png"
    fig = plot_function_fits(x, y, preds, windows, path, "held-out function 1")
    assert isinstance(fig, Figure) and _is_png(path)
    ax = fig.axes[0]
    assert len(ax.get_lines()) == 1 + 5  # the target and one fit per window
    assert len(ax.patches) == 5  # the shaded windows
    colours = [line.get_color() for line in ax.get_lines()[1:]]
    brightness = [sum(c[:3]) for c in colours]
    assert brightness == sorted(brightness)  # dark to light
    with pytest.raises(ValueError, match=r"\(T, P\)"):
        plot_function_fits(x, y, preds[:, :10], windows, tmp_path / "x.png", "bad")
    with pytest.raises(ValueError, match=r"\(T, 2\)"):
        plot_function_fits(x, y, preds, windows[:3], tmp_path / "x.png", "bad")
    with pytest.raises(ValueError, match="path"):
        plot_function_fits(x, y, preds, windows)


def test_function_grid(tmp_path):
    fits = [_fit(0) + ("f1",), _fit(1), dict(zip(("x", "y_true", "preds", "windows"), _fit(2)), title="f3")]
    path = tmp_path / "fig3.png"
    fig = plot_function_grid(fits, path, ncols=2, title="Figure 3")
    assert isinstance(fig, Figure) and _is_png(path)
    assert [ax.get_title() for ax in fig.axes[:3]] == ["f1", "function 2", "f3"]
    assert not fig.axes[3].axison  # the unused fourth panel
    with pytest.raises(ValueError, match="fit 1"):
        plot_function_grid([_fit(0), ("only", "two")], tmp_path / "x.png")


def test_reconstruction_panels(tmp_path):
    rng = np.random.default_rng(0)
    originals = rng.uniform(size=(12, 28, 28))
    recon = np.clip(originals + 0.1 * rng.normal(size=originals.shape), 0, 1)
    panels = [("after one step on 0s", originals[:5], recon[:5]),
              ("after digits 0-4", originals, recon),
              ("flat images only", rng.uniform(size=(3, 784)))]
    path = tmp_path / "fig2.png"
    fig = plot_reconstruction_panels(panels, path, ncols=10, cmap="gray")
    assert isinstance(fig, Figure) and _is_png(path)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == [p[0] for p in panels]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["original", "reconstruction"] * 3
    rgba = np.asarray(ax.get_images()[0].get_array())
    # one shared scale: rows of 10 images of 28 px with 1 px gaps; per panel a 16 px title band;
    # panel 1: 2 strips + gap 1; panel 2: 4 strips + gaps 1, 4, 1; panel 3: 1 strip
    assert rgba.shape == (3 * 16 + 7 * 28 + 1 + 6, 10 * 28 + 9, 4)
    top = 16  # the first original sits under the first title band; with 'gray', pixel value v -> grey level v
    np.testing.assert_allclose(rgba[top:top + 28, :28, 0], originals[0], atol=1 / 255)
    np.testing.assert_allclose(rgba[top + 29:top + 57, 29:57, 0], recon[1], atol=1 / 255)
    assert rgba[top, 5 * 29 + 3, 3] == 0  # panel 1 has 5 images: the rest of its rows is transparent


def test_reconstruction_panels_refuse_bad_shapes(tmp_path):
    imgs = np.zeros((4, 28, 28))
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        plot_reconstruction_panels([("bad", np.zeros((2, 3, 28, 28)))], tmp_path / "x.png")
    with pytest.raises(ValueError, match="not square"):
        plot_reconstruction_panels([("bad", np.zeros((2, 700)))], tmp_path / "x.png")
    with pytest.raises(ValueError, match="same shape"):
        plot_reconstruction_panels([("bad", imgs, imgs[:3])], tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"\(title, images\)"):
        plot_reconstruction_panels([imgs], tmp_path / "x.png")
