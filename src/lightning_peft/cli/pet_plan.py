"""What `lightning-peft pet` runs beyond one fit: the `pet:` section of its recipe (patterns, seeds, stages).

The stages are PET / iPET's (Schick & Schuetze 2021, arXiv:2001.07676) and, with `pcp: true`, PCP's (Shi &
Lipani 2023, "Don't Stop Pretraining? Make Prompt-based Fine-tuning Powerful Learner", NeurIPS).
"""

from __future__ import annotations

from typing import Literal


class PetConfigError(ValueError):
    """A `pet:` setting that cannot work (one sentence: what is wrong and how to fix it)."""


def _integers(name: str, values: list[int], minimum: int | None = None) -> list[int]:
    if not values or any(isinstance(v, bool) or not isinstance(v, int) for v in values):
        raise PetConfigError(f"pet.{name} must be a non-empty list of integers, got {values!r}.")
    if len(set(values)) != len(values):
        raise PetConfigError(f"pet.{name} lists a value twice ({values}); list each once.")
    return list(values)


class PetPlan:
    """PET / iPET (Schick & Schuetze 2021, arXiv:2001.07676): which pattern models to train, and the stages after them.

    Args:
        patterns: PET's patterns, each a template with `{text}` and the answer slot `{mask}` (e.g.
            "{text}\\nTopic: {mask}"; for a causal LM the slot ends the pattern). One model per pattern and seed.
        output_dir: The run folder; every stage writes its output there, and running the command again
            skips the stages (and pattern models) already finished.
        seeds: Training seeds: each pattern is trained once per seed (PET: 3 repetitions).
        shot_seeds: Draws of the labelled examples (the data's `shot_seed`); each is a whole PET run in its
            own folder, and results are reported as mean ± std over them. Default: the data's `shot_seed`.
        generations: 1 for PET; more for iPET (PET's default: 3), each generation's models retrained on
            the labelled set plus pool examples labelled by the previous generation.
        ipet_share: Fraction of the other models of the previous generation that label a model's new set (PET: 0.25).
        ipet_scale: Growth of the training set per generation (PET: 5).
        distill: Distil the ensemble into a sequence classifier (a head on the same backbone, the same method).
        classifier_template: The classifier's input template (no pattern: PET's final model reads the plain text).
        classifier_max_steps: Training steps of the classifier on the soft-labelled pool; null: the trainer's setting.
        temperature: Softmax temperature of the distillation loss (PET: 2).
        zero_shot: Do not train the first generation's pattern models: each scores the task with the backbone
            as it is (its fresh adapter changes nothing), a zero-shot teacher for the ensemble and what follows.
        pcp: Run PCP after the ensemble (Shi & Lipani 2023): each pool text is written into every pattern with
            the ensemble's predicted class's first label word in the answer slot; a fresh adapter continues
            pre-training on those texts with the LM loss; then every pattern model is trained on the shots
            again, starting from that adapter. The PCP table compares them with generation 0's pattern models
            (the same prompt-based fine-tuning without PCP). Needs an unlabelled pool.
        pcp_max_steps: Training steps of PCP's continued pre-training; null: the trainer's max_steps.
        stop_after: Stop after "patterns" (every generation's pattern models), "ensemble" (the soft labels) or
            "pretraining" (PCP's continued pre-training); run the command again without it to continue from there.
    """

    def __init__(
        self,
        patterns: list[str],
        output_dir: str = "runs/pet",
        seeds: list[int] = [0],  # noqa: B006 - jsonargparse documents the default; the list is never mutated
        shot_seeds: list[int] | None = None,
        generations: int = 1,
        ipet_share: float = 0.25,
        ipet_scale: float = 5.0,
        distill: bool = True,
        classifier_template: str = "{text}",
        classifier_max_steps: int | None = None,
        temperature: float = 2.0,
        zero_shot: bool = False,
        pcp: bool = False,
        pcp_max_steps: int | None = None,
        stop_after: Literal["patterns", "ensemble", "pretraining"] | None = None,
    ) -> None:
        if not patterns or not all(isinstance(p, str) for p in patterns):
            raise PetConfigError(f"pet.patterns must list at least one pattern (text with {{text}} and {{mask}}), got {patterns!r}.")
        if isinstance(generations, bool) or not isinstance(generations, int) or generations < 1:
            raise PetConfigError(f"pet.generations must be 1 (PET) or more (iPET: 3), got {generations!r}.")
        if not 0 < ipet_share <= 1:
            raise PetConfigError(f"pet.ipet_share must be in (0, 1] (PET: 0.25), got {ipet_share!r}.")
        if ipet_scale <= 1:
            raise PetConfigError(f"pet.ipet_scale must be above 1 (the set grows by it per generation; PET: 5), got {ipet_scale!r}.")
        if classifier_max_steps is not None and (not isinstance(classifier_max_steps, int) or classifier_max_steps < 1):
            raise PetConfigError(f"pet.classifier_max_steps must be a positive integer or null, got {classifier_max_steps!r}.")
        if temperature <= 0:
            raise PetConfigError(f"pet.temperature must be positive (PET: 2), got {temperature!r}.")
        if pcp_max_steps is not None and (isinstance(pcp_max_steps, bool) or not isinstance(pcp_max_steps, int)
                                          or pcp_max_steps < 1):
            raise PetConfigError(f"pet.pcp_max_steps must be a positive integer or null, got {pcp_max_steps!r}.")
        if stop_after == "pretraining" and not pcp:
            raise PetConfigError("pet.stop_after: pretraining stops after PCP's continued pre-training, but pet.pcp is "
                                 "false; set pcp: true or choose another stop_after.")
        self.patterns, self.output_dir = list(patterns), output_dir
        self.seeds = _integers("seeds", seeds)
        self.shot_seeds = None if shot_seeds is None else _integers("shot_seeds", shot_seeds)
        if generations > 1 and len(self.patterns) * len(self.seeds) < 2:
            raise PetConfigError("iPET (pet.generations > 1) labels each model's data with the other models, but there is "
                                 "only one pattern model; list more pet.patterns or pet.seeds, or set generations: 1.")
        self.generations, self.ipet_share, self.ipet_scale = generations, float(ipet_share), float(ipet_scale)
        self.distill, self.classifier_template = distill, classifier_template
        self.classifier_max_steps, self.temperature, self.stop_after = classifier_max_steps, float(temperature), stop_after
        self.zero_shot, self.pcp, self.pcp_max_steps = zero_shot, pcp, pcp_max_steps
