"""Every registered encoder, driven by the registry: shapes, unit norm, gradients, checkpointing, presets, weights."""

from __future__ import annotations

import json

import pytest
import torch

import anybind
from anybind.errors import CheckpointError
from encoder_inputs import sample_shape, synthetic_batch, text_ids

TEST_ENCODERS = anybind.list_encoders("*_test")
BUILTIN_SIZES = {"tiny": (192, 6, 128), "small": (384, 12, 384), "base": (768, 12, 512)}
BUILTIN_FAMILIES = ["image_vit", "text_transformer", "audio_vit", "video_vit", "points_transformer"]


def build(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return anybind.create_encoder(name, **kwargs).eval()


def test_every_builtin_family_has_a_test_size():
    for family in BUILTIN_FAMILIES:
        assert f"{family}_test" in TEST_ENCODERS


@pytest.mark.parametrize("name", TEST_ENCODERS)
def test_forward_gives_unit_vectors(name):
    enc = build(name)
    assert isinstance(enc, anybind.EncoderProtocol)
    x = synthetic_batch(enc.modality, enc.input_contract, batch=3)
    with torch.no_grad():
        z = enc(x)
    assert z.shape == (3, enc.embed_dim) and z.dtype == torch.float32
    assert torch.isfinite(z).all()
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(3))
    assert not torch.allclose(z[0], z[1], atol=1e-3), "different inputs gave the same embedding"


@pytest.mark.parametrize("name", TEST_ENCODERS)
def test_bfloat16_autocast_gives_float32_unit_vectors(name):
    enc = build(name)
    x = synthetic_batch(enc.modality, enc.input_contract, batch=2)
    with torch.no_grad():
        ref = enc(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            z = enc(x)
    assert z.dtype == torch.float32 and torch.isfinite(z).all()
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(2))
    assert (z * ref).sum(dim=-1).min() > 0.95, "bfloat16 embeddings drifted from float32"


@pytest.mark.parametrize("name", TEST_ENCODERS)
def test_input_contract_is_plain_json(name):
    enc = build(name)
    assert json.loads(json.dumps(enc.input_contract)) == enc.input_contract


@pytest.mark.parametrize("name", TEST_ENCODERS)
def test_backward_reaches_every_parameter(name):
    enc = build(name).train()
    z = enc(synthetic_batch(enc.modality, enc.input_contract, batch=2))
    (z * torch.randn_like(z)).sum().backward()
    for pname, p in enc.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name}: no gradient for {pname}"
            assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"
    assert any(p.grad.abs().sum() > 0 for p in enc.parameters())


@pytest.mark.parametrize("name", TEST_ENCODERS)
def test_grad_checkpointing_changes_nothing(name):
    enc = build(name)  # eval: no drop path, deterministic
    x = synthetic_batch(enc.modality, enc.input_contract, batch=2)

    def run():
        enc.zero_grad(set_to_none=True)
        z = enc(x)
        z.pow(3).sum().backward()
        return z.detach(), {n: p.grad.clone() for n, p in enc.named_parameters()}

    z_plain, g_plain = run()
    enc.set_grad_checkpointing(True)
    z_ckpt, g_ckpt = run()
    torch.testing.assert_close(z_ckpt, z_plain)
    for n in g_plain:
        torch.testing.assert_close(g_ckpt[n], g_plain[n], msg=lambda m: f"{name}.{n}: {m}")


