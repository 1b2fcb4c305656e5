"""A 4-bit base stays the same across checkpoint saves on a CPU (`quantization.keep_4bit_layout`).

bitsandbytes 0.50.2 repacks `Linear4bit` weights for its AVX512-BF16 kernel at the first CPU forward without
gradients and unpacks them lossily in `state_dict()`, which Lightning calls at every checkpoint save; so validation
followed by a save used to move an NF4 base.
"""

from __future__ import annotations

import pytest
import torch
from bitsandbytes.functional import has_avx512bf16  # the probe bitsandbytes decides the repacking by
from transformers import AutoModelForCausalLM

from lightning_peft import quantization as quant
from lightning_peft import zoo
from tests import helpers


def _validate_then_save(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of an evaluation pass before and after `state_dict()` (what a checkpoint save calls) and another pass."""
    ids = helpers.sample_input_ids()
    with torch.no_grad():
        before = model.eval()(input_ids=ids).logits
        model.state_dict()
        after = model(input_ids=ids).logits
    return before, after


def test_a_fine_tune_modules_nf4_base_is_unchanged_by_saving():
    module = helpers.lora_module()
    module.quantization = "nf4"
    module.configure_model()
    before, after = _validate_then_save(module.model)
    assert torch.equal(before, after)


def test_without_it_bitsandbytes_moves_the_base_on_a_cpu_with_avx512_bf16():
    """The control: what keep_4bit_layout prevents, where bitsandbytes repacks (its own CPU probe)."""
    if not has_avx512bf16():
        pytest.skip("this CPU has no AVX512-BF16: bitsandbytes never repacks here")
    model = AutoModelForCausalLM.from_pretrained(zoo.resolve(helpers.BACKBONE), **quant.load_kwargs("nf4"))
    before, after = _validate_then_save(model)
    assert not torch.equal(before, after)
    kept = quant.keep_4bit_layout(AutoModelForCausalLM.from_pretrained(zoo.resolve(helpers.BACKBONE),
                                                                       **quant.load_kwargs("nf4")))
    assert torch.equal(*_validate_then_save(kept))
