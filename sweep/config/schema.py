"""The config's schema: structured configs (dataclasses in Hydra's ConfigStore) that type every
key of conf/, and the few range rules that types cannot say.

The root config (conf/config.yaml) and each group option name their schema first in their
defaults list (`- /schema/model/mlp@_here_`), so OmegaConf rejects a value of the wrong type,
or a key the schema does not have, with its own message; `@package _global_` presets
(experiment=...) are checked by the root's schema. The values stay in the YAML files: a schema
field is MISSING unless it is a class identity (`_target_` of the sweeper plugin).

Range rules sit on the fields they constrain (`ruled(...)`) and `check` applies them all to a
composed config. A new group option's schema is one dataclass and one `store` line below.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf, TPESamplerConfig
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from sweep.config.ranges import (  # noqa: F401 (schema.<rule> is how callers name them)
    AT_LEAST_1,
    FRACTION,
    JOBS,
    NONNEGATIVE,
    PARAMS,
    PATH,
    POSITIVE,
    PROBABILITY,
    RESNET_DEPTH,
    SEED,
    SPARSITY,
    WIDTHS,
    Rule,
    each,
    is_number,
    one_of,
    ruled,
)
from sweep.errors import UserError

# ---- top level ----------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """train.*: the training loop's length, batch, CPU threads, log cadence and fast steps."""

    epochs: int = ruled(AT_LEAST_1)
    batch_size: int = ruled(AT_LEAST_1)
    threads: int | None = ruled(AT_LEAST_1)
    log_every: int = ruled(AT_LEAST_1)
    fast: bool = True  # fastmlp.py, fastsgd.py, conv nets channels-last; false = autograd


@dataclass
class SparsityConfig:
    """sparsity.*: tol, the |w| at or below which a weight counts for sparsity_tol."""

    tol: float = ruled(NONNEGATIVE)


BITS = Rule("must be an integer in 1..8", lambda v: is_number(v) and v == int(v) and 1 <= v <= 8)


@dataclass
class ExportConfig:
    """The compressed archive, model.l1z (sweep/deploy/archive.py, docs/deploy.md)."""

    bits: int = ruled(BITS)  # codebook of 2^bits shared values per compressed layer
    epochs: int = ruled(NONNEGATIVE)  # codebook fine-tuning epochs; 0 = off


@dataclass
class Config:
    """The root config (conf/config.yaml): the groups, the strengths, seeds and device."""

    # The groups: each option brings its own schema (below).
    model: Any = MISSING
    data: Any = MISSING
    regularizer: Any = MISSING
    optimizer: Any = MISSING
    schedule: Any = MISSING
    prune: Any = MISSING
    objective: Any = MISSING
    l1_lambda: float = ruled(NONNEGATIVE)
    l2_lambda: float = ruled(NONNEGATIVE)
    group_lambda: float = ruled(NONNEGATIVE)
    bn_lambda: float = ruled(NONNEGATIVE)
    seed: int = ruled(SEED)
    repeats: int = ruled(AT_LEAST_1)
    device: str = MISSING
    allow_targets: list[str] = MISSING  # code outside l1sweep a _target_ may run: user_code.py
    callbacks: dict[str, Any] = field(default_factory=dict)  # name -> _target_: callbacks.py
    logger: dict[str, Any] = field(default_factory=dict)  # name -> _target_: loggers.py
    train: TrainConfig = field(default_factory=TrainConfig)
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)
    export: ExportConfig = field(default_factory=ExportConfig)


# ---- groups -------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    """model: any `_target_` building an nn.Module (its own arguments pass through)."""

    _target_: str = MISSING


@dataclass
class MLPConfig(ModelConfig):
    """model=mlp / simple_net: `sweep.models.mlp` with these hidden widths."""

    hidden: list[int] = ruled(WIDTHS)


@dataclass
class ResNetConfig(ModelConfig):
    """model=resnet: `sweep.models.resnet.resnet`, depth 6n + 2 and first-stage width."""

    depth: int = ruled(RESNET_DEPTH)
    width: int = ruled(AT_LEAST_1)


@dataclass
class TorchvisionModelConfig(ModelConfig):
    name: str = MISSING  # model=torchvision: a torchvision classification model, weights=None


@dataclass
class DataConfig:
    """data: a `_target_` returning a `sweep.data.Dataset`; its validation share and epochs."""

    _target_: str = MISSING
    val_fraction: float = ruled(FRACTION)
    epochs: int = ruled(AT_LEAST_1)


