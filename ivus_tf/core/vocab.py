"""The vocabulary of the package, defined once: tasks, their classes and label values, architectures, schemes, heads.

Every stage imports these names; none redefines them. A task's class names are listed in label order, so a label
value is its class's index: calcium masks are 0 background / 1 calcium, wall-lumen label maps 0 background /
1 lumen / 2 vessel wall (the lumen and the wall between lumen border and external elastic membrane).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ivus_tf.core.errors import InputError

CALCIUM, WALL_LUMEN = "calcium", "wall_lumen"
TASKS = (CALCIUM, WALL_LUMEN)
CLASS_NAMES = {CALCIUM: ("background", "calcium"), WALL_LUMEN: ("background", "lumen", "vessel_wall")}
NUM_CLASSES = {task: len(names) for task, names in CLASS_NAMES.items()}

BACKGROUND = 0
CALCIFIED = CLASS_NAMES[CALCIUM].index("calcium")
LUMEN = CLASS_NAMES[WALL_LUMEN].index("lumen")
VESSEL_WALL = CLASS_NAMES[WALL_LUMEN].index("vessel_wall")
WALL_LUMEN_VALUES = tuple(range(NUM_CLASSES[WALL_LUMEN]))
WALL_LUMEN_LABELS = {"lumen": LUMEN, "vessel_wall": VESSEL_WALL}  # the regions scored separately

ARCHS = ("deeplabv3", "unet_res")  # the modules of ivus_tf.models (ivus_tf.models.build.ARCHITECTURES)
SCHEMES = ("calcium", "pretrain", "multitask")  # calcium only, wall-lumen pre-training, multi-task
HEADS = ("linear", "conv", "decoder")
# Where a model's weights start (results.jsonl `backbone`): from scratch, Keras' ImageNet ResNet50 encoder, or
# torchvision's COCO DeepLabV3 (encoder and ASPP; python -m ivus_tf.convert). The last two are deeplabv3 only.
BACKBONES = ("none", "imagenet", "coco")
# What pre-training hands from the wall-lumen model to the calcium model: every weight but the classifier, or the
# encoder only (ivus_tf.models.transfer_weights).
PRETRAIN_TRANSFERS = ("all_but_classifier", "encoder")
UNET_STAGES = ("doubling", "wide_bottom")  # U-Net Res stage-channel designs (ivus_tf.models.unet_res)
# What a training phase selects its epoch on: the test's mean per-frame Dice, or one Dice pooled over the fold.
SELECTION_METRICS = ("per_frame_dice", "pooled_dice")
LR_SCHEDULES = ("constant", "poly")
LOSSES = ("gdl", "gdl_ce")  # generalized Dice; generalized Dice + cross-entropy (ivus_tf.losses)


def check_task(task, where: str = "") -> str:
    """`task` if it is a task name; `InputError` (a ValueError) naming `where` and the valid names otherwise."""
    if task not in TASKS:
        raise InputError(f"{where + ': ' if where else ''}unknown task {task!r}; valid: {', '.join(TASKS)}")
    return task


def check_tasks(tasks: Iterable[str], where: str = "") -> tuple[str, ...]:
    """`tasks` as a tuple (order kept) if it is a non-empty collection of distinct task names; `InputError`
    naming `where` otherwise. A lone string is refused (it would read as its letters)."""
    prefix = f"{where}: " if where else ""
    if isinstance(tasks, str) or not isinstance(tasks, Iterable):
        raise InputError(f"{prefix}tasks must be a list of task names from {', '.join(TASKS)}, got {tasks!r}")
    tasks = tuple(tasks)
    unknown = [task for task in tasks if task not in TASKS]
    if unknown:
        raise InputError(f"{prefix}unknown task(s) {', '.join(map(repr, unknown))}; valid: {', '.join(TASKS)}")
    if not tasks:
        raise InputError(f"{prefix}tasks is empty; valid: {', '.join(TASKS)}")
    if len(set(tasks)) != len(tasks):
        raise InputError(f"{prefix}tasks {list(tasks)} lists a task twice")
    return tasks


def check_wall_lumen_labels(labels, name: str = "wall_lumen_labels") -> np.ndarray:
    """`labels` as a 2-D array if it is a wall-lumen label map: integer (or float holding whole values) with
    values 0, 1, 2 only; `InputError` naming `name` otherwise (a probability map or a colour image is refused)."""
    array = np.asarray(labels)
    if array.ndim != 2:
        raise InputError(f"{name} must be a 2-D label map, got shape {array.shape}")
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise InputError(f"{name} must be an integer label map (0 background, 1 lumen, 2 vessel wall), "
                         f"got dtype {array.dtype}")
    bad = np.unique(array[~np.isin(array, WALL_LUMEN_VALUES)])
    if bad.size:
        shown = ", ".join(f"{value:g}" for value in bad[:8].tolist())
        more = f", ... ({bad.size} distinct)" if bad.size > 8 else ""
        raise InputError(f"{name} has values {shown}{more}; expected 0 background, 1 lumen, 2 vessel wall")
    return array
