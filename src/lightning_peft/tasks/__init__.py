"""Tasks: the training objective and its metrics, independent of the fine-tuning method."""

from .adversarial import SMART, Adversary, FreeLB
from .base import Classifies, Task, TaskConfigError, TaskOutput
from .classification import HeadClassification, VerbalizerClassification, left_align
from .cloze import ClozeClassification
from .distillation import DistillationClassification
from .embedding import MNREmbedding
from .entity_f1 import EntityF1
from .language_modeling import IGNORE_INDEX, CausalLMSFT, Seq2Seq
from .metrics import TokenPerplexity
from .possibility import PossibilityExploration
from .rewards import LabelReward, RegressionReward, RewardFunction
from .robust import RobustPrompt
from .self_training import WithParameters, example_weights, soft_label_losses
from .setfit import SetFitClassification
from .token_classification import TokenClassification
from .weighted_verbalizer import WeightedVerbalizerClassification

__all__ = ["IGNORE_INDEX", "Classifies", "CausalLMSFT", "ClozeClassification", "DistillationClassification", "HeadClassification", "LabelReward", "MNREmbedding", "PossibilityExploration", "RegressionReward",
           "RewardFunction", "RobustPrompt", "Seq2Seq", "SetFitClassification", "Task", "TaskConfigError", "TaskOutput",
           "TokenPerplexity", "VerbalizerClassification", "WeightedVerbalizerClassification", "WithParameters", "example_weights",
           "left_align", "soft_label_losses"]
__all__ += ["Adversary", "FreeLB", "SMART"]
__all__ += ["EntityF1", "TokenClassification"]
