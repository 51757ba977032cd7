"""Checkpoints never resume silently into a different run (issue 26, defect 1): the fingerprint
covers the data's (user, item, value) content and the tracked pairs, a resume says so, a
corrupted file is named, and a checkpoint an inference cannot use is refused."""

import numpy as np
import pytest

from bayesmf import ConfigError, DataError, Ratings
from bayesmf.engines import driver as sampler
from bayesmf.models.bpmf import BPMF

KW = dict(rank=2, n_samples=6, n_warmup=4, seed=3, init="random", checkpoint_every=5)


class _Interrupt:
    """A progress bar that raises KeyboardInterrupt after ``at`` sweeps (as Ctrl-C would)."""

    def __init__(self, at: int):
        self.at, self.n = at, 0

    def update(self, n=1):
        self.n += n
        if self.n == self.at:
            raise KeyboardInterrupt

    def close(self):
        pass


def interrupted_fit(monkeypatch, train, ckpt, at=7, track=None):
    """Fit until sweep ``at``, leaving a checkpoint at ``ckpt``."""
    with monkeypatch.context() as m:
        m.setattr(sampler, "progress_bar", lambda *a: _Interrupt(at))
        with pytest.raises(KeyboardInterrupt), pytest.warns(UserWarning, match="progress saved"):
            BPMF(**KW, checkpoint=str(ckpt)).fit(train, track=track)
    assert ckpt.exists()


@pytest.fixture(scope="module")
def halves(small):
    """The small data set split in two halves of equal size (train, a second pair set)."""
    r = small.ratings
    order = np.random.default_rng(0).permutation(r.nnz)
    half = r.nnz // 2
    return r.subset(order[:half]), r.subset(order[half:2 * half])


def test_relabelled_users_do_not_resume(small, tmp_path, monkeypatch):
    train = small.ratings
    ckpt = tmp_path / "chain.npz"
    interrupted_fit(monkeypatch, train, ckpt)
    perm = np.random.default_rng(1).permutation(train.n_users)
    relabelled = Ratings.from_arrays(perm[train.users], train.items, train.values,
                                     n_users=train.n_users, n_items=train.n_items)
    assert relabelled.nnz == train.nnz and relabelled.values.sum() == train.values.sum()
    with pytest.raises(ConfigError, match=r"(?s)chain\.npz.*different run.*data.*delete it"):
        BPMF(**KW, checkpoint=str(ckpt)).fit(relabelled)
    assert ckpt.exists()  # never deleted behind the user's back


@pytest.mark.slow
def test_other_track_pairs_do_not_resume(halves, tmp_path, monkeypatch):
    train, other = halves
    track = train.subset(np.arange(50))
    other_track = train.subset(np.arange(50, 100))
    ckpt = tmp_path / "chain.npz"
    interrupted_fit(monkeypatch, train, ckpt, track=track)
    with pytest.raises(ConfigError, match=r"different run.*track"):
        BPMF(**KW, checkpoint=str(ckpt)).fit(train, track=other_track)
    with pytest.raises(ConfigError, match=r"different run.*track"):
        BPMF(**KW, checkpoint=str(ckpt)).fit(train, track=train.subset(np.arange(70)))
    with pytest.raises(ConfigError, match=r"different run.*track"):
        BPMF(**KW, checkpoint=str(ckpt)).fit(train)


def test_resume_is_announced_and_matches_an_uninterrupted_fit(halves, tmp_path, monkeypatch):
    train, _ = halves
    track = train.subset(np.arange(40))
    reference = BPMF(**KW).fit(train, track=track)
    ckpt = tmp_path / "chain.npz"
    interrupted_fit(monkeypatch, train, ckpt, track=track)
    with pytest.warns(UserWarning, match=r"resuming from .*chain\.npz at sweep 7 of 10") as record:
        resumed = BPMF(**KW, checkpoint=str(ckpt)).fit(train, track=track)
    assert any(type(w.message).__name__ == "ResumeWarning" for w in record)
    np.testing.assert_array_equal(resumed.tracked_mean_, reference.tracked_mean_)
    np.testing.assert_array_equal(resumed.user_samples_, reference.user_samples_)


def test_settings_that_do_not_change_the_chain_still_resume(halves, tmp_path, monkeypatch):
    train, _ = halves
    ckpt = tmp_path / "chain.npz"
    interrupted_fit(monkeypatch, train, ckpt)
    moved = tmp_path / "moved.npz"
    ckpt.rename(moved)
    kw = {**KW, "checkpoint_every": 3, "progress": False, "svi_steps": 7}
    with pytest.warns(UserWarning, match="resuming from"):
        BPMF(**kw, checkpoint=str(moved)).fit(train)
    interrupted_fit(monkeypatch, train, ckpt)
    with pytest.raises(ConfigError, match=r"different run.*settings"):
        BPMF(**{**KW, "alpha": 3.0}, checkpoint=str(ckpt)).fit(train)


@pytest.mark.parametrize("damage", ["empty", "truncated", "random"])
def test_corrupted_checkpoint_is_named(halves, tmp_path, monkeypatch, damage):
    train, _ = halves
    ckpt = tmp_path / "chain.npz"
    if damage == "empty":
        ckpt.write_bytes(b"")
    elif damage == "random":
        ckpt.write_bytes(np.random.default_rng(0).bytes(5000))
    else:
        interrupted_fit(monkeypatch, train, ckpt)
        blob = ckpt.read_bytes()
        ckpt.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match=r"checkpoint .*chain\.npz is corrupted or truncated.*delete it"):
        BPMF(**KW, checkpoint=str(ckpt)).fit(train)


@pytest.mark.parametrize("inference", ["map", "nuts", "svi"])
def test_checkpoint_with_an_inference_that_cannot_use_it(small, tmp_path, inference):
    with pytest.raises(ConfigError, match=r"checkpoint.*inference='gibbs'"):
        BPMF(rank=2, inference=inference, checkpoint=str(tmp_path / "c.npz")).fit(small.ratings)
