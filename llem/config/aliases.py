"""Keys that were renamed, in one table: the old spelling keeps working on the command line and in
`llem.run(...)` / `llem.run_study(...)`, with one warning naming the new key, and a result hashes as
before the rename (llem/study/hashing.py reads the table: the same config_hash either way).

A setting given both ways with different values is refused (exit 2, one line). A YAML file is not
rewritten: there the old key is refused naming the new one (llem.config.overrides.unknown_key).
"""

from __future__ import annotations

import sys
from typing import TextIO

# old key -> new key (meter knobs moved into their meter's node, energy.<meter>.*)
RENAMED: dict[str, str] = {
    "energy.rapl_root": "energy.rapl.root",
    "energy.country_iso_code": "energy.codecarbon.country_iso_code",
    "energy.codecarbon_measure_power_s": "energy.codecarbon.measure_power_s",
}


def renamed(key: str) -> str | None:
    """`'energy.rapl_root' is now energy.rapl.root`, or None for a key that was not renamed."""
    return f"'{key}' is now {RENAMED[key]}" if key in RENAMED else None


def _split(arg: str) -> tuple[str, str, str]:
    """(prefix, key, rest) of an override: `+`, `++` or `~`; the dotted key; `=value` or nothing."""
    body = arg.lstrip("+~")
    key, eq, value = body.partition("=")
    return arg[:len(arg) - len(body)], key, eq + value


def _value(arg: str) -> str:
    """The override's value as Hydra reads it (`a,b` and `choice(a,b)` are one sweep), as text."""
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        value = OverridesParser.create().parse_override(arg).value()
    except Exception:  # Hydra reports a malformed override itself, later
        return arg.partition("=")[2]
    if hasattr(value, "simple_form"):
        value.simple_form = False
    return repr(value)


def rename_overrides(argv: list[str], warn: TextIO | None = None) -> tuple[list[str], str | None]:
    """argv with every renamed key in its new spelling (one `llem: warning:` line per old key used, on
    `warn`, default stderr), or the problem when one setting is given both ways with different values."""
    from llem.config.overrides import VALUE_FLAGS

    out: list[str | None] = list(argv)
    given: dict[str, list[tuple[int, str, bool]]] = {}  # new key -> (index, arg, spelled the old way)
    after_flag = False
    for i, arg in enumerate(argv):
        if after_flag or (arg.startswith("-") and not arg.startswith("~")):
            after_flag = arg in VALUE_FLAGS
            continue
        prefix, key, rest = _split(arg)
        new = RENAMED.get(key)
        if new is not None:
            out[i] = prefix + new + rest
        if new is not None or key in RENAMED.values():
            given.setdefault(new or key, []).append((i, arg, new is not None))
    warned: list[str] = []
    for new, args in given.items():
        olds = [a for a in args if a[2]]
        if not olds:
            continue
        values = {_value(a[1]) for a in args}
        if len(values) > 1:
            shown = " and ".join(a[1] for a in args)
            return list(argv), (f"{shown} set the same knob with different values "
                                f"({renamed(_split(olds[0][1])[1])}): give it once, as {new}=...")
        if len(olds) < len(args):  # the same value both ways: the new spelling stays
            for i, _, _ in olds:
                out[i] = None
        for _, arg, _ in olds:
            prefix, old, rest = _split(arg)
            if old not in warned:
                warned.append(old)
                print(f"llem: warning: {old} is now {new} (read {arg} as {prefix}{new}{rest})", file=warn or sys.stderr)
    return [a for a in out if a is not None], None
