"""`ConjugatePromptEval`: the ICL-versus-instruction suite under original and conjugate prompts, before and after fit.

Kotha et al., ICLR 2024 (see `lightning_peft.evaluation.conjugate`). The base is measured at fit
start (for a peft adapter: the same model with adapters disabled), the fine-tuned model at fit end
(and at each validation when asked). Logged as `conjugate/<transform>/{base,tuned,drop,recovered}`
and written to `<run dir>/conjugate.json`. Under `fast_dev_run` it scores the first two suite
prompts (`probe_contract.SMOKE_PROMPTS`), and says so.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from ..evaluation.conjugate import IclPrompt, Translation, conjugate_report, get_transform, icl_accuracy, icl_suite
from ..evaluation.probes import evaluation_mode
from .probe_contract import SMOKE_PROMPTS, find_causal_lm, find_tokenizer, is_smoke_test, probe_base, probe_input_limit
from .run_summary import run_dir, write_json_atomic


class ConjugatePromptEval(L.Callback):
    """Measure how much fine-tuning shifts a model from in-context learning to instruction following.

    Works with any LightningModule holding a `transformers` causal LM (see `probe_contract`).

    Example::

        trainer = Trainer(callbacks=[ConjugatePromptEval(transforms=["original", "leetspeak", "pig_latin"])])

    Args:
        transforms: Built-in transforms: "original" (always included), "leetspeak", "pig_latin", "rot13",
            "german" (a FreeDict dictionary translation, prompt and label words; docs/forgetting.md);
            default original, leetspeak and pig_latin.
        translations: Extra conjugates by word table, name -> {english word: translated word}.
        num_prompts: Suite size (tasks alternate between repeat and capitalize).
        seed: Seed of the suite.
        max_new_tokens: Greedy decoding length (the paper's 10).
        at_validation: Also measure the current model at each validation, not only at fit end.
        tokenizer: Model name whose tokenizer to use when the module has no `tokenizer` attribute.
        filename: JSON written in the run directory.
    """

    def __init__(
        self,
        transforms: list[str] | None = None,
        translations: dict[str, dict[str, str]] | None = None,
        num_prompts: int = 20,
        seed: int = 0,
        max_new_tokens: int = 10,
        at_validation: bool = False,
        tokenizer: str | None = None,
        filename: str = "conjugate.json",
    ) -> None:
        if num_prompts < 1 or max_new_tokens < 1:
            raise ValueError("ConjugatePromptEval num_prompts and max_new_tokens must be at least 1.")
        names = ["original", *(t for t in (transforms or ["leetspeak", "pig_latin"]) if t != "original")]
        self.transforms = [get_transform(name) for name in names]
        self.transforms += [Translation(name, table) for name, table in (translations or {}).items()]
        self.suite = icl_suite(num_prompts, seed)
        self.max_new_tokens, self.at_validation = max_new_tokens, at_validation
        self.tokenizer_name, self.filename = tokenizer, filename
        self.base: dict[str, float] | None = None
        self.history: list[dict[str, Any]] = []
        self._smoke = False  # scoring the fast_dev_run suite (see probe_contract)

    def _suite(self) -> list[IclPrompt]:
        return self.suite[:SMOKE_PROMPTS] if self._smoke else self.suite

    def _accuracy(self, pl_module: L.LightningModule, base: bool) -> dict[str, float]:
        model = find_causal_lm(pl_module, "ConjugatePromptEval")
        tokenizer = find_tokenizer(pl_module, self.tokenizer_name, "ConjugatePromptEval")
        limit = probe_input_limit(pl_module)
        if not base:
            with evaluation_mode(model):
                return icl_accuracy(model, tokenizer, self._suite(), self.transforms, self.max_new_tokens, limit)
        with probe_base(pl_module, "ConjugatePromptEval") as disabled:
            target = model if disabled is None else disabled  # None: the model at fit start is the base
            with evaluation_mode(target):
                return icl_accuracy(target, tokenizer, self._suite(), self.transforms, self.max_new_tokens, limit)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        smoke = is_smoke_test(trainer)
        if smoke != self._smoke:  # another suite: measure the base on it
            self._smoke, self.base, self.history = smoke, None, []
            if smoke:
                rank_zero_info(f"ConjugatePromptEval: fast_dev_run, so {SMOKE_PROMPTS} prompts per transform are scored "
                               "(a smoke test: the numbers mean nothing).")
        if self.base is None:
            self.base = self._accuracy(pl_module, base=True)
            rank_zero_info(f"ConjugatePromptEval: base in-context accuracy {self.base}")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.at_validation and not trainer.sanity_checking and self.base is not None and trainer.state.fn == "fit":
            self._measure(trainer, pl_module)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._measure(trainer, pl_module)

    def _measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.history and self.history[-1]["step"] == trainer.global_step:
            return
        report = conjugate_report(self.base, self._accuracy(pl_module, base=False))
        self.history.append({"step": trainer.global_step, **report})
        metrics = {f"conjugate/{k}": v for k, v in report.items()}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})
        path = run_dir(trainer) / self.filename  # on every rank: log_dir is a broadcast
        if trainer.is_global_zero:
            write_json_atomic(path, {"history": self.history, "base": self.base})

    def state_dict(self) -> dict[str, Any]:
        return {"base": self.base, "history": self.history, "smoke_test": self._smoke}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base, self.history = state["base"], list(state["history"])
        self._smoke = state.get("smoke_test", False)  # checkpoints from before fast_dev_run scaling: full suite
