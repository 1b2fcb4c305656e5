"""`ForgettingProbe`: measure during training what the fine-tuned model loses relative to its base.

At fit start the base is measured once (perplexity on held-out general text, its top-k next-token
log-probs there, verbalizer accuracy on unrelated probe tasks). For a peft adapter the base is the
same model with its adapters disabled (`PeftModel.disable_adapter()`, no second copy); for full
fine-tuning / HFT it is the model as fit starts, kept as those compact outputs. Then every N steps
and at each validation the current model is measured and `forgetting/*` deltas are logged.
See `lightning_peft.evaluation.probes` for the measurements and `probe_contract` for what the
LightningModule must hold. Under `fast_dev_run` it measures one text chunk and two examples per
probe task (`probe_contract.SMOKE_*`), and says so.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from ..evaluation.plots import plot_history
from ..evaluation.probes import DEFAULT_PROBE_TASKS, ForgettingProbes, ProbeTask, TextStats, compare
from .probe_contract import (SMOKE_EXAMPLES, SMOKE_TEXT_CHUNKS, find_causal_lm, find_tokenizer, is_smoke_test,
                             probe_base, probe_input_limit)
from .run_summary import run_dir


class ForgettingProbe(L.Callback):
    """Log `forgetting/*` (perplexity ratio, KL from base, accuracy drop per probe task) while training.

    Works with any LightningModule holding a `transformers` causal LM (see `probe_contract`).
    Writes `<run dir>/forgetting.png` after every measurement and logs it to W&B when a
    WandbLogger is attached. Measurements run in eval mode under `torch.no_grad()`, and every
    submodule gets its previous train/eval mode back afterwards.

    Example::

        trainer = Trainer(callbacks=[ForgettingProbe(every_n_steps=50, tokenizer="smollm2-135m")])

    Args:
        every_n_steps: Measure every this many optimizer steps (0: only at validations and at fit end).
        text_dataset: Held-out general text (catalog name or file with a `text` column).
        num_chunks: Number of text chunks measured (each `chunk_tokens` long); a few keeps probing cheap.
        chunk_tokens: Tokens per chunk.
        top_k: Base log-probs kept per position for the KL (the rest is pooled into one bucket).
        probe_tasks: Classification probes scored by verbalizer; default: movie-review sentiment and SMS spam.
        tokenizer: Model name whose tokenizer to use when the module has no `tokenizer` attribute.
        batch_size: Batch size of the probe forward passes.
        plot_filename: PNG written in the run directory.
    """

    def __init__(
        self,
        every_n_steps: int = 50,
        text_dataset: str = "lee_news",
        num_chunks: int = 8,
        chunk_tokens: int = 128,
        top_k: int = 32,
        probe_tasks: list[ProbeTask] | None = None,
        tokenizer: str | None = None,
        batch_size: int = 8,
        plot_filename: str = "forgetting.png",
    ) -> None:
        for name, value in {"num_chunks": num_chunks, "chunk_tokens": chunk_tokens, "top_k": top_k,
                            "batch_size": batch_size}.items():
            if value < 1:
                raise ValueError(f"ForgettingProbe {name} must be at least 1, got {value}.")
        if every_n_steps < 0:
            raise ValueError(f"ForgettingProbe every_n_steps must be >= 0 (0 = only at validation), got {every_n_steps}.")
        self.every_n_steps, self.tokenizer_name, self.plot_filename = every_n_steps, tokenizer, plot_filename
        self.settings = {"text_dataset": text_dataset, "num_chunks": num_chunks, "chunk_tokens": chunk_tokens,
                         "top_k": top_k, "probe_tasks": [repr(t) for t in (probe_tasks or DEFAULT_PROBE_TASKS)]}
        self._tasks = tuple(probe_tasks or DEFAULT_PROBE_TASKS)
        self._batch_size = batch_size
        self._probes: ForgettingProbes | None = None
        self._smoke = False  # the probe sets are the fast_dev_run ones (see probe_contract)
        self.base: dict[str, float] | None = None
        self.base_text: TextStats | None = None
        self.base_source: str | None = None
        self.history: list[dict[str, float]] = []

    @property
    def state_key(self) -> str:
        return self._generate_state_key(every_n_steps=self.every_n_steps, text_dataset=self.settings["text_dataset"])

    def _model(self, pl_module: L.LightningModule) -> torch.nn.Module:
        model = find_causal_lm(pl_module, "ForgettingProbe")
        if self._probes is None:
            s = self.settings
            chunks, tasks = s["num_chunks"], self._tasks
            if self._smoke:
                chunks = min(chunks, SMOKE_TEXT_CHUNKS)
                tasks = tuple(replace(t, num_examples=min(t.num_examples, SMOKE_EXAMPLES)) for t in tasks)
            self._probes = ForgettingProbes(find_tokenizer(pl_module, self.tokenizer_name, "ForgettingProbe"),
                                            s["text_dataset"], chunks, s["chunk_tokens"], s["top_k"],
                                            tasks, self._batch_size, probe_input_limit(pl_module))
        return model

    def measure_base(self, pl_module: L.LightningModule) -> None:
        model = self._model(pl_module)
        with probe_base(pl_module, "ForgettingProbe") as base:
            self.base, self.base_text = self._probes.measure(model if base is None else base)
        self.base_source = "model at fit start" if base is None else "adaptation disabled"

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        smoke = is_smoke_test(trainer)
        if smoke != self._smoke:  # other probe sets: prepare them and measure the base on them
            self._smoke, self._probes, self.base, self.base_text, self.history = smoke, None, None, None, []
            if smoke:
                rank_zero_info(f"ForgettingProbe: fast_dev_run, so {SMOKE_TEXT_CHUNKS} text chunk and {SMOKE_EXAMPLES} "
                               "examples per probe task are measured (a smoke test: the numbers mean nothing).")
        if self.base is None:  # restored from a checkpoint otherwise
            self.measure_base(pl_module)
            rank_zero_info(f"ForgettingProbe: base measured ({self.base_source}): "
                           + ", ".join(f"{k}={v:.4g}" for k, v in self.base.items()))
        if not self.history:
            self._measure(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self._measure(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and self.base is not None and trainer.state.fn == "fit":
            self._measure(trainer, pl_module)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._measure(trainer, pl_module)

    def _measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = trainer.global_step
        if self.history and self.history[-1]["step"] == step:
            return  # already measured at this step (e.g. every_n_steps and validation coincide)
        current, _ = self._probes.measure(self._model(pl_module), base=self.base_text)
        row = {"step": step, **compare(self.base, current), **current}
        self.history.append(row)
        metrics = {f"forgetting/{k}": v for k, v in row.items() if k != "step"}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})
        self._plot(trainer, run_dir(trainer) / self.plot_filename, step)

    @rank_zero_only
    def _plot(self, trainer: L.Trainer, path, step: int) -> None:
        plot_history(self.history, path, title=f"Forgetting probes (base: {self.base_source})")
        from lightning.pytorch.loggers import WandbLogger

        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key="forgetting/curves", images=[str(path)], step=step)

    def state_dict(self) -> dict[str, Any]:
        text = None if self.base_text is None else {
            "perplexity": self.base_text.perplexity, "topk_logprobs": self.base_text.topk_logprobs,
            "topk_indices": self.base_text.topk_indices}
        return {"settings": self.settings, "base": self.base, "base_text": text, "base_source": self.base_source,
                "history": self.history, "smoke_test": self._smoke}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("settings") != self.settings:
            raise ValueError("ForgettingProbe settings differ from the checkpoint's (its base was measured on other "
                             "probe sets); resume with the same text_dataset, num_chunks, chunk_tokens, top_k and probe_tasks.")
        self.base, self.base_source, self.history = state["base"], state["base_source"], list(state["history"])
        self._smoke = state.get("smoke_test", False)  # checkpoints from before fast_dev_run scaling: full sets
        text = state["base_text"]
        self.base_text = None if text is None else TextStats(text["perplexity"], text["topk_logprobs"], text["topk_indices"])
