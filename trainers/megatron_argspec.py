"""Megatron-LM's command-line arguments as data, and a checker for ``pretrain_gpt.py`` argv.

``record`` imports a Megatron-LM checkout's ``megatron/training/arguments.py`` and builds the
real parser with ``add_megatron_arguments`` (the function ``parse_args`` calls, core_v0.16.1
``megatron/training/arguments.py:48-87``). Many option groups there are generated from
dataclasses (``ArgumentGroupFactory``, ``megatron/training/argument_utils.py``), so reading the
file's AST would miss them: the parser has to be built. The result is written as JSON
(``trainers/data/megatron_core_v0.16.1_args.json``) and read back by ``load``; ``check_argv``
then validates a rendered command line on any machine, without Megatron or a GPU.

Importing ``megatron.training`` on a CPU-only machine needs a few modules stubbed (empty
modules whose attributes are dummy classes); none of them defines or is used by an argument:

- ``six``, ``regex``: imported by the GPT-2/BERT tokenizers (``megatron/training/tokenizer``)
  at import time; stubbed only when not installed.
- ``megatron.core.transformer.custom_layers.batch_invariant_kernels``: Triton kernels, imported
  by ``megatron/training/initialize.py``; Triton does not exist on a CPU machine.
- ``megatron.rl``: reinforcement-learning utilities (need pydantic), imported unconditionally by
  ``megatron/training/training.py:67``.

``pretrain_gpt.py`` adds ModelOpt's arguments only when ``nvidia-modelopt`` is installed
(core_v0.16.1 ``pretrain_gpt.py:348``); those are not recorded.

Commands::

    python -m trainers.megatron_argspec record /path/to/Megatron-LM OUT.json
    python -m trainers.megatron_argspec check -- --num-layers 9 ...   # recorded spec
    python -m trainers.megatron_argspec validate /path/to/Megatron-LM -- --num-layers 9 ...

``validate`` runs Megatron's own ``parse_args()`` and ``validate_args()`` on CPU (see
``validate``'s docstring for what that can and cannot show).
"""

from __future__ import annotations

import argparse
import enum
import importlib.abc
import importlib.machinery
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import traceback
import types
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

DATA_FILE = "megatron_core_v0.16.1_args.json"

# Modules stubbed so that megatron.training imports on a CPU machine (see the module docstring).
ALWAYS_STUBBED = ("megatron.core.transformer.custom_layers.batch_invariant_kernels",
                  "megatron.rl")
STUBBED_IF_MISSING = ("six", "regex")

# argparse action classes -> the kind recorded (and how many words each takes).
_ACTION_KINDS = {
    "_StoreAction": "store", "_StoreTrueAction": "store_true",
    "_StoreFalseAction": "store_false", "_StoreConstAction": "store_const",
    "_AppendAction": "append", "_AppendConstAction": "append_const", "_CountAction": "count",
    "BooleanOptionalAction": "boolean_optional", "_HelpAction": "help",
    "_VersionAction": "version", "_ExtendAction": "extend",
}
SWITCH_KINDS = {"store_true", "store_false", "store_const", "append_const", "count", "help",
                "version", "boolean_optional"}
# Megatron's custom ``type=`` functions that accept an int or a list expression
# (core_v0.16.1 megatron/training/arguments.py:198-279).
PATTERN_TYPES = {"moe_freq_type", "no_rope_freq_type", "la_freq_type"}


# ---------------------------------------------------------------------------------------------
# Importing Megatron-LM's arguments module
# ---------------------------------------------------------------------------------------------

class _StubModule(types.ModuleType):
    """A module whose every public attribute is a fresh do-nothing class."""

    __path__: list[str] = []

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (), {"__init__": lambda self, *a, **k: None})


