"""The README's settings table names every setting there is."""

from pathlib import Path

from flows.tracking import PROJECT_ROOT
from models.settings import Settings


def test_every_setting_is_in_the_readme_table() -> None:
    table = Path(PROJECT_ROOT, "README.md").read_text().split("## Settings", 1)[1].split("\n## ", 1)[0]
    missing = [
        f"MLOPS_{name.upper()}" for name in Settings.model_fields if f"`MLOPS_{name.upper()}`" not in table
    ]
    assert missing == []
