"""What the command lines of the project share (`examples/`, the checkpoint converter, the benchmarks):

- one spelling per option, snake_case (`--batch_size`), in every script;
- every option's default in `--help` ([`HelpFormatter`]);
- a check, before any work, that the optional packages a command needs are installed, failing with the exact
  `pip install "transformers-mgaclap[<extra>]"` line ([`require_extra`]).
"""

import argparse
import importlib.util
from collections.abc import Iterable, Sequence

from transformers import HfArgumentParser

DISTRIBUTION = "transformers-mgaclap"


class MissingExtraError(ImportError):
    """Optional packages are missing; the message names them and the install line of the extra that provides them."""


def install_line(*extras: str) -> str:
    """The pip command that installs `extras`, e.g. `pip install "transformers-mgaclap[eval]"`."""
    return f'pip install "{DISTRIBUTION}[{",".join(extras)}]"'


def require_extra(extras: str | Sequence[str], modules: Iterable[str], purpose: str) -> None:
    """Check that `modules` can be imported (without importing them).

    Args:
        extras (`str` or `Sequence[str]`): the extra(s) of setup.cfg that provide `modules`.
        modules (`Iterable[str]`): top-level import names, e.g. `("evaluate", "psds_eval")`.
        purpose (`str`): what needs them, the subject of the message (e.g. `"The grounding task"`).

    Raises:
        [`MissingExtraError`]: some are missing; the message ends with the install line.
    """
    extras = (extras,) if isinstance(extras, str) else tuple(extras)
    missing = [module for module in modules if importlib.util.find_spec(module) is None]
    if missing:
        raise MissingExtraError(
            f"{purpose} needs {', '.join(missing)}, which the {'/'.join(extras)} extra provides: "
            f"{install_line(*extras)}",
            name=missing[0],
        )


def require_extra_or_exit(extras: str | Sequence[str], modules: Iterable[str], purpose: str) -> None:
    """[`require_extra`] for a script's start-up: a missing package ends the process with the message and exit
    status 1, not with a traceback."""
    try:
        require_extra(extras, modules, purpose)
    except MissingExtraError as error:
        raise SystemExit(f"error: {error}") from None


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """`--help` that shows every option's default: "(default: X)" is appended unless the help text already says
    what the default is, which it must where the default is `None` (a recipe, another option or the data decide it,
    and "None" would say none of that). Descriptions keep their line breaks: the scripts' docstrings hold usage
    examples."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.required or action.default is None or "default" in text.lower():
            return text
        return super()._get_help_string(action)


def is_dash_spelling(option: str) -> bool:
    """Whether `option` is a long option spelt with dashes (`--batch-size`) rather than snake_case."""
    return option.startswith("--") and "-" in option[2:]


class DataclassArgumentParser(HfArgumentParser):
    """transformers' `HfArgumentParser` with the project's conventions.

    `HfArgumentParser` adds a dash alias to every snake_case option (`--batch-size` beside `--batch_size`): it is left
    out, so that a spelling that works in one script works in all of them (the argparse scripts have one spelling).
    The `--no_<flag>` complement it adds to flags that default to true gets a help text of its own instead of a copy
    of the flag's. An unknown option is a usage error (exit status 2), as in the argparse scripts, not a traceback.
    """

    def __init__(self, dataclass_types, **kwargs):
        super().__init__(dataclass_types, formatter_class=HelpFormatter, **kwargs)

    def parse_args_into_dataclasses(self, args: Sequence[str] | None = None, **kwargs) -> tuple:
        """One instance per dataclass; an option none of them knows ends the process with a usage error."""
        *instances, unknown = super().parse_args_into_dataclasses(
            args, return_remaining_strings=True, **kwargs
        )
        if unknown:
            self.error(f"unrecognized arguments: {' '.join(unknown)}")
        return tuple(instances)

    def add_argument(self, *names: str, **kwargs) -> argparse.Action:
        """`ArgumentParser.add_argument` without the dash spellings (HfArgumentParser adds every option here)."""
        names = tuple(name for name in names if not is_dash_spelling(name))
        if kwargs.get("action") == "store_false" and names[0].startswith("--no_"):
            kwargs["help"] = f"Turn {names[0].replace('--no_', '--', 1)} off (it is on by default)."
        return super().add_argument(*names, **kwargs)


__all__ = [
    "DataclassArgumentParser",
    "HelpFormatter",
    "MissingExtraError",
    "install_line",
    "is_dash_spelling",
    "require_extra",
    "require_extra_or_exit",
]
