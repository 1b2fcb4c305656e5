from __future__ import annotations

import pytest

from lightning_peft import zoo


@pytest.fixture(scope="session")
def tokenizer():
    """The SmolLM2 tokenizer (through the tiny-llama zoo entry), built once in the user cache."""
    return zoo.load_tokenizer("tiny-llama")


@pytest.fixture
def data_cache(tmp_path, monkeypatch, tokenizer):
    """Point the tokenized-data cache at a fresh folder (after the tokenizer was loaded from the real one)."""
    monkeypatch.setenv("LIGHTNING_PEFT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "data"
