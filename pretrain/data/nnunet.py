"""nnU-Net preprocessed datasets as a source of 2D slices or of volumes, exactly as fine-tuning sees them.

Cases are read with nnU-Net's own dataset class (``infer_dataset_class``: blosc2 or numpy), already
resampled and normalized by nnU-Net's preprocessing. Data are C x Z x Y x X; 2D slices are taken
along Z (the ``2d`` configuration's slicing axis; Z = 1 for 2D datasets). As a source of volumes
each case is one item, and only the region of a crop is read: nnU-Net opens its blosc2 arrays
without reading them, and slicing one decompresses only the chunks the slice touches.
"""

from __future__ import annotations

import json
import os

import numpy as np

from nnunetv2_vismae.io.nnunet import CONFIGURATION_2D, configuration_dims, preprocessed_folder
from pretrain.errors import PretrainUserError


class NnUNetSource:
    """Slices of one nnU-Net preprocessed dataset, ``load_slice(i)`` -> C x Y x X float32; or, with
    ``volumes``, its cases, ``load_region(i, region)`` -> C x the region of Z x Y x X, float32."""

    def __init__(
        self,
        dataset: str,
        configuration: str = CONFIGURATION_2D,
        plans_identifier: str = "nnUNetPlans",
        volumes: bool = False,
        cases: tuple[str, list[str]] | None = None,
    ):
        """``cases``: (folder, identifiers) of cases preprocessed with these plans elsewhere (default: the
        dataset's own preprocessed folder, every case in it)."""
        from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        dataset_folder = preprocessed_folder(dataset, PretrainUserError)
        self.name = os.path.basename(dataset_folder)
        plans_file = os.path.join(dataset_folder, plans_identifier + ".json")
        if not os.path.isfile(plans_file):
            raise PretrainUserError(f"Plans file {plans_file} does not exist; check -p.")
        with open(plans_file) as f:
            self.plans = json.load(f)
        plans_manager = PlansManager(self.plans)
        if configuration not in plans_manager.available_configurations:
            raise PretrainUserError(
                f"Configuration {configuration} is not in {plans_file} (available: "
                f"{', '.join(plans_manager.available_configurations)})."
            )
        if volumes and configuration_dims(self.plans, configuration, PretrainUserError) != 3:
            raise PretrainUserError(
                f"Configuration {configuration} of {plans_file} is not 3D; volumes are pretrained on a 3D "
                "configuration such as 3d_fullres."
            )
        self.configuration_name, self.plans_identifier, self.volumes = configuration, plans_identifier, volumes
        self.configuration = plans_manager.get_configuration(configuration)
        self.folder, identifiers = cases or (os.path.join(dataset_folder, self.configuration.data_identifier), None)
        if not os.path.isdir(self.folder) or not os.listdir(self.folder):
            raise PretrainUserError(
                f"Preprocessed data folder {self.folder} is missing or empty; run "
                f"nnUNetv2_plan_and_preprocess -d {dataset} -c {configuration}."
            )
        try:
            dataset_class = infer_dataset_class(self.folder)
        except AssertionError:
            raise PretrainUserError(f"Could not tell nnU-Net's dataset format in {self.folder}.") from None
        self.dataset = dataset_class(self.folder, identifiers)
        self.identifiers = list(self.dataset.identifiers)
        if not self.identifiers:
            raise PretrainUserError(f"Preprocessed data folder {self.folder} contains no cases.")
        shapes = [tuple(self.dataset.load_case(i)[0].shape) for i in self.identifiers]
        channels = {s[0] for s in shapes}
        if len(channels) != 1 or any(len(s) != 4 for s in shapes):
            raise PretrainUserError(f"Cases in {self.folder} have inconsistent shapes; expected C x Z x Y x X.")
        self.num_channels = channels.pop()
        self.spatial_shapes = [s[1:] for s in shapes]
        items = [1 if volumes else s[1] for s in shapes]  # a volume is one item, a slice in 2D
        self.offsets = np.concatenate([[0], np.cumsum(items)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def num_items(self) -> int:
        return len(self.identifiers)

    def origin(self, index: int) -> str:
        """The case a flat slice index comes from (what is counted when it cannot be used)."""
        return f"{self.folder}/{self.identifiers[int(np.searchsorted(self.offsets, index, side='right') - 1)]}"

    def load_slice(self, index: int) -> np.ndarray:
        case = int(np.searchsorted(self.offsets, index, side="right") - 1)
        data = self.dataset.load_case(self.identifiers[case])[0]
        return np.ascontiguousarray(data[:, int(index - self.offsets[case])], dtype=np.float32)

    def spatial_shape(self, index: int) -> tuple[int, int, int]:
        """Z x Y x X of case ``index`` (a source of volumes), from its header."""
        return self.spatial_shapes[index]

    def load_region(self, index: int, region: tuple[slice, ...]) -> np.ndarray:
        """C x the ``region`` (slices of Z, Y, X) of case ``index``, reading only that region."""
        data = self.image_array(self.identifiers[index])
        return np.asarray(data[(slice(None), *region)], dtype=np.float32)

    def image_array(self, identifier: str):
        """The case's image, opened without reading it. A blosc2 case opens its image array alone: nnU-Net's
        ``load_case`` also opens the segmentation and unpickles the properties, for every crop (1.2 to 1.4x
        fewer crops/s); the shape is known once per case (``spatial_shapes``)."""
        from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

        if not isinstance(self.dataset, nnUNetDatasetBlosc2):
            return self.dataset.load_case(identifier)[0]
        import blosc2

        path = os.path.join(self.dataset.source_folder, identifier + ".b2nd")
        return blosc2.open(urlpath=path, mode="r", dparams={"nthreads": 1}, **self.dataset.mmap_kwargs)

    def summary(self) -> dict:
        return {
            "type": "nnunet_preprocessed",
            "name": self.name,
            "plans": self.plans_identifier,
            "configuration": self.configuration_name,
            "num_cases": len(self.identifiers),
            # what one item is; a source of slices keeps the summary (and so the fingerprint) it always had
            **({"num_volumes": len(self)} if self.volumes else {"num_slices": len(self)}),
            **preprocessing_summary(self.plans, self.configuration),
        }


def preprocessing_summary(plans: dict, configuration) -> dict:
    """The spacing and normalization of data preprocessed with ``plans``' configuration (a ConfigurationManager)."""
    return {
        "spacing": list(configuration.spacing),
        "normalization": {
            "scheme": "nnunet",
            "normalization_schemes": list(configuration.normalization_schemes),
            "use_mask_for_norm": list(configuration.use_mask_for_norm),
            "foreground_intensity_properties_per_channel": plans.get("foreground_intensity_properties_per_channel"),
        },
    }
