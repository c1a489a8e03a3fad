"""The data package's shape: one-way imports (readers -> files, transforms never -> readers), small modules, strict
transform contracts, manifest containment (root_only) and errors that name the real file."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import numpy as np
import pytest
from assets import REFERENCE_CONTRACTS, contract, random_cloud, write_image

import anybind
from anybind.data import transforms as T
from anybind.data.dataset import ManifestDataset
from anybind.data.manifest import load_manifest
from anybind.errors import ContractError, InputError

DATA = Path(anybind.__file__).parent / "data"


def _imports(path: Path) -> set[str]:
    """Absolute names of the anybind modules ``path`` imports (relative imports resolved)."""
    package = ("anybind." + path.relative_to(DATA.parent).with_suffix("").as_posix().replace("/", ".")).split(".")
    if path.name == "__init__.py":
        package = package[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level] if node.level else []
            out.add(".".join(base + ([node.module] if node.module else [])))
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_transforms_never_import_readers_and_point_files_never_import_readers():
    for path in (DATA / "transforms").glob("*.py"):
        bad = {m for m in _imports(path) if m.startswith("anybind.data.readers")}
        assert not bad, f"{path.name} imports {bad}: transforms take decoded data, readers decode files"
    for name in ("pointfiles.py", "plyfile.py", "meshes.py", "files.py", "limits.py", "pixels.py"):
        bad = {m for m in _imports(DATA / name) if m.startswith(("anybind.data.readers", "anybind.data.transforms"))}
        assert not bad, f"{name} imports {bad}"


def test_data_modules_stay_under_350_lines():
    long = {str(p.relative_to(DATA)): n for p in DATA.rglob("*.py") if (n := len(p.read_text().splitlines())) > 350}
    assert not long, long


def test_public_names_still_import_from_their_old_modules():
    from anybind.data.pointfiles import MESH_SAMPLES, POINT_EXTENSIONS, read_points  # noqa: F401
    from anybind.data.readers import (VideoSource, check_file, read_audio, read_image, read_points,  # noqa: F401
                                      read_tensor_file, read_text, read_video, to_rgb)
    for name in ("CLIP_MEAN", "clip_windows", "frame_indices", "get_tokenizer", "resampled_windows", "PointCloudTransform",
                 "image_transform", "text_transform", "audio_transform", "video_transform", "points_transform",
                 "identity_transform"):
        assert hasattr(T, name), name


# --------------------------------------------------------------------------------------------- strict contracts


@pytest.mark.parametrize("modality", list(REFERENCE_CONTRACTS))
def test_a_contract_missing_a_key_or_carrying_an_unknown_one_is_refused(modality):
    factory = getattr(T, f"{modality}_transform")
    factory(contract(modality))
    factory(contract(modality, compat="some_variant_without_this_modality"))  # the meta key is always allowed
    first = next(iter(REFERENCE_CONTRACTS[modality]))
    with pytest.raises(ContractError, match=f"lacks '{first}'.*expects"):
        factory({k: v for k, v in REFERENCE_CONTRACTS[modality].items() if k != first})
    with pytest.raises(ContractError, match="does not understand: 'image_sise'"):
        factory(contract(modality, image_sise=3))


@pytest.mark.parametrize("modality,key,value,problem", [
    ("image", "image_size", 0, "positive integer"), ("image", "mean", [0.5, 0.5], "3 numbers"),
    ("image", "interpolation", "cubic-ish", "unknown interpolation"), ("text", "tokenizer", "gpt2", "unknown tokenizer"),
    ("audio", "clip_duration", 0.001, "shorter than one 25 ms"), ("audio", "std", "9", "must be a"),
    ("video", "frames", 2.5, "positive integer"), ("points", "channels", 4, "3 \\(xyz\\) or 6"),
])
def test_contract_values_of_the_wrong_kind_are_refused(modality, key, value, problem):
    with pytest.raises(ContractError, match=problem):
        getattr(T, f"{modality}_transform")(contract(modality, **{key: value}))


def test_identity_contract_keys_are_optional_but_checked():
    assert T.identity_transform({}).shape is None
    with pytest.raises(ContractError, match="list of sizes"):
        T.identity_transform({"shape": "big"})
    with pytest.raises(ContractError, match="does not understand: 'length'"):
        T.identity_transform({"length": 2000})


# ------------------------------------------------------------------------------------------------- root_only


@pytest.fixture
def tree(tmp_path):
    """root/ holding a manifest and an image; outside/ beside it holding another image and a caption."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "img").mkdir(parents=True)
    outside.mkdir()
    write_image(root / "img" / "in.png")
    write_image(outside / "out.png")
    (outside / "secret.txt").write_text("not yours")
    return root, outside


