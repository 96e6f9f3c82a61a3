from __future__ import annotations

import pytest

import coarsekl
from coarsekl.config import ExperimentConfig
from coarsekl.errors import ConfigError


def test_named_experiment_loads_the_paper_setting():
    config = coarsekl.load_config("paper-restore")
    assert config.name == "paper-restore"
    assert (config.steps, config.members, config.schemes) == (40, 1, ("base", "proj"))
    assert config.data.params == {"shape": [128, 128], "blocks": [4, 4], "high": 0.9, "low": 0.1}
    assert config.kernel.kind == "geometric-mean"
    assert config.kernel.params == {"beta": 0.05, "sigma": 0.5}
    assert config.projector.params == {"delta": 0.01}
    assert config.snapshot_steps == (0, 10, 20, 40)


def test_toml_text_round_trips_to_an_equal_config(tmp_path, small_config):
    config = coarsekl.load_config(small_config())
    path = tmp_path / "again.toml"
    path.write_text(config.to_toml())
    assert coarsekl.load_config(path) == config


def test_config_name_defaults_to_the_file_stem(tmp_path, small_config):
    mapping = small_config(name=None)
    path = tmp_path / "my-run.toml"
    path.write_text(coarsekl.load_config(mapping).to_toml().replace('name = "experiment"\n', ""))
    assert coarsekl.load_config(path).name == "my-run"


def test_relative_paths_resolve_against_the_config_folder(tmp_path, small_config):
    (tmp_path / "sub").mkdir()
    text = 'steps = 2\nschemes = ["base"]\n[data]\nkind = "file"\npath = "image.npy"\n'
    text += '[initial]\nkind = "uniform-noise"\n[partition]\nkind = "blocks"\nblocks = [2, 2]\n'
    text += '[kernel]\nkind = "block-blur"\nsigma = 1.0\n'
    (tmp_path / "sub" / "exp.toml").write_text(text)
    config = coarsekl.load_config(tmp_path / "sub" / "exp.toml")
    assert config.data.params["path"] == str(tmp_path / "sub" / "image.npy")


def test_overrides_replace_dotted_keys(small_config):
    config = coarsekl.load_config(small_config())
    changed = config.with_overrides(
        {"projector.delta": 0.05, "steps": 3, "record.snapshots": [0, 3]}
    )
    assert changed.projector.params["delta"] == 0.05
    assert changed.steps == 3
    assert config.steps == 6  # the original is untouched (frozen)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"stpes": 3}, "unknown config key 'stpes' (did you mean 'steps'?)"),
        ({"steps": 0}, "'steps' must be an integer ≥ 1"),
        ({"steps": "ten"}, "'steps' must be an integer ≥ 1"),
        ({"members": 1.5}, "'members' must be an integer ≥ 1"),
        ({"seed": -1}, "'seed' must be an integer ≥ 0"),
        ({"schemes": ["base", "projected"]}, "schemes must be a non-empty list"),
        ({"schemes": []}, "schemes must be a non-empty list"),
        ({"projector": None}, "the scheme 'proj' needs a [projector] table"),
        ({"kernel": 3}, "[kernel] must be a table with a 'kind'"),
        ({"kernel": {"beta": 0.1}}, "[kernel] needs kind ="),
        ({"record__snapshots": [0, 99]}, "snapshots [99] lie outside the run's steps 0 … 6"),
        ({"record__metrics": "V"}, "metrics must be a list of names"),
        ({"record__every": 2}, "[record] has no key 'every'"),
        ({"partition": None}, "the config needs 'partition'"),
    ],
)
def test_malformed_configs_are_rejected_with_a_clear_message(small_config, changes, message):
    with pytest.raises(ConfigError) as error:
        coarsekl.load_config(small_config(**changes))
    assert message in str(error.value)


def test_malformed_toml_names_the_file_and_position(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("steps = 3\n[data\nkind = 'checkerboard'\n")
    with pytest.raises(ConfigError, match=r"broken.toml' is not valid TOML: .*line 2"):
        coarsekl.load_config(path)


def test_unknown_experiment_name_suggests_close_matches():
    with pytest.raises(ConfigError, match="did you mean 'paper-restore'"):
        coarsekl.load_config("paper-restor")


def test_missing_config_file_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        coarsekl.load_config(tmp_path / "nowhere.toml")


def test_default_record_keeps_first_and_last_state(small_config):
    config = coarsekl.load_config(small_config(record=None))
    assert config.snapshot_steps == (0, 6)
    assert config.metric_names == ("V", "V_delta", "E_block", "mse", "block_variance")


def test_shortening_a_run_below_its_snapshots_says_how_to_fix_it(small_config):
    config = coarsekl.load_config(small_config())
    with pytest.raises(ConfigError, match=r"record.snapshots"):
        config.with_overrides({"steps": 3})


def test_configs_are_frozen(small_config):
    config = coarsekl.load_config(small_config())
    with pytest.raises(AttributeError):
        config.steps = 10  # type: ignore[misc]
    assert isinstance(config, ExperimentConfig)


def test_default_metrics_leave_out_v_delta_without_a_projector(small_config):
    config = coarsekl.load_config(small_config(schemes=["base"], projector=None, record=None))
    assert config.metric_names == ("V", "E_block", "mse", "block_variance")
    ds = coarsekl.run(config)
    assert "V_delta" not in ds
