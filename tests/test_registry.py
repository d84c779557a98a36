"""Registry: loud discovery failures, explicit variants listed with their parent, scoped registry."""

from __future__ import annotations

import json
import sys

import pytest
from typer.testing import CliRunner

from stfcat.cli.main import app
from stfcat.models import (
    FusionModel,
    ModelImportError,
    create_model,
    list_models,
    model_info,
    register_model,
    scoped,
    variant_of,
)
from stfcat.models.registry import VariantError
from stfcat.models.trivial import Delta


def _plugin(tmp_path, monkeypatch, name: str, source: str) -> None:
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.setenv("STFCAT_PLUGINS", name)
    sys.modules.pop(name, None)


@pytest.mark.parametrize(("source", "error"), [
    ("import stfcat_no_such_dependency\n", "ModuleNotFoundError: No module named 'stfcat_no_such_dependency'"),
    ("def broken(:\n    pass\n", "SyntaxError"),
    ("raise RuntimeError('bad weights table')\n", "RuntimeError: bad weights table"),
])
def test_a_module_that_does_not_import_stops_discovery_naming_it(fresh_discovery, tmp_path, monkeypatch,
                                                                 source, error):
    _plugin(tmp_path, monkeypatch, "stfcat_test_broken_plugin", source)
    with pytest.raises(ModelImportError) as exc:
        list_models()
    assert exc.value.modules == ["stfcat_test_broken_plugin"]
    assert "stfcat_test_broken_plugin" in str(exc.value) and error in str(exc.value)
    with pytest.raises(ModelImportError):  # still loud on the next call, never a partial registry
        model_info("delta")
    res = CliRunner().invoke(app, ["list", "models"])
    assert res.exit_code == 1 and "stfcat_test_broken_plugin" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(app, ["run", "delta", "--dataset", str(tmp_path / "none")])
    assert res.exit_code == 2 and "stfcat_test_broken_plugin" in res.output, res.output
    # fixed: discovery completes and the plugin's model is there
    _plugin(tmp_path, monkeypatch, "stfcat_test_broken_plugin",
            "from stfcat.models.trivial import Delta\nfrom stfcat.models import register_model\n"
            "register_model('plugin-delta', paper=None, family='trivial', params=0)("
            "type('PluginDelta', (Delta,), {'__doc__': 'plugin'}))\n")
    assert "plugin-delta" in list_models() and "delta" in list_models()


def test_scoped_registry_undoes_registrations():
    with scoped():
        register_model("scoped-delta", paper=None, family="trivial", params=0)(
            type("ScopedDelta", (Delta,), {"__doc__": "test"}))
        assert "scoped-delta" in list_models()
    assert "scoped-delta" not in list_models()
    assert "delta" in list_models()


def test_same_id_for_another_class_is_refused_but_a_reimport_is_accepted(model_registry):
    register_model("twice", paper=None, family="trivial", params=0)(type("A", (Delta,), {}))
    with pytest.raises(ValueError, match="registered twice"):
        register_model("twice", paper=None, family="trivial", params=0)(type("B", (Delta,), {}))
    # the same class re-created by re-importing its module (same module and qualified name)
    register_model("twice", paper=None, family="trivial", params=0)(type("A", (Delta,), {}))


class _Width(FusionModel):
    """Width-configurable toy model."""

    trainable = False

    def __init__(self, bands: int = 6, ratio: int = 16, width: int = 8) -> None:
        super().__init__(bands, ratio)
        self.width = width

    def forward(self, batch):
        return batch["f1"]


def test_variant_with_fixed_settings(model_registry):
    register_model("toy", paper="toy-paper", family="cnn", params=0)(_Width)
    info = variant_of("toy", "toy-w2", width=2)
    assert info.parent == "toy" and info.paper == "toy-paper" and info.family == "cnn" and dict(info.fixed) == {"width": 2}
    assert create_model("toy-w2").width == 2 and create_model("toy").width == 8
    assert create_model("toy-w2", width=2).width == 2  # restating a fixed value is fine
    with pytest.raises(ValueError, match=r"variant of 'toy' with width=2 fixed.*use 'toy'"):
        create_model("toy-w2", width=4)
    assert info.description.endswith("(variant: width=2)") and model_info("toy").description == "Width-configurable toy model."
    with pytest.raises(ValueError, match="parent model 'nope' is not registered"):
        variant_of("nope", "x", width=1)
    with pytest.raises(ValueError, match="not a subclass"):
        variant_of("toy", "toy-delta", cls=Delta)
    with pytest.raises(ValueError, match="give its 'parent'"):
        register_model("toy-bad", paper=None, family="cnn", fixed={"width": 1})


def test_undeclared_subclass_variant_and_missing_parent_are_refused(fresh_discovery):
    register_model("toy", paper="toy-paper", family="cnn", params=0)(_Width)
    register_model("toy-sub", paper="toy-paper", family="cnn", params=0)(type("Sub", (_Width,), {}))
    with pytest.raises(VariantError, match=r"'toy-sub' subclasses 'toy'.*variant_of\('toy'"):
        list_models()
    res = CliRunner().invoke(app, ["list", "models"])
    assert res.exit_code == 1 and "'toy-sub' subclasses 'toy'" in res.output and "Traceback" not in res.output
    model_registry = fresh_discovery
    model_registry._REGISTRY.pop("toy-sub")
    register_model("orphan", paper=None, family="cnn", params=0, parent="gone")(type("O", (_Width,), {}))
    with pytest.raises(VariantError, match="'orphan': parent 'gone' is not a registered model"):
        list_models()


def test_shipped_variants_are_listed_with_their_parent():
    assert model_info("edcstfn-1ref").parent == "edcstfn" and model_info("edcstfn-1ref").n_refs == 1
    assert model_info("starfm-2ref").parent == "starfm"
    assert model_info("edcstfn").parent is None
    res = CliRunner().invoke(app, ["list", "models", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["id"]: r for r in json.loads(res.stdout)}
    assert rows["edcstfn-1ref"]["parent"] == "edcstfn" and rows["delta"]["parent"] is None
    res = CliRunner().invoke(app, ["list", "models"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "parent" in res.output
    line = next(ln for ln in res.output.splitlines() if "edcstfn-1ref" in ln)
    assert "edcstfn " in line.replace("edcstfn-1ref", "")


def test_site_lists_the_models_that_imported_and_names_the_broken_module(fresh_discovery, tmp_path, monkeypatch):
    from stfcat.site.context import collect_models

    _plugin(tmp_path, monkeypatch, "stfcat_test_broken_plugin", "raise ImportError('no weights module')\n")
    with pytest.warns(UserWarning, match="stfcat_test_broken_plugin"):
        models = collect_models()
    assert "stfcat_test_broken_plugin" in models.problem and "no weights module" in models.problem
    assert {"delta", "edcstfn"} <= {m.id for m in models.rows}
