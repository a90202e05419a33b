"""The command line of the recipes: argument dataclasses parsed by `HfArgumentParser`, YAML/JSON config files, flags
generated from `IECLConfig`, and how a recipe reports bad input. Only this package and `recipes/` speak of --flags;
the library's errors name parameters (`train_split`), which `speaks_flags` turns into the recipe's flags."""

from .errors import run_recipe, speaks_flags
from .parser import parse_dataclasses

__all__ = ["parse_dataclasses", "run_recipe", "speaks_flags"]
