"""Generation from raw data with a 4M model and its tokenizers (a run's, `tokenizers.run_files.run_tokenizers`).

Shapes: B batch, H W pixels, N tokens of a map, L ids of a sequence.

Names: a condition or target is named by the model's modality (``tok_depth``) or by the modality its
tokenizer reads (``depth``: the model's token map whose source it is). A condition's raw value is what
that tokenizer reads ((B, C, H, W) maps in their raw conventions, a list of B texts for a sequence);
a model input read as raw pixels is prepared by its spec. Generated targets come back decoded by their
tokenizers ((B, C, H, W) maps, B texts)::

    model, tokenizers = load_run("runs/4m")          # or any FourM and {modality: tokenizer}
    gen = RunGenerator(model, tokenizers)
    schedules = [TargetSchedule(gen.output("depth"), steps=8), TargetSchedule(gen.output("caption"), "autoregressive")]
    for step in gen.steps({"rgb": picture}, schedules, seed=0):
        print(step.target, step.step, step.num_steps)
    decoded = gen.decode(step.state, schedules)     # {"depth": (B, 1, H, W), "caption": [...]}

In-painting (`editing`): ``inpaint={"rgb": (picture, regenerate)}`` with the full raw map and a pixel
mask (B, H, W) (or a token-grid mask (B, h, w)), True = regenerate; the map is tokenised by its
tokenizer, the marked tokens regenerated, the others kept::

    schedules = [TargetSchedule(gen.output("rgb"), steps=4)]
    *_, last = gen.steps({"semseg": edited}, schedules, inpaint={"rgb": (picture, region)})

A sequence is in-painted from its text with sentinels for the spans to regenerate::

    schedules = [TargetSchedule("caption", "autoregressive")]
    *_, last = gen.steps({"rgb": picture}, schedules, inpaint={"caption": ["a [S_1] cube on the left"]})
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from multimae.generation.editing import inpaint_sequence, inpaint_target, keep_from_pixels, token_grid
from multimae.generation.generate import GenerationStep, generate_steps
from multimae.generation.schedule import TargetSchedule
from multimae.generation.state import State, condition
from multimae.modalities.batch import ModalityBatch
from multimae.modalities.spec import ModalitySpec
from multimae.model.fourm import FourM
from multimae.tokenizers.base import Tokenizer


def load_run(checkpoint: str | Path, tokenizers: Mapping[str, str | Path] | None = None
             ) -> tuple[FourM, dict[str, Tokenizer]]:
    """A 4M run's model (eval mode) and its tokenizers (each checked against the run's files table);
    ``tokenizers`` ``{modality it reads: saved tokenizer folder}`` adds to or replaces them (a converted
    checkpoint keeps none)."""
    from multimae.engine.checkpoint import build_model_from_checkpoint
    from multimae.pretokenize.job import load_tokenizers
    from multimae.tokenizers.run_files import run_tokenizers

    model = build_model_from_checkpoint(checkpoint)
    if not isinstance(model, FourM):
        raise ValueError(f"{checkpoint}: not a 4M run (generation needs a 4M model)")
    given = load_tokenizers({m: str(f) for m, f in (tokenizers or {}).items()})
    return model.eval(), {**run_tokenizers(checkpoint), **given}


def _resolve(name: str, specs: Mapping[str, ModalitySpec], what: str) -> str:
    if name in specs:
        return name
    by_source = [n for n, s in specs.items() if s.kind == "token_map" and s.source_name == name]
    if len(by_source) == 1:
        return by_source[0]
    known = sorted({*specs, *(s.source_name for s in specs.values() if s.kind == "token_map")})
    raise ValueError(f"{name!r} is not {what} of this model (it has {known})")


OPEN_END = re.compile(r"\[S_\d+\]\s*$")  # an in-paint text whose last span runs to its end


def _trimmed(ids: Tensor, valid: Tensor, spec: ModalitySpec, what: str) -> tuple[Tensor, Tensor]:
    """A tokenised batch of texts without the tokenizer's padding past the longest row (not the text);
    ValueError when that is longer than the model reads."""
    used = valid.any(dim=0).nonzero()
    length = int(used.max()) + 1 if len(used) else 0
    if length > spec.max_length:
        raise ValueError(f"{what}: {length} ids, the model reads {spec.max_length}")
    return ids[:, :length], valid[:, :length]


@dataclass
class RunGenerator:
    """A 4M model with the tokenizers of its token maps and sequences, keyed by the modality each reads."""

    model: FourM
    tokenizers: Mapping[str, Tokenizer]

    def input(self, name: str) -> str:
        """The model input a condition ``name`` feeds (ValueError naming the model's inputs)."""
        return _resolve(name, self.model.input_specs, "an input")

    def output(self, name: str) -> str:
        """The model output a target ``name`` is (ValueError naming the model's outputs)."""
        return _resolve(name, self.model.output_specs, "an output")

    def tokenizer(self, spec: ModalitySpec) -> Tokenizer:
        key = spec.source_name if spec.kind == "token_map" else spec.name
        if key not in self.tokenizers:
            raise ValueError(f"{spec.name}: no tokenizer for {key!r} (there are tokenizers for {sorted(self.tokenizers)})")
        return self.tokenizers[key]

    def conditions(self, raw: Mapping[str, Any]) -> State:
        """``{condition name: raw value}`` -> the model's condition records, tokenised."""
        device = self.model.mask_token.device
        out: State = {}
        for name, value in raw.items():
            model_name = self.input(name)
            spec = self.model.input_specs[model_name]
            if spec.kind in ("token_map", "tokens"):
                try:
                    tokens = self.tokenizer(spec).encode(value)
                except (ValueError, TypeError) as err:
                    raise ValueError(f"condition {name!r}: its tokenizer cannot read it ({err})") from None
                ids, valid = tokens.ids.to(device), tokens.valid.to(device)
                if spec.kind == "tokens":
                    ids, valid = _trimmed(ids, valid, spec, f"condition {name!r}")
                out[model_name] = condition(self.model, model_name, ids, valid)
            else:
                from multimae.modalities.prepare import prepare_dense

                out[model_name] = condition(self.model, model_name, prepare_dense(spec, value).to(device))
        return out

    def inpaint(self, raw: Mapping[str, Any]) -> State:
        """``{name: (raw map, regenerate)}`` or ``{name: texts}`` -> ``{model target: in-paint record}``.

        A map is tokenised by its tokenizer; ``regenerate`` (B, H, W) bool at the map's pixels, or
        (B, h, w) at its token grid, True = regenerate (a token is when any of its pixels is). Tokens the
        tokenizer marks invalid (no valid pixel) are regenerated too. A sequence is B texts with each span
        to regenerate written as a sentinel, [S_1], [S_2], ... in order ("a [S_1] cube"); a text that
        ends in a sentinel leaves its end open (the last span runs to the end, [EOS] included)."""
        device = self.model.mask_token.device
        out: State = {}
        for name, value in raw.items():
            target = self.output(name)
            spec = self.model.output_specs[target]
            if spec.kind == "tokens":
                out[target] = self._sequence_inpaint(name, target, value)
                continue
            value, regenerate = value
            try:
                tokens = self.tokenizer(spec).encode(value)
            except (ValueError, TypeError) as err:
                raise ValueError(f"in-paint of {name!r}: its tokenizer cannot read the map ({err})") from None
            out[target] = inpaint_target(self.model, target, tokens.ids.to(device),
                                         self._keep(name, target, value, regenerate).to(device) & tokens.valid.to(device))
        return out

    def _sequence_inpaint(self, name: str, target: str, texts: Any) -> ModalityBatch:
        spec = self.model.output_specs[target]
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"in-paint of {name!r}: a sequence is in-painted from a list of texts with sentinels")
        try:
            tokens = self.tokenizer(spec).encode(list(texts))
        except (ValueError, TypeError) as err:
            raise ValueError(f"in-paint of {name!r}: its tokenizer cannot read the text ({err})") from None
        ids, valid = _trimmed(tokens.ids, tokens.valid.clone(), spec, f"in-paint of {name!r}")
        for b, text in enumerate(texts):  # an open end: the tokenizer's [EOS] belongs to the last span
            if OPEN_END.search(text) and bool(valid[b].any()):
                last = int(valid[b].nonzero().max())
                ids[b, last], valid[b, last] = spec.pad_id, False
        device = self.model.mask_token.device
        return inpaint_sequence(self.model, target, ids.to(device), valid.to(device))

    def _keep(self, name: str, target: str, value: Tensor, regenerate: Tensor) -> Tensor:
        """(B, N) keep mask from a pixel or token-grid ``regenerate`` mask (ValueError naming the sizes)."""
        h, w = token_grid(self.model, target)
        H, W = value.shape[-2:]
        if regenerate.dtype != torch.bool or regenerate.ndim != 3 or regenerate.shape[0] != value.shape[0]:
            raise ValueError(f"in-paint of {name!r}: the mask must be a (B, H, W) bool tensor with B = "
                             f"{value.shape[0]}, got {regenerate.dtype} {tuple(regenerate.shape)}")
        if tuple(regenerate.shape[1:]) == (h, w):
            return ~regenerate.reshape(-1, h * w)
        if tuple(regenerate.shape[1:]) != (H, W):
            raise ValueError(f"in-paint of {name!r}: a {regenerate.shape[1]}x{regenerate.shape[2]} mask; it must be "
                             f"the map's size {H}x{W} (pixels) or its token grid {h}x{w}")
        return keep_from_pixels(regenerate, (h, w))

    def steps(self, raw: Mapping[str, Any], schedules: Sequence[TargetSchedule], seed: int = 0,
              chained: bool = True, inpaint: Mapping[str, Any] | None = None,
              precision: str = "fp32") -> Iterator[GenerationStep]:
        """`generate_steps` from raw conditions (and raw maps to in-paint, `inpaint`), the passes in
        ``precision`` (fp32 | bf16 | fp16)."""
        return generate_steps(self.model, self.conditions(raw), schedules, seed, chained,
                              inpaint=self.inpaint(inpaint or {}), precision=precision)

    def decode_record(self, target: str, record: ModalityBatch) -> Tensor | list[str]:
        """A generated target decoded by its tokenizer: a raw map (B, C, H, W), or B texts."""
        spec = self.model.output_specs[target]
        ids = record.data.reshape(record.data.shape[0], -1).cpu()
        with torch.no_grad():
            return self.tokenizer(spec).decode(ids)

    def decode(self, state: Mapping[str, ModalityBatch], schedules: Sequence[TargetSchedule]
               ) -> dict[str, Tensor | list[str]]:
        """``{modality its tokenizer reads: decoded}`` for every target of ``schedules`` in ``state``."""
        out = {}
        for s in schedules:
            spec = self.model.output_specs[s.target]
            out[spec.source_name if spec.kind == "token_map" else spec.name] = self.decode_record(s.target, state[s.target])
        return out
