"""PET / iPET's ensemble arithmetic (pure torch): merging pattern models' scores, drawing iPET's training sets,
and mean ± std over runs. The stages themselves run from `lightning-peft pet` (`lightning_peft.cli.pet`)."""

from .ensemble import ScoredModel, ipet_training_set, mean_std, weighted_scores

__all__ = ["ScoredModel", "ipet_training_set", "mean_std", "weighted_scores"]
