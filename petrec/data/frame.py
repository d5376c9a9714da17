"""The prompt frame of answer-token scoring: what surrounds each rendered example.

With ``model.scoring: answer`` a decoder reads the prompt and the score is read off its
next-token distribution over the answer words (:mod:`petrec.models.answer`). The prompt goes
through the tokenizer's chat template where it has one (an instruction-tuned model answers as
the assistant), else it ends in ``"\\nAnswer:"``; either way a one-line cue names the answer
words. The frame travels with the tokenizer (:func:`set_frame`), so training, evaluation,
export and serving wrap every prompt the same way without another argument at each call site.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from petrec.data.errors import DataError

__all__ = [
    "ANSWER_WORDS",
    "PromptFrame",
    "answer_token_ids",
    "get_frame",
    "prompt_frame",
    "set_frame",
]

#: The answer words per task, in the head's row order.
ANSWER_WORDS: dict[str, tuple[str, ...]] = {"ctr": ("Yes", "No"), "rating": ("1", "2", "3", "4", "5")}

#: The line appended to every rendered example: what the answer must be.
_CUES = {"ctr": "Answer with Yes or No.", "rating": "Answer with one rating from 1 to 5."}

_SENTINEL = "\x00petrec-prompt\x00"
_FRAME_ATTR = "petrec_prompt_frame"


@dataclass(frozen=True)
class PromptFrame:
    """What surrounds a rendered example, and how the answer words are spelled after it.

    Attributes:
        prefix: Text before the example (the chat template's system and user header).
        suffix: Text after it (the cue, then the template's assistant header or ``"\\nAnswer:"``).
        add_special_tokens: Whether the tokenizer adds its own special tokens (False under a
            chat template, which writes them itself).
        answer_prefix: Prepended to each answer word to spell the next token (``" "`` after
            ``"Answer:"``; nothing after the template's assistant header, which ends a line).
    """

    prefix: str
    suffix: str
    add_special_tokens: bool
    answer_prefix: str

    def wrap(self, text: str) -> str:
        """The full prompt of one rendered example."""
        return self.prefix + text + self.suffix


def prompt_frame(tokenizer: Any, task: str, prompt_format: str = "auto") -> PromptFrame:
    """The frame for ``task`` prompts: the chat template's (``chat``), or plain text (``plain``).

    Args:
        tokenizer: A Hugging Face tokenizer.
        task: ``ctr`` or ``rating``.
        prompt_format: ``auto`` (chat where the tokenizer has a chat template), ``chat`` or ``plain``.

    Raises:
        DataError: ``chat`` for a tokenizer without a chat template, or another task.
    """
    if task not in _CUES:
        raise DataError(f"model.scoring='answer' applies to ctr / rating models, not {task!r}")
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if prompt_format == "chat" and not has_template:
        raise DataError(
            "model.prompt_format='chat': this tokenizer has no chat template; use 'plain' or 'auto'"
        )
    cue = "\n" + _CUES[task]
    if prompt_format == "plain" or not has_template:
        lead, trail = _special_tokens_around(tokenizer)
        if not trail:
            return PromptFrame("", cue + "\nAnswer:", add_special_tokens=True, answer_prefix=" ")
        # A tokenizer that appends a token (BERT's [SEP]) would put it between "Answer:" and the
        # answer word: write the leading special tokens as text instead and add none.
        prefix = tokenizer.decode(lead) + " " if lead else ""
        return PromptFrame(prefix, cue + "\nAnswer:", add_special_tokens=False, answer_prefix=" ")
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": _SENTINEL}], tokenize=False, add_generation_prompt=True
    )
    before, after = rendered.split(_SENTINEL)
    return PromptFrame(before, cue + after, add_special_tokens=False, answer_prefix="")


def _special_tokens_around(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The token ids the tokenizer adds before and after a text with ``add_special_tokens``."""
    bare = tokenizer("x", add_special_tokens=False)["input_ids"]
    full = tokenizer("x", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start:start + len(bare)] == bare:
            return full[:start], full[start + len(bare):]
    return [], []


def set_frame(tokenizer: Any, frame: PromptFrame | None) -> None:
    """Attach ``frame`` to ``tokenizer`` (None detaches): petrec's tokenisation wraps with it."""
    setattr(tokenizer, _FRAME_ATTR, frame)


def get_frame(tokenizer: Any) -> PromptFrame | None:
    """The frame attached by :func:`set_frame`, or None."""
    return getattr(tokenizer, _FRAME_ATTR, None)


def answer_token_ids(tokenizer: Any, frame: PromptFrame, task: str) -> list[int]:
    """Token id of each answer word as the first token after the frame's suffix.

    Raises:
        DataError: A word that is not exactly one token in that position.
    """
    context = tokenizer(frame.suffix, add_special_tokens=False)["input_ids"]
    ids = []
    for word in ANSWER_WORDS[task]:
        full = tokenizer(frame.suffix + frame.answer_prefix + word, add_special_tokens=False)["input_ids"]
        if full[: len(context)] != context or len(full) != len(context) + 1:
            raise DataError(
                f"model.scoring='answer': the answer {frame.answer_prefix + word!r} is not a single "
                f"token after the prompt for this tokenizer ({full[len(context):]}); "
                "use model.scoring='head'"
            )
        ids.append(full[-1])
    if len(set(ids)) != len(ids):
        raise DataError(f"model.scoring='answer': answer words {ANSWER_WORDS[task]} share a token")
    return ids
