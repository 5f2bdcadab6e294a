"""The recipe protocol (docs/protocol.md), checked: a preset's recipe cannot change silently, and
a recipe trial never reads the test split."""

import json
from pathlib import Path

from deepautodnn.config import PRESETS, get_preset

ROOT = Path(__file__).resolve().parent.parent
PINNED = json.loads((ROOT / "results" / "preset_recipes.json").read_text())["presets"]


def test_every_preset_is_pinned_with_how_it_was_chosen():
    assert set(PINNED) == set(PRESETS)
    for name, entry in PINNED.items():
        assert entry["chosen_by"], name
        for path in entry["test_results"]:
            assert (ROOT / path).exists(), f"{name}: {path} is missing"


def test_no_preset_changed_without_being_chosen_again():
    changed = [name for name in PRESETS if get_preset(name).recipe_sha256() != PINNED[name]["recipe_sha256"]]
    assert not changed, (
        f"preset(s) {changed} changed: compare the new recipe on the validation split "
        "(benchmarks/recipe_trial.py, which records it in results/recipe_trials.json), test the chosen "
        "one once, and pin it in results/preset_recipes.json (docs/protocol.md)"
    )


def test_the_fingerprint_sees_every_setting_but_the_name():
    cfg = get_preset("fast")
    renamed = get_preset("fast")
    renamed.preset = "mine"
    assert renamed.recipe_sha256() == cfg.recipe_sha256()
    changed = get_preset("fast")
    changed.train.finetune_epochs += 1
    assert changed.recipe_sha256() != cfg.recipe_sha256()


def test_recipe_trials_are_validation_only():
    trials = json.loads((ROOT / "results" / "recipe_trials.json").read_text())
    # Classifier trials name their split; the detector's trials (issue 13) describe their data.
    splits = [t.get("split") or t["data"].split()[0] for t in trials]
    assert trials and set(splits) == {"validation"}
    assert not any(key.startswith("test") for t in trials for key in t)
    # The trial script takes only the training split's arrays and never evaluates a model.
    source = (ROOT / "benchmarks" / "recipe_trial.py").read_text()
    assert "load_training_split" in source and "test_images" not in source and "evaluate" not in source