@pytest.mark.parametrize("name", TEST_ENCODERS)
def test_wrong_input_shape_is_a_loud_error(name):
    enc = build(name)
    x = synthetic_batch(enc.modality, enc.input_contract, batch=2)
    bad = x[..., : x.shape[-1] // 2]  # half the last axis: pixels, frames, tokens or point channels
    with pytest.raises((ValueError, RuntimeError)):
        enc(bad)


@pytest.mark.parametrize("family", BUILTIN_FAMILIES)
@pytest.mark.parametrize("size", list(BUILTIN_SIZES))
def test_presets_build_at_documented_sizes(family, size):
    with torch.device("meta"):  # shapes and counts only: no memory, no init cost
        enc = anybind.create_encoder(f"{family}_{size}")
    width, depth, embed_dim = BUILTIN_SIZES[size]
    assert (enc.width, len(enc.trunk.blocks), enc.embed_dim) == (width, depth, embed_dim)
    assert enc.modality == family.split("_")[0]
    n = sum(p.numel() for p in enc.parameters())
    blocks = depth * 12 * width * width  # attention (4 w^2) + MLP (8 w^2) per block
    assert blocks < n < blocks + 50 * width * 1024 + 49408 * width, n


def test_embed_dim_override():
    enc = build("image_vit_test", embed_dim=48)
    assert enc.embed_dim == 48
    assert enc(synthetic_batch("image", enc.input_contract)).shape == (2, 48)


@pytest.mark.parametrize(
    "name, overrides, key, value",
    [
        ("image_vit_test", {"image_size": 48, "patch_size": 16}, "image_size", 48),
        ("audio_vit_test", {"clips": 2, "target_length": 64}, "target_length", 64),
        ("video_vit_test", {"frames": 4, "clips": 3}, "frames", 4),
        ("points_transformer_test", {"channels": 6, "num_points": 96}, "channels", 6),
        ("text_transformer_test", {"context_length": 16}, "context_length", 16),
    ],
)
def test_overrides_update_the_input_contract(name, overrides, key, value):
    enc = build(name, **overrides)
    assert enc.input_contract[key] == value
    for k, v in overrides.items():
        if k in enc.input_contract:
            assert enc.input_contract[k] == v
    z = enc(synthetic_batch(enc.modality, enc.input_contract))
    assert z.shape == (2, enc.embed_dim)


def test_text_pools_the_end_of_text_token():
    enc = build("text_transformer_test")
    ids = text_ids([5, 5])
    ids[1, :7] = ids[0, :7]
    ids[1, 10:20] = 123  # junk after EOT: the causal trunk and EOT pooling must ignore it
    with torch.no_grad():
        z = enc(ids)
        torch.testing.assert_close(z[0], z[1])
        ids[1, 3] += 1  # a change before EOT must matter
        assert not torch.allclose(enc(ids)[1], z[0])


def test_points_colour_is_used_when_channels_is_six():
    enc = build("points_transformer_test", channels=6)
    x = synthetic_batch("points", enc.input_contract, batch=1)
    y = x.clone()
    y[..., 3:] = 1 - y[..., 3:]
    with torch.no_grad():
        assert not torch.allclose(enc(x), enc(y))


def test_points_groups_enter_the_pointnet_at_unit_scale_per_cloud():
    """normalize_groups: a cloud's relative group xyz has RMS 1 whatever the cloud's density or scale."""
    enc = build("points_transformer_test")
    raw = build("points_transformer_test", normalize_groups=False)
    x = synthetic_batch("points", enc.input_contract, batch=2)
    x[1] = x[0]
    x[1, :, :3] *= 0.1  # the same cloud ten times smaller: its raw groups are ten times smaller too
    _, groups = enc.stem.group(x)
    _, raw_groups = raw.stem.group(x)
    rms = groups[..., :3].pow(2).mean(dim=(1, 2, 3)).sqrt()
    torch.testing.assert_close(rms, torch.ones(2))
    raw_rms = raw_groups[..., :3].pow(2).mean(dim=(1, 2, 3)).sqrt()
    torch.testing.assert_close(raw_rms[1], raw_rms[0] * 0.1, rtol=1e-4, atol=0)
    # normalised, the two clouds' groups are the same; they are the raw groups divided by the cloud's own scale
    torch.testing.assert_close(groups[1], groups[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(groups[..., :3], raw_groups[..., :3] / raw_rms.view(2, 1, 1, 1))


def test_points_embedding_does_not_depend_on_the_rest_of_the_batch():
    enc = build("points_transformer_test", channels=6)
    x = synthetic_batch("points", enc.input_contract, batch=3)
    with torch.no_grad():
        alone = enc(x[:1])
        together = enc(x)
    torch.testing.assert_close(together[:1], alone, rtol=1e-5, atol=1e-6)


def test_points_position_features_are_fourier_features_of_the_centres():
    from encoders.points import FourierPosition

    pos = FourierPosition(8, frequencies=3)
    seen = []
    pos.mlp[0].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    xyz = torch.tensor([[0.0, 0.25, -0.5]])
    pos(xyz)
    feats = seen[0][0]
    assert feats.shape == (3 + 6 * 3,)
    angles = torch.pi * torch.tensor([1.0, 2.0, 4.0]) * xyz[0].unsqueeze(-1)  # (3 axes, 3 frequencies)
    torch.testing.assert_close(feats, torch.cat([xyz[0], angles.flatten().sin(), angles.flatten().cos()]))
    assert FourierPosition(8, frequencies=0).mlp[0].in_features == 3  # plain MLP on xyz


def test_transforms_produce_the_contract_shapes():
    """The real transforms, on tiny generated raw data, give what the encoders were built for."""
    pytest.importorskip("anybind.data.transforms")
    raw = {
        "image": torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8),
        "text": "a small red cube",
        "audio": torch.randn(16000) * 0.1,
        "video": torch.randint(0, 256, (12, 3, 40, 48), dtype=torch.uint8),
        "points": torch.rand(200, 3),
    }
    for name in TEST_ENCODERS:
        enc = build(name)
        if enc.modality not in raw:
            continue
        fn = anybind.get_modality(enc.modality).make_transform(enc.input_contract)
        x = fn(raw[enc.modality])
        assert tuple(x.shape) == sample_shape(enc.modality, enc.input_contract), name
        with torch.no_grad():
            assert torch.isfinite(enc(x.unsqueeze(0))).all()


# --- weights from outside: timm ViT, OpenCLIP text, image -> video inflation -------------------------------


def _timm_vit(depth: int = 1, **kw):
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(1)
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=depth, num_heads=2, num_classes=10, **kw)
    with torch.no_grad():
        for p in vit.parameters():  # away from the defaults, so a key that is not loaded shows
            p.add_(torch.randn_like(p) * 0.2)
    return vit.eval()


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_image_tower_loads_a_timm_vit_and_matches_it(tmp_path, fmt):
    vit = _timm_vit()
    path = tmp_path / f"vit.{fmt}"
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(vit.state_dict(), str(path))
    else:
        torch.save({"state_dict": vit.state_dict()}, path)
    enc = build("image_vit_test", pretrained=str(path))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = vit.forward_head(vit.forward_features(x), pre_logits=True)  # normalized CLS, before the classifier
        ours = enc.head.norm(enc.forward_features(x))[:, 0]
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    assert "pretrained" not in enc.build_kwargs  # a saved model must not need the file again


def test_timm_weights_adapt_to_another_image_and_patch_size(tmp_path):
    from safetensors.torch import save_file

    vit = _timm_vit()
    save_file(vit.state_dict(), str(tmp_path / "vit.safetensors"))
    enc = build("image_vit_test", image_size=64, patch_size=16, pretrained=str(tmp_path / "vit.safetensors"))
    assert enc.stem.pos_embed.shape == (1, 1 + 16, 32)
    torch.testing.assert_close(enc.trunk.blocks[0].attn.qkv.weight, vit.blocks[0].attn.qkv.weight)
    assert torch.isfinite(enc(torch.randn(1, 3, 64, 64))).all()


def test_timm_weights_of_another_depth_are_refused(tmp_path):
    from safetensors.torch import save_file

    save_file(_timm_vit(depth=2).state_dict(), str(tmp_path / "deep.safetensors"))
    with pytest.raises(CheckpointError, match="unexpected.*blocks.1"):
        build("image_vit_test", pretrained=str(tmp_path / "deep.safetensors"))
    with pytest.raises(CheckpointError, match="do not exist"):
        build("image_vit_test", pretrained=str(tmp_path / "missing.safetensors"))


def test_text_tower_loads_an_open_clip_text_tower(tmp_path):
    from open_clip.transformer import TextTransformer

    torch.manual_seed(2)
    ref = TextTransformer(context_length=77, vocab_size=49408, width=32, heads=2, layers=2, output_dim=32).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    torch.save(ref.state_dict(), tmp_path / "text.pt")
    enc = build("text_transformer_test", depth=2, pretrained=str(tmp_path / "text.pt"))
    ids = text_ids([3, 30, 80])
    with torch.no_grad():
        expected = ref(ids)
        torch.testing.assert_close(enc.forward_head(enc.forward_features(ids), ids), expected, rtol=1e-3, atol=2e-3)
        for m in enc.modules():  # the one difference is LayerNorm eps (1e-5 there, 1e-6 here): without it, exact
            if isinstance(m, torch.nn.LayerNorm):
                m.eps = 1e-5
        torch.testing.assert_close(enc.forward_head(enc.forward_features(ids), ids), expected, rtol=1e-6, atol=1e-6)


def test_inflated_video_tower_embeds_a_still_video_like_its_frame():
    from encoders.video import inflate_image_stem

    image = build("image_vit_test")
    video = build("video_vit_test")  # one 2-frame tubelet per patch: the image's tokens exactly
    before = [p.clone() for p in video.parameters()]
    inflate_image_stem(video, image)
    assert any(not torch.equal(a, b) for a, b in zip(before, video.parameters()))
    frames = synthetic_batch("image", image.input_contract, batch=2)
    clips = frames[:, None, :, None].expand(-1, video.input_contract["clips"], -1, 2, -1, -1)  # (B, S, 3, T, H, W)
    with torch.no_grad():
        torch.testing.assert_close(video(clips), image(frames), rtol=1e-4, atol=1e-5)



@pytest.mark.parametrize("name, channels", [("image_vit_test", [8, 16, 16]), ("audio_vit_test", [4, 8, 16, 16]),
                                           ("video_vit_test", [8, 16, 16])])
def test_conv_stem_keeps_the_token_grid_and_trains(name, channels):
    """Early convolutions instead of the patchify kernel: same token grid (ceil for sides that do not divide),
    finite unit outputs, gradients down to the first convolution."""
    plain = build(name)
    conv = build(name, conv_stem=channels)  # one stride-2 step per halving of the patch size (8 or 16 here)
    if name == "audio_vit_test":  # default patches overlap (stride 10); the conv stem's do not: 32x48 -> 2x3
        assert conv.stem.grid_size == (2, 3) and conv.stem.num_patches == 6
    else:
        assert conv.stem.num_patches == plain.stem.num_patches
    x = synthetic_batch(name.split("_")[0], conv.input_contract, batch=3)
    conv.train()
    z = conv(x)
    assert z.shape == (3, conv.embed_dim) and torch.isfinite(z).all()
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(3), rtol=1e-5, atol=1e-5)
    z.sum().backward()
    first = next(m for m in conv.stem.proj.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)))
    assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0


