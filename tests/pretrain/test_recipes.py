"""--recipe: the options a pretraining run takes when the command line leaves them out."""
from pretrain.cli import pretrain_parser
from pretrain.byol.hparams import BYOLHparams
from pretrain.simclr.hparams import SimCLRHparams


def parse(method, *argv):
    return pretrain_parser(method).parse_args(list(argv))


def test_the_default_recipe_per_kind_of_data_and_the_study_recipe_exactly():
    grey = parse(SimCLRHparams, "--dataset", "breastmnist")  # breastmnist's search winner (docs/recipes)
    assert (grey.backbone, grey.stem, grey.resize, grey.batch_size, grey.aug, grey.aug_strength, grey.lr,
            grey.temperature, grey.weight_decay, grey.features, grey.select_by) == (
        "resnet18", "imagenet", 64, 64, "novel", 1.38, 6.19e-5, 0.331, 2.09e-6, "last", "knn")
    colour = parse(SimCLRHparams, "--dataset", "retinamnist")  # retinamnist's
    assert (colour.backbone, colour.resize, colour.aug, colour.aug_strength, colour.lr, colour.temperature,
            colour.weight_decay, colour.features) == ("resnet18", 64, "greyscale", 1.04, 8.22e-4, 0.0963, 1.11e-4,
                                                      "stage:1")
    assert parse(SimCLRHparams, "--dataset", "breastmnist", "--size", "128").resize is None  # no upsampling
    study = parse(SimCLRHparams, "--dataset", "breastmnist", "--recipe", "study")
    assert (study.backbone, study.stem, study.aug, study.select_by, study.features, study.temperature,
            study.weight_decay, study.resize, study.batch_size, study.lr, study.aug_strength) == (
        "resnet18", "imagenet", "novel", "contrastive", "last", 0.07, 1e-4, None, None, None, 1.0)
    volume = parse(SimCLRHparams, "--dataset", "adrenalmnist3d")  # nothing confirmed on volumes: the defaults stay
    assert (volume.backbone, volume.aug, volume.select_by, volume.temperature) == (None, "volume", "knn", 0.07)
    byol = parse(BYOLHparams, "--dataset", "breastmnist")  # a method without a measured recipe keeps its own
    assert (byol.backbone, byol.aug) == (None, "novel")


def test_the_command_line_wins_and_init_keeps_its_network():
    given = parse(SimCLRHparams, "--dataset", "breastmnist", "--recipe", "study", "--backbone", "small_cnn",
                  "--aug", "natural", "--select-by", "knn")
    assert (given.backbone, given.stem, given.aug, given.select_by) == ("small_cnn", None, "natural", "knn")
    other = parse(SimCLRHparams, "--dataset", "breastmnist", "--backbone", "small_cnn")
    assert (other.backbone, other.stem, other.resize, other.aug, other.aug_strength, other.lr, other.temperature,
            other.batch_size) == ("small_cnn", None, None, "novel", 1.38, None, 0.07, None)  # its sequence only
    init = parse(SimCLRHparams, "--dataset", "breastmnist", "--init", "pretrain-bloodmnist")
    assert (init.backbone, init.resize, init.aug) == (None, None, "novel")  # the network is the checkpoint's


def test_a_recipe_sets_options_with_defaults_unless_given_on_the_command_line_a_config_or_in_values(monkeypatch,
                                                                                                   tmp_path):
    import pretrain.recipes as recipes
    from pretrain.cli import pretrain_options

    monkeypatch.setitem(recipes.RECIPES, "simclr", {"grey": {"temperature": 0.2, "weight_decay": 3e-5}})
    recipe = parse(SimCLRHparams, "--dataset", "breastmnist")
    assert (recipe.temperature, recipe.weight_decay) == (0.2, 3e-5)  # over the parser's 0.07 and 1e-4
    given = parse(SimCLRHparams, "--dataset", "breastmnist", "--temperature", "0.07", "--weight-decay=1e-4")
    assert (given.temperature, given.weight_decay) == (0.07, 1e-4)  # the method's defaults, given: kept
    config = tmp_path / "run.yaml"
    config.write_text("temperature: 0.5\n")
    assert parse(SimCLRHparams, "--dataset", "breastmnist", "--config", str(config)).temperature == 0.5
    assert parse(SimCLRHparams, "--dataset", "breastmnist", "--recipe", "study").temperature == 0.07
    values = pretrain_options(SimCLRHparams, dataset="breastmnist", temperature=0.3, backbone=None)
    assert values.extra["temperature"] == 0.3 and values.weight_decay == 3e-5  # None: left to the recipe