class _Stubber(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Meta-path finder serving ``_StubModule`` for the named modules and their children."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = tuple(names)

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if any(name == n or name.startswith(n + ".") for n in self.names):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return _StubModule(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def _import_arguments(megatron_path: Path) -> tuple[types.ModuleType, list[str]]:
    """Import ``megatron.training.arguments`` from the checkout; return it and what was stubbed."""
    if not (megatron_path / "megatron" / "training" / "arguments.py").is_file():
        raise FileNotFoundError(f"{megatron_path}: no megatron/training/arguments.py")
    if any(k == "megatron" or k.startswith("megatron.") for k in sys.modules):
        raise RuntimeError("megatron is already imported; run record/validate in a fresh process")
    stubbed = list(ALWAYS_STUBBED) + [m for m in STUBBED_IF_MISSING
                                      if importlib.util.find_spec(m) is None]
    sys.meta_path.insert(0, _Stubber(stubbed))
    # The checkout first, so that its megatron.core wins over a pip-installed megatron-core.
    sys.path.insert(0, str(megatron_path))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Transformer Engine and Apex are not installed" etc.
        import megatron.training.arguments as arguments  # type: ignore[import-not-found]
    if not str(Path(arguments.__file__).resolve()).startswith(str(megatron_path.resolve())):
        raise RuntimeError(f"imported {arguments.__file__}, not the checkout {megatron_path}")
    return arguments, stubbed


def _git(megatron_path: Path, *args: str) -> str | None:
    try:
        return subprocess.run(["git", "-C", str(megatron_path), *args], capture_output=True,
                              text=True, check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


# ---------------------------------------------------------------------------------------------
# Recording
# ---------------------------------------------------------------------------------------------

def _jsonable(value: Any) -> Any:
    """A JSON form of an argparse default/const/choice (enums by name, callables by name)."""
    if isinstance(value, enum.Enum):  # before int: signal.Signals is an IntEnum
        return value.name
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if callable(value):
        module = getattr(value, "__module__", "?")
        return f"<callable {module}.{getattr(value, '__qualname__', value)}>"
    return repr(value)


def _type_name(fn: Any, choices: Any = None) -> str | None:
    """``int``/``float``/``str``/...; ``enum_by_name:<enum>`` for options generated from an Enum
    field (``ArgumentGroupFactory._get_enum_kwargs``, argument_utils.py:85-94: the value is a
    member's name, ``Enum[value]``); ``custom:<module>.<name>`` for other functions."""
    if fn is None:
        return None
    members = list(choices or [])
    if members and all(isinstance(c, enum.Enum) for c in members):
        cls = type(members[0])
        return f"enum_by_name:{cls.__module__}.{cls.__qualname__}"
    if fn in (int, float, str, bool):
        return fn.__name__
    if isinstance(fn, type) and issubclass(fn, enum.Enum):
        return f"enum:{fn.__module__}.{fn.__qualname__}"
    return f"custom:{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _enum_members(fn: Any, choices: Any = None) -> list[str] | None:
    if isinstance(fn, type) and issubclass(fn, enum.Enum):
        return [m.name for m in fn]
    members = list(choices or [])
    if members and all(isinstance(c, enum.Enum) for c in members):
        return [m.name for m in members]
    return None


def describe_parser(parser: argparse.ArgumentParser) -> list[dict[str, Any]]:
    """One record per option of ``parser``: option strings, dest, kind, type, nargs, choices,
    default, const, and its argument group's title."""
    group_of = {id(a): g.title for g in parser._action_groups for a in g._group_actions}
    out = []
    for action in parser._actions:
        kind = _ACTION_KINDS.get(type(action).__name__, type(action).__name__)
        if kind == "help":
            continue
        out.append({
            "option_strings": list(action.option_strings), "dest": action.dest,
            "kind": kind, "type": _type_name(action.type, action.choices),
            "enum_members": _enum_members(action.type, action.choices),
            "nargs": action.nargs, "choices": _jsonable(action.choices)
            if action.choices is not None else None,
            "default": _jsonable(action.default), "const": _jsonable(action.const),
            "required": bool(action.required), "group": group_of.get(id(action)),
        })
    return out


def record(megatron_path: str | Path) -> dict[str, Any]:
    """Build the checkout's real argument parser and describe every option (see module doc)."""
    path = Path(megatron_path)
    arguments, stubbed = _import_arguments(path)
    parser = argparse.ArgumentParser(description="Megatron-LM Arguments", allow_abbrev=False)
    arguments.add_megatron_arguments(parser)  # as parse_args does (arguments.py:87-93)
    import torch
    return {
        "source": {
            "repository": "NVIDIA/Megatron-LM",
            "commit": _git(path, "rev-parse", "HEAD"),
            "describe": _git(path, "describe", "--tags", "--always"),
            "file": "megatron/training/arguments.py",
            "builder": "add_megatron_arguments(argparse.ArgumentParser(allow_abbrev=False))",
            "method": "import (not AST): the parser built by the checkout's own code",
            "stubbed_modules": stubbed,
            "not_recorded": "ModelOpt arguments (pretrain_gpt.py adds them only when "
                            "nvidia-modelopt is installed)",
            "command": f"python -m trainers.megatron_argspec record {path} OUT.json",
            "python": sys.version.split()[0], "torch": torch.__version__,
        },
        "allow_abbrev": False,
        "options": describe_parser(parser),
    }


def load(path: str | Path | None = None) -> dict[str, Any]:
    """The recorded spec: ``path`` or the packaged ``trainers/data/`` file."""
    if path is not None:
        return json.loads(Path(path).read_text())
    return json.loads(resources.files("trainers").joinpath("data", DATA_FILE).read_text())


# ---------------------------------------------------------------------------------------------
# Checking an argv against the recorded spec
# ---------------------------------------------------------------------------------------------

_PATTERN_CHARS = re.compile(r"[^,\d\[\]\(\)\+\*]")  # what Megatron's _eval_pattern allows


def _pattern_value(text: str) -> int | list:
    """Parse an int-or-list-expression value the way Megatron's ``moe_freq_type`` does
    (arguments.py:231-254): ``"N"`` -> int, ``"([0]*1+[1]*8)"`` -> a list."""
    if "[" not in text:
        return int(text)
    if _PATTERN_CHARS.search(text):  # arguments.py:202-204 refuses anything else
        raise ValueError(f"invalid pattern {text!r}")
    # Only digits, brackets, commas, + and * remain: no names, so eval cannot reach anything.
    value = eval(text, {"__builtins__": {}}, {})  # noqa: S307
    if not isinstance(value, list):
        raise ValueError(f"{text!r} is not a list expression")
    return value


def _tuple_value(text: str) -> tuple[int, ...]:
    """``tuple_type`` (arguments.py:281-291): "1,2,3" or "(1,2,3)" -> ints."""
    return tuple(int(i) for i in text.strip("()").split(","))


def _convert(option: dict[str, Any], text: str) -> str | None:
    """None if ``text`` converts under the option's recorded type and choices; else why not."""
    kind = option["type"]
    try:
        if kind == "int":
            value: Any = int(text)
        elif kind == "float":
            value = float(text)
        elif kind in (None, "str"):
            value = text
        elif kind == "bool":
            value = bool(text)  # argparse's type=bool: any word is accepted (even "False")
        elif kind.startswith(("enum:", "enum_by_name:")):
            if text not in option["enum_members"]:
                return f"{text!r} is not one of {option['enum_members']}"
            value = text
        elif kind.rsplit(".", 1)[-1] in PATTERN_TYPES:
            value = _pattern_value(text)
        elif kind.rsplit(".", 1)[-1] == "tuple_type":
            value = _tuple_value(text)
        else:
            return None  # another custom converter: the word exists; its value is not checked
    except (ValueError, TypeError, SyntaxError) as exc:
        return f"{text!r} does not parse as {kind.rsplit('.', 1)[-1] if kind else 'str'} ({exc})"
    choices = option["choices"]
    if choices is not None and _jsonable(value) not in choices:
        return f"{text!r} is not one of {choices}"
    return None


# argparse (Python 3.11) takes "-3" and "-0.5" as values because Megatron's parser has no option
# that looks like a negative number; "-1e-8" is not such a number to it (its matcher has no
# exponent), so it is read as an option and the flag before it misses its value: write
# "--adam-eps=-1e-8".
_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")


def _looks_like_option(word: str) -> bool:
    return word.startswith("-") and len(word) > 1 and not _NEGATIVE_NUMBER.match(word)


def _arity(option: dict[str, Any]) -> tuple[int, float]:
    """(fewest, most) value words the option takes."""
    if option["kind"] in SWITCH_KINDS:
        return 0, 0
    nargs = option["nargs"]
    if nargs is None:
        return 1, 1
    if nargs == "?":
        return 0, 1
    if nargs == "*":
        return 0, math.inf
    if nargs == "+":
        return 1, math.inf
    return int(nargs), int(nargs)


def options_by_flag(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every option string of the spec mapped to its record."""
    return {s: o for o in spec["options"] for s in o["option_strings"]}


def check_argv(argv: list[str], spec: dict[str, Any] | None = None) -> list[str]:
    """Problems with ``argv`` (pretrain_gpt.py's arguments, no program name) under the recorded
    spec: unknown flags, values given to switches, missing values, values that do not parse
    under the option's type or are not among its choices, stray words. Empty when valid."""
    flags = options_by_flag(spec or load())
    problems: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        i += 1
        if not _looks_like_option(word):
            problems.append(f"unexpected word {word!r} (no option takes it)")
            continue
        flag, eq, inline = word.partition("=")
        option = flags.get(flag)
        if option is None:
            problems.append(f"unknown flag {flag}")
            while i < len(argv) and not _looks_like_option(argv[i]):
                i += 1  # its values, probably: one problem per unknown flag
            continue
        least, most = _arity(option)
        if eq:
            values = [inline]
            if most == 0:
                problems.append(f"{flag} is a switch ({option['kind']}): it takes no value")
                continue
        else:
            values = []
            while i < len(argv) and len(values) < most and not _looks_like_option(argv[i]):
                values.append(argv[i])
                i += 1
        if len(values) < least:
            problems.append(f"{flag}: expected {'a value' if least == 1 else f'{least} values'}"
                            f"{' or more' if most == math.inf else ''}, got none")
            continue
        problems += [f"{flag}: {why}" for v in values if (why := _convert(option, v))]
        if most == 0 and i < len(argv) and not _looks_like_option(argv[i]):
            problems.append(f"{flag} is a switch ({option['kind']}): {argv[i]!r} is not its "
                            "value")
            i += 1
    return problems


# ---------------------------------------------------------------------------------------------
# Megatron's own parse_args() + validate_args()
# ---------------------------------------------------------------------------------------------

def validate(megatron_path: str | Path, argv: list[str], world_size: int = 8,
             device_capability: tuple[int, int] = (9, 0)) -> dict[str, Any]:
    """Run the checkout's ``parse_args()`` then ``validate_args()`` on ``argv`` on CPU, as rank 0
    of ``world_size`` (env RANK/WORLD_SIZE, read at arguments.py:109-110). Returns what each
    said. Runs in this process: call it once, in a fresh interpreter (the CLI does).

    What this shows: every flag is accepted by Megatron's own parser, the values convert, and
    the cross-flag rules of ``validate_args`` hold (batch divisibility, parallel sizes, MoE and
    schedule constraints). What it cannot: anything decided after arguments (tokenizer files,
    data paths, CUDA/TE kernels, checkpoint loading).

    Without a GPU, ``torch.cuda.get_device_capability`` answers ``device_capability`` (default
    9.0, an H100): ``validate_args`` asks it for ``--moe-grouped-gemm`` (arguments.py:852-854)."""
    path = Path(megatron_path)
    arguments, stubbed = _import_arguments(path)
    os.environ.update(RANK="0", WORLD_SIZE=str(world_size), LOCAL_RANK="0")
    report: dict[str, Any] = {"stubbed_modules": stubbed, "world_size": world_size,
                              "commit": _git(path, "rev-parse", "HEAD")}
    import torch
    if not torch.cuda.is_available():
        torch.cuda.get_device_capability = lambda *a, **k: device_capability
        report["assumed_device_capability"] = list(device_capability)
    saved = sys.argv
    sys.argv = ["pretrain_gpt.py", *argv]
    try:
        try:
            args = arguments.parse_args()
        except SystemExit as exc:  # argparse's own error (printed to stderr)
            report.update(parse_args=f"argparse exited {exc.code}", validate_args=None)
            return report
        report["parse_args"] = "ok"
        # pretrain_gpt.py's args_defaults (core_v0.16.1 pretrain_gpt.py:347), as
        # initialize_megatron passes them on to validate_args.
        try:
            arguments.validate_args(args, {"tokenizer_type": "GPT2BPETokenizer"})
            report["validate_args"] = "ok"
        except (AssertionError, ValueError, RuntimeError, TypeError, KeyError,
                AttributeError) as exc:
            report["validate_args"] = f"{type(exc).__name__}: {exc}"
            frames = [f for f in traceback.extract_tb(exc.__traceback__)
                      if str(path.resolve()) in str(Path(f.filename).resolve())]
            if frames:  # where in the checkout it failed (the last frame inside it)
                where = Path(frames[-1].filename).resolve().relative_to(path.resolve())
                report["raised_at"] = f"{where}:{frames[-1].lineno}: {frames[-1].line}"
        report["derived"] = {k: _jsonable(getattr(args, k, None)) for k in (
            "data_parallel_size", "moe_layer_freq", "lr_warmup_iters", "lr_decay_iters",
            "lr_wsd_decay_iters", "eval_interval", "eval_iters", "save_interval", "params_dtype",
            "padded_vocab_size", "num_experts", "expert_model_parallel_size")}
    finally:
        sys.argv = saved
    return report


def main(argv: list[str] | None = None) -> int:
    """``record`` / ``check`` / ``validate`` (see the module docstring); Megatron's argv goes
    after ``--``."""
    words = list(sys.argv[1:] if argv is None else argv)
    rest: list[str] = []
    if "--" in words:
        at = words.index("--")
        words, rest = words[:at], words[at + 1:]
    parser = argparse.ArgumentParser(prog="python -m trainers.megatron_argspec")
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="write the checkout's argument spec as JSON")
    rec.add_argument("megatron_path")
    rec.add_argument("out")
    chk = sub.add_parser("check", help="check the argv after -- against the recorded spec")
    chk.add_argument("--spec", default=None, help="a spec JSON (default: the packaged one)")
    val = sub.add_parser("validate", help="run Megatron's parse_args + validate_args on the "
                                          "argv after --")
    val.add_argument("megatron_path")
    val.add_argument("--world-size", type=int, default=8)
    val.add_argument("--device-capability", default="9.0",
                     help="what torch.cuda.get_device_capability answers without a GPU")
    ns = parser.parse_args(words)
    if ns.command == "record":
        spec = record(ns.megatron_path)
        spec["source"]["command"] = (f"python -m trainers.megatron_argspec record "
                                     f"{ns.megatron_path} {ns.out}")
        Path(ns.out).write_text(json.dumps(spec, indent=1) + "\n")
        print(f"{len(spec['options'])} options from {spec['source']['commit']} -> {ns.out}")
        return 0
    if ns.command == "check":
        problems = check_argv(rest, load(ns.spec))
        print("\n".join(problems) or "ok")
        return 1 if problems else 0
    major, _, minor = ns.device_capability.partition(".")
    report = validate(ns.megatron_path, rest, ns.world_size, (int(major), int(minor or 0)))
    print(json.dumps(report, indent=1))
    return 0 if report.get("validate_args") == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
