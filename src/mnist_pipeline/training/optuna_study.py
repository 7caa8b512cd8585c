"""The Optuna study an `hparams_search=optuna` sweep adds trials to: its settings (`hydra.sweeper.*`)
and storage, checked before any job or MLflow run exists, so that a typo costs one line, not a
sweep.

Several sweeping processes, on one machine or many, share one study through its storage: a SQLite
file on one machine, a database server (PostgreSQL) or a journal file (`journal:///path`) on a
shared file system for a cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mnist_pipeline.config import ConfigError, resolve_path

# The `_target_` of conf/hydra/sweeper/optuna.yaml: Hydra takes sweepers only from `hydra_plugins`.
SWEEPER_TARGET = "hydra_plugins.mnist_pipeline_optuna.OptunaSweeper"
DIRECTIONS = ("maximize", "minimize")
JOURNAL_SCHEME = "journal://"
SQLITE_BUSY_TIMEOUT_S = 60  # concurrent writers of one SQLite file wait their turn this long
PARAMS_GRAMMAR = "e.g. tag(log, interval(0.01, 1.0)), interval(0.1, 0.9), choice(32, 64) or range(1, 10)"
STORAGE_SPELLINGS = ("a SQLite file in an existing folder (sqlite:////abs/path/optuna.db), a database URL "
                     "(postgresql://user@host/db) or a journal file (journal:///abs/path/optuna.log)")


@dataclass
class SearchSpace:
    """What Optuna samples (`distributions`) and the overrides every trial gets as they are."""

    distributions: dict[str, Any] = field(default_factory=dict)
    fixed: dict[str, str] = field(default_factory=dict)  # key: the whole override (`key=value`, `+key=v`)

    def corners(self) -> list[list[str]]:
        """Overrides that give every choice and both ends of every range to at least one point: the
        values to check before the sweep starts."""
        from optuna.distributions import CategoricalDistribution

        ends = {k: list(d.choices) if isinstance(d, CategoricalDistribution) else [d.low, d.high]
                for k, d in self.distributions.items()}
        count = max((len(v) for v in ends.values()), default=1)
        fixed = list(self.fixed.values())
        return [fixed + [override(k, v[i % len(v)]) for k, v in ends.items()] for i in range(count)]


def override(key: str, value: Any) -> str:
    """`key=value` as Hydra's override parser reads it back (strings escaped)."""
    from hydra.core.override_parser.types import Transformer

    return f"{key}={Transformer.str(value)}"


def search_space(params: Mapping[str, Any] | None, arguments: list[str] = ()) -> SearchSpace:
    """`hydra.sweeper.params` plus the command line's sweeps (`key=interval(0, 1)`), in the grammar
    of Hydra's override parser: choice, range and interval (`tag(log, ...)`: log scale) become Optuna
    distributions; plain values and the command line's other overrides are passed on as they are."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    space = SearchSpace()
    lines = [(f"hydra.sweeper.params.{k}", f"{k}={v}") for k, v in (params or {}).items()]
    for name, line in [*lines, *((a, a) for a in arguments)]:
        try:
            parsed = parser.parse_override(line)
            key = parsed.get_key_element()
            if parsed.is_sweep_override():
                space.distributions[key] = _distribution(parsed)
                space.fixed.pop(key, None)
            else:
                space.fixed[key] = line
                space.distributions.pop(key, None)
        except Exception as e:  # the parser's and Optuna's errors: a bad bound, an unsupported sweep
            reason = " ".join(str(e).split())
            raise ConfigError(f"{name}: cannot search this ({reason}): {PARAMS_GRAMMAR}") from None
    return space


def _distribution(parsed) -> Any:
    """An Optuna distribution from a parsed Hydra sweep override (as hydra-optuna-sweeper read it)."""
    from hydra.core.override_parser.types import Transformer
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = parsed.value()
    if parsed.is_choice_sweep() or (parsed.is_range_sweep() and value.shuffle):
        return CategoricalDistribution(list(parsed.sweep_iterator(transformer=Transformer.encode)))
    if parsed.is_range_sweep():  # stop included, as hydra-optuna-sweeper read it (Hydra's grid leaves it out)
        if any(isinstance(x, float) for x in (value.start, value.stop, value.step)):
            return FloatDistribution(value.start, value.stop, step=value.step)
        return IntDistribution(int(value.start), int(value.stop), step=int(value.step))
    if parsed.is_interval_sweep():
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_scale)
        return FloatDistribution(value.start, value.end, log=log_scale)
    raise ValueError(f"{parsed.input_line} is not a sweep Optuna can search")


def check_direction(direction: Any) -> str:
    if not isinstance(direction, str) or direction.lower() not in DIRECTIONS:
        raise ConfigError(f"hydra.sweeper.direction={direction}: Optuna can only maximize or minimize one "
                          "value (val_full/acc): hydra.sweeper.direction=maximize")
    return direction.lower()


def check_count(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"hydra.sweeper.{key}={value}: must be a whole number > 0, e.g. hydra.sweeper.{key}=4")
    return value


def make_sampler(sampler_cfg: Any) -> Any:
    """The sampler `hydra.sweeper.sampler` configures (a `_target_` and its arguments); None: Optuna's default."""
    if sampler_cfg is None or not isinstance(sampler_cfg, Mapping):
        return sampler_cfg
    from hydra.utils import instantiate

    try:
        return instantiate(sampler_cfg)
    except Exception as e:
        reason = " ".join(str(e).split())
        raise ConfigError(f"hydra.sweeper.sampler: cannot make this sampler ({reason}): e.g. "
                          "hydra.sweeper.sampler._target_=optuna.samplers.TPESampler") from None


