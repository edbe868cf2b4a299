"""Pre-tokenisation (4M): a data source's samples, at K crops each, through saved tokenizers into
webdataset shards (`multimae tokenize`); the format and its reader are `multimae.data.token_shards`."""

from multimae.pretokenize.crops import CropConfig, crop_view, plan_crops
from multimae.pretokenize.job import TokenizeConfig, TokenizeReport, run_tokenize

__all__ = ["CropConfig", "TokenizeConfig", "TokenizeReport", "crop_view", "plan_crops", "run_tokenize"]
