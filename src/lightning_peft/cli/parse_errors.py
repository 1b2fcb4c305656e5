"""One sentence from jsonargparse's multi-line parse error: the option, the value given, and what it takes.

jsonargparse explains a bad value as a chain through every enclosing class (`Parser key "model": Does not validate
against any of the Union subtypes - Problem with given class_path '...LoraModule': Parser key "method": ...`);
what the user needs is at the end of that chain. Each rule below recognises one kind of problem and names the
option by its dotted path (`model.method.variant`, which `--model.method.variant VALUE` also sets).
"""

from __future__ import annotations

import re

_KEY = re.compile(r'Parser key "([^"]+)"')
_SCALARS = {"int": "an integer", "float": "a number", "bool": "true or false"}


def _path(message: str) -> str:
    """The dotted option named by the chain of parser keys (`model` > `method` > `r` -> `model.method.r`)."""
    keys = _KEY.findall(message)
    return ".".join(keys) if keys else "an option"


def _given(message: str, after: int) -> str:
    """The value the user gave, as jsonargparse reports it after position `after`."""
    found = re.compile(r"(?:Got value|Given value): (.*)").search(message, after)
    return found.group(1).strip() if found else "?"


_HELP = "check its spelling against the command's --help (e.g. `lightning-peft fit --help`, or --model.help / " \
        "--data.help <class_path> for a class's options)"


def _unknown_option(message: str) -> str | None:
    unknown = (re.search(r"Option '([^']+)' is not accepted", message)
               or re.search(r"Group '[^']+' does not accept option '([^']+)'", message))
    if not unknown:
        return None
    group = re.search(r"Group '([^']+)'", message)
    key = _KEY.search(message)
    where = f" under {key.group(1)}" if key else f" under {group.group(1)}" if group else ""
    return f"unknown option {unknown.group(1)!r}{where}; {_HELP}."


def _unrecognized_argument(message: str) -> str | None:
    unrecognized = re.match(r"unrecognized arguments: (\S+)", message.strip())
    if not unrecognized:
        return None
    token = unrecognized.group(1)
    if not token.startswith("-"):
        return (f"unexpected argument {token!r}: options are written --name value; check the command line against "
                "the command's --help.")
    return f"unknown option {token}; {_HELP}."


def _empty_value(message: str) -> str | None:
    """A null where a value is expected: a YAML entry left empty (`key:` alone reads as null)."""
    union = re.search(r"((?:- Expected a <class '\w+'>\s*)+)Given value type: <class 'NoneType'>", message)
    plain = re.search(r"Expected a <class '(\w+)'>\.?\s*Got value: None\s*$", message, re.M)
    if not union and not plain:
        return None
    types = " or ".join(re.findall(r"<class '(\w+)'>", union.group(1) if union else plain.group(0)))
    holder = re.compile(r"Given value: (\{.*)").search(message, union.end()) if union else None
    keys = re.findall(r"'([^']+)': None", holder.group(1)) if holder else []
    where = f"{_path(message)}.{keys[0]}" if len(keys) == 1 else _path(message)
    return (f"{where} is empty where {types} is expected (in YAML, `key:` with nothing after it is null); fill it in "
            "or remove it.")


def _not_a_list(message: str) -> str | None:
    wrong = re.search(r"Parser key \"([^\"]+)\":\s*Expected a <class 'list'>\.\s*Got value: (.*)", message)
    if not wrong:
        return None
    return (f"{wrong.group(1)} must be a list (YAML: one '- item' per line, or [\"a\", \"b\"] on the command line), "
            f"got {wrong.group(2).strip()[:80]!r}.")


def _boolean_for_text(message: str) -> str | None:
    boolean = re.search(r"Expected a <class 'str'>\.\s*Got value: (True|False)", message)
    if not boolean:
        return None
    keys = _KEY.findall(message)
    return (f"{keys[-1] if keys else 'an option'} got the boolean {boolean.group(1)} where text is expected: YAML "
            "reads unquoted yes/no/on/off/true/false as booleans; quote them (e.g. ['yes', 'no']).")


def _structure_for_text(message: str) -> str | None:
    structure = re.search(r"Parser key \"([^\"]+)\":\s*Expected a <class 'str'>\.\s*Got value: ([{\[].*)", message)
    if not structure:
        return None
    key, value = structure.group(1), structure.group(2).strip()[:80]
    return (f"{key} was read as YAML structure ({value}) where text is expected: a ': ' or brackets in the value "
            f"make YAML see a mapping or list; set it in a --config file in quotes ({key}: \"Question: {{text}}\").")


def _not_a_choice(message: str) -> str | None:
    choices = list(re.finditer(r"Expected a typing\.Literal\[([^\]]*)\]", message))  # a Union may hold several
    if not choices:
        return None
    allowed = ", ".join(choice.group(1) for choice in choices)
    return f"{_path(message)} is {_given(message, choices[-1].end())!r}, which is not one of {allowed}; set it to one of those."


def _wrong_scalar(message: str) -> str | None:
    scalar = re.search(r"Expected a <class '(int|float|bool)'>", message)
    if not scalar:
        return None
    return f"{_path(message)} must be {_SCALARS[scalar.group(1)]}, got {_given(message, scalar.end())!r}."


def _wrong_subclass(message: str) -> str | None:
    wrong = re.search(r"Import path (\S+) does not correspond to a subclass of (\w+)", message)
    if not wrong:
        return None
    owner = re.findall(r"Problem with given class_path '([^']+)'", message)
    taken_by = f", the kind {owner[-1].rpartition('.')[2]} takes" if owner else ""
    return (f"{_path(message)} {wrong.group(1)} is not a {wrong.group(2)}{taken_by}; choose a {wrong.group(2)} subclass, "
            f"or a model.class_path that takes {wrong.group(1).rpartition('.')[2]}.")


# The first rule that recognises the message wins; the boolean-for-text rule comes before the scalar ones because
# YAML's booleans are the likely cause there.
_RULES = (_unknown_option, _unrecognized_argument, _empty_value, _boolean_for_text, _structure_for_text, _not_a_list,
          _not_a_choice, _wrong_scalar, _wrong_subclass)
_NOISE = ("Given value", "Subtypes:", "Errors:", "- Expected a <class 'NoneType'>")


def condense(message: str) -> str:
    """One line for jsonargparse's parse error `message`: a rule's sentence, else its lines that name the problem."""
    for rule in _RULES:
        sentence = rule(message)
        if sentence is not None:
            return sentence
    lines = [line.strip() for line in message.splitlines() if line.strip() and not line.strip().startswith(_NOISE)]
    return " ".join(lines)
