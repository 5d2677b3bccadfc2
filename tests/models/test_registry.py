"""The shipped models: every one is where the registry says, and carries a model card a user can trust."""

from __future__ import annotations

import pytest

from nucseg.export.bioimageio import model_licence
from nucseg.models.folder import read_model_config
from nucseg.models.registry import DEFAULT_MODEL, REGISTERED_MODELS, resolve_model_path

NETWORK_MODELS = [name for name in REGISTERED_MODELS if name != "classical"]


def test_the_default_model_is_registered():
    assert DEFAULT_MODEL in NETWORK_MODELS


@pytest.mark.parametrize("name", NETWORK_MODELS)
def test_each_shipped_model_has_a_card_with_its_licence_test_scores_and_sizes(name):
    folder = resolve_model_path(name)
    config, _ = read_model_config(folder)
    card = (folder / "MODEL_CARD.md").read_text()
    assert card.startswith(f"# nucseg model {name}\n")
    assert f"Weights licence: {model_licence(config)}" in card
    assert all(section in card for section in ("## Training data and licences", "## Test scores", "## Nucleus sizes"))
    assert "--split-part test" in card  # the command that gives the test scores
