"""docs/sweep-files.md's reference section is generated from the pydantic models and the registries; it
must not drift from them."""
from __future__ import annotations

from harness.config.reference import DOC, generate, generated_block
from harness.config.schema import Resources, SweepFile, TrainSettings


def test_the_reference_in_docs_equals_the_one_generated_from_the_models():
    block = generated_block(DOC.read_text())
    assert block is not None, "docs/sweep-files.md lost its generated section's markers"
    assert block == generate(), "regenerate with: python -m harness.config.reference --write"


def test_the_reference_names_every_key_of_every_model():
    text = generate()
    for model in (SweepFile, TrainSettings, Resources):
        for name in model.model_fields:
            assert f"| `{name}` |" in text
    assert "| `zipf` | `alpha` | float | `1.0` |" in text  # a method's Params row
    assert "| `digits` | `val_fraction` | float | `0.2` |" in text  # a dataset's Params row
