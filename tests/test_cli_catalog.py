"""CLI catalog commands (typer CliRunner) and the import weight of ``stfcat.cli``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import bibtexparser
import pytest
from typer.testing import CliRunner

from stfcat.cli.main import app

OK = Path(__file__).parent / "fixtures" / "catalog_ok"


def run(*args: str, env: dict | None = None):
    return CliRunner(env=env).invoke(app, [*args])


def test_cli_import_is_light():
    """`stfcat --help` must be instant: nothing heavy is imported by the CLI modules."""
    heavy = ["torch", "rasterio", "matplotlib", "bibtexparser", "pooch"]
    code = f"import sys, stfcat.cli.main; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]", out.stdout
    assert "stfcat.cli.catalog_cmds" in out.stderr  # importtime did see the CLI modules load


def test_catalog_env_var_selects_the_catalog():
    r = run("list", "papers", "--json", env={"STFCAT_CATALOG": str(OK)})
    assert r.exit_code == 0, r.output
    assert [p["id"] for p in json.loads(r.stdout)] == ["alpha-net", "beta-gan"]


def test_list_papers_filters():
    def ids(*opts):
        r = run("list", "papers", "--json", "--catalog", str(OK), *opts)
        assert r.exit_code == 0, r.output
        return [p["id"] for p in json.loads(r.stdout)]

    assert ids("--category", "gan") == ["beta-gan"]
    assert ids("--year", "2020") == ["alpha-net"]
    assert ids("--task", "reflectance") == ["alpha-net", "beta-gan"]
    assert ids("--has-code") == []
    assert ids("--implemented") == ["alpha-net"]
    r = run("list", "papers", "--catalog", str(OK), "--category", "cn")
    assert r.exit_code == 1 and "Did you mean 'cnn'" in r.stderr


def test_list_table_and_datasets():
    r = run("list", "papers", "--catalog", str(OK))
    assert r.exit_code == 0 and "AlphaNet" in r.stdout and "2 papers" in r.stdout
    r = run("list", "datasets", "--json", "--catalog", str(OK))
    assert r.exit_code == 0 and json.loads(r.stdout)[0]["abbreviation"] == "TOY"
    r = run("list", "datasets", "--year", "2020", "--catalog", str(OK))
    assert r.exit_code == 1


def test_list_models_reads_the_registry():
    r = run("list", "models", "--json")
    assert r.exit_code == 0, r.output
    rows = {m["id"]: m for m in json.loads(r.stdout)}
    assert {"copy-f1", "upsample-c2", "delta"} <= set(rows)
    assert set(rows["copy-f1"]) >= {"id", "family", "paper", "n_refs", "trainable", "params"}
    assert rows["copy-f1"]["trainable"] is False


def test_show_paper_and_dataset():
    r = run("show", "alpha-net", "--catalog", str(OK))
    assert r.exit_code == 0, r.output
    assert "stfcat run copy-f1" in r.stdout and "@article{Lovelace2020AlphaNet," in r.stdout
    r = run("show", "beta-gan", "--catalog", str(OK))
    assert "not implemented in stfcat: toy entry" in r.stdout and "@inproceedings{Muller2021BetaGAN" in r.stdout
    r = run("show", "toy", "--catalog", str(OK))
    assert "catalog-only, see https://example.org/toy" in r.stdout and "Lovelace2020AlphaNet" in r.stdout
    r = run("show", "toy", "--json", "--catalog", str(OK))
    data = json.loads(r.stdout)
    assert data["kind"] == "dataset" and data["how_to"] == ["catalog-only, see https://example.org/toy"]


def test_show_unknown_id_suggests():
    r = run("show", "alpha", "--catalog", str(OK))
    assert r.exit_code == 1 and "Did you mean: alpha-net" in r.stderr


def test_invalid_catalog_makes_commands_fail_with_lines():
    broken = OK.parent / "catalog_broken" / "bad_doi"
    r = run("list", "papers", "--catalog", str(broken))
    assert r.exit_code == 1 and "alpha-net.yaml:12: doi:" in r.stderr


def test_search_ranks_short_name_first():
    r = run("search", "gan", "--json", "--catalog", str(OK))
    hits = json.loads(r.stdout)
    assert hits[0]["id"] == "beta-gan"
    r = run("search", "nothing-like-this", "--catalog", str(OK))
    assert r.exit_code == 1 and "no match" in r.stderr


def test_cite_ids_all_and_output(tmp_path):
    r = run("cite", "toy", "beta-gan", "--catalog", str(OK))
    assert r.exit_code == 0, r.output
    keys = [e.key for e in bibtexparser.parse_string(r.stdout).entries]
    assert keys == ["Lovelace2020AlphaNet", "Muller2021BetaGAN"]
    out = tmp_path / "refs.bib"
    out.write_text("old")
    r = run("cite", "--all", "-o", str(out), "--catalog", str(OK))
    assert r.exit_code == 0, r.output
    assert len(bibtexparser.parse_string(out.read_text()).entries) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["refs.bib"]  # no temp file left behind
    assert run("cite", "--catalog", str(OK)).exit_code == 2
    r = run("cite", "nope", "--catalog", str(OK))
    assert r.exit_code == 1 and "unknown paper or dataset 'nope'" in r.stderr


def test_add_writes_skeleton_and_refuses_overwrite(tmp_path):
    import shutil

    root = tmp_path / "cat"
    shutil.copytree(OK, root)
    bib = tmp_path / "n.bib"
    bib.write_text("@article{Li2023, author={Li, Wei}, title={DeltaNet: change is all}, journal={RSE},"
                   " year={2023}, doi={10.1016/j.rse.2023.1}}\n")
    r = run("add", "--bibtex", str(bib), "--catalog", str(root), "--category", "cnn")
    assert r.exit_code == 0, r.output
    assert (root / "papers" / "deltanet.yaml").exists()
    assert "fill in venue_abbr, task, summary, implementation.reason" in r.stdout
    v = run("validate", "--catalog", str(root))
    assert v.exit_code == 1 and "deltanet.yaml:11: venue_abbr: still the TODO placeholder" in v.stderr
    bib.write_text(bib.read_text().replace("10.1016/j.rse.2023.1", "10.1016/j.rse.2023.2"))
    before = (root / "papers" / "deltanet.yaml").read_text()
    r = run("add", "--bibtex", str(bib), "--catalog", str(root))
    assert r.exit_code == 1 and "refusing to overwrite" in r.stderr
    assert (root / "papers" / "deltanet.yaml").read_text() == before
    r = run("add", "--bibtex", str(bib), "--catalog", str(root), "--category", "cnnn")
    assert r.exit_code == 1 and "Did you mean 'cnn'" in r.stderr


@pytest.mark.skipif(os.name == "nt", reason="POSIX paths in the message")
def test_add_malformed_bibtex(tmp_path):
    bib = tmp_path / "bad.bib"
    bib.write_text("@article{x, title = {unclosed\n\n@misc{y, title={ok}}\n")
    r = run("add", "--bibtex", str(bib), "--catalog", str(OK))
    assert r.exit_code == 1
    assert f"{bib}:1: malformed BibTeX block starting '@article{{x, title = {{unclosed" in r.stderr


def test_validate_shipped_catalog_summary():
    r = run("validate")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith("catalog OK: ") and " papers, " in r.stdout and " implemented" in r.stdout


def test_search_swin_finds_swinstfm_in_shipped_catalog():
    r = run("search", "swin", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)[0]["id"] == "swinstfm"


def _leaf_commands():
    import typer.main

    def walk(cmd, prefix):
        subs = getattr(cmd, "commands", None)
        if subs is None:
            yield " ".join(prefix), cmd
            return
        for name, sub in sorted(subs.items()):
            yield from walk(sub, [*prefix, name])

    return list(walk(typer.main.get_command(app), []))


@pytest.mark.parametrize("name", [n for n, _ in _leaf_commands()])
def test_every_command_takes_catalog_and_the_env_var(name):
    cmd = dict(_leaf_commands())[name]
    opts = {o: p for p in cmd.params for o in getattr(p, "opts", [])}
    assert "--catalog" in opts, f"`stfcat {name}` has no --catalog option"
    assert opts["--catalog"].envvar == "STFCAT_CATALOG"


def test_catalog_folder_errors_say_where_the_path_came_from(tmp_path):
    r = run("show", "alpha-net", env={"STFCAT_CATALOG": str(tmp_path / "missing")})
    assert r.exit_code == 1
    assert f"{tmp_path / 'missing'}: catalog folder not found" in r.stderr
    assert "--catalog DIR or the STFCAT_CATALOG variable" in r.stderr


def test_show_does_not_repeat_not_implemented(tmp_path):
    import shutil

    root = tmp_path / "cat"
    shutil.copytree(OK, root)
    f = root / "papers" / "beta-gan.yaml"
    f.write_text(f.read_text().replace("reason: toy entry", "reason: not yet implemented in stfcat; planned"))
    r = run("show", "beta-gan", "--catalog", str(root))
    assert r.exit_code == 0, r.output
    assert "  not yet implemented in stfcat; planned" in r.stdout and "not implemented in stfcat: not" not in r.stdout


MIXED_BIB = """
@article{New1,
  author = {Doe, Jane and Roe, Richard},
  title = {FooNet: A test network},
  journal = {Remote Sensing of Environment}, year = {2025},
  doi = {10.1016/j.rse.2025.999001},
}
@inproceedings{New2,
  author = {M{\\"u}ller, Hans},
  title = {BarGAN: Another test},
  booktitle = {IGARSS 2025}, year = {2025},
  doi = {10.1109/IGARSS.2025.999002},
}
@article{Again,
  author = {Lovelace, Ada},
  title = {AlphaNet once more},
  journal = {RSE}, year = {2020},
  doi = {10.1016/J.RSE.2020.000001},
}
"""


def test_add_two_new_one_known_doi_one_malformed_block(tmp_path):
    """A malformed block fails the whole import and nothing is written; without it the two new
    entries are written, the known DOI is skipped with a message, and the skeletons fail
    `validate` only on the TODO placeholders."""
    import shutil

    root = tmp_path / "cat"
    shutil.copytree(OK, root)
    before = sorted(p.name for p in (root / "papers").iterdir())
    bib = tmp_path / "mixed.bib"
    bib.write_text(MIXED_BIB + "@article{Broken,\n  title = {no end\n")
    r = run("add", "--bibtex", str(bib), "--catalog", str(root))
    assert r.exit_code == 1
    assert f"{bib}:20: malformed BibTeX block starting '@article{{Broken, title = {{no end" in r.stderr
    assert "Parsing of" not in r.stderr  # bibtexparser's own log line is not repeated
    assert "nothing was written" in r.stderr
    assert sorted(p.name for p in (root / "papers").iterdir()) == before

    bib.write_text(MIXED_BIB)
    r = run("add", "--bibtex", str(bib), "--catalog", str(root), "--category", "cnn")
    assert r.exit_code == 0, r.output
    assert "skipped Again: DOI 10.1016/J.RSE.2020.000001 is already catalogued (papers/alpha-net.yaml)" in r.stdout
    assert sorted(p.name for p in (root / "papers").iterdir()) == sorted([*before, "bargan.yaml", "foonet.yaml"])
    v = run("validate", "--catalog", str(root))
    assert v.exit_code == 1
    bad = [ln for ln in v.stderr.splitlines() if not ln.startswith("catalog invalid")]
    assert bad and all("still the TODO placeholder" in ln for ln in bad), bad
    assert {ln.split(":")[0].split("/")[-1] for ln in bad} == {"bargan.yaml", "foonet.yaml"}
