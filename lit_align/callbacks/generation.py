"""``GenerationLogger``: what the model actually says, next to the curves that summarise it.

A falling DPO loss does not tell you whether the model now answers in the user's language or has started
to repeat itself; a few greedy generations at every validation do. They go to TensorBoard's text tab and to
``generations.jsonl`` in the run directory, so they can be diffed across runs.

Generating must not change the run it observes: `lit_align.callbacks.policy_probe.PolicyProbe` restores every
random state and module mode, runs on rank zero only, and switches itself off under sharded strategies.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn
from typing_extensions import override

from lit_align.callbacks.policy_probe import PolicyProbe, policy_in_eval_mode
from lit_align.models.generation_inputs import eos_token_ids, left_pad


@dataclass
class GenerationPrompt:
    """A conversation to continue and, for preference records, the two answers it was labelled with."""

    messages: list[dict]
    chosen: str | None = None
    rejected: str | None = None
    fields: dict | None = None
    """A prompt record's reward fields (``ground_truth``, ...): the module's reward functions score the answer."""
    source: str = ""


def _assistant_text(messages: list[dict]) -> str:
    return "\n".join(str(m["content"]) for m in messages if m.get("role") == "assistant")


def prompt_of_record(record: dict) -> GenerationPrompt:
    """The conversation to continue: a preference record's ``prompt`` (with its chosen and rejected answers), a
    prompt example's ``prompt`` as the model sees it (with its reward fields), or an SFT record's ``messages`` up to
    and including the last user turn."""
    if "prompt_input_ids" in record:
        source = str(record.get("source", "?"))
        if record.get("row") is not None:  # as the PromptCollator names it, so a reward error names the line
            source = f"{source}:{record['row']}"
        return GenerationPrompt(list(record["prompt"]), fields=dict(record["fields"]), source=source)
    if "prompt" in record:
        chosen, rejected = _assistant_text(record["chosen"]), _assistant_text(record["rejected"])
        return GenerationPrompt(list(record["prompt"]), chosen, rejected)
    messages = record["messages"]
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=len(messages) - 1)
    return GenerationPrompt(list(messages[: last_user + 1]))


def _reward_text(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:g}"


def _cell(text: str | None) -> str:
    return "" if text is None else text.replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def markdown_table(rows: list[dict]) -> str:
    """Rows ``{"prompt", "generation", "chosen"?, "rejected"?, "rewards"?}`` as a Markdown table (TensorBoard renders
    it); each reward gets a column."""
    rewards = list(dict.fromkeys(name for row in rows for name in row.get("rewards", {})))
    rows = [
        {**row, **{f"reward {name}": _reward_text(row.get("rewards", {}).get(name)) for name in rewards}}
        for row in rows
    ]
    columns = ["prompt", "generation"] + [c for c in ("chosen", "rejected") if any(c in row for row in rows)]
    columns += [f"reward {name}" for name in rewards]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


class GenerationLogger(PolicyProbe):
    """Generate answers to a few prompts at the end of every validation and every ``every_n_steps`` optimizer
    steps; write them to TensorBoard (text tab, ``generations``) and ``<log_dir>/generations.jsonl``.

    ``step`` is ``trainer.global_step``, the optimizer steps taken: the weights of checkpoint ``step000030``
    (Lightning's scalars put the validation of that moment at step 29).

    Only one ``GenerationLogger`` runs per trainer: when there are several (a recipe's own and one appended by
    ``callbacks/generation.yaml``), the last in ``trainer.callbacks`` wins and the others stand down.

    Args:
        every_n_steps: Also generate every N optimizer steps; 0 generates only at the end of validation.
        prompts: User messages to answer (each rendered with the tokenizer's chat template). ``None`` takes
            the first ``num_val_prompts`` validation records instead.
        num_val_prompts: How many validation records to use when ``prompts`` is not given.
        max_new_tokens: Longest generation in tokens.
        do_sample: Sample instead of greedy decoding.
        temperature: Sampling temperature (with ``do_sample``).
        top_p: Nucleus sampling threshold (with ``do_sample``).
        show_pair: For preference records, write the chosen and rejected answers beside the generation.
    """

    def __init__(
        self,
        every_n_steps: int = 100,
        prompts: list[str] | None = None,
        num_val_prompts: int = 4,
        max_new_tokens: int = 48,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        show_pair: bool = True,
    ) -> None:
        super().__init__(every_n_steps, after_validation=True)
        self.prompts = list(prompts) if prompts is not None else None
        self.num_val_prompts = num_val_prompts
        self.max_new_tokens = max_new_tokens
        self.do_sample = do_sample
        self.temperature = temperature
        self.top_p = top_p
        self.show_pair = show_pair
        self._items: list[GenerationPrompt] = []

    @override
    def prepare(self, trainer: Trainer, pl_module: LightningModule) -> bool:
        self._items = self._resolve_prompts(trainer)
        return bool(self._items)

    # ---- work ---------------------------------------------------------------------------------------------

    def _resolve_prompts(self, trainer: Trainer) -> list[GenerationPrompt]:
        if self.prompts is not None:
            return [GenerationPrompt([{"role": "user", "content": text}]) for text in self.prompts]
        val_data = getattr(trainer.datamodule, "val_data", None)
        records = getattr(val_data, "records", None)
        if records and "prompt_input_ids" in (val_data.examples or [{}])[0]:
            records = val_data.examples  # prompt data: the messages after the recipe's system prompt and template
        if not records:
            rank_zero_warn("GenerationLogger: no `prompts` and no validation records (datamodule.val_data); skipped")
            return []
        items = [prompt_of_record(record) for record in records[: self.num_val_prompts]]
        if not self.show_pair:
            items = [GenerationPrompt(item.messages) for item in items]
        return items

    @override
    def probe(self, trainer: Trainer, pl_module: LightningModule, step: int) -> None:
        texts = self.generate(pl_module, trainer)
        rewards = self._rewards(pl_module, texts)
        rows = []
        for number, (item, text) in enumerate(zip(self._items, texts, strict=True)):
            row = {"step": step, "prompt": str(item.messages[-1]["content"]), "generation": text}
            if item.chosen is not None:
                row.update(chosen=item.chosen, rejected=item.rejected)
            if rewards is not None:
                row["rewards"] = {name: values[number] for name, values in rewards.items()}
            rows.append(row)
        self._write(trainer, rows)

    def _rewards(self, pl_module: LightningModule, texts: list[str]) -> dict[str, list[float | None]] | None:
        """The module's reward functions (RL modules have them) on the generations of prompts with reward fields."""
        functions = getattr(pl_module, "rewards", None)
        if functions is None or any(item.fields is None for item in self._items):
            return None
        scores = functions.score(
            [item.messages for item in self._items],
            texts,
            [item.fields for item in self._items],
            [item.source for item in self._items],
        )
        values = scores.per_func.tolist()
        return {name: [None if row[c] != row[c] else row[c] for row in values] for c, name in enumerate(scores.names)}

    def generate(self, pl_module: LightningModule, trainer: Trainer | None = None) -> list[str]:
        """Answers of ``pl_module.policy`` to the resolved prompts, in one left-padded batch, without gradients.
        The policy's modules get their train/eval modes back afterwards."""
        tokenizer, policy = pl_module.tokenizer, pl_module.policy
        rows = []
        for item in self._items:
            text = tokenizer.apply_chat_template(item.messages, tokenize=False, add_generation_prompt=True)
            rows.append(tokenizer(text, add_special_tokens=False)["input_ids"])
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        ids, mask = left_pad(rows, pad_id)
        sampling = {"temperature": self.temperature, "top_p": self.top_p} if self.do_sample else {}
        with policy_in_eval_mode(policy, trainer):
            out = policy.generate(
                input_ids=ids.to(pl_module.device),
                attention_mask=mask.to(pl_module.device),
                max_new_tokens=self.max_new_tokens,
                do_sample=self.do_sample,
                pad_token_id=pad_id,
                eos_token_id=eos_token_ids(policy, tokenizer),
                use_cache=True,  # training configs may turn the cache off (gradient checkpointing)
                **sampling,
            )
        return tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)

    def _write(self, trainer: Trainer, rows: list[dict]) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text("generations", markdown_table(rows), rows[0]["step"])
        out = self._log_dir / "generations.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a", encoding="utf-8") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
