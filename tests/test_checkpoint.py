"""Atomic .npz checkpoints (docs/model-and-protocol.md#files): round trip, atomic writes,
clear refusals."""

import json
import zipfile

import numpy as np
import pytest

from tinydan import checkpoint as ckpt
from tinydan.checkpoint import META_KEY, CheckpointError, check_arrays_match, load_checkpoint, save_checkpoint

pytestmark = pytest.mark.nn

CONFIG_PAPER = {"name": "paper", "n_channels": 40, "nodes": [1, 40, 40, 1], "output": "scaled_tanh"}


def _arrays(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "phi.0.weight": rng.normal(size=(40, 15)).astype(np.float32),
        "phi.0.bias": rng.normal(size=(15,)).astype(np.float32),
        "theta0.vec.0.weight": rng.normal(size=(1, 160)),  # float64
        "optim.m.phi.0.weight": np.zeros((40, 15), np.float32),
        "optim.step": np.array(1234, dtype=np.int64),
        "file": np.arange(3),  # a name np.savez(file, **kw) could not take
    }


def _meta():
    return {"kind": "regression", "config": dict(CONFIG_PAPER), "seed": 7, "meta_epoch": 12,
            "lr": {"theta": 0.001, "phi": 1e-4}}


def _save(tmp_path, name="ck.npz", seed=0, meta=None):
    return save_checkpoint(tmp_path / name, _arrays(seed), _meta() if meta is None else meta)


def test_round_trip_keeps_values_dtypes_and_metadata(tmp_path):
    path = _save(tmp_path / "deep" / "folder")  # parent folders are created
    assert path == tmp_path / "deep" / "folder" / "ck.npz" and path.is_file()
    arrays, meta = load_checkpoint(path)
    expected = _arrays()
    assert set(arrays) == set(expected)
    for name, value in expected.items():
        assert arrays[name].dtype == value.dtype, name
        assert arrays[name].shape == value.shape, name
        np.testing.assert_array_equal(arrays[name], value)
    assert arrays["phi.0.weight"].dtype == np.float32 and arrays["theta0.vec.0.weight"].dtype == np.float64
    for key, value in _meta().items():
        assert meta[key] == value
    assert meta["format"] == ckpt.FORMAT_VERSION
    assert isinstance(meta["tinydan_version"], str) and meta["tinydan_version"]
    assert meta["created"].endswith("+00:00")


def test_metadata_is_readable_without_pickle_and_non_finite_arrays_are_kept(tmp_path):
    path = save_checkpoint(tmp_path / "ck.npz", {"w": np.array([np.nan, np.inf, 1.0])}, {"seed": np.int64(3)})
    with np.load(path, allow_pickle=False) as z:
        assert z[META_KEY].dtype == np.uint8
        meta = json.loads(z[META_KEY].tobytes().decode("utf-8"))
    assert meta["seed"] == 3
    arrays, _ = load_checkpoint(path)
    assert np.isnan(arrays["w"][0]) and np.isinf(arrays["w"][1])


def test_save_refuses_object_arrays_reserved_keys_and_bad_meta(tmp_path):
    with pytest.raises(ValueError, match="dtype object"):
        save_checkpoint(tmp_path / "a.npz", {"w": np.array([1, "x", None], dtype=object)}, {})
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path / "a.npz", {META_KEY: np.zeros(2)}, {})
    with pytest.raises(TypeError, match="JSON-serializable"):
        save_checkpoint(tmp_path / "a.npz", {"w": np.zeros(2)}, {"when": object()})
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_no_temporary_files_are_left_behind(tmp_path):
    _save(tmp_path)
    _save(tmp_path, seed=1)  # overwrite
    assert [p.name for p in tmp_path.iterdir()] == ["ck.npz"]
    arrays, _ = load_checkpoint(tmp_path / "ck.npz")
    np.testing.assert_array_equal(arrays["phi.0.bias"], _arrays(1)["phi.0.bias"])


def test_a_failure_mid_write_leaves_the_old_checkpoint_intact(tmp_path, monkeypatch):
    path = _save(tmp_path)
    before = path.read_bytes()
    real_write = ckpt._write_npz

    def write_half_then_crash(fileobj, payload, compress):
        real_write(fileobj, dict(list(payload.items())[:2]), compress)
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "_write_npz", write_half_then_crash)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path, seed=1)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ck.npz"]


def test_a_failing_rename_leaves_the_old_checkpoint_intact(tmp_path, monkeypatch):
    path = _save(tmp_path)
    before = path.read_bytes()

    def refuse(src, dst):
        raise PermissionError("rename refused")

    monkeypatch.setattr(ckpt.os, "replace", refuse)
    with pytest.raises(PermissionError):
        _save(tmp_path, seed=1)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ck.npz"]