@dataclass
class DigitsConfig(DataConfig):
    """data=digits: scikit-learn's 8x8 digits, with a held-out test split."""

    test_fraction: float = ruled(FRACTION)
    test_seed: int = ruled(SEED)


@dataclass
class TorchvisionConfig(DataConfig):
    """data=torchvision / mnist / fashion_mnist: a torchvision data set (offline IDX files)."""

    dataset: str | None = MISSING
    root: str = MISSING
    fallback_dir: str | None = MISSING
    options: dict[str, Any] = field(default_factory=dict)  # the dataset class checks these


@dataclass
class NpzConfig(DigitsConfig):
    """data=npz: arrays x, y from a .npz file, split and optionally standardized."""

    path: str | None = MISSING
    standardize: bool = MISSING


@dataclass
class CsvConfig(NpzConfig):
    """data=csv: a table with a target column and the feature columns."""

    target: str | None = MISSING
    features: list[str] | None = MISSING


@dataclass
class RegularizerConfig:
    """regularizer: L1 / L2 / elastic net, as a penalty or a proximal step."""

    _target_: str = MISSING
    l1: float = ruled(NONNEGATIVE)
    l2: float = ruled(NONNEGATIVE)
    proximal: bool = MISSING
    params: Any = ruled(PARAMS)  # a string or a list: OmegaConf has no such union


# The group lasso's groups (sweep/sparsity/regularizers.py): hidden units, inputs, both, or
# the hidden convs' filters only.
GROUPINGS = ("neurons", "inputs", "both", "channels")


@dataclass
class GroupRegularizerConfig(RegularizerConfig):
    """regularizer=group_l1 / sparse_group_l1: the group lasso's strength and groups."""

    group: float = ruled(NONNEGATIVE)
    groups: str = ruled(one_of(*GROUPINGS))
    size_weighted: bool = MISSING


@dataclass
class BatchNormRegularizerConfig(RegularizerConfig):
    bn: float = ruled(NONNEGATIVE)  # regularizer=bn_l1: the L1 strength on BatchNorm scales


@dataclass
class OptimizerConfig:
    """optimizer: a torch.optim class (partial) and its learning rate."""

    _target_: str = MISSING
    _partial_: bool = MISSING
    lr: float = ruled(POSITIVE)


@dataclass
class SGDConfig(OptimizerConfig):
    """optimizer=sgd: momentum, Nesterov and weight decay."""

    momentum: float = ruled(NONNEGATIVE)
    nesterov: bool = MISSING
    weight_decay: float = ruled(NONNEGATIVE)


@dataclass
class ScheduleConfig:
    """schedule: a learning-rate scheduler factory (partial), or none."""

    _target_: str = MISSING
    _partial_: bool = MISSING


@dataclass
class CosineConfig(ScheduleConfig):
    """schedule=cosine: cosine annealing down to eta_min."""

    eta_min: float = ruled(NONNEGATIVE)


@dataclass
class PruneConfig:
    """prune: which weights to remove after training, in rounds with fine-tuning."""

    _target_: str = MISSING
    method: str = ruled(one_of("none", "magnitude", "threshold", "neurons"))
    sparsity: float = ruled(SPARSITY)
    scope: str = ruled(one_of("global", "layer"))
    rounds: int = ruled(AT_LEAST_1)
    epochs: int = ruled(NONNEGATIVE)
    lr_scale: float = ruled(POSITIVE)
    path: list[float] | None = ruled(PATH)  # levels walked in order (pruning.Pruner)
    stop_at: float | None = ruled(FRACTION)  # end the walk at this level
    keep_models: bool = MISSING  # each level's weights, level_<r>.pt
    inputs: float = ruled(SPARSITY)  # prune=neurons: the fraction of first-layer inputs removed
    criterion: str = ruled(one_of("norm", "bn_scale"))  # prune=neurons: how channels rank
    round_to: int = ruled(AT_LEAST_1)  # prune=neurons: kept channels a multiple of this


@dataclass
class ThresholdPruneConfig(PruneConfig):
    """prune=threshold: remove every weight with |w| <= tol."""

    tol: float = ruled(NONNEGATIVE)


