"""The command lines' shared helpers: the optional-dependency check and the dataclass parser's conventions."""

import sys
from dataclasses import dataclass, field

import pytest

from transformers_mgaclap.utils.cli import (
    DataclassArgumentParser,
    MissingExtraError,
    require_extra,
    require_extra_or_exit,
)

ABSENT = "transformers_mgaclap_no_such_module"


def test_require_extra_names_what_is_missing_and_the_install_line():
    require_extra("eval", ("numpy", "torch"), "Nothing")  # installed: no error
    with pytest.raises(MissingExtraError) as raised:
        require_extra(("train", "eval"), ("numpy", ABSENT), "The ablations")
    message = str(raised.value)
    assert message.startswith(f"The ablations needs {ABSENT},") and "numpy" not in message
    assert message.endswith('pip install "transformers-mgaclap[train,eval]"')
    assert isinstance(raised.value, ImportError) and raised.value.name == ABSENT


def test_require_extra_does_not_import_the_modules():
    """Checking must cost nothing: the metric packages take seconds to import."""
    module = "this"  # the standard library's Zen of Python: nothing here imports it
    if module in sys.modules:
        pytest.skip(f"{module} was imported by another test")
    require_extra("eval", (module,), "Nothing")
    assert module not in sys.modules


def test_scripts_exit_with_the_message_instead_of_a_traceback():
    with pytest.raises(SystemExit) as exited:
        require_extra_or_exit("demo", (ABSENT,), "examples/space/app.py")
    assert exited.value.code == (
        f"error: examples/space/app.py needs {ABSENT}, which the demo extra provides: "
        'pip install "transformers-mgaclap[demo]"'
    )


@dataclass
class Options:
    batch_size: int = field(default=8, metadata={"help": "Clips per call."})
    dataset_name: str | None = field(
        default=None, metadata={"help": "A dataset. Default: the synthetic one."}
    )
    keep_going: bool = field(default=True, metadata={"help": "Do not stop."})


def test_dataclass_parser_has_one_spelling_and_documents_defaults(capsys):
    parser = DataclassArgumentParser(Options)
    (options,) = parser.parse_args_into_dataclasses(["--batch_size", "4", "--no_keep_going"])
    assert options == Options(batch_size=4, keep_going=False)
    with pytest.raises(SystemExit) as exited:
        parser.parse_args_into_dataclasses(["--batch-size", "4"])
    assert exited.value.code == 2 and "unrecognized arguments: --batch-size 4" in capsys.readouterr().err
    text = " ".join(parser.format_help().split())
    assert "Clips per call. (default: 8)" in text
    assert "A dataset. Default: the synthetic one." in text and "(default: None)" not in text
    assert "--no_keep_going Turn --keep_going off (it is on by default)." in text
