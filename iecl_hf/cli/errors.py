"""How a recipe reports bad input: the library's errors name parameters in backticks (`train_split`), the recipe's
user reads the flag (--train_split); `run_recipe` prints one line and exits with code 2."""

import dataclasses
import functools
import re
import sys

_PARAMETER = re.compile(r"`(\w+)`")


def as_flags(message: str, names) -> str:
    """`name` -> --name for each of `names` in `message`; other backticked words stay as they are."""
    return _PARAMETER.sub(lambda match: f"--{match[1]}" if match[1] in names else match[0], message)


def speaks_flags(*dataclass_types):
    """Decorator of a recipe's `main`: a `ValueError` from the library that names one of the recipe's arguments
    (`output_dir`) is raised again, the same error, naming its flag (--output_dir)."""
    names = {f.name for cls in dataclass_types for f in dataclasses.fields(cls)}

    def decorate(main):
        @functools.wraps(main)
        def main_speaking_flags(*args, **kwargs):
            try:
                return main(*args, **kwargs)
            except ValueError as error:
                error.args = tuple(as_flags(a, names) if isinstance(a, str) else a for a in error.args)
                raise

        return main_speaking_flags

    return decorate


def run_recipe(main, name: str) -> int:
    """Run a recipe's `main()`; bad input (`ValueError`) becomes one line `NAME: error: ...` and exit code 2."""
    try:
        return main()
    except ValueError as error:
        print(f"{name}: error: {error}", file=sys.stderr)
        return 2
