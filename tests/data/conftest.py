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


@pytest.fixture(scope="session")
def datasets_cache(tmp_path_factory):
    """A fresh `datasets` cache for this session, so reading test files leaves nothing in the user's cache."""
    return tmp_path_factory.mktemp("hf-datasets")


@pytest.fixture(autouse=True)
def hermetic_datasets(monkeypatch, datasets_cache):
    """No test reaches the Hub (names that are not files fail as offline), and `datasets` caches under tmp.

    `datasets` reads HF_DATASETS_CACHE at import, so its config attribute is patched as well.
    """
    import datasets.config

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", datasets_cache)
    return datasets_cache
