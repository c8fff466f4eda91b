"""Export a run as a Hugging Face model directory, merging a LoRA adapter into the base weights if asked.

    python scripts/export.py --checkpoint logs/quickstart-dpo/latest/hf --merge
    python scripts/export.py --checkpoint logs/quickstart-dpo/latest/checkpoints/last.ckpt --merge --output DIR

`--checkpoint` is either a run's `hf/` export or a Lightning checkpoint (the run's `config.yaml` beside its
`checkpoints/` folder says which model and adapter to rebuild; the checkpoint is read with
`torch.load(weights_only=True)`). With `--merge`, the LoRA update is folded into the weights and the output is a
plain full model that `AutoModelForCausalLM.from_pretrained` (and vLLM) loads with no PEFT at all. Weights are
written as safetensors, with the tokenizer, into `--output`: by default `merged/` (with `--merge`) or `exported/`
in the run's directory. A directory that already holds files is refused unless `--overwrite` is given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lit_align.models.trained import load_pretrained_dir, load_run_checkpoint  # noqa: E402
from lit_align.outputs import output_directory  # noqa: E402


def export(checkpoint: Path, output: Path, merge: bool) -> None:
    trained = load_run_checkpoint(checkpoint) if checkpoint.is_file() else load_pretrained_dir(checkpoint)
    model, tokenizer = trained.model, trained.tokenizer
    is_peft = hasattr(model, "merge_and_unload")
    if merge and is_peft:
        model = model.merge_and_unload()
    elif merge:
        print("no LoRA adapter in this checkpoint: exporting the full model as it is")
    model.config.use_cache = True  # inference default; training had turned the cache off
    model.save_pretrained(output, safe_serialization=True)
    tokenizer.save_pretrained(output)
    kind = "merged full model" if merge or not is_peft else "LoRA adapter"
    print(f"wrote {kind} to {output}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a run's hf/ directory or a .ckpt file")
    parser.add_argument("--output", type=Path, help="where to write (default: merged/ or exported/ in the run)")
    parser.add_argument("--merge", action="store_true", help="fold the LoRA adapter into the base weights")
    parser.add_argument("--overwrite", action="store_true", help="replace files already in --output")
    args = parser.parse_args(argv)
    if not args.checkpoint.exists():
        raise SystemExit(f"no such checkpoint: {args.checkpoint}")
    run = args.checkpoint.parent.parent if args.checkpoint.is_file() else args.checkpoint.parent  # .ckpt or hf/
    default = run / ("merged" if args.merge else "exported")
    try:
        export(args.checkpoint, output_directory(args.output or default, run, args.overwrite), args.merge)
    except FileNotFoundError as error:  # a checkpoint without its run's config.yaml
        raise SystemExit(str(error)) from None


if __name__ == "__main__":
    sys.exit(main())
