"""The `setfit` library's arm of benchmarks/setfit.py; runs in its own virtual environment (setfit 1.2).

    <setfit venv>/bin/python -P benchmarks/setfit_reference.py job.json result.json

(-P: without it this folder, which holds benchmarks/setfit.py, would shadow the `setfit` package.)

job.json (written by benchmarks/setfit.py): the encoder folder, the shots (texts, labels), the test
texts and labels, the seed and the training settings. Trains `SetFitModel` with setfit's defaults
(logistic-regression head) except where job.json sets them (max_length cuts the body's inputs too), and
writes accuracy, macro-F1 and the wall time of `Trainer.train()`. Imports nothing from lightning_peft.
"""

from __future__ import annotations

import json
import sys
import time


def main(job_path: str, result_path: str) -> None:
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments
    from sklearn.metrics import accuracy_score, f1_score

    job = json.loads(open(job_path).read())
    model = SetFitModel.from_pretrained(job["encoder"])
    # setfit 1.2 passes TrainingArguments.max_length to the differentiable head only; the body's contrastive
    # training and `predict` cut inputs at the body's own max_seq_length (256 here). Cut them where our arm does.
    model.model_body.max_seq_length = job["max_length"]
    args = TrainingArguments(batch_size=job["batch_size"], num_epochs=job["num_epochs"],
                             body_learning_rate=job["body_lr"], head_learning_rate=job["head_lr"],
                             sampling_strategy=job["sampling_strategy"], max_length=job["max_length"],
                             seed=job["seed"], report_to="none", show_progress_bar=False, save_strategy="no")
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_dict({"text": job["shots"]["texts"],
                                                                              "label": job["shots"]["labels"]}))
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    predictions = [int(p) for p in model.predict(job["test"]["texts"], batch_size=64)]
    gold = job["test"]["labels"]
    result = {"acc": accuracy_score(gold, predictions), "f1": f1_score(gold, predictions, average="macro"),
              "train_seconds": seconds}
    open(result_path, "w").write(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
