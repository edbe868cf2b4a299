"""Any-to-any generation with a 4M model: MaskGIT, ROAR and autoregressive decoding, multimodal
classifier-free guidance, chained and independent generation, in-painting (`docs/generation.md`)."""

from multimae.generation.autoregressive import SequenceStep, autoregressive_step
from multimae.generation.editing import inpaint_sequence, inpaint_target, keep_from_pixels
from multimae.generation.generate import GenerationStep, check_schedules, generate, generate_steps, plan
from multimae.generation.guidance import combine, guidance_states
from multimae.generation.kv_cache import SequenceDecoderCache
from multimae.generation.passes import Context, encode_state, sequence_logits, token_map_logits
from multimae.generation.schedule import TargetSchedule, cosine_token_counts, linear_token_counts
from multimae.generation.state import condition, empty_target, emptied
from multimae.generation.token_maps import TokenMapStep, maskgit_step, roar_step

__all__ = [
    "Context", "GenerationStep", "SequenceDecoderCache", "SequenceStep", "TargetSchedule", "TokenMapStep",
    "autoregressive_step", "check_schedules", "combine", "condition", "cosine_token_counts", "emptied",
    "empty_target", "encode_state", "generate", "generate_steps", "guidance_states", "inpaint_sequence", "inpaint_target",
    "keep_from_pixels", "linear_token_counts",
    "maskgit_step", "plan", "roar_step", "sequence_logits", "token_map_logits",
]
