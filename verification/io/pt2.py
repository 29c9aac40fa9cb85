"""torch.export archives (.pt2) inspected in memory before ``torch.export.load`` ever runs.

A ``.pt2`` is a zip that may hold pickles and code. Reading torch 2.14's loader
(``torch/export/pt2_archive/_package.py``, ``torch/_export/serde/serialize.py``, ``torch/export/_unlift.py``),
these paths run code from the file:

- a weights or tensor-constants config entry with ``"use_pickle": true`` → ``torch.load(weights_only=False)``;
- constants named ``custom_obj_*`` (TorchScript pickler) or ``opaque_obj_*`` (``pickle.loads``);
- ``data/sample_inputs/<model>.pt`` and the legacy ``data/weights|constants/<model>.pt`` go through
  ``deserialize_torch_artifact``, which retries with ``weights_only=False`` when the safe load fails;
- AOTInductor entries (``data/aotinductor/``): compiled shared libraries that get loaded;
- graph node targets resolved by ``getattr`` from ``torch``/``math``/``_operator``: ``torch.os.system`` is a
  valid target, and it runs at the first forward;
- ``sympy.sympify`` (``eval``) on every symbolic ``expr_str``, and ``guards_code`` pasted into Python source
  and ``exec``-ed when the program is unlifted;
- ``range_constraints`` names an unbacked-symbol counter looped up to its number (a hang, not code).

Untrusted archives must avoid all of these; the structural bounds (entry count, sizes against the model
budget, compression ratio, names, tensor sizes declared in the configs) hold whether trusted or not.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator
from typing import Any

from verification.errors import InputTooLargeError, ModelLoadError
from verification.io.archive import ZipLimits, check_entries, entry_name_problem, open_zip, read_entry
from verification.io.safejson import loads_bounded

__all__ = ["MAX_PT2_ENTRIES", "describe_problems", "untrusted_pt2_problems"]

MAX_PT2_ENTRIES = 20_000
_MAX_JSON_BYTES = 256 << 20
_MAX_JSON_DEPTH = 128

_FIXED_ENTRIES = frozenset(
    {"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id"}
)
_NATIVE_DIRS = ("data/aotinductor/", "data/executorch/", "data/mtia", "xl_model_weights/")
_ATEN_DENY = frozenset({"from_file", "save"})  # operators that read or write server files
_SAFE_HOPS = frozenset(
    {
        "wrap_with_set_grad_enabled",
        "wrap_with_autocast",
        "cond",
        "while_loop",
        "map_impl",
        "scan",
        "associative_scan",
        "invoke_subgraph",
        "auto_functionalized",
        "auto_functionalized_v2",
    }
)
# torch/_export/serde/serialize.py _SYM_OPS, plus getitem (multi-output nodes).
_OPERATOR_OK = frozenset(
    {"add", "and_", "eq", "floordiv", "ge", "getitem", "gt", "le", "lshift", "lt", "mod", "mul", "ne"}
    | {"neg", "or_", "pos", "pow", "rshift", "sub", "truediv"}
)
_TORCH_FUNCS_OK = frozenset({"sym_float", "sym_int", "sym_ite", "sym_max", "sym_min", "sym_not", "_sym_sqrt"})
_MATH_OK = frozenset({"trunc", "ceil", "floor", "sqrt"})
# Names sympify may meet in an expression written by torch.export (the deserializer's sympy_functions
# without the power functions, sympy's relations and logic); anything else (``__import__``, ...) is refused.
_SYMPY_NAMES = frozenset(
    {"FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv", "CeilToInt", "FloorToInt"}
    | {"CeilDiv", "LShift", "RShift", "FloatTrueDiv", "IntTrueDiv", "IsNonOverlappingAndDenseIndicator"}
    | {"TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat", "Identity", "Max", "Min"}
    | {"Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not", "Abs", "floor", "ceiling", "oo", "Integer"}
    | {"true", "false", "True", "False"}
)
_SYMBOL = re.compile(r"[a-z]{1,3}\d{1,6}")
_SYMBOL_CALL = re.compile(
    r"Symbol\('([a-z]{1,3}\d{1,6})'(?:\s*,\s*(?:positive|integer|real|nonnegative|finite)\s*=\s*(?:True|False))*\)"
)
_IDENT = re.compile(r"[A-Za-z_]\w*")
_EXPR_CHARS = re.compile(r"[\w\s+\-*/%().,<>=!&|~]*")
_GUARD_INPUT = re.compile(r"L\[(['\"])[A-Za-z_]\w{0,60}\1\]")
_GUARD_NAMES = frozenset({"x", "size", "stride", "storage_offset", "dim", "numel", "and", "or", "not"})


def _target_problem(target: str) -> str | None:
    parts = target.split(".")
    if any(not p.isidentifier() or p.startswith("__") for p in parts) or len(target) > 200:
        return f"the call target {target[:80]!r}"
    if parts[:2] == ["torch", "ops"] and len(parts) in (4, 5):
        namespace, op = parts[2], parts[3]
        if namespace in ("aten", "prims") and op not in _ATEN_DENY:
            return None
        if namespace == "higher_order" and op in _SAFE_HOPS:
            return None
        return f"the operator {target[:80]!r}"
    if len(parts) == 2:
        module, name = parts
        if (
            (module == "_operator" and name in _OPERATOR_OK)
            or (module == "math" and name in _MATH_OK)
            or (module == "torch" and name in _TORCH_FUNCS_OK)
        ):
            return None
    return f"the call target {target[:80]!r}"


def _expr_problem(expr: str) -> str | None:
    bad = f"the symbolic expression {expr[:60]!r} (evaluated with sympy's eval)"
    if len(expr) > 4000:
        return bad
    expr = _SYMBOL_CALL.sub(r"\1", expr)  # Symbol('s31', positive=True, integer=True) → s31
    if "**" in expr or "**" in expr or "__" in expr or not _EXPR_CHARS.fullmatch(expr):
        return bad
    if any(len(d) > 20 for d in re.findall(r"\d+", expr)):
        return bad
    for ident in _IDENT.findall(expr):
        if ident not in _SYMPY_NAMES and not _SYMBOL.fullmatch(ident):
            return bad
    return None


def _guard_problem(guard: object) -> str | None:
    if not isinstance(guard, str) or len(guard) > 2000:
        return f"the guard {str(guard)[:60]!r} (Python source executed when the program is unlifted)"
    bad = f"the guard {guard[:60]!r} (Python source executed when the program is unlifted)"
    rest = _GUARD_INPUT.sub("x", guard)
    if "__" in rest or not re.fullmatch(r"[\w\s().\[\]<>=!+\-*/%,]*", rest):
        return bad
    if any(ident not in _GUARD_NAMES for ident in _IDENT.findall(rest)):
        return bad
    return None


def _walk(doc: Any) -> Iterator[dict[str, Any]]:
    stack = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _graph_problems(doc: Any) -> list[str]:
    if not isinstance(doc, dict):
        return ["a model description that is not a JSON object"]
    problems: list[str] = []
    guards = doc.get("guards_code") or []
    if not isinstance(guards, list):
        problems.append("guard code that is not a list")
    else:
        problems.extend(p for g in guards if (p := _guard_problem(g)))
    ranges = doc.get("range_constraints") or {}
    if isinstance(ranges, dict):
        problems.extend(
            f"the symbol name {k[:40]!r} in range_constraints" for k in ranges if not _SYMBOL.fullmatch(k)
        )
    for node in _walk(doc.get("graph_module")):
        target = node.get("target")
        if isinstance(target, str) and "inputs" in node and (p := _target_problem(target)):
            problems.append(p)
        op = node.get("as_operator")
        if isinstance(op, str) and (p := _target_problem(op)):
            problems.append(p)
        expr = node.get("expr_str")
        if isinstance(expr, str) and (p := _expr_problem(expr)):
            problems.append(p)
        if isinstance(node.get("as_custom_obj"), dict):
            problems.append("a custom (TorchScript-pickled) object")
    return problems


def _itemsize(dtype_code: Any) -> int:
    try:
        from torch._export.serde.schema import ScalarType
        from torch._export.serde.serialize import _SERIALIZE_TO_TORCH_DTYPE

        return int(_SERIALIZE_TO_TORCH_DTYPE[ScalarType(dtype_code)].itemsize)
    except (ImportError, KeyError, ValueError, TypeError, AttributeError):
        return 16  # unknown: assume the widest (complex128)


def _declared_numel(tensor_meta: Any, what: str) -> int:
    sizes = tensor_meta.get("sizes") if isinstance(tensor_meta, dict) else None
    if not isinstance(sizes, list) or len(sizes) > 16:
        raise ModelLoadError(f"{what} declares an invalid tensor shape")
    numel = 1
    for s in sizes:
        n = s.get("as_int") if isinstance(s, dict) else None
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ModelLoadError(f"{what} declares a tensor of non-static or negative size")
        numel *= n
    return numel


class _Archive:
    def __init__(self, zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], root: str, what: str, limit: int):
        self.zf = zf
        self.what = what
        self.limit = limit
        self.entries = {i.filename[len(root) + 1 :]: i for i in infos}

    def read(self, rel: str, cap: int | None = None) -> bytes:
        return read_entry(self.zf, self.entries[rel], cap or self.limit, self.what, ModelLoadError)

    def json(self, rel: str) -> Any:
        return loads_bounded(
            self.read(rel, _MAX_JSON_BYTES),
            f"{self.what} entry {rel!r}",
            error=ModelLoadError,
            max_bytes=_MAX_JSON_BYTES,
            max_depth=_MAX_JSON_DEPTH,
        )


def _payload_problems(arc: _Archive, rel: str, folder: str, budget: list[int]) -> list[str]:
    """Pickled payloads named in a weights/constants config, and the tensor sizes it declares."""
    doc = arc.json(rel)
    config = doc.get("config") if isinstance(doc, dict) else None
    if not isinstance(config, dict):
        raise ModelLoadError(f"{arc.what}: {rel!r} is not a payload config")
    problems: list[str] = []
    for fqn, meta in config.items():
        where = f"{arc.what}: {fqn[:60]!r} in {rel!r}"
        if not isinstance(meta, dict) or not isinstance(meta.get("path_name"), str):
            raise ModelLoadError(f"{where} has no valid path_name")
        path = meta["path_name"]
        if "/" in path or entry_name_problem(path):
            raise ModelLoadError(f"{where} names an unsafe payload path {path[:60]!r}")
        if meta.get("use_pickle"):
            problems.append(f"{fqn[:60]!r} stored as a pickle (use_pickle)")
        elif path.startswith("custom_obj_"):
            problems.append(f"{fqn[:60]!r} stored as a TorchScript-pickled custom object")
        elif path.startswith("opaque_obj_"):
            problems.append(f"{fqn[:60]!r} stored as a pickled Python object")
        elif meta.get("tensor_meta") is not None:
            tensor_meta = meta["tensor_meta"]
            n_bytes = _declared_numel(tensor_meta, where) * _itemsize(tensor_meta.get("dtype"))
            record = arc.entries.get(folder + path)
            if record is not None and record.file_size == 0:  # torch allocates zeros of the declared size
                budget[0] -= n_bytes
            budget[1] -= n_bytes  # every tensor the program will hold, against the decoded limit
            if n_bytes > arc.limit or budget[0] < 0:
                raise InputTooLargeError(
                    f"{where} declares tensors of {n_bytes:,} bytes, above the {arc.limit:,}-byte model limit"
                )
            if budget[1] < 0:
                raise InputTooLargeError(
                    f"{arc.what} declares weights and constants of more than {budget[2]:,} bytes in all, "
                    "above the limit for what one model may hold in memory; raise the limit if you trust "
                    "the file and have the memory, or use a smaller model"
                )
    return problems


def _artifact_problem(arc: _Archive, rel: str) -> str | None:
    """Entries torch reads with ``torch.load(weights_only=True)`` and, if that fails, ``weights_only=False``:
    they must load safely here, so that the unsafe retry never happens."""
    import torch

    blob = arc.read(rel)
    if not blob:
        return None
    bad = f"{rel!r}, which only loads as a full pickle"
    if blob[:4] != b"PK\x03\x04":  # legacy torch.save: could declare storages of any size
        return bad
    inner = open_zip(blob, f"{arc.what} entry {rel!r}", ModelLoadError)
    with inner:
        check_entries(inner, f"{arc.what} entry {rel!r}", ZipLimits(1000, arc.limit, 200), ModelLoadError)
    try:
        obj = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception:  # any failure here means torch would retry with weights_only=False
        return bad
    return None if isinstance(obj, tuple | dict) else bad


def untrusted_pt2_problems(
    data: bytes, filename: str, *, max_bytes: int, trust: bool, max_decoded_bytes: int | None = None
) -> list[str]:
    """Inspect a .pt2 archive in memory. Raises ModelLoadError/InputTooLargeError for a malformed or
    oversized archive (trusted or not): entries beyond ``max_bytes``, or declared weights and constants
    beyond ``max_decoded_bytes`` (default ``max_bytes``) in all; returns what in it would run code (empty:
    safe to load), checked only when ``trust`` is False."""
    what = f"'{filename}'"
    zf = open_zip(data, what, ModelLoadError)
    with zf:
        infos = check_entries(zf, what, ZipLimits(MAX_PT2_ENTRIES, max_bytes, 200), ModelLoadError)
        roots = {i.filename.split("/", 1)[0] for i in infos}
        if len(roots) != 1 or any("/" not in i.filename for i in infos):
            raise ModelLoadError(f"{what} is not a torch.export archive (its entries must share one folder)")
        arc = _Archive(zf, infos, roots.pop(), what, max_bytes)
        problems: list[str] = []
        models = sorted(
            r[len("models/") : -len(".json")]
            for r in arc.entries
            if r.startswith("models/") and r.endswith(".json") and r.count("/") == 1
        )
        known = set(_FIXED_ENTRIES) | {f"models/{m}.json" for m in models}
        for rel in arc.entries:
            if rel.startswith(_NATIVE_DIRS):
                problems.append(f"compiled native code ({rel[:60]!r})")
            elif rel.endswith("/"):
                continue
            elif (
                rel not in known
                and not rel.startswith(("extra/", "data/weights/", "data/constants/"))
                and not (rel.startswith("data/sample_inputs/") and rel[19:-3] in models)
            ):
                problems.append(f"an entry torch.export.save does not write ({rel[:60]!r})")
        decoded = max_bytes if max_decoded_bytes is None else max_decoded_bytes
        budget = [max_bytes, decoded, decoded]  # zero-length records, all tensors, the decoded limit
        for m in models:
            if not trust:
                problems.extend(_graph_problems(arc.json(f"models/{m}.json")))
            for folder, kind in (("data/weights/", "weights"), ("data/constants/", "constants")):
                config = f"{folder}{m}_{kind}_config.json"
                if config in arc.entries:  # declared tensor sizes are bounded, trusted or not
                    problems.extend(_payload_problems(arc, config, folder, budget))
        if trust:
            return []
        if problems:
            return list(dict.fromkeys(problems))
        for m in models:
            for rel in (f"data/sample_inputs/{m}.pt", f"data/weights/{m}.pt", f"data/constants/{m}.pt"):
                if rel in arc.entries and (p := _artifact_problem(arc, rel)):
                    problems.append(p)
        return problems


def describe_problems(problems: list[str]) -> str:
    shown = "; ".join(problems[:3])
    more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
    return shown + more
