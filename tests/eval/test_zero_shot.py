"""anybind.zero_shot: the classifier is the normalized mean of each class's prompt embeddings; classify ranks."""

import pytest
import torch
import torch.nn.functional as F
from layouts import make_folder
from oracle import oracle_model, random_model

from anybind import zero_shot


@pytest.fixture(scope="module")
def model():
    return random_model("image", seed=3)


def test_classifier_is_the_normalized_mean_of_the_prompt_embeddings(model):
    names, templates = ["cat", "dog", "tree"], ["a photo of a {}.", "{}", "a drawing of a {}"]
    w = zero_shot.classifier(model, names, templates)
    assert w.shape == (3, model.embed_dim) and torch.allclose(w.norm(dim=1), torch.ones(3))
    for i, c in enumerate(names):
        z = model.embed({"text": [t.format(c) for t in templates]})["text"]
        assert torch.allclose(w[i], F.normalize(z.mean(0), dim=0), atol=1e-6)
    assert zero_shot.prompts(["a", "b"], ["x {}", "{} y"]) == ["x a", "a y", "x b", "b y"]


def test_classify_embeddings_and_files_agree(model, tmp_path):
    mini = make_folder(tmp_path / "f", per_class=1)
    files = [str(mini.root / e) for e in mini.expected]
    w = zero_shot.classifier(model, mini.keywords, ["a photo of a {}."])
    top = zero_shot.classify(model, {"image": files}, w, k=2)
    again = zero_shot.classify(None, model.embed({"image": files})["image"], w, k=2)
    assert top.indices.shape == (3, 2) and torch.equal(top.indices, again.indices)
    assert torch.allclose(top.scores, again.scores) and (top.scores[:, 0] >= top.scores[:, 1]).all()
    assert zero_shot.classify(None, torch.eye(3, model.embed_dim), w, k=10).indices.shape == (3, 3)  # k capped


def test_an_oracle_classifies_every_file(tmp_path):
    mini = make_folder(tmp_path / "f", per_class=2)
    model = oracle_model("image", mini.references, mini.keywords)
    w = zero_shot.classifier(model, mini.keywords, ["a photo of a {}.", "{}"])
    top = zero_shot.classify(model, {"image": [str(mini.root / e) for e in mini.expected]}, w, k=1)
    assert top.indices[:, 0].tolist() == [0, 0, 1, 1, 2, 2]


def test_bad_arguments_say_what_is_wrong(model):
    with pytest.raises(ValueError, match="has no '\\{\\}'"):
        zero_shot.classifier(model, ["cat"], ["a photo"])
    with pytest.raises(ValueError, match="at least one template"):
        zero_shot.classifier(model, ["cat"], [])
    with pytest.raises(ValueError, match="needs a text tower"):
        zero_shot.classifier(_image_only(), ["cat"], ["{}"])
    w = zero_shot.classifier(model, ["cat"], ["{}"])
    with pytest.raises(ValueError, match="one modality at a time"):
        zero_shot.classify(model, {"image": [], "text": []}, w)
    with pytest.raises(ValueError, match="dims"):
        zero_shot.classify(None, torch.ones(2, 5), w)


def _image_only():
    import anybind

    return anybind.create_model({"image": "image_vit_test"})
