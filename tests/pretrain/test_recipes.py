"""--recipe: the options a pretraining run takes when the command line leaves them out."""
from pretrain.cli import pretrain_parser
from pretrain.byol.hparams import BYOLHparams
from pretrain.simclr.hparams import SimCLRHparams


def parse(method, *argv):
    return pretrain_parser(method).parse_args(list(argv))


def test_the_default_recipe_per_kind_of_data_and_the_study_recipe_exactly():
    grey = parse(SimCLRHparams, "--dataset", "breastmnist")
    assert (grey.backbone, grey.aug, grey.select_by, grey.features, grey.stem) == ("small_cnn", "natural", "knn",
                                                                                   "last", None)
    colour = parse(SimCLRHparams, "--dataset", "retinamnist")
    assert (colour.backbone, colour.aug) == ("small_cnn", "natural")
    study = parse(SimCLRHparams, "--dataset", "breastmnist", "--recipe", "study")
    assert (study.backbone, study.stem, study.aug, study.select_by, study.features, study.temperature,
            study.weight_decay) == ("resnet18", "imagenet", "novel", "contrastive", "last", 0.07, 1e-4)
    volume = parse(SimCLRHparams, "--dataset", "adrenalmnist3d")  # nothing measured on volumes: the defaults stay
    assert (volume.backbone, volume.aug, volume.select_by) == (None, "volume", "knn")
    byol = parse(BYOLHparams, "--dataset", "breastmnist")  # a method without a measured recipe keeps its own
    assert (byol.backbone, byol.aug) == (None, "novel")


def test_the_command_line_wins_and_init_keeps_its_network():
    given = parse(SimCLRHparams, "--dataset", "breastmnist", "--recipe", "study", "--backbone", "small_cnn",
                  "--aug", "natural", "--select-by", "knn")
    assert (given.backbone, given.stem, given.aug, given.select_by) == ("small_cnn", None, "natural", "knn")
    study = parse(SimCLRHparams, "--dataset", "breastmnist", "--recipe", "study", "--backbone", "small_cnn")
    assert (study.stem, study.aug, study.select_by) == (None, "novel", "contrastive")  # the rest of the study's
    other = parse(SimCLRHparams, "--dataset", "breastmnist", "--backbone", "resnet18")
    assert (other.backbone, other.stem, other.aug, other.batch_size) == ("resnet18", None, "natural", None)
    init = parse(SimCLRHparams, "--dataset", "breastmnist", "--init", "pretrain-bloodmnist")
    assert (init.backbone, init.resize, init.aug) == (None, None, "natural")  # the network is the checkpoint's


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
