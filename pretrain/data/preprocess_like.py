"""Unlabeled images preprocessed exactly as nnU-Net preprocesses a dataset's cases (``--preprocess-like D``).

nnU-Net's own preprocessor of the plans' configuration (``-p``, ``-c`` of dataset D: cropping to the nonzero
region, transposition, the plans' normalization with D's intensity properties, resampling to the
configuration's spacing) runs on each file once and writes nnU-Net's case files, chunked for the
configuration's patch, into ``-o/preprocessed_like/``; the files are then read as D's preprocessed cases are
(lazily in 3D). A case is named by a hash of its file (path, size, modification time) and of the plans and
dataset.json, so a restart reuses it and a changed file or plan is preprocessed again. Under torchrun each
rank preprocesses its share of the files and the outcomes are gathered.
"""

from __future__ import annotations

import hashlib
import json
import os

from nnunetv2_vismae.io.atomic import write_json_atomic
from nnunetv2_vismae.io.nnunet import preprocessed_folder
from pretrain.data.files import file_stat
from pretrain.data.nnunet import NnUNetSource
from pretrain.data.screening import Unusable, first_line, screen_header
from pretrain.errors import PretrainUserError

CACHE = "preprocessed_like"  # the subfolder of -o holding the preprocessed cases


def target_fingerprint(dataset_folder: str, plans_identifier: str, configuration: str) -> str:
    """A hash of what preprocessing depends on besides the file: the plans, dataset.json, the configuration."""
    sha = hashlib.sha256(configuration.encode())
    for name in (f"{plans_identifier}.json", "dataset.json"):
        with open(os.path.join(dataset_folder, name), "rb") as f:
            sha.update(f.read())
    return sha.hexdigest()[:16]


def case_identifier(path: str, target: str) -> str:
    st = file_stat(path)
    return hashlib.sha256(f"{path}\t{st.st_size}\t{st.st_mtime_ns}\t{target}".encode()).hexdigest()[:16]


def failure_file(folder: str, identifier: str) -> str:
    """Where a file that could not be preprocessed is recorded: a subfolder, which nnU-Net's dataset classes
    do not list."""
    return os.path.join(folder, "unusable", f"{identifier}.json")


class PreprocessedLikeSource(NnUNetSource):
    """Image files (one channel each) as cases of dataset ``dataset``'s preprocessed configuration."""

    def __init__(
        self,
        name: str,
        files: list[str],
        dataset: str,
        configuration: str,
        plans_identifier: str,
        output: str,
        runtime,
        volumes: bool,
    ):
        dataset_folder = str(preprocessed_folder(dataset, PretrainUserError))
        if not os.path.isfile(os.path.join(dataset_folder, "dataset.json")):
            raise PretrainUserError(
                f"{dataset_folder} has no dataset.json; run nnUNetv2_plan_and_preprocess -d {dataset} first."
            )
        target = target_fingerprint(dataset_folder, plans_identifier, configuration)
        folder = os.path.join(output, CACHE, f"{os.path.basename(dataset_folder)}_{plans_identifier}_{configuration}")
        os.makedirs(os.path.join(folder, "unusable"), exist_ok=True)
        identifiers = {f: case_identifier(f, target) for f in files}
        preprocess = CasePreprocessor(dataset_folder, plans_identifier, configuration)
        for f in files[runtime.rank :: runtime.world_size]:
            preprocess.once(f, folder, identifiers[f])
        runtime.gather(None)  # every rank's share is written before any rank reads the folder
        self.skipped = [[f, *failure(folder, identifiers[f])] for f in files if failure(folder, identifiers[f])]
        usable = [f for f in files if not failure(folder, identifiers[f])]
        if not usable:
            raise PretrainUserError(
                f"None of the {len(files)} files of {name} could be preprocessed like dataset {dataset} "
                f"(e.g. {self.skipped[0][0]}: {self.skipped[0][2] or self.skipped[0][1]})."
            )
        self.files = usable
        self.file_of = {identifiers[f]: f for f in usable}
        super().__init__(dataset, configuration, plans_identifier, volumes, (folder, [identifiers[f] for f in usable]))
        self.name, self.preprocessed_like = name, os.path.basename(dataset_folder)

    @property
    def num_items(self) -> int:
        """Files, the unusable ones included (the share of unusable files is taken over all)."""
        return len(self.files) + len(self.skipped)

    def origin(self, index: int) -> str:
        """The file a flat item index comes from."""
        return self.file_of[os.path.basename(super().origin(index))]

    def summary(self) -> dict:
        return {**super().summary(), "type": "preprocessed_like", "preprocessed_like": self.preprocessed_like}


def failure(folder: str, identifier: str) -> list[str] | None:
    """[reason, detail] of a file that could not be preprocessed, or None."""
    path = failure_file(folder, identifier)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


class CasePreprocessor:
    """nnU-Net's preprocessor of one configuration of a dataset's plans, for one file at a time."""

    def __init__(self, dataset_folder: str, plans_identifier: str, configuration: str):
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        self.plans = PlansManager(os.path.join(dataset_folder, f"{plans_identifier}.json"))
        self.configuration = self.plans.get_configuration(configuration)
        with open(os.path.join(dataset_folder, "dataset.json")) as f:
            self.dataset_json = json.load(f)
        channels = len(self.dataset_json.get("channel_names", self.dataset_json.get("modality", {})))
        if channels != 1:
            raise PretrainUserError(
                f"--preprocess-like takes datasets with one input channel; {dataset_folder} has {channels}."
            )

    def run(self, path: str):
        """nnU-Net's preprocessing of the file ``path``: (C x Z x Y x X float32, its properties); raises
        Unusable for a file its header shows broken, before nnU-Net's reader meets it."""
        screen_header(path)
        preprocessor = self.configuration.preprocessor_class(verbose=False)
        data, _, properties = preprocessor.run_case([path], None, self.plans, self.configuration, self.dataset_json)
        return data, properties

    def once(self, path: str, folder: str, identifier: str) -> None:
        """Preprocess ``path`` into case ``identifier`` of ``folder`` unless done before (its properties file,
        written last, is there); a file that cannot be used is recorded as such."""
        case = os.path.join(folder, identifier)
        if os.path.isfile(case + ".pkl") or os.path.isfile(failure_file(folder, identifier)):
            return
        try:
            screen_header(path)  # a broken file stops here, before nnU-Net's reader meets it
            preprocessor = self.configuration.preprocessor_class(verbose=False)
            preprocessor.run_case_save(case, [path], None, self.plans, self.configuration, self.dataset_json)
        except Unusable as e:
            write_json_atomic(failure_file(folder, identifier), [e.reason, e.detail])
        except Exception as e:  # nnU-Net's reader or preprocessing failed on this file
            write_json_atomic(failure_file(folder, identifier), ["pixels", first_line(e)])
