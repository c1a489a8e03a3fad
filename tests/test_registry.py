"""The encoder registry: register, create, list, errors, and discovery through the ``anybind.encoders`` entry points."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import entry_points

import pytest
import torch

import anybind
from anybind.errors import RegistryError
from anybind.layers import EncoderTower, TokenHead, Transformer
from anybind.registry import ENTRY_POINT_GROUP, get_encoder_entry, unregister_encoder

BUILTIN_MODALITIES = ("image", "text", "audio", "video", "points")


def _tiny_tower(embed_dim: int = 8, width: int = 16) -> EncoderTower:
    stem = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, width), torch.nn.Unflatten(1, (1, width)))
    return EncoderTower(modality="image", stem=stem, trunk=Transformer(width, 1, 2), head=TokenHead(width, embed_dim),
                        embed_dim=embed_dim, input_contract={"image_size": 8, "mean": [0.5] * 3, "std": [0.5] * 3})


@pytest.fixture
def temp_names():
    """Names registered by a test; removed afterwards so the registry stays as the other tests expect it."""
    names: list[str] = []
    yield names
    for n in names:
        unregister_encoder(n)


def test_register_create_and_list(temp_names):
    temp_names.append("image_regtest_tiny")

    @anybind.register_encoder("image_regtest_tiny", modality="image")
    def image_regtest_tiny(embed_dim: int = 8, width: int = 16):
        return _tiny_tower(embed_dim, width)

    assert image_regtest_tiny.encoder_name == "image_regtest_tiny"
    enc = anybind.create_encoder("image_regtest_tiny", embed_dim=12)
    assert (enc.embed_dim, enc.modality, enc.registry_name, enc.build_kwargs) == (12, "image", "image_regtest_tiny",
                                                                                 {"embed_dim": 12})
    z = enc(torch.randn(3, 3, 8, 8))
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(3))
    assert "image_regtest_tiny" in anybind.list_encoders("image_*")
    assert "image_regtest_tiny" in anybind.list_encoders(modality="image")
    assert "image_regtest_tiny" not in anybind.list_encoders(modality="audio")
    assert get_encoder_entry("image_regtest_tiny").module == __name__


def test_list_by_pattern_and_modality():
    everything = anybind.list_encoders()
    assert everything == sorted(everything)
    for m in BUILTIN_MODALITIES:
        names = anybind.list_encoders(modality=m)
        assert names, f"no encoder for {m}"
        assert all(get_encoder_entry(n).modality == m for n in names)
        assert set(names) <= set(everything)
    assert anybind.list_encoders("image_vit_*") == [f"image_vit_{s}" for s in ("base", "small", "test", "tiny")]
    assert anybind.list_encoders("*_tiny", modality="text") == ["text_transformer_tiny"]
    assert anybind.list_encoders("no_such_*") == []
    assert anybind.list_encoders("image_vit_test", modality="audio") == []


def test_every_builtin_modality_default_encoder_is_registered():
    for m in BUILTIN_MODALITIES:
        default = anybind.get_modality(m).default_encoder
        assert default in anybind.list_encoders(modality=m)


def test_duplicate_name_raises(temp_names):
    temp_names.append("image_regtest_dup")

    @anybind.register_encoder("image_regtest_dup", modality="image")
    def first():
        return _tiny_tower()

    with pytest.raises(RegistryError, match="already registered.*first"):

        @anybind.register_encoder("image_regtest_dup", modality="image")
        def second():
            return _tiny_tower()

    assert get_encoder_entry("image_regtest_dup").builder is first
    with pytest.raises(RegistryError, match="already registered"):
        anybind.register_encoder("image_vit_tiny", modality="image")(lambda: None)


def test_unknown_name_suggests_close_matches():
    with pytest.raises(RegistryError, match="image_vit_tiny") as err:
        anybind.create_encoder("image_vit_tinyy")
    assert "unknown encoder 'image_vit_tinyy'" in str(err.value)
    with pytest.raises(RegistryError, match="audio_vit_small"):
        anybind.create_encoder("audio_vt_small")
    with pytest.raises(KeyError):  # RegistryError is also a KeyError for callers that catch that
        anybind.create_encoder("zzzz")


def test_builtins_are_advertised_through_the_entry_point_group():
    eps = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    assert ENTRY_POINT_GROUP == "anybind.encoders"
    assert "builtin" in eps and eps["builtin"].value == "encoders"
    for m in BUILTIN_MODALITIES:
        for n in anybind.list_encoders(modality=m):
            if n.startswith(m + "_"):
                assert get_encoder_entry(n).module == f"encoders.{m}", n


_DISCOVERY = r"""
import importlib.metadata as md, json, sys
calls = []
original = md.EntryPoint.load
def load(self):
    before = "encoders" in sys.modules
    obj = original(self)
    calls.append({"group": self.group, "name": self.name, "value": self.value,
                  "imported_encoders": not before and "encoders.image" in sys.modules})
    return obj
