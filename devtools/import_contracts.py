"""An import-linter contract type: modules that import only the standard library.

``.importlinter`` declares that ``celery_ecs``, ``celery_ecs.settings``, ``celery_ecs.names`` and
``celery_ecs.schedule`` import nothing but the
standard library and each other: the Pulumi program imports them in a virtualenv that holds no
Celery, kombu or redis (``requirements.txt``). A forbidden contract would have to list the
packages to keep out, and miss the next one; this one allows only what
``sys.stdlib_module_names`` names, so any other package is refused, known or not.
"""

from __future__ import annotations

import sys
from typing import Any

import grimp
from importlinter import Contract, ContractCheck, fields, output


class StandardLibraryOnlyContract(Contract):
    """Each of ``modules`` imports only standard library modules and ``modules`` themselves.

    Configuration options:
        - modules: the modules to check (each as a module, not a package).

    Needs ``include_external_packages = True`` in the ``[importlinter]`` section, so that the
    graph holds the imported packages outside the root packages (squashed to their top level).
    """

    type_name = "standard_library_only"

    modules = fields.ListField(subfield=fields.ModuleField())

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        checked = {module.name for module in self._modules()}
        missing = sorted(checked - graph.modules)
        if missing:
            raise ValueError(f"modules not in the import graph: {', '.join(missing)}")
        illegal: list[dict[str, Any]] = []
        for importer in sorted(checked):
            for imported in sorted(graph.find_modules_directly_imported_by(importer)):
                top_level = imported.split(".", 1)[0]
                if imported in checked or top_level in sys.stdlib_module_names:
                    continue
                details = graph.get_import_details(importer=importer, imported=imported)
                illegal.append(
                    {
                        "importer": importer,
                        "imported": imported,
                        "line_numbers": [detail["line_number"] for detail in details],
                    }
                )
        return ContractCheck(kept=not illegal, metadata={"illegal": illegal})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for link in check.metadata["illegal"]:
            lines = ", ".join(f"l.{number}" for number in link["line_numbers"])
            output.print_error(
                f"{link['importer']} imports {link['imported']} ({lines}), which is neither in "
                "the standard library nor one of this contract's modules."
            )
            output.new_line()

    def _modules(self) -> list[Any]:
        modules: list[Any] = self.modules  # type: ignore[assignment]
        return modules
