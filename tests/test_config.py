import pytest

from asr.config import Config, ConfigError, apply_overrides, load_config


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "conf.yaml"
    p.write_text("model:\n  d_model: 96\n  n_heads: 2\ntrain:\n  max_epochs: 3\n")
    cfg = load_config(p, ["model.d_model=128", "--train.peak_lr=0.01", "loss.guided_attn_layers=[0, 2]"])
    assert cfg.model.d_model == 128 and cfg.model.n_heads == 2
    assert cfg.train.max_epochs == 3 and cfg.train.peak_lr == pytest.approx(0.01)
    assert cfg.loss.guided_attn_layers == [0, 2]
    assert cfg.features.dim == 80
    assert apply_overrides(Config(), ["features.kind=mfcc"]).features.dim == 39


def test_round_trip_through_dict():
    cfg = apply_overrides(Config(), ["model.d_ff=1024", "specaug.enabled=false"])
    from asr.config import config_from_dict

    assert config_from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.d_modle=3", "model.d_modle"),
        ("nosuch.key=1", "nosuch.key"),
        ("model.d_model=abc", "model.d_model"),
        ("model.d_model=1.5", "model.d_model"),
        ("specaug.enabled=maybe", "specaug.enabled"),
        ("model.d_model", "section.key=value"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        apply_overrides(Config(), [override])


def test_bad_yaml_names_the_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(p)
    p.write_text("model:\n  depth: 3\n")
    with pytest.raises(ConfigError, match="model.depth"):
        load_config(p)
    with pytest.raises(ConfigError, match="missing.yaml"):
        load_config(tmp_path / "missing.yaml")
