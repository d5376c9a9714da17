"""Tokenisation: oldest-first truncation that never cuts the candidate, and the datasets cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from petrec.data import (
    DataConfig,
    DataError,
    load_prepared,
    prepare,
    render_one,
    tokenize_examples,
    tokenize_items,
)
from petrec.data import tokenize as tok_mod


@pytest.fixture(scope="module")
def synth():
    return prepare(DataConfig(task="ctr", protocol="loo", history_len=10))


def test_truncation_drops_oldest_history_first_and_keeps_candidate(synth, tokenizer) -> None:
    ds = synth.splits["test"]
    max_length = 40
    out = tokenize_examples(ds, tokenizer, max_length=max_length, items=synth.items)
    names = dict(zip(synth.items["item_id"], synth.items["title"], strict=True))
    kept = out["n_history_kept"]
    assert min(kept) < 10 and max(kept) > 0  # the budget actually forced truncation
    for r in out.select(range(60)).to_list():
        k = r["n_history_kept"]
        assert len(r["input_ids"]) <= max_length and r["attention_mask"] == [1] * len(r["input_ids"])
        hist = r["history_item_ids"]

        def text(n: int, r=r, hist=hist) -> str:
            return render_one("ctr", "compact", [names[h] for h in hist[len(hist) - n :]],
                              r["history_labels"][len(hist) - n :], r["history_ratings"][len(hist) - n :],
                              names[r["item_id"]])

        assert r["input_ids"] == tokenizer(text(k))["input_ids"]  # the NEWEST k items were kept
        if k < len(hist):  # maximal: one more (older) item would not fit
            assert len(tokenizer(text(k + 1))["input_ids"]) > max_length
        decoded = tokenizer.decode(r["input_ids"], skip_special_tokens=True)
        assert decoded.endswith(tokenizer.decode(tokenizer(names[r["item_id"]])["input_ids"],
                                                 skip_special_tokens=True))


def test_no_truncation_when_it_fits_and_text_column_is_used(synth, tokenizer) -> None:
    ds = synth.splits["test"].select(range(20))
    a = tokenize_examples(ds, tokenizer, max_length=512, items=synth.items)
    b = tokenize_examples(ds, tokenizer, max_length=512)  # no items: tokenises the stored text
    assert a["n_history_kept"] == [len(h) for h in ds["history_item_ids"]]
    assert a["input_ids"] == b["input_ids"] == tokenizer(list(ds["text"]))["input_ids"]
    with pytest.raises(DataError, match="exceed max_length=20 tokens; pass items="):
        tokenize_examples(ds, tokenizer, max_length=20)


def test_candidate_that_cannot_fit_is_an_error(synth, tokenizer) -> None:
    with pytest.raises(DataError, match=r"needs \d+ tokens without any history, more than max_length=8"):
        tokenize_examples(synth.splits["test"].select(range(5)), tokenizer, max_length=8, items=synth.items)


@pytest.mark.data
def test_p1_tallrec_prompt_truncation(p1, tokenizer) -> None:
    out = tokenize_examples(p1.splits["test"], tokenizer, max_length=128, items=p1.items, template="tallrec",
                            noun=p1.summary["render"]["noun"])
    assert max(len(x) for x in out["input_ids"]) <= 128
    assert 0 < min(out["n_history_kept"]) < 10
    first = tokenizer.decode(out[0]["input_ids"], skip_special_tokens=True)
    assert first.endswith('whether the user will like the target movie " perez family, the ( 1995 ) "?')


def test_second_run_uses_the_datasets_cache(tokenizer, tmp_path: Path) -> None:
    prepare(DataConfig(task="ctr", protocol="loo", synthetic_users=40)).save(tmp_path / "prep")
    data = load_prepared(tmp_path / "prep")
    before = tok_mod.BATCH_CALLS["examples"]
    first = data.tokenize(tokenizer, max_length=48)
    after_first = tok_mod.BATCH_CALLS["examples"]
    assert after_first > before  # it tokenised
    second = load_prepared(tmp_path / "prep").tokenize(tokenizer, max_length=48)
    assert tok_mod.BATCH_CALLS["examples"] == after_first  # ... and the second run did not
    for n in ("train", "valid", "test"):
        assert first[n].cache_files == second[n].cache_files
        assert first[n]["input_ids"] == second[n]["input_ids"]
    data.tokenize(tokenizer, max_length=64)  # different settings → tokenised again
    assert tok_mod.BATCH_CALLS["examples"] > after_first


def test_tokenize_items(synth, tokenizer) -> None:
    out = tokenize_items(synth.items, tokenizer, max_length=12)
    assert out["item_id"] == synth.items["item_id"]
    assert all(len(x) <= 12 for x in out["input_ids"])
    assert out[0]["input_ids"] == tokenizer(synth.items[0]["text"], truncation=True, max_length=12)["input_ids"]
    assert out.num_rows == 300
