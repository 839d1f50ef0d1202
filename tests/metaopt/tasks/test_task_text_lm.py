"""text_lm: windows are next-byte pairs, the convolutional model is causal, and the
recurrent digits reader sees the rows in order."""
import pytest
import torch

from metaopt import tasks
from metaopt.tasks.digits_data import digits_arrays
from metaopt.tasks.stdlib_text import pydoc_corpus
from metaopt.tasks.text_lm import windows

SMALL = dict(width=8, context=8, batch_size=4, corpus_bytes=20_000, eval_windows=8)


def test_windows_are_shifted_by_one_byte():
    x, y = windows(b"abcdefghij", 4, 2)
    assert x.tolist()[0] == list(b"abcd") and y.tolist()[0] == list(b"bcde")
    assert x.tolist()[1] == list(b"cdef") and len(x) == 3


@pytest.mark.parametrize("arch", ["conv", "lstm", "gru"])
def test_models_are_causal(arch):
    task = tasks.get("text_lm", arch=arch, dtype=torch.float64, **SMALL)
    params = task.init(task.generator(0))
    x = task.sample_batch(task.generator(1))[0]
    changed = x.clone()
    changed[:, 5:] = (changed[:, 5:] + 7) % 256
    a, b = task.forward(params, x), task.forward(params, changed)
    torch.testing.assert_close(a[:, :5], b[:, :5], rtol=0, atol=0)
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_pydoc_text_is_prose_and_split():
    train, val = pydoc_corpus(50_000)
    assert len(train) == 45_000 and len(val) == 5_000 and b" the " in train


def test_rnn_digits_reads_rows_in_order():
    task = tasks.get("rnn_digits", width=4)
    xt = torch.as_tensor(digits_arrays()[0], dtype=torch.float32)
    assert torch.equal(task.train_data[0][3, 2], xt[3, 16:24])


def test_bad_text_and_arch():
    with pytest.raises(ValueError, match="text must be one of"):
        tasks.get("text_lm", text="shakespeare")
    with pytest.raises(ValueError, match="arch must be one of"):
        tasks.get("text_lm", arch="transformer")
