"""A run directory's layout, spelled once: every file and folder a run writes, the marks it
carries while it is written, and the hidden staging folder it is assembled in. The runner,
training, rescore and every reader (reports, publish, export, the viewer, the CLI) reach a
run's files through ``RunDir``, so writers and readers agree by construction.

    results.json  manifest.json  report.html        the run's records and its report
    inputs/TASK.jsonl                                what every model was asked
    samples/MODEL/TASK.jsonl                         each model's answers (sample logs)
    samples/MODEL/TASK.jsonl[.rankR-of-N].partial    a log still being written, one per process
    train/MODEL/                                     a model's training (trainers' own layout)
    run_state.json  run_units.jsonl                  staging only: pair keys, Ray units done
    .medharness-run  .medharness-lock                while written: ours, and who writes it
    .medharness-rescoring                            while ``rescore`` rewrites a finished run
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medharness.core.errors import UserError

RESULTS = "results.json"
MANIFEST = "manifest.json"
REPORT = "report.html"
INPUTS = "inputs"
SAMPLES = "samples"
TRAIN = "train"
PARTIAL = ".partial"  # a file or folder still being written
STATE = "run_state.json"  # in staging: which sample logs belong to which key, model records
UNITS = "run_units.jsonl"  # in staging: the units a Ray run has finished
# In a folder medharness is still writing (staging, a training-only run); a finished run is
# known by its manifest instead, so its listing stays the documented one.
MARKER = ".medharness-run"
LOCK = ".medharness-lock"  # held by the process writing the folder
RESCORING = ".medharness-rescoring"  # stands in a run while ``rescore`` rewrites its files


def staging_path(target: Path) -> Path:
    """The hidden sibling a folder is written in before it takes its name."""
    return target.with_name(f".{target.name}{PARTIAL}")


def refuse_links(root: Path, path: Path) -> Path:
    """``path`` (inside ``root``), refused where it or a folder on the way to it is a
    symbolic link: a run folder someone else made can point anywhere (a key, a token)."""
    current = root
    for part in path.relative_to(root).parts:
        current = current / part
        if current.is_symlink():
            raise UserError(
                f"{current} is a symbolic link; medharness reads only files a run wrote itself"
            )
    return path


@dataclass(frozen=True)
class RunDir:
    """The paths of one run directory (finished, or its staging folder)."""

    path: Path

    @classmethod
    def staging_for(cls, target: Path) -> RunDir:
        return cls(staging_path(target))

    @property
    def name(self) -> str:
        """The run's name, also when this is its staging folder."""
        return self.path.name.removeprefix(".").removesuffix(PARTIAL)

    @property
    def results(self) -> Path:
        return self.path / RESULTS

    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST

    @property
    def report(self) -> Path:
        return self.path / REPORT

    @property
    def records_and_report(self) -> tuple[Path, Path, Path]:
        """results.json, manifest.json and report.html: the run's records and its report."""
        return self.results, self.manifest, self.report

    @property
    def state(self) -> Path:
        return self.path / STATE

    @property
    def units(self) -> Path:
        return self.path / UNITS

    @property
    def rescoring(self) -> Path:
        return self.path / RESCORING

    @property
    def inputs(self) -> Path:
        return self.path / INPUTS

    @property
    def samples(self) -> Path:
        return self.path / SAMPLES

    @property
    def train(self) -> Path:
        return self.path / TRAIN

    # Names are joined as one relative path, so that a name read from a hand-edited file
    # ("/etc", say) stays under the run directory instead of replacing it.
    def input_log(self, task: str) -> Path:
        return self.path / f"{INPUTS}/{task}.jsonl"

    def sample_log(self, model: str, task: str) -> Path:
        return self.path / f"{SAMPLES}/{model}/{task}.jsonl"

    def partial_log(self, model: str, task: str) -> Path:
        """The log one process appends a (model, task)'s rows to until it is whole."""
        final = self.sample_log(model, task)
        return final.with_name(final.name + PARTIAL)

    def rank_log(self, model: str, task: str, rank: int, processes: int) -> Path:
        """The partial log of process ``rank`` of a launch of ``processes``."""
        final = self.sample_log(model, task)
        return final.with_name(f"{final.name}.rank{rank}-of-{processes}{PARTIAL}")

    def partial_logs(self, model: str, task: str) -> list[Path]:
        """Every partial log of a (model, task) there is: this process's and each rank's."""
        final = self.sample_log(model, task)
        return list(final.parent.glob(final.name + "*" + PARTIAL))

    @staticmethod
    def training_of(model: str) -> Path:
        """A model's training folder, relative to the run directory."""
        return Path(f"{TRAIN}/{model}")

    def training(self, model: str) -> Path:
        return self.path / self.training_of(model)

    def checked(self, path: Path) -> Path:
        """A path of this run, never reached through a symbolic link (which could lead out
        of the folder, to a key or a token)."""
        return refuse_links(self.path, path)
