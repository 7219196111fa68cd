"""Training configs, schemes and the checks that run before anything trains (no training here: fast)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from ivus_tf.core.errors import InputError
from ivus_tf.core.vocab import ARCHS, SCHEMES, UNET_STAGES
from ivus_tf.training.config import PHANTOM_PRESETS, TrainConfig, config_differences, load_config
from ivus_tf.training.schemes import SCHEME_PHASES, phases_of

CONFIGS = Path(__file__).parents[1] / "configs"
TRAIN_CONFIGS = ("paper.yaml", "quickstart.yaml")


@pytest.mark.parametrize("name", TRAIN_CONFIGS)
def test_shipped_training_config_validates(name):
    from ivus_tf.training.phantom_cache import phantom_knobs

    config = load_config(CONFIGS / name)
    assert isinstance(config, TrainConfig)
    phantom_knobs(config).validate()  # the phantom config it names exists and validates too
    for scheme in SCHEMES:
        phases_of(dataclasses.replace(config, scheme=scheme))


def test_paper_config_holds_the_papers_settings():
    config = load_config(CONFIGS / "paper.yaml")
    assert (config.image_size, config.batch_size, config.learning_rate) == (256, 12, 2e-4)
    assert (config.repeats, config.folds, config.flip, config.rotate) == (10, 3, True, True)
    assert config.width == 1.0 and config.unet_stages == "doubling"
    # "weights proportional to the inverse ground truth segmentation areas": 1/A, not Sudre's 1/A^2
    assert config.loss_weighting == "inverse"
    # the paper's test set: 6 whole cases carrying both label kinds (not 20 % of the cases)
    assert (config.n_test_cases, config.test_both_labels) == (6, True)
    assert (config.selection_metric, config.pretrain_transfer) == ("per_frame_dice", "all_but_classifier")


def test_defaults_follow_the_paper_where_it_is_explicit():
    config = TrainConfig()
    assert (config.loss_weighting, config.selection_metric, config.pretrain_transfer, config.unet_stages) == \
        ("inverse", "per_frame_dice", "all_but_classifier", "doubling")
    assert config.model_options() == {} and dataclasses.replace(config, arch="unet_res").model_options() == \
        {"stages": "doubling"}


def test_appearance_augmentation_off_for_the_paper_on_for_the_phantom_recipes():
    from ivus_tf.grid.config import expand_grid, load_grid_config

    assert TrainConfig().appearance_augmentation is False  # the defaults are the paper's
    assert load_config(CONFIGS / "paper.yaml").appearance_augmentation is False
    assert load_config(CONFIGS / "quickstart.yaml").appearance_augmentation is True
    for name in ("phantom_table1_small.yaml", "phantom_lambda_sweep_small.yaml"):
        grid, base = load_grid_config(CONFIGS / name)
        assert all(run.config.appearance_augmentation for run in expand_grid(grid, base, "grid", name))


def test_lambda_sweep_trains_exactly_as_the_table1_grid_it_is_run_into():
    import yaml

    table1, sweep = (yaml.safe_load((CONFIGS / name).read_text()) for name in
                     ("phantom_table1_small.yaml", "phantom_lambda_sweep_small.yaml"))
    assert sweep["train_overrides"] == table1["train_overrides"]
    assert sweep["train_config"] == table1["train_config"] and sweep["folds"] == table1["folds"]
    assert table1["train_overrides"]["loss_weighting"] == "inverse_square"  # the stated departure, in both


def test_train_config_holds_every_augmentation_field_with_its_default_and_type():
    import typing

    from ivus_tf.augment_config import AUGMENT_FIELDS, AugmentConfig

    train, augment = typing.get_type_hints(TrainConfig), typing.get_type_hints(AugmentConfig)
    for name in AUGMENT_FIELDS:
        assert train[name] == augment[name] and getattr(TrainConfig(), name) == getattr(AugmentConfig(), name), name
    with pytest.raises(InputError, match=r"unknown key 'aug_blur_probabilty' \(did you mean 'aug_blur_probability'"):
        load_config(None, {"aug_blur_probabilty": 0.5})
    with pytest.raises(InputError, match=r"aug_gamma_range must be \[low, high\] with 0 < low"):
        load_config(None, {"aug_gamma_range": [0.0, 1.5]})


def test_run_hash_and_resume_check_follow_augmentation_only_while_it_is_on():
    import hashlib

    from ivus_tf.augment_config import AUGMENT_FIELDS
    from ivus_tf.core.config import to_mapping
    from ivus_tf.training.config import _NOT_HASHED, config_differences

    def hash_without_augmentation(config):  # the hash as it was before the augmentation fields existed
        values = {k: v for k, v in to_mapping(config).items()
                  if k not in (*_NOT_HASHED, *AUGMENT_FIELDS, "lr_schedule", "loss")}
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:6]

    paper = load_config(CONFIGS / "paper.yaml")
    for config in (TrainConfig(), paper):  # run folders of configs without the augmentation keep their names
        assert config.fingerprint() == hash_without_augmentation(config)
    # the loss field likewise: the paper's GDL keeps old run names, Dice + CE is another run
    assert TrainConfig(loss="gdl").fingerprint() == TrainConfig().fingerprint()
    assert TrainConfig(loss="gdl_ce").fingerprint() != TrainConfig().fingerprint()
    assert config_differences(TrainConfig(), TrainConfig(loss="gdl_ce")) != []
    off = TrainConfig(aug_gamma_probability=0.9)
    assert off.fingerprint() == TrainConfig().fingerprint() and config_differences(TrainConfig(), off) == []
    on = TrainConfig(appearance_augmentation=True)
    assert on.fingerprint() != TrainConfig().fingerprint()
    assert dataclasses.replace(on, aug_gamma_probability=0.9).fingerprint() != on.fingerprint()
    assert config_differences(on, dataclasses.replace(on, aug_gamma_probability=0.9)) == [
        "aug_gamma_probability 0.3 -> 0.9"]
    assert config_differences(TrainConfig(), on) == ["appearance_augmentation False -> True"]


def test_phase_pipeline_augments_training_batches_only():
    from ivus_tf.training.phase import pipeline_config

    config = TrainConfig(appearance_augmentation=True, aug_zoom_range=(0.8, 1.2), aug_blur_probability=0.5)
    train, evaluation = pipeline_config(config, ("calcium",)), pipeline_config(config, ("calcium",), train=False)
    assert train.appearance_augmentation and (train.aug_zoom_range, train.aug_blur_probability) == ((0.8, 1.2), 0.5)
    assert not (evaluation.appearance_augmentation or evaluation.flip or evaluation.rotate)


def test_choices_match_the_registries():
    from ivus_tf.models.build import ARCHITECTURES
    from tfrecords_builder.phantom import HELD_OUT_PRESETS, PRESETS, TRAINING_PRESETS

    assert set(ARCHS) == set(ARCHITECTURES) and set(PHANTOM_PRESETS) == set(TRAINING_PRESETS)
    assert set(TRAINING_PRESETS) | set(HELD_OUT_PRESETS) == set(PRESETS)
    assert not set(TRAINING_PRESETS) & set(HELD_OUT_PRESETS)
    assert tuple(SCHEME_PHASES) == SCHEMES
    from ivus_tf.models.unet_res import STAGE_DESIGNS

    assert set(UNET_STAGES) == set(STAGE_DESIGNS)


def test_yaml_typo_lists_valid_keys(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("scheme: multitask\nlambda: 0.5\n")
    with pytest.raises(InputError, match=r"unknown key 'lambda' \(did you mean 'lam'\?\); valid keys: scheme, arch"):
        load_config(path)


@pytest.mark.parametrize("overrides, problem", [
    ({"scheme": "both"}, "scheme 'both' is unknown; valid: calcium, pretrain, multitask"),
    ({"arch": "resnet"}, "arch 'resnet' is unknown"),
    ({"fold": 3}, "fold 3 out of range"),
    ({"freeze_encoder_epochs": 2}, "only applies to scheme pretrain"),
    ({"arch": "unet_res", "image_size": 100}, "multiple of 8"),
    ({"epochs": 0}, "epochs must be >= 1"),
    ({"lam": -1.0}, "lam must be a finite number >= 0"),
    ({"n_test_cases": 0}, "n_test_cases must be >= 1"),
    ({"selection_metric": "dice"}, "selection_metric 'dice' is unknown; valid: per_frame_dice, pooled_dice"),
    ({"pretrain_transfer": "decoder"}, "pretrain_transfer 'decoder' is unknown; valid: all_but_classifier, encoder"),
    ({"unet_stages": "wide"}, "unet_stages 'wide' is unknown; valid: doubling, wide_bottom"),
])
def test_bad_values_are_named(overrides, problem):
    with pytest.raises(InputError, match=problem.replace("(", r"\(")):
        load_config(None, overrides)


def test_relative_paths_in_yaml_are_relative_to_the_file(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "run.yaml"
    path.write_text("data: ../records\nphantom_config: knobs.yaml\nout: /abs/run\n")
    config = load_config(path)
    assert config.data == str(tmp_path / "sub" / "../records")
    assert config.phantom_config == str(tmp_path / "sub" / "knobs.yaml") and config.out == "/abs/run"


def test_cli_flags_override_the_file(tmp_path):
    from ivus_tf.train import build_parser, overrides_from_args

    path = tmp_path / "run.yaml"
    path.write_text("scheme: multitask\nlam: 0.5\nepochs: 7\n")
    args = build_parser().parse_args(["--config", str(path), "--lambda", "2", "--set", "aspp_rates=[6, 12]",
                                      "--save-predictions"])
    config = load_config(args.config, overrides_from_args(args))
    assert (config.lam, config.epochs, config.aspp_rates, config.save_predictions) == (2.0, 7, (6, 12), True)


def test_default_run_name_is_readable_and_stable():
    config = TrainConfig(scheme="multitask", arch="unet_res", lam=0.5, repeat=2, fold=1)
    name = config.default_run_name()
    assert name.startswith("multitask-unet_res-lam0.5-r2f1-") and name == config.default_run_name()
    assert dataclasses.replace(config, out="elsewhere").default_run_name() == name
    assert dataclasses.replace(config, learning_rate=1e-3).default_run_name() != name


def test_schemes_are_phases():
    config = TrainConfig(epochs=5, pretrain_epochs=3, freeze_encoder_epochs=2, scheme="pretrain")
    wall_lumen, calcium = phases_of(config)
    assert (wall_lumen.tasks, wall_lumen.epochs, wall_lumen.monitor) == \
        (("wall_lumen",), 3, "val_wall_lumen_frame_dice")
    assert (calcium.tasks, calcium.epochs, calcium.weights_from, calcium.transfer, calcium.freeze_encoder_epochs) == \
        (("calcium",), 5, "wall_lumen", "all_but_classifier", 2)
    assert calcium.monitor == "val_calcium_frame_dice"  # selection on the test's per-frame Dice
    _, calcium = phases_of(dataclasses.replace(config, pretrain_transfer="encoder"))
    assert calcium.transfer == "encoder"
    (multitask,) = phases_of(TrainConfig(scheme="multitask", lam=0.3))
    assert multitask.tasks == ("calcium", "wall_lumen") and multitask.lam == 0.3
    assert multitask.monitor == "val_calcium_frame_dice"
    (pooled,) = phases_of(TrainConfig(scheme="multitask", selection_metric="pooled_dice"))
    assert pooled.monitor == "val_calcium_dice"


def test_a_run_config_saved_before_a_field_existed_reads_as_what_it_meant(tmp_path):
    """Run folders of earlier versions lack the new fields; they trained the old way, and resuming them with the
    new defaults must be refused, not mistaken for the same run."""
    import yaml

    from ivus_tf.core.config import to_mapping

    values = to_mapping(TrainConfig(arch="unet_res", scheme="pretrain", loss_weighting="inverse_square"))
    for field in ("pretrain_transfer", "unet_stages", "selection_metric", "n_test_cases", "test_both_labels"):
        del values[field]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(values))
    saved = load_config(path, saved_run=True)  # as RunFolder.load_config reads it
    assert (saved.pretrain_transfer, saved.unet_stages, saved.selection_metric) == \
        ("encoder", "wide_bottom", "pooled_dice")
    assert (saved.n_test_cases, saved.test_both_labels) == (None, False)
    wanted = TrainConfig(arch="unet_res", scheme="pretrain", loss_weighting="inverse_square")
    assert sorted(d.split()[0] for d in config_differences(saved, wanted)) == \
        ["pretrain_transfer", "selection_metric", "unet_stages"]


# ----------------------------------------------------------------------- errors before training, through the CLI

def _run_cli(capsys, *argv):
    from ivus_tf.train import main

    status = main(list(argv))
    return status, capsys.readouterr().err


def test_cli_config_typo_is_one_line(tmp_path, capsys):
    path = tmp_path / "typo.yaml"
    path.write_text("epochs: 3\nbatchsize: 4\n")
    status, err = _run_cli(capsys, "--config", str(path))
    assert status == 2 and err.count("\n") == 1
    assert err.startswith(f"error: {path}: unknown key 'batchsize' (did you mean 'batch_size'?)")


def test_cli_unknown_scheme_and_arch(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _run_cli(capsys, "--scheme", "wall")
    assert exit_info.value.code == 2
    assert "invalid choice: 'wall'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _run_cli(capsys, "--arch", "vgg")


def _tiny_args(records, out, *extra):
    return ["--data", str(records), "--out", str(out), "--arch", "unet_res", "--width", "0.0625",
            "--image-size", "64", "--batch-size", "2", "--epochs", "1", "--set", "folds=2", "--set", "repeats=1",
            "--set", "run_eagerly=true", *extra]


def test_cli_records_lacking_wall_lumen_labels(make_records, tmp_path, capsys):
    records = make_records({f"case{i}": [("0", ("calcium",)), ("1", ("calcium",))] for i in range(5)})
    out = tmp_path / "run"
    status, err = _run_cli(capsys, *_tiny_args(records, out, "--scheme", "pretrain"))
    assert status == 2 and err.count("\n") == 1
    assert "scheme pretrain needs calcium and wall_lumen labels, but no case carries wall_lumen labels" in err
    assert not out.exists()  # nothing was written, nothing trained


def test_cli_split_leaving_the_validation_fold_without_calcium(make_records, tmp_path, capsys):
    from ivus_tf.splits import make_splits, write_splits

    cases = {f"c{i}": [("0", ("calcium",))] for i in range(3)} | {f"w{i}": [("0", ("wall_lumen",))] for i in range(3)}
    records = make_records(cases)
    splits = make_splits({c: [t[0] for _, t in frames] for c, frames in cases.items()}, test_fraction=0.3,
                         repeats=1, folds=2, seed=0)
    splits["test_cases"], splits["folds"] = ["c0", "w0"], [[["c1", "c2"], ["w1", "w2"]]]  # fold 1: no calcium
    path = write_splits(tmp_path / "splits.json", splits)
    out = tmp_path / "run"
    status, err = _run_cli(capsys, *_tiny_args(records, out, "--scheme", "calcium", "--fold", "1", "--set",
                                               f"splits={path}", "--set", "test_fraction=0.3"))
    assert status == 2 and err.count("\n") == 1, err
    assert err == (f"error: {path}: repeat 0 fold 1 leaves the validation fold without a case with calcium labels "
                   "(phase calcium selects its model on it); use more cases or fewer folds\n")
    assert not out.exists()


def test_check_data_names_empty_folds(make_records, tmp_path):
    from ivus_tf.splits import make_splits
    from ivus_tf.training.schemes import check_data

    case_tasks = {f"c{i}": ["calcium"] for i in range(3)} | {f"w{i}": ["wall_lumen"] for i in range(3)}
    splits = make_splits(case_tasks, n_test_cases=2, repeats=1, folds=2, seed=0)
    splits["test_cases"], splits["folds"] = ["c0", "w0"], [[["c1", "c2"], ["w1", "w2"]]]
    config = TrainConfig(scheme="calcium", repeats=1, folds=2, fold=1)
    with pytest.raises(InputError, match="repeat 0 fold 1 leaves the validation fold without a case with calcium"):
        check_data(config, phases_of(config), splits, "records", "splits.json")
    with pytest.raises(InputError, match="repeat 0 fold 0 leaves no training case with calcium labels"):
        check_data(dataclasses.replace(config, fold=0), phases_of(config), splits, "records", "splits.json")
    cases, test = check_data(dataclasses.replace(config, scheme="multitask", fold=0),
                             phases_of(dataclasses.replace(config, scheme="multitask")), splits | {
                                 "folds": [[["c1", "w1"], ["c2", "w2"]]]}, "records", "splits.json")
    assert cases["multitask"].train == ["c2", "w2"] and cases["multitask"].val == ["c1", "w1"] and test == ["c0"]


def test_phantom_cache_key_follows_the_settings(tmp_path, monkeypatch):
    from ivus_tf.training.phantom_cache import phantom_folder, phantom_settings

    monkeypatch.setenv("IVUS_TF_CACHE", str(tmp_path))
    config = TrainConfig(phantom_cases=4, phantom_frames_per_case=3)
    folder = phantom_folder(config)
    assert folder.parent == tmp_path and folder.name.startswith("phantom-randomized-4x3-")
    assert phantom_folder(dataclasses.replace(config, phantom_seed=1)) != folder
    knobs = tmp_path / "knobs.yaml"
    knobs.write_text("noise_db: [-40.0, -34.0]\n")
    changed = dataclasses.replace(config, phantom_config=str(knobs))
    assert phantom_folder(changed) != folder
    assert phantom_settings(changed)["knobs"]["noise_db"] == [-40.0, -34.0]
    json.dumps(phantom_settings(changed))