def test_missing_file_is_refused_clearly(tmp_path):
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "nope.npz")
    assert "nope.npz" in str(err.value) and "does not exist" in str(err.value)
    assert "--checkpoint" in str(err.value)
    assert isinstance(err.value, ValueError)


def test_truncated_file_is_refused_clearly(tmp_path):
    path = _save(tmp_path)
    data = path.read_bytes()
    for keep in (len(data) // 2, len(data) - 30, 10):
        cut = tmp_path / f"cut{keep}.npz"
        cut.write_bytes(data[:keep])
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(cut)
        assert cut.name in str(err.value) and "re-run meta-training" in str(err.value)


def test_empty_and_garbage_files_are_refused_clearly(tmp_path):
    for name, content in (("empty.npz", b""), ("garbage.npz", b"this is not a checkpoint\x00\x01" * 50),
                          ("looks_like_zip.npz", b"PK\x03\x04" + b"\x00" * 100)):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(path)
        assert name in str(err.value)
    with pytest.raises(CheckpointError, match="not a file"):
        load_checkpoint(tmp_path)


def test_foreign_npz_and_npy_files_are_refused(tmp_path):
    np.savez(tmp_path / "plain.npz", w=np.zeros(3))
    with pytest.raises(CheckpointError, match="no '__meta__' metadata"):
        load_checkpoint(tmp_path / "plain.npz")
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(CheckpointError, match="single .npy array"):
        load_checkpoint(tmp_path / "one.npy")


def test_object_arrays_are_never_unpickled(tmp_path):
    path = tmp_path / "evil.npz"
    meta = np.frombuffer(b'{"format": 1}', dtype=np.uint8)
    np.savez(path, **{META_KEY: meta, "w": np.array([{"a": 1}, None], dtype=object)})  # pickled on write
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert "'w'" in str(err.value) and "allow_pickle=False" in str(err.value)


def test_a_checkpoint_of_another_config_is_refused_naming_the_fields(tmp_path):
    path = _save(tmp_path)
    arrays, meta = load_checkpoint(path, expect={"kind": "regression", "config": CONFIG_PAPER})
    assert meta["config"]["name"] == "paper"
    asked = {"kind": "regression", "config": {**CONFIG_PAPER, "name": "default", "n_channels": 10,
                                              "nodes": (1, 40, 40, 1), "meta_mode": "one_step"}}
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, expect=asked)
    msg = str(err.value)
    assert "config.name: checkpoint has 'paper', you asked for 'default'" in msg
    assert "config.n_channels: checkpoint has 40, you asked for 10" in msg
    assert "config.meta_mode: missing from the checkpoint" in msg
    assert "config.nodes" not in msg  # a tuple matches the stored list
    assert "- kind" not in msg
    assert str(path) in msg and "--checkpoint" in msg
    with pytest.raises(CheckpointError, match="kind: checkpoint has 'regression', you asked for 'ucil'"):
        load_checkpoint(path, expect={"kind": "ucil"})


def test_a_newer_format_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(ckpt, "FORMAT_VERSION", 99)
    path = _save(tmp_path)
    monkeypatch.setattr(ckpt, "FORMAT_VERSION", 1)
    with pytest.raises(CheckpointError, match="format 99, newer"):
        load_checkpoint(path)


def test_compressed_checkpoints_round_trip(tmp_path):
    path = save_checkpoint(tmp_path / "c.npz", {"w": np.zeros((100, 100), np.float32)}, {}, compress=True)
    with zipfile.ZipFile(path) as zf:
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in zf.infolist())
    arrays, _ = load_checkpoint(path)
    assert arrays["w"].shape == (100, 100)
    assert path.stat().st_size < 100 * 100 * 4 / 10


def test_check_arrays_match_names_every_problem():
    arrays = {"phi.0.weight": np.zeros((40, 15)), "phi.0.bias": np.zeros(15), "old.thing": np.zeros(2)}
    check_arrays_match(arrays, {"phi.0.weight": (40, 15), "phi.0.bias": (15,), "old.thing": [2]})
    with pytest.raises(CheckpointError) as err:
        check_arrays_match(arrays, {"phi.0.weight": (10, 15), "phi.0.bias": (15,), "phi.1.weight": (15, 8)})
    msg = str(err.value)
    assert "missing arrays: phi.1.weight" in msg
    assert "unexpected arrays: old.thing" in msg
    assert "phi.0.weight: shape (40, 15) in the checkpoint, the model expects (10, 15)" in msg
    assert "phi.0.bias" not in msg
    check_arrays_match(arrays, {"phi.0.weight": (40, 15)}, allow_extra=True)
