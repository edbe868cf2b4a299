"""The divergence guard checks the weights, not only the loss: a NaN learning rate gives a finite
first loss and NaN weights, which must never be saved or called intact."""

import math

import pytest

from multimae.engine.checkpoint import list_checkpoints
from multimae.engine.trainer import DivergenceError

from test_engine import make_trainer


def test_nan_weights_after_a_finite_loss_stop_the_run_before_any_checkpoint(tmp_path):
    trainer = make_trainer(tmp_path, steps=3, lr=math.nan)  # the config would refuse it; the guard must too
    with pytest.raises(DivergenceError, match="non-finite weights after step 1") as err:
        trainer.fit()
    assert "no checkpoint was written" in str(err.value) and "intact" not in str(err.value)
    assert list_checkpoints(tmp_path) == [] and not (tmp_path / "model.safetensors").exists()


def test_nan_weights_later_keep_the_last_finite_checkpoint(tmp_path):
    trainer = make_trainer(tmp_path, steps=4)
    trainer.train_step()
    saved = trainer.save()
    before = saved.read_bytes()
    trainer.peak_lr = trainer.optim_cfg.warmup_lr = math.nan
    with pytest.raises(DivergenceError, match=f"non-finite weights after step 2.*{saved.name}, is intact"):
        trainer.fit()
    assert list_checkpoints(tmp_path) == [saved] and saved.read_bytes() == before
