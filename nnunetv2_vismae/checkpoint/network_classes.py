"""The classes an architecture block (nnU-Net plans, a cnn checkpoint's config) may name.

nnU-Net resolves the block's names with ``pydoc.locate``, which imports modules and walks attributes
(``torch.nn.modules.module.torch.os.system``), and dynamic-network-architectures calls what it gets
(``dropout_op(**dropout_op_kwargs)``): a crafted name runs a command. So a block read from a file
may name only the classes listed here, under the names nnU-Net's planners write, and the ops' kwargs
are JSON scalars. A name is compared with names made from the listed class itself; nothing a block
says is imported.
"""

from __future__ import annotations

from torch import nn

from .schema import entry_problems, json_object, list_of, shown, text

# the ops dynamic-network-architectures' U-Nets take as classes (what nnU-Net's planners write and
# what the U-Nets build with), by argument, and the argument holding each op's kwargs
OP_CLASSES: dict[str, tuple[type, ...]] = {
    "conv_op": (nn.Conv1d, nn.Conv2d, nn.Conv3d),
    "norm_op": (
        nn.InstanceNorm1d,
        nn.InstanceNorm2d,
        nn.InstanceNorm3d,
        nn.BatchNorm1d,
        nn.BatchNorm2d,
        nn.BatchNorm3d,
        nn.GroupNorm,
    ),
    "dropout_op": (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d),
    "nonlin": (nn.LeakyReLU, nn.ReLU, nn.PReLU, nn.ELU, nn.GELU, nn.SiLU),
}
OP_KWARGS = {"norm_op": "norm_op_kwargs", "dropout_op": "dropout_op_kwargs", "nonlin": "nonlin_kwargs"}
ARCHITECTURE_RULES = {
    "network_class_name": text(),
    "arch_kwargs": json_object(),
    "_kw_requires_import": list_of(text(), 0, 16),
}


def _names(cls: type, package: str) -> tuple[str, str]:
    """The names a class goes by in plans: its module's path (planners write that) and ``package.Name``."""
    return f"{cls.__module__}.{cls.__name__}", f"{package}.{cls.__name__}"


def op_class(argument: str, name) -> type | None:
    """The listed class ``name`` stands for as ``argument`` (conv_op, ...), or None."""
    return next((cls for cls in OP_CLASSES.get(argument, ()) if name in _names(cls, "torch.nn")), None)


def cnn_network_classes() -> dict[str, type]:
    """Name -> class of the U-Nets whose encoder the cnn family moves (a DNA encoder module holding the stem)."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet

    return {name: cls for cls in (PlainConvUNet, ResidualEncoderUNet) for name in _names(cls, cls.__module__)}


def swin_network_classes() -> dict[str, type]:
    """Name -> class of the Swin networks VisMAE plans name: SwinUNet (2D) and Swin3dUNet."""
    from nnunetv2_vismae.architectures import Swin3dUNet, SwinUNet

    return {name: cls for cls in (SwinUNet, Swin3dUNet) for name in _names(cls, "nnunetv2_vismae.architectures")}


def network_classes() -> dict[str, type]:
    """Name -> class of every network our plans and trainers build: the cnn family's U-Nets, SwinUNet and
    Swin3dUNet."""
    return {**cnn_network_classes(), **swin_network_classes()}


def _is_scalar(value) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _ops_kwargs_problem(kwargs: dict, argument: str, where: str) -> str | None:
    value = kwargs.get(argument)
    if value is None or (isinstance(value, dict) and all(map(_is_scalar, value.values()))):
        return None
    return f"{where}.{argument} is {shown(value)}, expected null or an object of numbers, strings, true/false or null."


def architecture_problems(architecture: dict, where: str, classes: dict[str, type]) -> list[str]:
    """Problems (one sentence each) of an architecture block (a JSON object shown as ``where``): an entry
    of the wrong type, a network class not in ``classes``, an import of anything but a listed op, op
    kwargs that are not scalars. With none, nnU-Net's ``get_network_from_plans`` imports only listed classes."""
    known = (
        {k: v for k, v in architecture.items() if k in ARCHITECTURE_RULES}
        if isinstance(architecture, dict)
        else architecture
    )
    problems = entry_problems(known, where, ARCHITECTURE_RULES, tuple(ARCHITECTURE_RULES))
    if problems:
        return problems
    name = architecture["network_class_name"]
    if name not in classes:
        problems.append(f"{where}.network_class_name is {shown(name)}, expected one of {', '.join(classes)}.")
    kwargs = architecture["arch_kwargs"]
    for argument in architecture["_kw_requires_import"]:
        if argument not in OP_CLASSES:
            problems.append(
                f"{where}._kw_requires_import names {shown(argument)}, expected only {', '.join(OP_CLASSES)}."
            )
        elif argument not in kwargs:
            problems.append(f"{where}._kw_requires_import names {shown(argument)}, expected an entry of arch_kwargs.")
        elif kwargs[argument] is not None and op_class(argument, kwargs[argument]) is None:
            listed = ", ".join(f"torch.nn.{cls.__name__}" for cls in OP_CLASSES[argument])
            problems.append(
                f"{where}.arch_kwargs.{argument} is {shown(kwargs[argument])}, expected null or one of {listed}."
            )
    problems += filter(None, (_ops_kwargs_problem(kwargs, a, f"{where}.arch_kwargs") for a in OP_KWARGS.values()))
    return problems


def resolved_kwargs(architecture: dict) -> dict:
    """The arch kwargs of a block without problems, each name nnU-Net would import replaced by its class."""
    kwargs = dict(architecture["arch_kwargs"])
    for argument in architecture["_kw_requires_import"]:
        if kwargs[argument] is not None:
            kwargs[argument] = op_class(argument, kwargs[argument])
    return kwargs
