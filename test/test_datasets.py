"""Pair-folder and npz readers (real data where present), tensor packing for synth_batch."""
import numpy as np
import pytest
import torch

from training.augment import synth_batch
from training.datasets import PairCropDataset, load_aligned_pairs, load_npz_pair, pairs_to_tensors, split_names


def _write_pair_folder(root, n=3):
    import cv2
    (root / "visible").mkdir(parents=True)
    (root / "thermal").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(root / "visible" / f"{i}.png"), rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
        cv2.imwrite(str(root / "thermal" / f"{i}.png"), rng.integers(0, 65535, (20, 30), dtype=np.uint16))


def test_pair_folder_reader_handles_16bit_and_size_mismatch(tmp_path):
    _write_pair_folder(tmp_path)
    names = split_names(tmp_path)
    assert names == ["0.png", "1.png", "2.png"]
    pairs = load_aligned_pairs(tmp_path, names, max_side=30)
    for vis, th in pairs:
        assert vis.shape == (20, 30, 3) and th.shape == (20, 30) and th.dtype == np.uint8
    with pytest.raises(FileNotFoundError):
        load_aligned_pairs(tmp_path, ["missing.png"])
    with pytest.raises(FileNotFoundError):
        split_names(tmp_path, "val")
    v, t = pairs_to_tensors(pairs, (16, 24))
    assert v.shape == (3, 3, 16, 24) and t.shape == (3, 1, 16, 24) and float(v.max()) <= 1
    crop = PairCropDataset(pairs, crop=16)[0]
    assert crop[0].shape == (3, 16, 16) and crop[1].shape == (1, 16, 16)


def test_npz_reader_checks_keys(tmp_path):
    p = tmp_path / "a.npz"
    np.savez(p, visible=np.zeros((8, 8, 3), np.uint8), thermal=np.full((8, 8), 1000, np.uint16), H=np.eye(3))
    d = load_npz_pair(p)
    assert d["thermal"].dtype == np.uint8 and d["H"].shape == (3, 3)
    np.savez(p, visible=np.zeros((8, 8, 3), np.uint8), thermal=np.zeros((8, 8), np.uint8))
    with pytest.raises(KeyError):
        load_npz_pair(p)


def test_real_roadscene_split_and_synthesis(shared_data):
    root = shared_data / "roadscene"
    train, val = split_names(root, "train"), split_names(root, "val")
    assert len(train) == 201 and len(val) == 20 and not set(train) & set(val)
    pairs = load_aligned_pairs(root, train[:4], max_side=480)
    v, t = pairs_to_tensors(pairs, (288, 384))
    out = synth_batch(v, t, (128, 160), torch.Generator().manual_seed(0))
    assert out["visible"].shape == (4, 1, 128, 160) and torch.isfinite(out["H_t2v"]).all()
    d = load_npz_pair(sorted((shared_data / "roadscene_homography").glob("*.npz"))[0])
    assert d["H"].shape == (3, 3)


def test_device_crops_cut_the_same_window_from_both_images():
    from training.datasets import device_crop_batch
    H, W = 40, 60
    ys, xs = torch.meshgrid(torch.arange(H).float(), torch.arange(W).float(), indexing="ij")
    vis = torch.stack([xs, ys, xs * 0], 0)[None].repeat(2, 1, 1, 1)
    th = ys[None, None].repeat(2, 1, 1, 1)
    v, t = device_crop_batch(vis, th, 6, 8, (0.4, 0.6), torch.Generator().manual_seed(0))
    assert v.shape == (6, 3, 8, 8) and t.shape == (6, 1, 8, 8)
    assert torch.allclose(v[:, 1:2], t, atol=1e-4)            # same rows in both images
    step = (v[:, 1, 1:, 0] - v[:, 1, :-1, 0])
    assert float(step.min()) > 0.4 * 40 / 8 - 1e-3 and float(step.max()) < 0.6 * 40 / 8 + 1e-3
    assert float(v[:, 0].min()) >= 0 and float(v[:, 0].max()) <= W - 1