def _manifest(root: Path, *rows: dict) -> Path:
    p = root / "m.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_root_only_accepts_paths_inside_and_refuses_every_escape(tree):
    root, outside = tree
    os.symlink(outside, root / "link")
    os.symlink(root / "img", root / "alias")
    good = _manifest(root, {"id": "a", "image": "img/in.png"}, {"id": "b", "image": "alias/in.png"},
                     {"id": "c", "text": "a caption, not a path"})
    assert len(load_manifest(good, root_only=True)) == 3
    escapes = {
        "../outside/out.png": "climbs out with '..'",
        str(outside / "out.png"): "is absolute",
        "link/out.png": "symlink",
        "img/../../outside/out.png": "climbs out",
    }
    for value, problem in escapes.items():
        m = _manifest(root, {"id": "ok", "image": "img/in.png"}, {"id": "bad", "image": value})
        assert load_manifest(m)[1].items["image"]  # allowed without root_only
        with pytest.raises(InputError, match=problem) as info:
            load_manifest(m, root_only=True)
        assert info.value.source == f"{m.resolve()}:2" and info.value.modality == "image", str(info.value)
        assert value in str(info.value)
    caption = _manifest(root, {"id": "t", "text": "link/secret.txt"})
    assert load_manifest(caption)[0].items["text"].endswith("secret.txt")
    with pytest.raises(InputError, match="symlink"):
        load_manifest(caption, root_only=True)


def test_anybind_embed_folders_refuse_symlinks_out_with_root_only(tree):
    from anybind.retrieval.embed import items_from_folder

    root, outside = tree
    os.symlink(outside / "out.png", root / "img" / "escape.png")
    assert len(items_from_folder(root / "img")[0]) == 2
    with pytest.raises(InputError, match="symlink") as info:
        items_from_folder(root / "img", root_only=True)
    assert info.value.source == str(root / "img" / "escape.png")


def test_the_data_config_has_root_only_off_by_default():
    from omegaconf import OmegaConf

    from anybind.train.recipe import compose_train_config

    conf = Path(anybind.__file__).parents[1] / "conf"
    for name in ("data/manifest.yaml", "embed.yaml"):
        assert OmegaConf.load(conf / name).root_only is False, name
    assert compose_train_config(["data=world"]).data.root_only is False  # world composes data/manifest.yaml


# ---------------------------------------------------------------------------------------------- named errors


def test_manifest_dataset_errors_name_the_file_not_in_memory(tmp_path):
    np.save(tmp_path / "few.npy", random_cloud(5))
    m = _manifest(tmp_path, {"id": "p", "points": "few.npy"})
    ds = ManifestDataset(load_manifest(m), {"points": contract("points", num_points=64)}, skip_errors=False)
    with pytest.raises(InputError, match="too few points") as info:
        ds.load(0, "points")
    assert info.value.source == str(tmp_path / "few.npy") and info.value.modality == "points"
    row = ManifestDataset(load_manifest(m), {"points": contract("points", num_points=64)})[0]
    assert row["inputs"] == {} and row["errors"][0][:2] == ("p", "points") and "few.npy" in row["errors"][0][2]
