"""Domain experts with enforced routing: one copy of each layer's FFN per domain, chosen by the example's domain.

Hallee, Kapur, Patel, Gleghorn 2024, "Contrastive Learning and Mixture of Experts Enables Precise
Vector Embeddings", arXiv:2401.15713. The feed-forward block of every encoder layer becomes N experts,
each a copy of the pre-trained FFN (so the model starts exactly as the base), and the router is not
learned: an example of domain k goes through expert k of every layer (enforced routing). Trained with
the multiple-negatives-ranking loss (`tasks/embedding.py`), each expert specialises in its domain.

Our choices: only the experts (and a task's head, if any) train, the rest of the base stays frozen
(the paper fine-tunes the whole model); the pre-trained FFN is kept, frozen, beside the experts so the
adaptation can be switched off in place (`disabled`); the domain labels reach the forward pass through
`route(model, domains)`, a context the LightningModule opens per batch; with a single domain no label
is needed (every example goes through the one expert: the single-expert baseline).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar, Iterator, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel

from ..atomic import write_file_atomically
from .base import Adapted, Capabilities, MethodBase, MethodConfigError, freeze
from .spec_file import read_spec_file
from .selective import _train_heads

# model_type -> patterns over full module names: the modules that make up each layer's FFN (hidden -> hidden
# for Llama and GPT-2; BERT splits it into the up-projection with its activation and the down-projection,
# whose output LayerNorm and residual stay shared).
FFN_MODULES: dict[str, tuple[str, ...]] = {
    "bert": (r"(^|\.)layer\.\d+\.intermediate$", r"(^|\.)layer\.\d+\.output\.dense$"),
    "roberta": (r"(^|\.)layer\.\d+\.intermediate$", r"(^|\.)layer\.\d+\.output\.dense$"),
    "llama": (r"(^|\.)layers\.\d+\.mlp$",),
    "gpt2": (r"(^|\.)h\.\d+\.mlp$",),
    "t5": (r"(^|\.)block\.\d+\.layer\.\d+\.DenseReluDense$",),  # encoder and decoder FFNs
}
CONFIG_NAME = "domain_experts.json"
WEIGHTS_NAME = "experts.safetensors"
FORMAT = "lightning-peft-domain-experts"
GROUP_PREFIX = "expert_"  # parameter group of domain d: "expert_<d>" (learning rates, logs, checkpoints)


class RoutedFFN(nn.Module):
    """The pre-trained FFN (`base`, frozen) and one trainable copy per domain (`experts[<domain>]`).

    `assignment` (set by `DomainExperts.route`) holds the expert index of every row of the batch;
    each row runs through its expert only, so no other expert sees it or receives its gradient.
    """

    def __init__(self, base: nn.Module, domains: Sequence[str]) -> None:
        super().__init__()
        self.base = base
        self.experts = nn.ModuleDict({domain: copy.deepcopy(base) for domain in domains})
        self.assignment: torch.Tensor | None = None
        self.active = True

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return self.base(hidden)
        experts = list(self.experts.values())
        if self.assignment is None:
            if len(experts) > 1:
                raise MethodConfigError(
                    f"DomainExperts has {len(experts)} domain experts but this forward pass got no domain labels; run "
                    "the model inside `method.route(model, domains)` (the data must give each example its domain).")
            return experts[0](hidden)
        if self.assignment.shape[0] != hidden.shape[0]:
            raise MethodConfigError(f"route() was given {self.assignment.shape[0]} domain labels for a batch of "
                                    f"{hidden.shape[0]} examples; give one label per example.")
        output = None
        for index, expert in enumerate(experts):
            rows = (self.assignment == index).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            routed = expert(hidden.index_select(0, rows))
            output = routed.new_zeros(hidden.shape[0], *routed.shape[1:]) if output is None else output
            output = output.index_copy(0, rows, routed)  # out of place: autograd sends each row's gradient to its expert
        return output


def routed_modules(model: nn.Module) -> list[RoutedFFN]:
    return [module for module in model.modules() if isinstance(module, RoutedFFN)]


def ffn_modules(model: nn.Module) -> list[str]:
    """Names of the FFN modules of every layer, from `FFN_MODULES`; another architecture is refused in one sentence."""
    if not isinstance(model, PreTrainedModel):
        raise MethodConfigError(f"DomainExperts adapts transformers models (PreTrainedModel), not {type(model).__name__}; "
                                "load the model with from_pretrained.")
    kind = model.config.model_type
    if kind not in FFN_MODULES:
        raise MethodConfigError(f"DomainExperts does not know where the FFN of a {kind!r} model is; supported: "
                                f"{', '.join(sorted(FFN_MODULES))} (add a row to FFN_MODULES in "
                                "lightning_peft/methods/domain_experts.py).")
    patterns = [re.compile(pattern) for pattern in FFN_MODULES[kind]]
    found = [name for name, _ in model.named_modules() if any(p.search(name) for p in patterns)]
    if not found:
        raise MethodConfigError(f"No FFN module of this {kind!r} model matches FFN_MODULES; its module names differ "
                                "from the table's, so update the table.")
    return found


def ffn_signature(model: nn.Module) -> str:
    """A hash of the pre-trained FFN weights the experts were copied from (shapes, sums, sums of squares)."""
    digest = hashlib.sha256()
    for routed in routed_modules(model):
        for tensor in routed.base.parameters():
            values = tensor.detach().double()
            digest.update(f"{tuple(tensor.shape)}:{values.sum().item():.5e}:{values.square().sum().item():.5e};".encode())
    return digest.hexdigest()[:16]


@dataclass
class ExpertsSpec:
    """What an export holds: the domains (expert order), and the base the experts were copied from."""

    domains: list[str]
    base_model_type: str
    hidden_size: int
    base_signature: str
    modules_to_save: list[str]
    base_model_name_or_path: str | None = None
    format: str = FORMAT


class DomainExperts(MethodBase):
    """Replace each layer's FFN with one expert per domain (copies of the pre-trained FFN), routed by domain label.

    Example::

        method = DomainExperts(domains=["business", "sport"])
        adapted = method.apply(encoder)           # groups: {"expert_business": {...}, "expert_sport": {...}}
        with method.route(adapted.model, ["sport", "business"]):
            hidden = adapted.model(input_ids=ids, attention_mask=mask).last_hidden_state

    Args:
        domains: The domain names, one expert each, in expert order (e.g. bbc_news' five topics). A single
            domain (the default, "all") needs no labels: every example goes through its expert.
        modules_to_save: Modules trained in full besides the experts (a task adds its new head itself).
    """

    capabilities: ClassVar[Capabilities] = Capabilities(export=True, merge=False, disable=True)

    def __init__(self, domains: list[str] | None = None, modules_to_save: list[str] | None = None) -> None:
        domains = ["all"] if domains is None else [str(domain) for domain in domains]
        if not domains:
            raise MethodConfigError("DomainExperts needs at least one domain (one expert each); list them in domains.")
        if len(set(domains)) != len(domains) or any(not d or "." in d for d in domains):
            raise MethodConfigError(f"domains={domains} must be distinct, non-empty names without dots (they name modules).")
        self.domains = domains
        self.modules_to_save = list(modules_to_save or [])
        self._spec: ExpertsSpec | None = None  # what `export` records, set by `apply`
        self._exported: set[str] = set()  # the parameters `export` writes: experts and heads

    def apply(self, model: nn.Module, modules_to_save: list[str] | None = None) -> Adapted:
        """Freeze `model`, wrap every FFN in a `RoutedFFN` with one copy per domain; groups "expert_<domain>", "head"."""
        names = ffn_modules(model)
        freeze(model)
        for name in names:
            parent, _, child = name.rpartition(".")
            holder = model.get_submodule(parent) if parent else model
            routed = RoutedFFN(holder.get_submodule(child), self.domains)
            routed.experts.requires_grad_(True)
            holder.add_module(child, routed)
        heads = sorted(set(self.modules_to_save) | set(modules_to_save or []))
        adapted = _train_heads(model, heads, self._group_of)
        self._spec = ExpertsSpec(list(self.domains), model.config.model_type, model.config.hidden_size,
                                 ffn_signature(model), heads, model.name_or_path)
        self._exported = adapted.trainable_names()
        return adapted

    @staticmethod
    def _group_of(name: str) -> str:
        return GROUP_PREFIX + name.split(".experts.", 1)[1].split(".", 1)[0]

    def expert_indices(self, domains: Sequence[str]) -> torch.Tensor:
        """Expert index of each domain name; a name without an expert is refused in one sentence."""
        unknown = sorted(set(domains) - set(self.domains))
        if unknown:
            raise MethodConfigError(f"Domain(s) {unknown} have no expert; this model has experts for {self.domains} "
                                    "(train with those domains, or route the examples to one of them).")
        return torch.tensor([self.domains.index(domain) for domain in domains], dtype=torch.long)

    @contextlib.contextmanager
    def route(self, model: nn.Module, domains: Sequence[str] | torch.Tensor) -> Iterator[nn.Module]:
        """Send example i of every forward pass in the block through the expert of `domains[i]` (names, or expert indices)."""
        if isinstance(domains, torch.Tensor):
            if domains.numel() and (int(domains.min()) < 0 or int(domains.max()) >= len(self.domains)):
                raise MethodConfigError(f"Expert indices {domains.tolist()} are outside 0..{len(self.domains) - 1} "
                                        f"(experts {self.domains}); pass domain names or valid indices.")
            assignment = domains.long()
        else:
            assignment = self.expert_indices(list(domains))
        modules = routed_modules(model)
        for module in modules:
            module.assignment = assignment.to(next(module.experts.parameters()).device)
        try:
            yield model
        finally:
            for module in modules:
                module.assignment = None

    @contextlib.contextmanager
    def disabled(self, model: nn.Module) -> Iterator[nn.Module]:
        """The pre-trained FFNs instead of the experts, for the block (the base's outputs)."""
        modules = routed_modules(model)
        for module in modules:
            module.active = False
        try:
            yield model
        finally:
            for module in modules:
                module.active = True

    def export(self, model: nn.Module, folder: Path) -> None:
        """The experts (and heads) as safetensors, and `ExpertsSpec` as JSON."""
        if self._spec is None:
            raise MethodConfigError("DomainExperts.export needs the model this method's apply() returned; apply it first.")
        spec = self._spec
        state = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if n in self._exported}
        folder = Path(folder)
        write_file_atomically(folder / WEIGHTS_NAME, lambda p: save_file(state, str(p), metadata={"format": "pt"}))
        write_file_atomically(folder / CONFIG_NAME, lambda p: p.write_text(json.dumps(asdict(spec), indent=2) + "\n"))

    def load(self, base: nn.Module, folder: str | Path) -> nn.Module:
        """The experts exported in `folder` on `base`, in eval mode (domains and heads are read from the folder)."""
        folder = Path(folder)
        spec = read_spec(folder)
        adapted = DomainExperts(spec.domains, spec.modules_to_save).apply(base)
        if (spec.base_model_type, spec.hidden_size, spec.base_signature) != (
                base.config.model_type, base.config.hidden_size, ffn_signature(base)):
            raise MethodConfigError(f"The experts in {folder} were copied from another base ({spec.base_model_name_or_path!r}, "
                                    f"{spec.base_model_type}, FFN signature {spec.base_signature}); load them onto that base.")
        saved, expected = load_file(str(folder / WEIGHTS_NAME)), adapted.trainable_names()
        parameters = dict(base.named_parameters())
        if set(saved) != expected or any(saved[n].shape != parameters[n].shape for n in expected):
            raise MethodConfigError(f"The experts in {folder} do not match the experts this base gets (other names or "
                                    "shapes); export them again from a run on this base.")
        with torch.no_grad():
            for name in expected:
                parameters[name].copy_(saved[name])
        self.domains, self._spec, self._exported = list(spec.domains), spec, expected
        return base.eval()


def read_spec(folder: Path) -> ExpertsSpec:
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise MethodConfigError(f"{folder} holds no {CONFIG_NAME}; point at a folder exported from a DomainExperts run.")
    return read_spec_file(path, ExpertsSpec, FORMAT, MethodConfigError, "domain-experts", "the experts")
