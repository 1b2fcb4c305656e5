"""PET / iPET's ensemble arithmetic (pure torch): merging pattern models' scores, drawing iPET's training sets,
and mean ± std over runs; PCP's hand-over of the continued pre-training adapter and its paired comparison.
The stages themselves run from `lightning-peft pet` (`lightning_peft.cli.pet`)."""

from .ensemble import ScoredModel, ipet_training_set, mean_std, weighted_scores
from .pcp import load_trained_state, paired_gain, trained_state

__all__ = ["ScoredModel", "ipet_training_set", "load_trained_state", "mean_std", "paired_gain", "trained_state",
           "weighted_scores"]
