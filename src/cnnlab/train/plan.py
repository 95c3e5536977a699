"""One training plan for every front end: typed choices (None = not given) plus the data -> what to train and why.

`cnnlab train` and the web page's Train tab fill a `TrainChoices` from their flags or form and call
`plan_training`; it decides transfer (a pretrained backbone, `cnnlab.train.transfer`) or from scratch, the
model's recipe, the length the data calls for, class weights and augmentation, and gives the lines that say
why. Front ends print the reasons and run the plan; none holds a rule of its own.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cnnlab.datasets.dataset import Dataset
from cnnlab.datasets.registry import load_any
from cnnlab.spec import zoo
from cnnlab.spec.layers import ModelSpec
from cnnlab.train.config import TrainConfig, recipe_config
from cnnlab.train.data_policy import DataPolicy, data_choices
from cnnlab.train.data_recipe import data_recipe
from cnnlab.train.fine_tune import FineTuneOptions
from cnnlab.train.transfer import TransferRequest, transfer_decision

DEFAULT_MODEL = "seed"
TRANSFER_MODEL = "efficientnet"  # the variant (Lite0/1/2) is chosen by cross-validation while training
# TrainConfig fields a user may choose; given (not None), they pick the from-scratch recipe
CONFIG_CHOICES = ("epochs", "batch_size", "optimizer", "lr", "schedule", "label_smoothing", "validation_split",
                  "early_stopping_patience", "monitor", "device", "deterministic", "precision")
# With fine_tune these choices set the backbone's second stage (FineTuneOptions fields) instead
FINE_TUNE_CHOICES = ("epochs", "batch_size", "lr")
# the user's name for a choice, in the reasons, when it is not --field-with-dashes
CHOICE_NAMES = {"early_stopping_patience": "--early-stopping", "horizontal_flip": "--flip"}


@dataclass(frozen=True)
class TrainChoices:
    """What a user chose, whichever front end they used; None (or the default) means "not given"."""
    data: str = "mnist"  # a built-in dataset's name or an image folder's path
    data_dir: str | None = None
    model: str | None = None  # a zoo name, JSON or a compact spec; None: the seed CNN (or transfer for photos)
    model_is_text: bool = False  # typed by someone else (the web): never opened as a file
    seed: int = 0
    epochs: int | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    lr: float | None = None
    schedule: str | None = None
    label_smoothing: float | None = None
    validation_split: float | None = None
    early_stopping_patience: int | None = None
    monitor: str | None = None
    device: str | None = None
    deterministic: bool | None = None
    precision: str | None = None
    transfer: bool | None = None  # True: the pretrained backbone; False: from scratch; None: the rule decides
    fine_tune: bool = False
    class_weight: str = "auto"
    augment: str | None = None
    augment_options: dict[str, Any] = field(default_factory=dict)  # AugmentOptions fields given one by one
    image_size: tuple[int, int] | None = None
    color: str = "auto"
    stream: bool | None = None
    subset: int | None = None  # train on the first N training images
    limit_test: int | None = None  # test on the first N test images
    runs_as: tuple[str, ...] = ()  # how-it-runs settings given (several processes, checkpoints): from scratch

    def config_choices(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in CONFIG_CHOICES}

    def folder_options(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "color": self.color, "stream": self.stream}

    def chosen(self) -> tuple[str, ...]:
        """The choices that pick a from-scratch model or recipe, named as a user gives them (`--epochs`)."""
        tuned = FINE_TUNE_CHOICES if self.fine_tune else ()
        names = [k for k, v in self.config_choices().items() if v is not None and k != "device" and k not in tuned]
        names += [k for k, given in (
            ("model", self.model not in (None, DEFAULT_MODEL)), ("image_size", self.image_size is not None),
            ("color grayscale", self.color == "grayscale"), ("subset", self.subset is not None),
            ("augment", self.augment is not None), ("class_weight", self.class_weight != "auto")) if given]
        names += list(self.augment_options)
        return (*(CHOICE_NAMES.get(k, "--" + k.replace("_", "-")) for k in names), *self.runs_as)

    def transfer_request(self) -> TransferRequest:
        """These choices as the photos-or-scratch rule (`transfer_decision`) sees them."""
        return TransferRequest(self.data, self.transfer, self.fine_tune, self.chosen())

    def fine_tune_options(self) -> FineTuneOptions | None:
        """FineTuneOptions from the epochs, batch size and rate chosen under fine_tune; None without it."""
        if not self.fine_tune:
            return None
        return FineTuneOptions(**{k: getattr(self, k) for k in FINE_TUNE_CHOICES if getattr(self, k) is not None})


@dataclass
class TrainPlan:
    """What to train: on the pretrained backbone (`transfer`), or `spec` from scratch on `data` with `config`."""
    choices: TrainChoices
    transfer: bool
    model_name: str
    reasons: list[str]
    data: Dataset | None = None
    spec: ModelSpec | None = None
    config: TrainConfig | None = None

    def run_name(self) -> tuple[str, str]:
        """(data, model) a new run folder is named after (`runs/<model>-<data>-<time>`), alike from every front end."""
        data = Path(self.choices.data)
        return (data.name if data.is_dir() else self.choices.data), self.model_name

    def to_dict(self) -> dict[str, Any]:
        """The plan as the web page shows it and pre-fills its form from."""
        train = self.config.to_dict() if self.config is not None else None
        return {"transfer": self.transfer, "model": self.model_name, "reasons": list(self.reasons), "train": train}


def load_data(choices: TrainChoices) -> Dataset:
    """The dataset `choices` name, read with their folder options."""
    return load_any(choices.data, choices.data_dir, **choices.folder_options())


def plan_training(choices: TrainChoices, load: Callable[[TrainChoices], Dataset] = load_data,
                  gray: bool = False) -> TrainPlan:
    """The plan for `choices`. `load` reads the data when training from scratch needs it (a server passes its
    cache); `gray`: the photo folder turned out all gray (`train_photos` gave None), so it trains from scratch."""
    request = choices.transfer_request()
    decision = transfer_decision(request, gray=gray)
    reasons = [decision.reason] if decision.reason else []
    if decision.use:
        return TrainPlan(choices, True, TRANSFER_MODEL, reasons)
    data = load(choices)
    if choices.subset is not None or choices.limit_test is not None:
        data = data.subset(choices.subset, choices.limit_test)
    report = getattr(data, "report", None)  # an image folder says what it found, chose and skipped
    reasons += report.lines() if report is not None else []
    policy = DataPolicy(class_weight=choices.class_weight, augment=choices.augment,
                        augment_options=dict(choices.augment_options))
    model = choices.model or DEFAULT_MODEL
    resolve = zoo.resolve_text if choices.model_is_text else zoo.resolve
    spec, recipe = resolve(model, data.input_shape, len(data.class_names))  # a bad model fails before any work
    chosen, said = data_choices(data, policy)  # class weights, augmentation
    reasons += said
    # a length from the data, unless the user or the model's own recipe (zoo fast/best) sets one
    length, said = data_recipe(data, choices.batch_size or recipe.get("batch_size", 128),
                               choices.epochs is not None or "epochs" in recipe)
    reasons += said
    config = recipe_config({**recipe, **length, **chosen}, seed=choices.seed, **choices.config_choices())
    name = model if model in zoo.ZOO else "custom"
    return TrainPlan(choices, False, name, reasons, data, spec, config)

