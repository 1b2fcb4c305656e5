"""Parity: SetFit's logistic-regression head here (L-BFGS in torch) vs scikit-learn's LogisticRegression().

    PYTHONPATH=src /tmp/setfit-ref/venv/bin/python -P benchmarks/setfit_head_parity.py

Runs in the `setfit` reference environment (benchmarks/setfit.py says how to make it), which has
scikit-learn; lightning_peft does not depend on it. Same normalised 384-d embeddings (seeded random
clusters, 8 per class), same labels: the class probabilities on 200 other inputs are compared.
"""
import numpy as np, torch
from torch import nn
from sklearn.linear_model import LogisticRegression
from lightning_peft.tasks.setfit import SetFitClassification, HEAD_NAME

for classes, shots in ((2, 8), (5, 8)):
    g = torch.Generator().manual_seed(classes)
    x = torch.nn.functional.normalize(torch.randn(classes * shots, 384, generator=g) + 0.3 * torch.randn(classes, 384, generator=g).repeat_interleave(shots, 0), dim=-1)
    y = torch.arange(classes).repeat_interleave(shots)
    task = SetFitClassification(); task.label_names = [str(i) for i in range(classes)]
    task.embed = lambda model, ids, mask: x
    holder = nn.Module(); holder.add_module(HEAD_NAME, nn.Linear(384, classes))
    task.fit_logistic_regression(holder, {"input_ids": None, "attention_mask": None, "labels": y})
    test = torch.nn.functional.normalize(torch.randn(200, 384, generator=g), dim=-1)
    ours = getattr(holder, HEAD_NAME)(test).softmax(-1).detach().numpy()
    ref = LogisticRegression().fit(x.numpy(), y.numpy()).predict_proba(test.numpy())
    print(f"classes={classes} shots/class={shots}: max |p_ours - p_sklearn| = {np.abs(ours - ref).max():.2e}, "
          f"same argmax on {np.mean(ours.argmax(1) == ref.argmax(1)) * 100:.0f}% of 200 inputs")
