"""Sphinx extension: the configuration reference of every built-in component, generated.

The directive ``.. coarsekl-config-reference::`` asks coarsekl's plugin manager (without
outside plugins) for every registered component and writes, per kind, one section per
component: its summary, its docstring, its class-level declarations (units, long name,
block preservation) and a table of its parameters read from the attrs fields of its
factory: name, type, default and, where the docstring's numpydoc ``Parameters`` section
states them, a description and the units (a closing sentence ``Units: pixel.``). Because the
tables are read from the code at build time, they cannot drift from it.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import attrs
from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

# kind -> section title; the order of the sections on the page.
KIND_TITLES = {
    "data": "Data sources",
    "initial": "Initial states",
    "partition": "Partitions",
    "quantity": "Coarse quantities",
    "kernel": "Kernels",
    "projector": "Projectors",
    "metric": "Metrics",
}
# Parameters the runner passes in itself, not read from the config table.
CONTEXT_PARAMETERS = {"partition": {"shape": "the data's shape, passed in by coarsekl"}}
# Class-level declarations of the protocols, shown when a component defines them.
DECLARATIONS = ("long_name", "units", "per_block", "record_before_projection", "block_preserving")
UNITS = re.compile(r"\s*Units: ([^.]+(?:\.\d[^.]*)*)\.\s*$")


def escape_rst(text: str) -> str:
    """Plain docstring text as RST: markup characters escaped, ``literals`` kept."""
    pieces = re.split(r"(``[^`]+``)", text)
    special = re.compile(r"([\\*|_`<>])")
    return "".join(
        piece if piece.startswith("``") else special.sub(r"\\\1", piece) for piece in pieces
    )


def markdown_literals(text: str) -> str:
    """`name` (Markdown, as in component summaries) -> ``name`` (RST)."""
    return re.sub(r"(?<!`)`([^`]+)`(?!`)", r"``\1``", text)


def split_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """The description before a numpydoc ``Parameters`` section, and that section's
    entries as ``{name: description}`` (names joined by commas share one description)."""
    lines = inspect.cleandoc(doc or "").splitlines()
    for index in range(len(lines) - 1):
        if lines[index].strip() == "Parameters" and set(lines[index + 1].strip()) == {"-"}:
            break
    else:
        return "\n".join(lines).strip(), {}
    description = "\n".join(lines[:index]).strip()
    entries: dict[str, list[str]] = {}
    current: list[str] = []
    section = lines[index + 2 :]
    for position, line in enumerate(section):
        following = section[position + 1] if position + 1 < len(section) else ""
        if following.strip() and set(following.strip()) == {"-"}:
            break  # the title of the next numpydoc section
        if line and not line[0].isspace():
            current = []
            for name in line.split(":")[0].split(","):
                entries[name.strip()] = current
        elif line.strip():
            current.append(line.strip())
    return description, {name: " ".join(words) for name, words in entries.items()}


def type_text(field: attrs.Attribute) -> str:
    annotation = field.type
    if annotation is None:
        return ""
    text = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
    return "number or schedule" if text == "Schedule" else text


def default_text(default: Any) -> str:
    if default is attrs.NOTHING or default is inspect.Parameter.empty:
        return "required"
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        return f"{getattr(default.factory, '__name__', 'factory')}()"
    if hasattr(default, "to_config"):  # a schedule given as the default
        return repr(default.to_config())
    return repr(default)


def parameter_rows(factory: Any, kind: str) -> list[tuple[str, str, str, str, str]]:
    """(name, type, default, units, description) for every parameter of a factory."""
    _, described = split_docstring(factory.__doc__)
    context = CONTEXT_PARAMETERS.get(kind, {})
    rows = []
    if attrs.has(factory):
        parameters = [
            (field.alias or field.name, type_text(field), field.default, field.metadata)
            for field in attrs.fields(factory)
            if field.init
        ]
    else:
        parameters = [
            (name, "" if p.annotation is p.empty else str(p.annotation), p.default, {})
            for name, p in inspect.signature(factory).parameters.items()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    for name, type_, default, metadata in parameters:
        description = described.get(name, "")
        stated = UNITS.search(description)
        if stated:
            description = description[: stated.start()]
        units = metadata.get("units") or (stated.group(1) if stated else "")
        default_shown = context[name] if name in context else default_text(default)
        rows.append((name, type_, default_shown, units, description))
    return rows


def component_lines(kind: str, name: str, registered: Any) -> list[str]:
    component, provider = registered.component, registered.provider
    factory = component.load_factory()
    title = f"``{name}``"
    target = f"{getattr(factory, '__module__', '?')}.{getattr(factory, '__qualname__', '?')}"
    lines = [
        f".. _config-{kind}-{name}:",
        "",
        title,
        "~" * len(title),
        "",
        f"{escape_rst(markdown_literals(component.summary))}",
        "",
        f"Provided by ``{provider.distribution}`` (plugin ``{provider.plugin}``); "
        f"factory ``{target}``.",
        "",
    ]
    description, _ = split_docstring(factory.__doc__)
    if description:
        lines += [escape_rst(description), ""]
    declared = [
        f"``{attribute} = {getattr(factory, attribute)!r}``"
        for attribute in DECLARATIONS
        if hasattr(factory, attribute)
    ]
    if declared:
        lines += ["Declares " + ", ".join(declared) + ".", ""]
    rows = parameter_rows(factory, kind)
    if not rows:
        lines += ["No parameters.", ""]
        return lines
    lines += [
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 14 18 14 10 44",
        "",
        "   * - parameter",
        "     - type",
        "     - default",
        "     - units",
        "     - description",
    ]
    for parameter, type_, default, units, text in rows:
        cells = [f"``{parameter}``", f"``{type_}``" if type_ else "", f"``{default}``"]
        if parameter in CONTEXT_PARAMETERS.get(kind, {}):
            cells[2] = escape_rst(default)
        cells += [escape_rst(units), escape_rst(text)]
        lines.append(f"   * - {cells[0]}")
        lines += [f"     - {cell}" for cell in cells[1:]]
    lines.append("")
    return lines


def reference_lines() -> list[str]:
    from coarsekl.manager import get_plugin_manager, get_registry
    from coarsekl.registry import KINDS

    registry = get_registry(get_plugin_manager(autoload=False))
    lines: list[str] = []
    for kind, title in KIND_TITLES.items():
        table = KINDS[kind][1]
        heading = f"{title} (``[{table}]``)" if kind != "metric" else f"{title} (``[record]``)"
        lines += [heading, "-" * len(heading), ""]
        if kind == "metric":
            lines += ["Metrics are selected by name in ``[record] metrics``.", ""]
        for name in registry.names(kind):
            lines += component_lines(kind, name, registry.lookup(kind, name))
    heading = "Named experiments"
    lines += [heading, "-" * len(heading), ""]
    for name in registry.names("experiment"):
        registered = registry.lookup("experiment", name)
        experiment = registered.component
        what = f"script ``{experiment.script}``" if experiment.script else "a TOML config"
        lines.append(
            f"* ``{name}`` — {escape_rst(markdown_literals(experiment.summary))} "
            f"({what}; ``{registered.provider.distribution}``)"
        )
    lines.append("")
    return lines


class ConfigReference(SphinxDirective):
    """``.. coarsekl-config-reference::`` — every built-in component and its parameters."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        container = nodes.section()
        container.document = self.state.document
        nested_parse_with_titles(
            self.state, StringList(reference_lines(), source="coarsekl-config-reference"), container
        )
        return container.children


def setup(app) -> dict[str, Any]:
    app.add_directive("coarsekl-config-reference", ConfigReference)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
