"""The embedding loop measures the tower on one thread and on all it may use, and runs the faster; the vectors do
not depend on the choice, and anybind-embed leaves the process's thread count as it found it."""

import numpy as np
import torch
from torch import nn

from anybind.embedding import ThreadChooser, encode_batches


def _drive(chooser, seconds_per_item, batches, items=10):
    used = []
    for _ in range(batches):
        n = chooser.next()
        used.append(n)
        chooser.record(n, seconds_per_item[n] * items, items)
    return used


def test_the_faster_setting_runs_after_the_trials():
    chooser = ThreadChooser(2, trials=2, probe_every=8)
    used = _drive(chooser, {1: 0.001, 2: 0.02}, 40)
    assert used[:5] == [2, 2, 1, 2, 1]  # warm-up, then each setting twice
    assert chooser.best == 1
    later = used[5:]
    assert later.count(1) > 30 and 0 < later.count(2) <= 5  # only the periodic probes run on two threads
    probes = [i for i, n in enumerate(used) if n == 2 and i >= 5]
    assert probes[:2] == [13, 29]  # 8 batches after the trials, then a lost probe doubles the wait


def test_a_stalling_setting_is_probed_ever_less_often():
    chooser = ThreadChooser(2, trials=2, probe_every=8)
    used = _drive(chooser, {1: 0.001, 2: 0.05}, 1000)
    assert used[5:].count(2) <= 10  # waits of 8, 16, ..., 128 batches


def test_a_change_of_load_changes_the_choice():
    chooser = ThreadChooser(2, trials=2, probe_every=4)
    _drive(chooser, {1: 0.01, 2: 0.004}, 12)
    assert chooser.best == 2
    _drive(chooser, {1: 0.01, 2: 0.05}, 40)  # the cores became busy: two threads now lose
    assert chooser.best == 1


def test_work_counts_elements_or_the_tokens_that_are_not_padding():
    from anybind.embedding import batch_work

    assert batch_work(torch.zeros(4, 3, 8, 8)) == 768
    ids = torch.tensor([[5, 9, 0, 0], [5, 7, 8, 9]])
    assert batch_work(ids) == 6
    chooser = ThreadChooser(2, trials=1)
    chooser.record(2, 1.0, 10)  # the warm-up is not counted
    chooser.record(2, 1.0, 10)
    chooser.record(1, 1.0, 40)  # as long, but four times the work: one thread is the faster
    assert chooser.best == 1


def test_one_thread_only_has_nothing_to_choose():
    chooser = ThreadChooser(1)
    assert chooser.candidates == (1,)
    assert set(_drive(chooser, {1: 0.01}, 10)) == {1}


class _Recorder(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 4)
        self.threads = []

    def forward(self, x):
        self.threads.append(torch.get_num_threads())
        return self.lin(x)


def test_encode_batches_runs_each_batch_on_the_chosen_threads():
    before = torch.get_num_threads()
    torch.manual_seed(0)
    tower = _Recorder().eval()
    xs = [torch.randn(5, 8) for _ in range(8)]
    try:
        chooser = ThreadChooser(2, trials=1, probe_every=100)
        out = [z for _, z in encode_batches(tower, ((i, x) for i, x in enumerate(xs)), device=torch.device("cpu"),
                                            threads=chooser)]
        assert tower.threads[:3] == [2, 2, 1]
        assert set(tower.threads[3:]) <= {1, 2}  # which one depends on the timings (the choice: tests above)
        assert all(len(v) for v in chooser.seen.values())
        torch.set_num_threads(before)
        plain = [z for _, z in encode_batches(tower, ((i, x) for i, x in enumerate(xs)), device=torch.device("cpu"))]
    finally:
        torch.set_num_threads(before)
    for a, b in zip(out, plain):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert chooser.batches == len(xs)


def test_embed_to_store_restores_the_thread_count(tmp_path):
    import anybind
    from anybind.retrieval import embed_to_store

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model = anybind.create_model({"text": "text_transformer_test"})
        texts = [f"caption number {i}" for i in range(40)]
        summary = embed_to_store(model, texts, tmp_path / "store", modality="text", batch_size=4, progress=False)
        assert torch.get_num_threads() == 2
        assert len(summary.store) == 40
        ref = model.embed({"text": texts})["text"]
        torch.testing.assert_close(torch.from_numpy(np.asarray(summary.store.vectors())), ref, atol=1e-5, rtol=0)
    finally:
        torch.set_num_threads(before)


def test_texts_are_batched_by_length_within_windows_and_the_store_keeps_input_order(tmp_path):
    import anybind
    from anybind.retrieval import embed_to_store
    from anybind.retrieval.shards import plan_batches

    texts = [("word " * (i * 7 % 13 + 1)).strip() for i in range(50)]
    batches, safe = plan_batches(texts, 0, 50, 4, by_length=True, window=3)
    assert sorted(i for b in batches for i in b) == list(range(50))
    assert safe == {12, 24, 36, 48, 50}
    first_window = [i for b in batches[:3] for i in b]
    assert sorted(first_window) == list(range(12))
    assert [len(texts[i]) for i in first_window] == sorted(len(texts[i]) for i in range(12))
    paths = [f"/x/{i}.png" for i in range(10)]
    in_order, every = plan_batches(paths, 0, 10, 4)
    assert in_order == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]] and every == {4, 8, 10}

    model = anybind.create_model({"text": "text_transformer_test"})
    store = embed_to_store(model, texts, tmp_path / "store", modality="text", batch_size=4, progress=False).store
    assert [r["source"] for r in store.metadata()] == texts
    ref = model.embed({"text": texts}, batch_size=50)["text"]
    torch.testing.assert_close(torch.from_numpy(np.asarray(store.vectors())), ref, atol=1e-5, rtol=0)
