"""4M (Mizrahi et al. 2023): one encoder-decoder over the tokens of every modality."""

from multimae.model.fourm.config import FOURM_SIZES, FourMConfig, fourm_config
from multimae.model.fourm.model import FourM, FourMOutput, Slots, select_slots

__all__ = ["FOURM_SIZES", "FourM", "FourMConfig", "FourMOutput", "Slots", "fourm_config", "select_slots"]
