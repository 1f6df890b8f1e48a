"""docs/architecture.md's folder table says which folder may import which; every import in the code (parsed with
``ast``, never run, lazy imports inside functions included) keeps to it, so dependencies point one way."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "nnunetv2_vismae"
TABLE_HEADER = "| folder | what lives there | imports of ours |"


def folder_table() -> dict[str, list[str]]:
    """Folder ('io', 'device', 'pretrain', ...) -> the folders it may import, in the table's order."""
    lines = (ROOT / "docs" / "architecture.md").read_text().splitlines()
    start = lines.index(TABLE_HEADER) + 2
    table = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        table[folder_name(cells[0].strip("`"))] = re.findall(r"`(\w+)`", cells[-1])
    return table


def folder_name(path: str) -> str:
    """'nnunetv2_vismae/io/' -> 'io', 'nnunetv2_vismae/device.py' -> 'device', 'pretrain/' -> 'pretrain'."""
    return Path(path.removeprefix(f"{PACKAGE}/")).stem


def module_name(file: Path) -> str:
    parts = file.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(file: Path):
    """(line, module) of every import in ``file``; relative imports resolved, ``from a import b``
    given as ``a.b`` (b may be a module)."""
    package = module_name(file) if file.name == "__init__.py" else module_name(file).rpartition(".")[0]
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            yield from ((node.lineno, f"{base}.{alias.name}") for alias in node.names)


def folder_of(module: str) -> str | None:
    """The table's folder a module belongs to; None for other libraries and the package root."""
    top, _, rest = module.partition(".")
    if top == "pretrain":
        return "pretrain"
    return rest.split(".")[0] if top == PACKAGE and rest else None


def files_of(folder: str) -> list[Path]:
    if folder == "pretrain":
        return sorted((ROOT / "pretrain").rglob("*.py"))
    path = ROOT / PACKAGE / folder
    return sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]


def test_every_folder_has_a_row():
    on_disk = {
        p.stem
        for p in (ROOT / PACKAGE).iterdir()
        if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.name != "__init__.py")
    }
    assert set(folder_table()) == on_disk | {"pretrain"}


def test_folders_import_only_folders_above_them():
    """The table's order is the layering: allowing an import from below would allow a cycle."""
    table = folder_table()
    order = list(table)
    for folder, allowed in table.items():
        assert all(order.index(other) < order.index(folder) for other in allowed), (folder, allowed)


def test_every_import_keeps_to_the_table():
    table = folder_table()
    wrong = []
    for folder, allowed in table.items():
        for file in files_of(folder):
            for line, module in imported_modules(file):
                other = folder_of(module)
                if other not in (None, folder, *allowed):
                    wrong.append(f"{file.relative_to(ROOT)}:{line} imports {module} ({folder} -> {other})")
    assert not wrong, "imports against the folder table of docs/architecture.md:\n" + "\n".join(wrong)


def test_no_module_imports_itself_through_others():
    """Module-level cycles in the package and in ``pretrain`` (as classification's benchmark.py <-> cli.py and
    pretrain's cli.py <-> train.py once were), lazy imports included."""
    files = {module_name(f): f for folder in (PACKAGE, "pretrain") for f in (ROOT / folder).rglob("*.py")}

    def target(module: str) -> str | None:  # ``a.b.c`` may name a module, or something inside ``a.b``
        while module and module not in files:
            module = module.rpartition(".")[0]
        return module or None

    edges = {m: {target(i) for _, i in imported_modules(f)} - {None, m} for m, f in files.items()}
    done, path = set(), []

    def visit(module):
        if module in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(module) :] + [module]))
        if module not in done:
            path.append(module)
            for other in sorted(edges[module]):
                visit(other)
            path.pop()
            done.add(module)

    for module in sorted(files):
        visit(module)
