"""The matcher says "I don't know" (structure check, homography verification)."""
from __future__ import annotations

import glob

import cv2
import numpy as np
import pytest

from distillmatch_ros import verification as V
from distillmatch_ros.matcher import Matcher

VIS, TH = (640, 480), (640, 480)


def textured(seed=0, size=(640, 480)):
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.random((size[1], size[0])).astype(np.float32), (0, 0), 3)
    return cv2.normalize(base, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def structureless_frames():
    """(name, visible, thermal): black, mid-grey, saturated, and a 16-bit flat-field frame."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:480, 0:640]
    flat = (7000 + 3 * np.hypot(xx - 320, yy - 240) / 400 + rng.normal(0, 0.4, (480, 640))).astype(np.uint16)
    return [("black", np.zeros((480, 640, 3), np.uint8), np.zeros((480, 640), np.uint8)),
            ("grey", np.full((480, 640, 3), 128, np.uint8), np.full((480, 640), 128, np.uint8)),
            ("saturated", np.full((480, 640, 3), 255, np.uint8), np.full((480, 640), 255, np.uint8)),
            ("flat_field", cv2.cvtColor(textured(5), cv2.COLOR_GRAY2BGR), flat)]


@pytest.fixture(scope="module")
def random_matcher(tiny_checkpoint):
    return Matcher(tiny_checkpoint, backend="torch", match_threshold=0.0)


@pytest.fixture(scope="module")
def shipped(shipped_model):
    return Matcher(shipped_model, backend="onnxruntime")


@pytest.mark.parametrize("name,vis,th", structureless_frames(), ids=[f[0] for f in structureless_frames()])
def test_structureless_frames_give_no_matches(random_matcher, name, vis, th):
    r = random_matcher.match(vis, th)
    assert len(r) == 0 and r.homography is None and r.confidence == 0.0
    assert "no structure" in r.verification
    assert r.timings_ms["network"] == 0.0  # the network did not run


def test_one_structureless_side_is_enough(random_matcher):
    r = random_matcher.match(np.zeros((480, 640, 3), np.uint8), textured())
    assert len(r) == 0 and "visible" in r.verification
    r = random_matcher.match(cv2.cvtColor(textured(), cv2.COLOR_GRAY2BGR), np.zeros((480, 640), np.uint8))
    assert len(r) == 0 and "thermal" in r.verification


def test_shipped_model_black_pair_cause_and_fix(shipped):
    """The cause: on a black pair the network matched the image border to itself (zero padding
    + position encoding). With the structure check off it still does; with it on, nothing."""
    black_v, black_t = np.zeros((480, 640, 3), np.uint8), np.zeros((480, 640), np.uint8)
    shipped.set_options(min_structure=0.0, verify=False, guided_pass=False)  # the network alone
    try:
        r = shipped.match(black_v, black_t)
    finally:
        shipped.set_options(min_structure=V.DEFAULTS["min_structure"], verify=True, guided_pass=True)
    if len(r):  # what the network does on its own (documented in verification.py)
        d = np.linalg.norm(r.visible_points - r.thermal_points, axis=1)
        border = np.minimum.reduce([r.thermal_points[:, 0], r.thermal_points[:, 1],
                                    639 - r.thermal_points[:, 0], 479 - r.thermal_points[:, 1]])
        assert np.median(d) < 4.0 and np.median(border) < 40
    for name, v, t in structureless_frames():
        r = shipped.match(v, t)
        assert len(r) == 0 and r.homography is None, name


def test_matches_in_flat_regions_are_dropped(shipped):
    vis = cv2.cvtColor(textured(1), cv2.COLOR_GRAY2BGR)
    th = 255 - textured(1)
    vis[:, :320] = 0  # the left half of the visible image is black
    r = shipped.match(vis, th)
    assert len(r) > 0
    assert (r.visible_points[:, 0] >= 320 - 24).all()  # within a cell of the textured half


def _H(angle_deg=0.0, scale=1.0, tx=0.0, ty=0.0):
    a = np.deg2rad(angle_deg)
    c = np.array([[1, 0, -320], [0, 1, -240], [0, 0, 1.0]])
    R = np.array([[scale * np.cos(a), -scale * np.sin(a), 0], [scale * np.sin(a), scale * np.cos(a), 0], [0, 0, 1]])
    return np.linalg.inv(c) @ np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1.0]]) @ R @ c


def _evidence(H, n=200, inlier_frac=0.6, spread=1.0, seed=0):
    rng = np.random.default_rng(seed)
    tp = rng.uniform([0, 0], [640 * spread, 480 * spread], (n, 2)) + [320 * (1 - spread), 240 * (1 - spread)]
    inl = rng.random(n) < inlier_frac
    return V.features(H, inl, tp.astype(np.float32), np.full(n, 0.3, np.float32), TH, VIS)


def test_decide_accepts_plausible_and_says_why_not():
    opt = dict(V.DEFAULTS)
    ok = V.decide(_evidence(_H(3, 1.05, 10, -5)), opt)
    assert ok.accepted and ok.reason == "ok" and 0 < ok.confidence <= 1
    cases = [(_evidence(_H(), n=25), "too few inliers"),
             (_evidence(_H(), inlier_frac=0.08, n=600), "inlier ratio"),
             (_evidence(_H(), spread=0.2), "cover"),
             (_evidence(_H(60)), "rotation"),
             (_evidence(_H(0, 3.0)), "scale"),
             (_evidence(_H() @ np.diag([1.0, -1.0, 1.0]) @ np.array([[1, 0, 0], [0, 1, -479], [0, 0, 1.0]])), "folds"),
             (_evidence(np.diag([1.0, 2.2, 1.0])), "anisotropy"),
             (_evidence(_H(0, 1.0, 600, 0)), "maps into the visible")]
    for f, why in cases:
        v = V.decide(f, opt)
        assert not v.accepted and why in v.reason and v.confidence == 0.0, (why, v.reason)


def test_confidence_grows_with_evidence():
    opt = dict(V.DEFAULTS)
    weak = V.decide(_evidence(_H(), n=90, inlier_frac=0.5), opt)
    strong = V.decide(_evidence(_H(), n=600, inlier_frac=0.7), opt)
    assert weak.accepted and strong.accepted and strong.confidence > weak.confidence


@pytest.mark.parametrize("bad", [{"verify_min_inliers": 2}, {"verify_min_spread": 1.5}, {"verify": "yes"},
                                 {"verify_scale_range": 0.5}, {"min_structure": float("nan")},
                                 {"structure_cell": 7.5}, {"verify_max_rotation_deg": "30"}])
def test_bad_options_are_refused(random_matcher, bad):
    before = dict(random_matcher.options)
    with pytest.raises(ValueError):
        Matcher(random_matcher.model_path, backend="torch", **bad)
    assert random_matcher.options == before


def test_verification_off_restores_the_plain_fit(random_matcher):
    vis = cv2.cvtColor(textured(3), cv2.COLOR_GRAY2BGR)
    th = textured(4)
    random_matcher.set_options(verify=False)
    try:
        r = random_matcher.match(vis, th)
    finally:
        random_matcher.set_options(verify=True)
    assert r.verification in ("not verified", "no homography could be fitted", "fewer than 4 matches")
    assert set(r.evidence) >= {"inliers", "inlier_ratio", "spread", "scale"} or len(r) < 4


def test_right_and_wrong_real_pairs(shipped, shared_data):
    """A few dev pairs: right pairs are accepted, visible/thermal of different scenes are not."""
    files = sorted(glob.glob(str(shared_data / "roadscene_homography" / "*.npz")))[:4]
    if len(files) < 4:
        pytest.skip("roadscene_homography is incomplete")
    pairs = [np.load(f) for f in files]
    right = [shipped.match(p["visible"], p["thermal"]) for p in pairs]
    wrong = [shipped.match(pairs[i]["visible"], pairs[(i + 1) % 4]["thermal"]) for i in range(4)]
    assert sum(r.homography is not None for r in right) >= 3, [r.verification for r in right]
    assert sum(r.homography is None for r in wrong) >= 3, [r.verification for r in wrong]
    for r in wrong:
        if r.homography is None:
            assert r.verification != "ok" and r.confidence == 0.0 and not r.inliers.any()


def _rig_matches(stretch, n=300, inlier_frac=0.5, noise=1.2, seed=0):
    """Matches of one rig seen by a 320x240 thermal camera and a visible camera ``stretch``
    times finer: the same thermal points, the same error in thermal px, wrong matches anywhere."""
    rng = np.random.default_rng(seed)
    size_t, size_v = (320, 240), (int(320 * stretch), int(240 * stretch))
    tp = rng.uniform([0, 0], size_t, (n, 2))
    H = np.diag([stretch, stretch, 1.0]) @ np.array([[0.98, 0.03, 6.0], [-0.02, 1.01, -4.0], [0, 0, 1.0]])
    hom = np.c_[tp, np.ones(n)] @ H.T
    vp = hom[:, :2] / hom[:, 2:] + stretch * rng.normal(0, noise, (n, 2))
    wrong = rng.random(n) > inlier_frac
    vp[wrong] = rng.uniform([0, 0], size_v, (int(wrong.sum()), 2))
    return tp.astype(np.float32), vp.astype(np.float32), size_t, size_v


def test_inlier_threshold_is_in_thermal_px_so_a_finer_visible_camera_keeps_its_inliers():
    """The same rig evidence with a visible camera at 1x and 2x the thermal resolution: the
    threshold follows the stretch, so the inliers and the verdict stay; a threshold in visible
    px (what the fit did before) loses inliers on the finer camera."""
    opt = dict(V.FIT_DEFAULTS, **V.DEFAULTS)
    counts, verdicts = [], []
    for stretch in (1.0, 2.0):
        tp, vp, st, sv = _rig_matches(stretch)
        H, inl = V.robust_homography(tp, vp, st, sv, opt)
        counts.append(int(inl.sum()))
        verdicts.append(V.decide(V.features(H, inl, tp, np.full(len(tp), 0.3, np.float32), st, sv), opt).accepted)
    assert verdicts == [True, True]
    assert abs(counts[1] - counts[0]) <= 0.1 * counts[0], counts
    tp, vp, st, sv = _rig_matches(2.0)
    _, inl_visible_px = V.robust_homography(tp, vp, sv, sv, opt)  # equal sizes: threshold in visible px
    assert inl_visible_px.sum() < 0.8 * counts[1], (int(inl_visible_px.sum()), counts[1])


@pytest.mark.parametrize("stretch", [1.0, 2.0, 4.0])
def test_wrong_matches_stay_rejected_on_a_finer_visible_camera(stretch):
    """The wider threshold (in visible px) of a finer visible camera lets no random matches through."""
    opt = dict(V.FIT_DEFAULTS, **V.DEFAULTS)
    tp, vp, st, sv = _rig_matches(stretch, n=150, inlier_frac=0.0, seed=3)
    H, inl = V.robust_homography(tp, vp, st, sv, opt)
    f = V.features(H, inl, tp, np.full(len(tp), 0.3, np.float32), st, sv)
    assert not V.decide(f, opt).accepted
