"""crayonbox: DALL·E mini re-created — generator, training pipeline, web app and bias lab."""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"

DEFAULT_MODEL_DIR = Path(__file__).parent / "assets" / "default"


def default_model_dir() -> Path:
    """The model folder shipped inside the package (trained by the project's recipe)."""
    from crayonbox.errors import CrayonboxError

    if not (DEFAULT_MODEL_DIR / "pipeline.json").exists():
        raise CrayonboxError(
            "this install has no default model yet: pass --model PATH (a folder made by "
            "`crayonbox convert`, `crayonbox download` or `crayonbox train all`)"
        )
    return DEFAULT_MODEL_DIR


def load_default(dtype: str = "float32"):
    """The shipped default Pipeline."""
    from crayonbox.pipeline import Pipeline

    return Pipeline.from_pretrained(default_model_dir(), dtype=dtype)


def __getattr__(name: str):
    if name == "Pipeline":  # lazy, so `import crayonbox` stays light for the CLI
        from crayonbox.pipeline import Pipeline

        return Pipeline
    raise AttributeError(name)
