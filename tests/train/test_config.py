import pytest

from spquant.models import QuantSpec
from spquant.train.config import ConfigError, list_recipes, load_config, parse_overrides, variants_of


def test_recipes_shipped():
    names = list_recipes()
    for r in ("vgg9-cifar10dvs", "vgg9-ncaltech101", "resnet19-cifar10", "mnist", "mnist-dvs", "demo"):
        assert r in names
        assert variants_of(r) == ["fp32", "quant", "spquant"]


@pytest.mark.parametrize(
    "name", ["vgg9-cifar10dvs", "vgg9-ncaltech101", "resnet19-cifar10", "mnist", "mnist-dvs", "demo"]
)
def test_every_recipe_and_variant_parses_and_builds(name):
    built = []
    for variant in ("fp32", "quant", "spquant"):
        cfg = load_config(f"{name}:{variant}")
        assert cfg.quant.mode == variant and cfg.name == f"{name}:{variant}"
        net = cfg.build_model()
        assert sum(p.numel() for p in net.parameters()) > 0
        built.append(variant)
    assert built == ["fp32", "quant", "spquant"]


def test_paper_settings():
    c = load_config("vgg9-cifar10dvs:quant")
    assert (c.model.T, tuple(c.model.input), c.train.batch_size, c.train.epochs, c.train.lr, c.train.lam) == (
        10,
        (48, 48),
        24,
        200,
        1e-3,
        0.9,
    )
    assert c.quant.weight_bits == 2 and (c.quant.membrane_lb, c.quant.membrane_ub) == (-1, 1)
    r = load_config("resnet19-cifar10-quant")  # NAME-VARIANT spelling
    assert (r.model.T, r.train.batch_size, r.train.lr, r.quant.weight_bits, r.data.augment) == (
        2,
        128,
        1e-2,
        4,
        "crop-flip",
    )
    n = load_config("vgg9-ncaltech101")
    assert tuple(n.model.input) == (48, 64) and n.model.classes == 101 and n.train.batch_size == 16


def test_overrides_are_toml_values():
    c = load_config(
        "mnist",
        [
            "train.lr=3e-4",
            "quant.mode=quant",
            "model.input=[32, 32]",
            "model.plan=none",
            "quant.first_bits=none",
            "run.progress=false",
        ],
    )
    assert c.train.lr == 3e-4 and c.quant.mode == "quant" and c.model.input == (32, 32)
    assert c.model.plan is None and c.quant.first_bits is None and c.run.progress is False
    assert parse_overrides(["a.b=1", "a.c=x y"]) == [("a.b", 1), ("a.c", "x y")]
    c = load_config("demo", ["quant.prune.loss_weight=0.5"])  # nested table
    assert c.quant.prune == {"loss_weight": 0.5}


def test_unknown_key_suggests(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[train]\nlr_rate = 0.1\n")
    with pytest.raises(ConfigError, match=r"bad.toml.*unknown key 'train.lr_rate'.*did you mean 'train.lr'"):
        load_config(p)
    with pytest.raises(ConfigError, match=r"unknown key 'trian'.*did you mean 'train'"):
        load_config("mnist", ["trian.lr=1"])


def test_wrong_type_named(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('[train]\nepochs = "ten"\n')
    with pytest.raises(ConfigError, match=r"bad.toml.*train.epochs must be integer, got str 'ten'"):
        load_config(p)
    with pytest.raises(ConfigError, match="model.input"):
        load_config("mnist", ["model.input=28"])
    with pytest.raises(ConfigError, match="train.batch_size must be integer"):
        load_config("mnist", ["train.batch_size=1.5"])


def test_bad_values(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown mode 'quantized'"):
        load_config("mnist", ["quant.mode=quantized"])
    with pytest.raises(ConfigError, match=r"train.optimizer must be one of .*did you mean 'adam'"):
        load_config("mnist", ["train.optimizer=adma"])
    with pytest.raises(ConfigError, match="no variant 'int8'"):
        load_config("mnist:int8")
    with pytest.raises(ConfigError, match=r"--set expects KEY=VALUE"):
        load_config("mnist", ["train.lr"])
    p = tmp_path / "broken.toml"
    p.write_text("[train\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(p)


def test_missing_file_and_recipe():
    with pytest.raises(ConfigError, match="config file not found: nowhere/x.toml"):
        load_config("nowhere/x.toml")
    with pytest.raises(ConfigError, match=r"no config file or recipe named 'mnsit'.*did you mean 'mnist'"):
        load_config("mnsit")


def test_config_round_trips_through_dict():
    from spquant.train.config import config_from_dict

    c = load_config("mnist:quant", ["quant.first_bits=none"])
    assert config_from_dict(c.to_dict()) == c
    assert isinstance(c.quant, QuantSpec)
