"""A griffe extension for the API reference: every public function and class whose docstring
has no `Args:` section gets one from its signature, so mkdocstrings renders a parameter table
(name, type, default, description) for each. The description of a parameter is the first
sentence of the docstring that names it (`name` or `name=`), else a pointer to the text.

The library's docstrings say what and why in prose (short, by design); this keeps them so and
still gives the reference a table per builder and class. Loaded by mkdocs.yml."""

from __future__ import annotations

import re

import griffe

SECTION = re.compile(r"^\s*(Args|Arguments|Parameters|Params):\s*$", re.M)
SENTENCE = re.compile(r"(?<=[.;:!?)])\s+(?=[A-Z`(\"'])")


def _describe(name: str, text: str) -> str:
    # Sentences that echo a whole call (several `x=`) describe no single parameter.
    sentences = [s for s in SENTENCE.split(" ".join(text.split())) if s.count("=") < 3]
    for mentions in ((f"`{name}`",), (f"`{name}=", f"{name}=")):
        for sentence in sentences:
            if any(m in sentence for m in mentions):
                return sentence
    return "See the description above."


def _args_section(parameters, text: str) -> str:
    lines = []
    for p in parameters:
        if p.name in ("self", "cls"):
            continue
        stars = "**" if p.kind is griffe.ParameterKind.var_keyword else \
            "*" if p.kind is griffe.ParameterKind.var_positional else ""
        lines.append(f"    {stars}{p.name}: {_describe(p.name, text)}")
    return "\n\nArgs:\n" + "\n".join(lines) if lines else ""


def _add(obj, parameters, extra_text: str = "") -> None:
    docstring = obj.docstring
    if docstring is None:
        return
    text = docstring.value + "\n" + extra_text
    if SECTION.search(text):
        return
    docstring.value = docstring.value.rstrip() + _args_section(parameters, text)


class SignatureParameters(griffe.Extension):
    """Add `Args:` sections (see the module docstring) once a package is loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        self._walk(pkg, set())

    def _walk(self, obj, seen: set) -> None:
        for member in list(obj.members.values()):
            if member.is_alias or member.name.startswith("_") or id(member) in seen:
                continue
            seen.add(id(member))
            if member.is_function:
                _add(member, member.parameters)
            elif member.is_class:
                init = member.members.get("__init__")
                if init is not None and not init.is_alias and init.is_function:
                    init_text = init.docstring.value if init.docstring else ""
                    if SECTION.search(init_text):
                        continue
                    _add(member, init.parameters, init_text)
                self._walk(member, seen)
            elif member.is_module:
                self._walk(member, seen)
