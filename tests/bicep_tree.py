"""A small reader for Bicep files, on top of tree-sitter-bicep (no Bicep CLI needed).

It turns the parts of a Bicep file that the infrastructure checks look at into plain Python:

* string literals -> ``str``; booleans -> ``bool``; numbers -> ``int``; ``null`` -> ``None``;
* objects -> ``dict`` (keys as written, quoted or not); arrays -> ``list``;
* strings with ``${...}`` -> :class:`Interp` (its parts: ``str`` and :class:`Expr`);
* anything else (references, member access, calls, ternaries, ...) -> :class:`Expr`, which keeps
  the source text (whitespace collapsed) and, for calls, the function name and arguments.

Declarations are read into :class:`Param`, :class:`Resource` and :class:`Module`; variables and
outputs into dicts of values. :meth:`BicepFile.resolve` follows variable references and joins
interpolated strings whose parts are all known, so ``'${queueRunsName}${poisonSuffix}'`` reads as
``'export-runs-poison'``.

It is a reader for checks, not an evaluator: what cannot be known without deploying (resource
properties, outputs of other modules, function results) stays an :class:`Expr`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import tree_sitter_bicep
from tree_sitter import Language, Node, Parser


@lru_cache(maxsize=1)
def parser() -> Parser:
    return Parser(Language(tree_sitter_bicep.language()))


# ---------------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expr:
    """An expression the reader does not turn into a Python value."""

    text: str
    kind: str  # the tree-sitter node type: identifier, member_expression, call_expression, ...
    node: Node = field(repr=False, compare=False)
    file: "BicepFile" = field(repr=False, compare=False)

    @property
    def is_identifier(self) -> bool:
        return self.kind == "identifier"

    @property
    def function(self) -> str | None:
        """Name of the called function, for a call expression (``guid``, ``subscriptionResourceId``)."""
        if self.kind != "call_expression":
            return None
        fn = self.node.child_by_field_name("function")
        return _text(self.file, fn) if fn is not None else None

    @property
    def arguments(self) -> list[Any]:
        """Argument values of a call expression."""
        if self.kind != "call_expression":
            raise ValueError(f"{self.text!r} is not a function call")
        args = self.node.child_by_field_name("arguments")
        return [self.file.value(c) for c in _named(args)] if args is not None else []

    @property
    def root_identifier(self) -> str | None:
        """``storageAccount`` for ``storageAccount.properties.primaryEndpoints.blob``."""
        node = self.node
        while node.type == "member_expression":
            node = node.child_by_field_name("object") or _named(node)[0]
        return _text(self.file, node) if node.type == "identifier" else None

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Interp:
    """An interpolated string: its parts in order, literal text (``str``) and ``Expr``."""

    parts: tuple[Any, ...]

    @property
    def template(self) -> str:
        return "".join(p if isinstance(p, str) else "${" + str(p) + "}" for p in self.parts)

    def __str__(self) -> str:
        return self.template


@dataclass
class Param:
    name: str
    type: str
    default: Any  # None when there is none; ``has_default`` tells that from a null default
    has_default: bool
    decorators: dict[str, list[Any]]
    line: int

    @property
    def description(self) -> str | None:
        args = self.decorators.get("description") or self.decorators.get("sys.description")
        return args[0] if args and isinstance(args[0], str) else None


@dataclass
class Resource:
    symbol: str
    type: str  # e.g. Microsoft.Storage/storageAccounts
    api_version: str
    existing: bool
    condition: Expr | None  # the ``if (...)`` condition, if any
    loop_item: str | None  # ``q`` in ``[for q in names: {...}]``
    loop_source: Any  # ``names`` in the same
    body: dict
    line: int
    file: "BicepFile" = field(repr=False)

    def get(self, path: str, default: Any = KeyError) -> Any:
        """The value at a dotted path of the body, e.g. ``properties.siteConfig.ftpsState``."""
        return get_path(self.body, path, default, where=f"{self.file.name}: resource {self.symbol}")

    @property
    def where(self) -> str:
        return f"{self.file.name}:{self.line} resource {self.symbol} '{self.type}'"


@dataclass
class Module:
    symbol: str
    path: str  # as written, relative to the declaring file
    body: dict
    line: int
    file: "BicepFile" = field(repr=False)

    @property
    def target(self) -> Path:
        return (self.file.path.parent / self.path).resolve()

    @property
    def params(self) -> dict:
        return self.body.get("params", {})

    @property
    def where(self) -> str:
        return f"{self.file.name}:{self.line} module {self.symbol} '{self.path}'"


def get_path(obj: Any, path: str, default: Any = KeyError, where: str = "") -> Any:
    current = obj
    walked = []
    for key in path.split("."):
        walked.append(key)
        if not isinstance(current, dict) or key not in current:
            if default is KeyError:
                raise KeyError(f"{where}: no {'.'.join(walked)}")
            return default
        current = current[key]
    return current


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntaxProblem:
    line: int  # 1-based
    column: int  # 1-based
    kind: str  # ERROR or MISSING <what>
    text: str


class BicepFile:
    def __init__(self, path: Path | str, root: Path | None = None):
        self.path = Path(path).resolve()
        self.source = self.path.read_bytes()
        self.tree = parser().parse(self.source)
        self.root = self.tree.root_node
        self._root_dir = root
        self.params: dict[str, Param] = {}
        self.variables: dict[str, Any] = {}
        self.outputs: dict[str, Any] = {}
        self.resources: list[Resource] = []
        self.modules: list[Module] = []
        self.target_scope = "resourceGroup"
        self._read()

    @property
    def name(self) -> str:
        if self._root_dir is not None:
            try:
                return str(self.path.relative_to(self._root_dir))
            except ValueError:
                pass
        return self.path.name

    # -- syntax ------------------------------------------------------------------------------

    def syntax_problems(self) -> list[SyntaxProblem]:
        problems: list[SyntaxProblem] = []

        def walk(node: Node) -> None:
            if node.type == "ERROR" or node.is_missing:
                kind = "ERROR" if node.type == "ERROR" else f"MISSING {node.type}"
                text = _text(self, node).strip().splitlines()[0][:60] if _text(self, node).strip() else ""
                problems.append(SyntaxProblem(node.start_point[0] + 1, node.start_point[1] + 1, kind, text))
                return
            if node.has_error:
                for child in node.children:
                    walk(child)

        walk(self.root)
        return problems

    # -- declarations ------------------------------------------------------------------------

    def _read(self) -> None:
        pending_decorators: dict[str, list[Any]] = {}
        for node in _named(self.root):
            if node.type == "decorators":
                pending_decorators = self._decorators(node)
                continue
            decorators, pending_decorators = pending_decorators, {}
            if node.type == "target_scope_assignment":
                value = self.value(_named(node)[-1])
                self.target_scope = value if isinstance(value, str) else str(value)
            elif node.type == "parameter_declaration":
                self._read_param(node, decorators)
            elif node.type == "variable_declaration":
                name, value_node = _named(node)[0], _named(node)[-1]
                self.variables[_text(self, name)] = self.value(value_node)
            elif node.type == "output_declaration":
                name, value_node = _named(node)[0], _named(node)[-1]
                self.outputs[_text(self, name)] = self.value(value_node)
            elif node.type == "resource_declaration":
                self._read_resource(node)
            elif node.type == "module_declaration":
                self._read_module(node)

    def _decorators(self, node: Node) -> dict[str, list[Any]]:
        found: dict[str, list[Any]] = {}
        for deco in _named(node):
            call = _named(deco)[0] if _named(deco) else None
            if call is None:
                continue
            value = self.value(call)
            if isinstance(value, Expr) and value.function:
                found[value.function] = value.arguments
            else:
                found[_text(self, call)] = []
        return found

    def _read_param(self, node: Node, decorators: dict[str, list[Any]]) -> None:
        children = _named(node)
        name = _text(self, children[0])
        type_text = _text(self, children[1]) if len(children) > 1 else ""
        has_default = any(c.type == "=" for c in node.children)
        default = self.value(children[-1]) if has_default else None
        self.params[name] = Param(name, type_text, default, has_default, decorators, node.start_point[0] + 1)

    def _read_resource(self, node: Node) -> None:
        children = _named(node)
        symbol = _text(self, children[0])
        type_string = self.value(children[1])
        if not isinstance(type_string, str):
            raise ValueError(f"{self.name}:{node.start_point[0] + 1}: resource type is not a plain string")
        rtype, _, api = type_string.partition("@")
        existing = any(c.type == "existing" for c in node.children)
        value_node = children[-1]
        condition = None
        loop_item = loop_source = None
        if value_node.type == "if_statement":
            inner = _named(value_node)
            condition = self.value(inner[0])
            value_node = inner[-1]
        if value_node.type == "for_statement":
            loop_item = _text(self, value_node.child_by_field_name("initializer") or _named(value_node)[0])
            inner = _named(value_node)
            loop_source = self.value(inner[1])
            value_node = value_node.child_by_field_name("body") or inner[-1]
            if value_node.type == "if_statement":  # [for x in y: if (c) {...}]
                inner = _named(value_node)
                condition = self.value(inner[0])
                value_node = inner[-1]
        body = self.value(value_node)
        if not isinstance(body, dict):
            raise ValueError(f"{self.name}:{node.start_point[0] + 1}: resource {symbol} body is not an object")
        self.resources.append(
            Resource(symbol, rtype, api, existing, condition, loop_item, loop_source, body, node.start_point[0] + 1, self)
        )

    def _read_module(self, node: Node) -> None:
        children = _named(node)
        symbol = _text(self, children[0])
        path = self.value(children[1])
        value_node = children[-1]
        while value_node.type in ("if_statement", "for_statement"):
            value_node = value_node.child_by_field_name("body") or _named(value_node)[-1]
        body = self.value(value_node)
        self.modules.append(Module(symbol, path, body if isinstance(body, dict) else {}, node.start_point[0] + 1, self))

    # -- queries -----------------------------------------------------------------------------

    def resources_of_type(self, rtype: str, include_existing: bool = False) -> list[Resource]:
        return [
            r for r in self.resources if r.type.lower() == rtype.lower() and (include_existing or not r.existing)
        ]

    def resource(self, symbol: str) -> Resource:
        for r in self.resources:
            if r.symbol == symbol:
                return r
        raise KeyError(f"{self.name}: no resource named {symbol}")

    def module(self, symbol: str) -> Module:
        for m in self.modules:
            if m.symbol == symbol:
                return m
        raise KeyError(f"{self.name}: no module named {symbol}")

    def text_without_comments(self) -> str:
        """The source with comments blanked out (for searches that must ignore comments)."""
        data = bytearray(self.source)

        def walk(node: Node) -> None:
            if node.type == "comment":
                data[node.start_byte : node.end_byte] = b" " * (node.end_byte - node.start_byte)
                return
            for child in node.children:
                walk(child)

        walk(self.root)
        return data.decode("utf-8")

    # -- values ------------------------------------------------------------------------------

    def value(self, node: Node) -> Any:
        t = node.type
        if t == "string":
            return self._string(node)
        if t == "boolean":
            return _text(self, node) == "true"
        if t == "number":
            return int(_text(self, node))
        if t == "null":
            return None
        if t == "object":
            result: dict = {}
            for prop in _named(node):
                if prop.type != "object_property":
                    continue  # spread, comments
                key_node, value_node = _named(prop)[0], _named(prop)[-1]
                key = self.value(key_node) if key_node.type == "string" else _text(self, key_node)
                result[key if isinstance(key, str) else str(key)] = self.value(value_node)
            return result
        if t == "array":
            return [self.value(c) for c in _named(node)]
        if t == "parenthesized_expression" and len(_named(node)) == 1:
            return self.value(_named(node)[0])
        return Expr(" ".join(_text(self, node).split()), t, node, self)

    def _string(self, node: Node) -> Any:
        raw = self.source[node.start_byte : node.end_byte]
        if raw.startswith(b"'''"):
            return raw[3:-3].decode("utf-8")  # multi-line strings have no escapes nor interpolation
        parts: list[Any] = []
        pos = node.start_byte + 1
        for child in node.children:
            if child.type != "interpolation":
                continue
            parts.append(_unescape(self.source[pos : child.start_byte].decode("utf-8")))
            inner = _named(child)
            parts.append(self.value(inner[0]) if inner else "")
            pos = child.end_byte
        parts.append(_unescape(self.source[pos : node.end_byte - 1].decode("utf-8")))
        parts = [p for p in parts if p != ""]
        if all(isinstance(p, str) for p in parts):
            return "".join(parts)
        return Interp(tuple(parts))

    def resolve(self, value: Any, _depth: int = 0) -> Any:
        """Follow variable references and join interpolations whose parts are all known.

        Parameters are inputs and stay ``Expr`` (read ``params[name].default`` explicitly).
        """
        if _depth > 20:
            return value
        if isinstance(value, Expr) and value.is_identifier and value.text in self.variables:
            return self.resolve(self.variables[value.text], _depth + 1)
        if isinstance(value, Interp):
            parts = [self.resolve(p, _depth + 1) for p in value.parts]
            if all(isinstance(p, str) for p in parts):
                return "".join(parts)
            return Interp(tuple(parts))
        if isinstance(value, list):
            return [self.resolve(v, _depth + 1) for v in value]
        if isinstance(value, dict):
            return {k: self.resolve(v, _depth + 1) for k, v in value.items()}
        return value


_ESCAPES = {"\\": "\\", "'": "'", "n": "\n", "r": "\r", "t": "\t", "$": "$"}


def _unescape(text: str) -> str:
    def repl(m: re.Match) -> str:
        if m.group(1):
            return chr(int(m.group(1), 16))
        return _ESCAPES.get(m.group(2), m.group(0))

    return re.sub(r"\\(?:u\{([0-9a-fA-F]+)\}|(.))", repl, text)


def _named(node: Node | None) -> list[Node]:
    if node is None:
        return []
    return [c for c in node.named_children if c.type != "comment"]


def _text(file: BicepFile, node: Node) -> str:
    return file.source[node.start_byte : node.end_byte].decode("utf-8")


# ---------------------------------------------------------------------------------------------
# A set of files
# ---------------------------------------------------------------------------------------------


class BicepProject:
    """All .bicep files under a folder, parsed once."""

    def __init__(self, folder: Path | str):
        self.folder = Path(folder).resolve()
        self.files = {p.resolve(): BicepFile(p, root=self.folder.parent) for p in sorted(self.folder.rglob("*.bicep"))}

    def __iter__(self) -> Iterator[BicepFile]:
        return iter(self.files.values())

    def file(self, relative: str) -> BicepFile:
        path = (self.folder / relative).resolve()
        if path not in self.files:
            raise KeyError(f"no Bicep file {relative} under {self.folder}")
        return self.files[path]

    def resources_of_type(self, rtype: str, include_existing: bool = False) -> list[Resource]:
        return [r for f in self for r in f.resources_of_type(rtype, include_existing)]

    def modules_of(self, target: BicepFile) -> list[Module]:
        """Module declarations (in any file) that deploy ``target``."""
        return [m for f in self for m in f.modules if m.target == target.path]