md.EntryPoint.load = load
import anybind
assert "encoders" not in sys.modules, "import anybind must not import the built-in encoders directly"
names = anybind.list_encoders()
print(json.dumps({"calls": calls, "names": names}))
"""


def test_builtin_encoders_are_loaded_by_the_entry_point():
    """In a fresh process, the built-ins arrive through ``EntryPoint.load`` of the ``anybind.encoders`` group."""
    out = subprocess.run([sys.executable, "-c", _DISCOVERY], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    builtin = [c for c in result["calls"] if c["group"] == ENTRY_POINT_GROUP and c["name"] == "builtin"]
    assert builtin and builtin[0]["value"] == "encoders" and builtin[0]["imported_encoders"], result["calls"]
    for m in BUILTIN_MODALITIES:
        assert f"{anybind.get_modality(m).default_encoder}" in result["names"]


def test_a_taken_name_or_extension_raises_naming_both_owners_and_replace_takes_it_over(caplog):
    from anybind.modality import RESERVED_MODALITIES, get_modality, unregister_modality
    from anybind.registry import PluginConflictError

    assert set(BUILTIN_MODALITIES) < set(RESERVED_MODALITIES) <= set(anybind.list_modalities())
    with pytest.raises(PluginConflictError, match=r"modality 'audio' is already registered by anybind \(built-in\); "
                                                  rf"{__name__} registers it again.*replace=True"):
        anybind.register_modality("audio", reader=str, transform=str)
    with pytest.raises(PluginConflictError, match=r"file extension '\.wav' .* anybind \(built-in\) \(modality 'audio'\); "
                                                  rf"{__name__} \(modality 'regtest'\).*explicit_extensions="):
        anybind.register_modality("regtest", reader=str, transform=str, extensions=("WAV",))
    assert "regtest" not in anybind.list_modalities() and anybind.modality_for_path("a.wav") == "audio"
    try:
        first = anybind.register_modality("regtest", reader=str, transform=str, extensions=(".regtest",),
                                          explicit_extensions=(".wav",))  # explicit suffixes may be shared
        assert anybind.modality_for_path("x.REGTEST") == "regtest" and first.origin == __name__
        with pytest.raises(PluginConflictError, match=f"modality 'regtest' is already registered by {__name__}"):
            anybind.register_modality("regtest", reader=str, transform=str)
        with caplog.at_level("WARNING", logger="anybind.modality"):
            second = anybind.register_modality("regtest", reader=repr, transform=str, extensions=(".regtest",),
                                               replace=True)
        assert get_modality("regtest") is second and "replaced" in caplog.text
    finally:
        unregister_modality("regtest")


def test_replace_takes_an_encoder_name_over(temp_names, caplog):
    temp_names.append("image_regtest_swap")
    anybind.register_encoder("image_regtest_swap", modality="image")(lambda: _tiny_tower())
    with caplog.at_level("WARNING", logger="anybind.registry"):

        @anybind.register_encoder("image_regtest_swap", modality="image", replace=True)
        def swapped():
            return _tiny_tower(embed_dim=4)

    assert get_encoder_entry("image_regtest_swap").builder is swapped and "replaced by" in caplog.text
    assert anybind.create_encoder("image_regtest_swap").embed_dim == 4
