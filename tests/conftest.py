import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = ROOT / "assets" / "tiny-chat"
DEMO_DATA = ROOT / "assets" / "demo"
SHARED_DATA = ROOT.parent / "shared" / "data"

# No hub at test time: anything that tries to reach one fails fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tokenizer():
    from lit_align.tokenizer import load_tokenizer

    return load_tokenizer(str(TINY_MODEL))