@dataclass
class ObjectiveConfig:
    """objective: the row's metrics the sweep optimizes, one direction each."""

    metrics: list[str] = MISSING
    direction: list[str] = ruled(each(one_of("maximize", "minimize")))


@dataclass
class WithinDropConfig(ObjectiveConfig):
    """objective=within_drop: sparsity while val_acc stays within max_drop of dense."""

    max_drop: float = ruled(SPARSITY)
    baseline_val_acc: float | None = ruled(PROBABILITY)


# ---- the sweeper (hydra.sweeper) ----------------------------------------------------------


@dataclass
class PrunerConfig:
    """hydra/sweeper/pruner: an Optuna pruner (early stopping of hopeless trials)."""

    _target_: str = MISSING


@dataclass
class MedianPrunerConfig(PrunerConfig):
    """hydra/sweeper/pruner=median: Optuna's MedianPruner options."""

    n_startup_trials: int = ruled(NONNEGATIVE)
    n_warmup_steps: int = ruled(NONNEGATIVE)
    interval_steps: int = ruled(AT_LEAST_1)
    n_min_trials: int = ruled(AT_LEAST_1)


@dataclass
class SuccessiveHalvingPrunerConfig(PrunerConfig):
    """hydra/sweeper/pruner=successive_halving: Optuna's options."""

    min_resource: Any = MISSING  # "auto" or an epoch count: Optuna checks it
    reduction_factor: int = ruled(
        Rule("must be an integer >= 2", lambda v: is_number(v) and v >= 2)
    )
    min_early_stopping_rate: int = ruled(NONNEGATIVE)
    bootstrap_count: int = ruled(NONNEGATIVE)


@dataclass
class HyperbandPrunerConfig(PrunerConfig):
    """hydra/sweeper/pruner=hyperband: Optuna's HyperbandPruner options."""

    min_resource: int = ruled(AT_LEAST_1)
    max_resource: Any = MISSING  # "auto" or an epoch count: Optuna checks it
    reduction_factor: int = ruled(
        Rule("must be an integer >= 2", lambda v: is_number(v) and v >= 2)
    )
    bootstrap_count: int = ruled(NONNEGATIVE)


@dataclass
class FrontPrunerConfig(PrunerConfig):
    """hydra/sweeper/pruner=front: l1sweep's rule for several objectives (sweep/search/front.py)."""

    n_startup_trials: int = ruled(AT_LEAST_1)
    n_warmup_steps: int = ruled(NONNEGATIVE)
    interval_steps: int = ruled(AT_LEAST_1)
    margin: float = ruled(NONNEGATIVE)
    neighbors: int = ruled(NONNEGATIVE)


@dataclass
class SweeperConfig(OptunaSweeperConf):
    """The stock Optuna sweeper's options, run by sweep.search.sweeper.L1Sweeper, and a pruner."""

    _target_: str = "sweep.search.sweeper.L1Sweeper"
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "none"}])
    pruner: Any = MISSING  # typed by its option's own schema (hydra/sweeper/pruner)
    stale_after: float = ruled(POSITIVE)
    # seconds a storage operation failing with a lock or a lost connection is retried
    storage_wait: float = ruled(NONNEGATIVE)
    enqueue: list[Any] = MISSING  # parameter sets run first: [{l1_lambda: 1e-5}, ...]
    # the plugin's defaults, with their ranges
    n_trials: int = ruled(AT_LEAST_1, OptunaSweeperConf.n_trials)
    # trials at a time; auto: chosen for this machine (sweep/search/parallel.py). Any: int or "auto"
    n_jobs: Any = ruled(JOBS, "auto")
    max_failure_rate: float = ruled(PROBABILITY, OptunaSweeperConf.max_failure_rate)


@dataclass
class MOTPERemovedConfig:
    """hydra/sweeper/sampler=motpe: Optuna 4.0 removed MOTPESampler. The plugin's option has
    no `seed`, which conf/config.yaml sets for every sampler, so it would fail to compose with
    a message about `seed`; this one composes, and the sweeper says what replaces it."""

    _target_: str = "hydra_plugins.hydra_optuna_sweeper.config.raise_motpe_removed"
    seed: Any = None


@dataclass
class TPEConfig(TPESamplerConfig):
    """hydra/sweeper/sampler=tpe: the plugin's TPE options, with `constant_liar` null by
    default: on when trials run in parallel (Optuna's option for that), off for one at a time
    (sweep/search/sampling.py). A value the user sets, in a config file or on the command line,
    is the one used: the plugin's `false` default could not be told from a user's `false`."""

    constant_liar: bool | None = None