def open_storage(url: str | None) -> Any:
    """The Optuna storage `url` names, opened (its tables created): None (in memory, this process
    only), a SQLAlchemy database URL, or `journal://<path>` (a journal file, for a shared file system).
    ConfigError, one line, if it cannot be opened."""
    if url is None:
        return None
    import optuna

    from mnist_pipeline.tracking.store import embedded_db

    try:
        if not isinstance(url, str) or not url:
            raise ValueError("not a storage URL")
        if url.startswith(JOURNAL_SCHEME):
            path = resolve_path(url.removeprefix(JOURNAL_SCHEME))
            if not path.parent.is_dir():
                raise FileNotFoundError(f"no folder {path.parent}")
            from optuna.storages.journal import JournalFileBackend

            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        db = embedded_db(url)
        if db is None:
            return optuna.storages.RDBStorage(url)
        if not db.parent.is_dir():
            raise FileNotFoundError(f"no folder {db.parent}")
        from filelock import FileLock

        with FileLock(f"{db}.lock"):  # processes creating one fresh file's tables at once race
            return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}})
    except Exception as e:
        cause = getattr(e, "orig", None) or e  # SQLAlchemy's own message runs on over several lines
        reason = " ".join(str(cause).split())
        raise ConfigError(f"hydra.sweeper.storage={url}: cannot open this Optuna storage ({reason}): "
                          f"give {STORAGE_SPELLINGS}") from None


@dataclass
class StudySettings:
    direction: str
    study_name: str | None
    storage_url: str | None
    sampler: Any
    space: SearchSpace
    n_trials: int  # the trials this process adds
    n_jobs: int    # trials launched at once (one batch of the launcher)


def read_settings(sweeper: Mapping[str, Any], arguments: list[str] = ()) -> StudySettings:
    """`hydra.sweeper.*` checked, the storage not opened yet; ConfigError names the key and the fix."""
    name = sweeper.get("study_name")
    return StudySettings(
        direction=check_direction(sweeper.get("direction")),
        study_name=None if name is None else str(name),
        storage_url=sweeper.get("storage"),
        sampler=make_sampler(sweeper.get("sampler")),
        space=search_space(sweeper.get("params"), arguments),
        n_trials=check_count("n_trials", sweeper.get("n_trials")),
        n_jobs=check_count("n_jobs", sweeper.get("n_jobs")),
    )


def is_optuna_sweep(hydra_cfg: Mapping[str, Any]) -> bool:
    return (hydra_cfg.get("sweeper") or {}).get("_target_") == SWEEPER_TARGET


def complete_trials(study) -> list:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def points_to_check(hydra_cfg: Mapping[str, Any], task: list[str]) -> tuple[list[list[str]], list[str]] | None:
    """None unless the sweeper is ours; else its settings checked, and (the overrides of points that
    hold every searched value's ends, for the sweep callback to check; the searched keys)."""
    if not is_optuna_sweep(hydra_cfg):
        return None
    space = read_settings(hydra_cfg["sweeper"], task).space
    return space.corners(), list(space.distributions)


def check_storage(hydra_cfg: Mapping[str, Any], task: list[str] = ()) -> None:
    """Open our sweeper's storage once, before any MLflow run or job exists: one line if it cannot
    be, or if it holds the study with the other direction or another kind of search space."""
    if is_optuna_sweep(hydra_cfg):
        sweeper = hydra_cfg["sweeper"]
        space = search_space(sweeper.get("params"), task)
        check_study(open_storage(sweeper.get("storage")), sweeper.get("study_name"), sweeper.get("direction"),
                    space.distributions)


def check_study(storage, study_name: str | None, direction: str, distributions: Mapping[str, Any] = {}) -> None:
    """A study that exists already must go the same direction (Optuna would load it and quietly keep
    its own), and search each key the way it did (Optuna refuses a changed choice() mid-sweep)."""
    if storage is None or study_name is None:
        return
    import optuna

    try:
        existing = optuna.load_study(study_name=str(study_name), storage=storage)
    except KeyError:  # no such study yet
        return
    if existing.direction.name.lower() != str(direction).lower():
        raise ConfigError(f"hydra.sweeper.direction={direction}: the study {study_name!r} in this storage was "
                          f"made to {existing.direction.name.lower()}: give that direction, or another "
                          "hydra.sweeper.study_name")
    for trial in existing.get_trials(deepcopy=False):
        for key, wanted in distributions.items():
            before = trial.distributions.get(key)
            try:
                if before is not None:
                    optuna.distributions.check_distribution_compatibility(before, wanted)
            except ValueError as e:
                raise ConfigError(f"hydra.sweeper.params.{key}: the study {study_name!r} searched it as {before}, "
                                  f"which cannot become {wanted} ({e}): keep its search space, or give another "
                                  "hydra.sweeper.study_name") from None
