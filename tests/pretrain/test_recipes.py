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
        "resnet18", "imagenet", 64, 64, "novel", 1.38, 6.19e-5, 0.331, 2.09e-6, "last", "last")
    colour = parse(SimCLRHparams, "--dataset", "retinamnist")  # retinamnist's
    assert (colour.backbone, colour.resize, colour.aug, colour.aug_strength, colour.lr, colour.temperature,
            colour.weight_decay, colour.features) == ("resnet18", 64, "greyscale", 1.04, 8.22e-4, 0.0963, 1.11e-4,
                                                      "stage:1")
    study = parse(SimCLRHparams, "--dataset", "breastmnist", "--recipe", "study")
    assert (study.backbone, study.stem, study.aug, study.select_by, study.features, study.temperature,
            study.weight_decay) == ("resnet18", "imagenet", "novel", "contrastive", "last", 0.07, 1e-4)
    volume = parse(SimCLRHparams, "--dataset", "adrenalmnist3d")  # adrenalmnist3d's
    assert (volume.backbone, volume.aug, volume.batch_size, volume.lr, volume.temperature, volume.features,
            volume.select_by) == ("small_cnn_3d", "volume", 128, 1.41e-3, 0.078, "stage:3", "knn")
    byol = parse(BYOLHparams, "--dataset", "breastmnist")  # a method without a measured recipe keeps its own
    assert (byol.backbone, byol.aug) == (None, "novel")


def test_the_command_line_wins_and_init_keeps_its_network():
    given = parse(SimCLRHparams, "--dataset", "breastmnist", "--recipe", "study", "--backbone", "small_cnn",
                  "--aug", "natural", "--select-by", "knn")
    assert (given.backbone, given.stem, given.aug, given.select_by) == ("small_cnn", None, "natural", "knn")
    study = parse(SimCLRHparams, "--dataset", "breastmnist", "--recipe", "study", "--backbone", "small_cnn")
    assert (study.stem, study.aug, study.select_by) == (None, "novel", "contrastive")  # the rest of the study's
    other = parse(SimCLRHparams, "--dataset", "breastmnist", "--backbone", "small_cnn")  # tuned with a ResNet: only
    assert (other.backbone, other.stem, other.resize, other.batch_size, other.lr, other.temperature, other.features,
            other.aug, other.aug_strength, other.select_by) == (  # its sequence and checkpoint rule stay
        "small_cnn", None, None, None, None, 0.07, "last", "novel", 1.38, "last")
    init = parse(SimCLRHparams, "--dataset", "breastmnist", "--init", "pretrain-bloodmnist")
    assert (init.backbone, init.stem, init.resize, init.aug, init.lr) == (  # the network is the checkpoint's
        None, None, None, "novel", 6.19e-5)


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
    config.write_text("temperature: null\n")  # a file's null is given (a saved config.json's rerun repeats it)
    nulls = parse(SimCLRHparams, "--dataset", "breastmnist", "--config", str(config))
    assert nulls.temperature == 0.07 and nulls.weight_decay == 3e-5  # the parser's default, not the recipe's 0.2
    assert set(nulls.from_recipe) == {"weight_decay", "select_by", "features"}
    values = pretrain_options(SimCLRHparams, dataset="breastmnist", temperature=0.3, backbone=None)
    assert values.extra["temperature"] == 0.3 and values.weight_decay == 3e-5  # None: left to the recipe


def test_a_recipes_batch_is_capped_at_the_training_images_and_its_resize_kept_for_smaller_images_only():
    from common.cli.options import from_namespace
    from pretrain.hparams import PretrainOptions
    from pretrain.run import recipe_fitted

    def fitted(*argv, n_train=40, size=28):
        options = from_namespace(PretrainOptions, parse(SimCLRHparams, "--dataset", "breastmnist", *argv))
        return recipe_fitted(options, n_train, size)

    assert (fitted().batch_size, fitted().resize) == (40, 64)  # the recipe's 64, on 40 images
    assert (fitted(n_train=500).batch_size, fitted(size=64).resize, fitted(size=128).resize) == (64, None, None)
    given = fitted("--batch-size", "64", "--resize", "64", size=128)
    assert (given.batch_size, given.resize) == (64, 64)  # given: never changed (the run refuses a batch too large)
    assert fitted().from_recipe and "batch_size" not in given.from_recipe