@dataclass
class ForkLauncherConfig:
    """hydra/launcher=fork: each trial in a process forked from the sweep's
    (sweep/search/launcher.py)."""

    _target_: str = "sweep.search.launcher.ForkLauncher"
    # fork: from the sweep's process; forkserver: from a server that imported torch and
    # l1sweep once (docs/performance.md compares the two)
    start_method: str = "fork"


# fmt: off
SCHEMAS: dict[str, dict[str, type]] = {
    "model": {"model": ModelConfig, "mlp": MLPConfig, "resnet": ResNetConfig,
              "torchvision": TorchvisionModelConfig},
    "data": {
        "digits": DigitsConfig,
        "torchvision": TorchvisionConfig,
        "csv": CsvConfig,
        "npz": NpzConfig,
    },
    "regularizer": {"regularizer": RegularizerConfig, "group": GroupRegularizerConfig,
                    "bn": BatchNormRegularizerConfig},
    "optimizer": {"optimizer": OptimizerConfig, "sgd": SGDConfig},
    "schedule": {"schedule": ScheduleConfig, "cosine": CosineConfig},
    "prune": {"prune": PruneConfig, "threshold": ThresholdPruneConfig},
    "objective": {"objective": ObjectiveConfig, "within_drop": WithinDropConfig},
    # hydra/sweeper/pruner
    "pruner": {
        "pruner": PrunerConfig,
        "median": MedianPrunerConfig,
        "successive_halving": SuccessiveHalvingPrunerConfig,
        "hyperband": HyperbandPrunerConfig,
        "front": FrontPrunerConfig,
    },
}
# fmt: on


def register() -> None:
    """Put the schemas into Hydra's ConfigStore (under schema/, apart from the options a user
    picks with `model=...`, so the option lists stay the YAML files)."""
    cs = ConfigStore.instance()
    cs.store(name="config", group="schema", node=Config)
    for group, nodes in SCHEMAS.items():
        for name, node in nodes.items():
            cs.store(name=name, group=f"schema/{group}", node=node)
    cs.store(name="l1sweep", group="hydra/sweeper", node=SweeperConfig, provider="l1sweep")
    cs.store(name="fork", group="hydra/launcher", node=ForkLauncherConfig, provider="l1sweep")
    # replaces the plugin's entry (its module is imported above, so it is not stored again);
    # Hydra warns of every replaced entry, on every command: this one is meant
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cs.store(name="motpe", group="hydra/sweeper/sampler", node=MOTPERemovedConfig,
                 provider="l1sweep")  # fmt: skip
        cs.store(name="tpe", group="hydra/sweeper/sampler", node=TPEConfig, provider="l1sweep")


register()


def rules(kind: type) -> dict[str, Rule]:
    """The range rules of a schema dataclass, by field name."""
    if not dataclasses.is_dataclass(kind):
        return {}
    return {f.name: f.metadata["rule"] for f in dataclasses.fields(kind) if "rule" in f.metadata}


def check_value(name: str, rule: Rule, value: Any) -> None:
    """`value` (of key `name`) keeps `rule`, or a UserError naming the key and the rule."""
    if isinstance(value, ListConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if value is None:
        return
    if rule.number and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise UserError(f"{name} must be a number, got {value!r}")
    if not rule.test(value):
        raise UserError(f"{name} {rule.text}, got {value!r}")


def check(cfg: DictConfig, prefix: str = "") -> None:
    """Apply every range rule of the schemas to the composed config `cfg` (or the subtree at
    `prefix`): the first value out of range is a UserError that names its key and range."""
    kind = OmegaConf.get_type(cfg)
    if not prefix and not dataclasses.is_dataclass(kind):
        kind = Config  # a copy of the root (OmegaConf.masked_copy) loses its type
    ranges = rules(kind)
    # This node's own values first: `l1_lambda` is named before `regularizer.l1: ${l1_lambda}`.
    for key in ranges.keys() & set(cfg):
        check_value(f"{prefix}{key}", ranges[key], cfg[key])
    for key in cfg:
        # hydra: Hydra's own config; the sweeper checks hydra.sweeper itself
        if (prefix or key != "hydra") and isinstance(cfg[key], DictConfig):
            check(cfg[key], f"{prefix}{key}.")
