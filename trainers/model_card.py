"""The model card written next to a trained model's weights, from cards/model_card.md."""

from importlib import resources
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData


def write_model_card(folder: Path, lineage: dict) -> None:
    card_data = ModelCardData(
        license="other", library_name="transformers", pipeline_tag="text-generation",
        tags=["self-rewarding", lineage["method"], "trl"], base_model=None,
    )
    template = resources.files("cards").joinpath("model_card.md").read_text(encoding="utf-8")
    ModelCard.from_template(card_data, template_str=template, **lineage).save(folder / "README.md")
