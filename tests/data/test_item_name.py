"""data.item_name: prompts name items by title (default) or by the catalogue's whole text, and the
exported catalogue names them the same way, so a server renders the prompts training saw."""

from __future__ import annotations

import pytest

from petrec.data import DataConfig, DataConfigError, catalogue_names, prepare, tokenize_rows
from petrec.deploy.export import build_catalogue

CFG = {"dataset": "synthetic", "task": "ctr", "protocol": "loo", "history_len": 4, "synthetic_users": 30,
       "synthetic_items": 40}


@pytest.fixture(scope="module")
def both():
    return {name: prepare(DataConfig(**CFG, item_name=name)) for name in ("title", "text")}


def test_text_names_put_the_catalogue_fields_in_the_prompt(both) -> None:
    items = both["text"].items.to_pandas().set_index("item_id")
    row = both["text"].splits["test"][0]
    cand_text = items.loc[row["item_id"], "text"]
    assert "Genres: " in cand_text
    assert both["text"].splits["test"]["text"][0].endswith("| Candidate: " + cand_text)
    assert both["title"].splits["test"]["text"][0].endswith("| Candidate: " + items.loc[row["item_id"], "title"])
    assert "Genres: " not in both["title"].splits["test"]["text"][0]
    # Same examples otherwise: only the prompts change.
    for split in ("train", "test"):
        assert both["text"].splits[split]["label"] == both["title"].splits[split]["label"]
        assert both["text"].splits[split]["item_id"] == both["title"].splits[split]["item_id"]
    assert catalogue_names(both["text"].items)[row["item_id"]] == cand_text
    assert "name" not in both["title"].items.column_names


@pytest.mark.parametrize("item_name", ["title", "text"])
def test_the_exported_catalogue_names_items_as_training_did(both, item_name: str) -> None:
    exported = build_catalogue(DataConfig(**CFG, item_name=item_name), "ctr")
    assert catalogue_names(exported) == catalogue_names(both[item_name].items)
    assert (exported["text"] == exported["item_id"].map(catalogue_names(both[item_name].items))).all()


def test_a_server_renders_the_training_prompt(both, tokenizer) -> None:
    data = both["text"]
    test = data.splits["test"]
    rows = {c: test[c][:5] for c in ("history_item_ids", "history_labels", "history_ratings", "item_id")}
    names = catalogue_names(build_catalogue(DataConfig(**CFG, item_name="text"), "ctr"))
    served = tokenize_rows(rows, tokenizer, max_length=512, names=names, task="ctr", template="compact")
    trained = [tokenizer(t, truncation=False)["input_ids"] for t in test["text"][:5]]
    assert served["input_ids"] == trained


def test_an_unknown_item_name_is_refused() -> None:
    with pytest.raises(DataConfigError, match=r"DataConfig\.item_name='genres' is not accepted; expected one of title, text"):
        DataConfig(item_name="genres")