def test_conv_stem_rejects_a_patch_size_it_cannot_reach():
    with pytest.raises(ValueError, match="power-of-two patch size"):
        build("image_vit_test", conv_stem=[8, 16])  # patch 8 needs three halvings
    with pytest.raises(ValueError, match="power-of-two patch size"):
        build("image_vit_test", patch_size=12, image_size=48, conv_stem=[8, 16])


def test_inflated_conv_stem_video_tower_embeds_a_still_video_like_its_frame():
    from encoders.video import inflate_image_stem

    image = build("image_vit_test", conv_stem=[8, 16, 16])
    video = build("video_vit_test", conv_stem=[8, 16, 16])
    with torch.no_grad():  # non-trivial BatchNorm statistics, so copying them matters
        for m in image.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    inflate_image_stem(video, image)
    image.eval(), video.eval()
    frames = synthetic_batch("image", image.input_contract, batch=2)
    clips = frames[:, None, :, None].expand(-1, video.input_contract["clips"], -1, 2, -1, -1)
    with torch.no_grad():
        torch.testing.assert_close(video(clips), image(frames), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="conv_stem on both"):
        inflate_image_stem(build("video_vit_test"), image)

def test_inflation_refuses_a_trunk_of_another_size():
    from encoders.video import inflate_image_stem

    with pytest.raises(ValueError, match="trunk"):
        inflate_image_stem(build("video_vit_test", depth=2), build("image_vit_test"))
