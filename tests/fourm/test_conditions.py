"""Conditions from raw values (`RunGenerator.conditions`): a text is read at its own length, not at the
length its tokenizer pads to, so a model reading shorter sequences than the tokenizer writes accepts
every text that fits it."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from multimae.generation.runs import RunGenerator, load_run
from multimae.model.fourm import FourM


def test_a_short_text_fits_a_model_shorter_than_its_tokenizers_padding(trained_run):
    model, tokenizers = load_run(trained_run)
    padded = tokenizers["caption"].encode(["a red sphere"]).ids.shape[1]
    short = dataclasses.replace(model.config, modality_overrides={**model.config.modality_overrides,
                                                                  "caption": {**model.config.modality_overrides["caption"],
                                                                              "max_length": 12}})
    assert padded > 12
    gen = RunGenerator(FourM(short).eval(), tokenizers)
    record = gen.conditions({"caption": ["a red sphere", "a blue cube and a green cone"]})["caption"]
    real = tokenizers["caption"].encode(["a red sphere", "a blue cube and a green cone"])
    length = int(real.valid.sum(dim=1).max())
    assert record.data.shape == (2, length) and torch.equal(record.data, real.ids[:, :length])
    assert torch.equal(record.valid, real.valid[:, :length])
    with pytest.raises(ValueError, match="condition 'caption': \\d+ ids, the model reads 12"):
        gen.conditions({"caption": ["a red sphere and a blue cube and a green cone and a yellow capsule on grass"]})
