"""A small evaluator of the HCL expressions python-hcl2 leaves as text, for the tests that check what
infra/terraform computes for given variable values (tests/test_terraform_gateway.py,
tests/test_kafka_security.py), as Terraform would compute it.
"""

from __future__ import annotations

import json
import math
import re


class Ref(str):
    """What a symbolic evaluation could not compute, as the HCL text that names it: a variable not
    given, a resource attribute, a function the evaluator does not know, or what is made of those."""


class Hcl:
    """Evaluates the HCL expressions python-hcl2 leaves as text ("${...}"), for the subset these
    files use: literals, templates, references, indexing, for expressions, the conditional and the
    logical, comparison and arithmetic operators, and the functions in FUNCTIONS.

    ``symbolic``: names the environment does not hold (variables not given, resources, other
    functions) become ``Ref``s instead of errors, and so does everything computed from one; a local
    that comes out a ``Ref`` is named as the local (``local.app_cidr``). Without it, every name must be
    in the environment."""

    FUNCTIONS = {
        "lower": str.lower,
        "upper": str.upper,
        "length": len,
        "min": min,
        "max": max,
        "tostring": str,
        "contains": lambda items, value: value in items,
        "keys": lambda m: sorted(m),
        "values": lambda m: [m[k] for k in sorted(m)],
        "toset": lambda items: sorted(set(items)),
        "concat": lambda *lists: [item for each in lists for item in each],
        "distinct": lambda items: [item for i, item in enumerate(items) if item not in items[:i]],
        "join": lambda separator, items: separator.join(items),
        "floor": math.floor,
        "jsonencode": lambda value: _jsonencode(value),
        "merge": lambda *maps: {key: value for each in maps for key, value in each.items()},
        "trim": lambda s, chars: s.strip(chars),
        "replace": lambda s, old, new: (
            re.sub(old[1:-1], lambda _: new, s)
            if len(old) > 1 and old.startswith("/") and old.endswith("/")
            else s.replace(old, new)
        ),
    }

    def __init__(self, env: dict, locals_: dict, symbolic: bool = False):
        self.env = env
        self.locals_text = locals_
        self.locals_override: dict = {}
        self._locals: dict = {}
        self.symbolic = symbolic
        env["local"] = _Lazy(self.local)
        if symbolic:
            env["var"] = _Partial("var", env.get("var", {}))

    def var(self, name: str):
        return self.env["var"][name]

    def local(self, name: str):
        if name in self.locals_override:
            return self.locals_override[name]
        if name not in self._locals:
            value = self.eval(self.locals_text[name])
            self._locals[name] = Ref(f"local.{name}") if isinstance(value, Ref) else value
        return self._locals[name]

    def eval(self, value, **bindings):
        """A value as python-hcl2 returns it (text with ${...}, or lists and maps of such)."""
        env = {**self.env, **bindings}
        if isinstance(value, str):
            return _template(value, env, self)
        if isinstance(value, list):
            return [self.eval(v, **bindings) for v in value]
        if isinstance(value, dict):
            return {k: self.eval(v, **bindings) for k, v in value.items()}
        return value


class _Lazy:
    def __init__(self, get):
        self.get = get

    def __getitem__(self, name):
        return self.get(name)


class _Partial(_Lazy):
    """A namespace (``var``) of which only some names are known: the others are ``Ref``s."""

    def __init__(self, prefix: str, known: dict):
        super().__init__(lambda name: known[name] if name in known else Ref(f"{prefix}.{name}"))


def _template(text: str, env: dict, hcl: Hcl, escaped: bool = False):
    """A template: literal text and ${...} parts; a lone ${...} keeps its value's type."""
    parts, i = [], 0
    while i < len(text):
        start = text.find("${", i)
        if start < 0:
            parts.append(_unescape(text[i:]) if escaped else text[i:])
            break
        if start > i:
            parts.append(_unescape(text[i:start]) if escaped else text[i:start])
        end = _closing(text, start + 2)
        parts.append(_Parser(text[start + 2 : end], env, hcl).parse())
        i = end + 1
    if len(parts) == 1 and not isinstance(parts[0], str):
        return parts[0]
    if len(parts) == 1 and text.startswith("${"):
        return parts[0]
    return "".join(_as_text(p) for p in parts)


def _as_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _jsonencode(value) -> str:
    """Terraform's jsonencode: compact, object keys in order, and <, > and & escaped as \\u003c ..."""
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), text)


def _closing(text: str, i: int) -> int:
    """Index of the } that closes an interpolation whose body starts at i (skipping nested braces and
    strings)."""
    depth = 0
    while i < len(text):
        c = text[i]
        if c == '"':
            i = _string_end(text, i)
        elif c == "{":
            depth += 1
        elif c == "}":
            if depth == 0:
                return i
            depth -= 1
        i += 1
    raise ValueError(f"unclosed interpolation in {text!r}")


def _string_end(text: str, i: int) -> int:
    """Index of the quote that closes the string opening at text[i]."""
    i += 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text.startswith("${", i):
            i = _closing(text, i + 2) + 1
            continue
        if text[i] == '"':
            return i
        i += 1
    raise ValueError(f"unclosed string in {text!r}")


TOKEN = re.compile(
    r"\s*(?:(\d+(?:\.\d+)?)|([A-Za-z_][\w-]*)|(=>|==|!=|<=|>=|&&|\|\||[-+*/%<>!?:.,()\[\]{}=]))"
)


class _Parser:
    def __init__(self, text: str, env: dict, hcl: Hcl):
        self.text, self.env, self.hcl = text, env, hcl
        self.tokens = self._tokenize(text)
        self.i = 0

    def _tokenize(self, text):
        tokens, i = [], 0
        while i < len(text):
            if text[i].isspace():
                i += 1
                continue
            if text[i] == '"':
                end = _string_end(text, i)
                tokens.append(("str", text[i + 1 : end]))
                i = end + 1
                continue
            m = TOKEN.match(text, i)
            if not m or m.end() == i:
                raise ValueError(f"cannot read {text[i:]!r}")
            number, name, op = m.groups()
            tokens.append(("num", number) if number else ("name", name) if name else ("op", op))
            i = m.end()
        return tokens

    # -- helpers
    def peek(self, value=None):
        if self.i >= len(self.tokens):
            return None
        token = self.tokens[self.i]
        # A string literal is never an operator or a keyword, whatever its text ("-", ",", "if").
        return token if value is None or (token[1] == value and token[0] != "str") else None

    def take(self, value=None):
        token = self.peek(value)
        if token is None:
            raise ValueError(f"expected {value!r} at token {self.i} of {self.text!r}")
        self.i += 1
        return token

    def parse(self):
        value = self.expr()
        if self.i != len(self.tokens):
            raise ValueError(f"unexpected {self.tokens[self.i]} in {self.text!r}")
        return value

    # -- grammar, lowest precedence first; a sub-parser re-reads a body for each item of a for
    def expr(self):
        condition = self.binary(0)
        if not self.peek("?"):
            return condition
        if isinstance(condition, Ref):  # neither branch is known to be taken
            self.take("?")
            self.branch(taken=False)
            self.take(":")
            self.branch(taken=False)
            return Ref(f"{condition} ? ...")
        self.take("?")
        yes = self.branch(taken=bool(condition))
        self.take(":")
        no = self.branch(taken=not condition)
        return yes if condition else no

    def branch(self, taken: bool):
        """The branch taken is evaluated; the other is only parsed (its references may not exist)."""
        if taken:
            return self.expr()
        saved, self.env = self.env, _Unresolved()
        try:
            self.expr()
        finally:
            self.env = saved
        return None

    LEVELS = [("||",), ("&&",), ("==", "!="), ("<", ">", "<=", ">="), ("+", "-"), ("*", "/", "%")]

    def binary(self, level):
        if level == len(self.LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while (token := self.peek()) and token[0] == "op" and token[1] in self.LEVELS[level]:
            op = self.take()[1]
            right = self.binary(level + 1)
            if isinstance(self.env, _Unresolved):
                continue
            if isinstance(left, Ref) or isinstance(right, Ref):
                left = Ref(f"{left} {op} {right}")
                continue
            left = {
                "||": lambda a, b: bool(a or b),
                "&&": lambda a, b: bool(a and b),
                "==": lambda a, b: a == b,
                "!=": lambda a, b: a != b,
                "<": lambda a, b: a < b,
                ">": lambda a, b: a > b,
                "<=": lambda a, b: a <= b,
                ">=": lambda a, b: a >= b,
                "+": lambda a, b: a + b,
                "-": lambda a, b: a - b,
                "*": lambda a, b: a * b,
                "/": lambda a, b: a / b,
                "%": lambda a, b: a % b,
            }[op](left, right)
        return left

    def unary(self):
        if self.peek("!"):
            self.take()
            value = self.unary()
            if isinstance(value, Ref):
                return Ref(f"!{value}")
            return None if isinstance(self.env, _Unresolved) else not value
        if self.peek("-"):
            self.take()
            value = self.unary()
            return None if isinstance(self.env, _Unresolved) else -value
        return self.postfix()

    def postfix(self):
        value = self.primary()
        while True:
            if self.peek("."):
                self.take()
                name = self.take()[1]
                value = None if isinstance(self.env, _Unresolved) else _get(value, name)
            elif self.peek("["):
                self.take()
                index = self.expr()
                self.take("]")
                value = None if isinstance(self.env, _Unresolved) else _get(value, index)
            else:
                return value

    def primary(self):
        kind, text = self.take()
        if kind == "num":
            return float(text) if "." in text else int(text)
        if kind == "str":
            if isinstance(self.env, _Unresolved):
                return None
            return _template(text, self.env, self.hcl, escaped=True)
        if kind == "name":
            if text in ("true", "false"):
                return text == "true"
            if text == "null":
                return None
            if self.peek("("):
                return self.call(text)
            if isinstance(self.env, _Unresolved):
                return None
            if text not in self.env and self.hcl.symbolic:
                return Ref(text)
            if text not in self.env:
                raise KeyError(f"{text} is not known to the evaluator (in {self.text!r})")
            return self.env[text]
        if text == "(":
            value = self.expr()
            self.take(")")
            return value
        if text == "[":
            return self.sequence()
        if text == "{":
            return self.mapping()
        raise ValueError(f"unexpected {text!r} in {self.text!r}")

    def call(self, name):
        self.take("(")
        args = []
        while not self.peek(")"):
            args.append(self.expr())
            if self.peek(","):
                self.take()
        self.take(")")
        if isinstance(self.env, _Unresolved):
            return None
        if self.hcl.symbolic and (name not in self.hcl.FUNCTIONS or any(isinstance(a, Ref) for a in args)):
            return Ref(f"{name}(...)")
        return self.hcl.FUNCTIONS[name](*args)

    def sequence(self):
        if self.peek("for"):
            return self.for_expression("]")
        items = []
        while not self.peek("]"):
            items.append(self.expr())
            if self.peek(","):
                self.take()
        self.take("]")
        return items

    def mapping(self):
        if self.peek("for"):
            return self.for_expression("}")
        result = {}
        while not self.peek("}"):
            kind, key = self.take()
            self.take("=") if self.peek("=") else self.take(":")
            result[key] = self.expr()
            if self.peek(","):
                self.take()
        self.take("}")
        return result

    def for_expression(self, close):
        """[for k, v in X : body if cond] or {for k, v in X : key => value if cond}."""
        self.take("for")
        names = [self.take()[1]]
        if self.peek(","):
            self.take()
            names.append(self.take()[1])
        self.take("in")
        collection = self.expr()
        self.take(":")
        body_start = self.i
        self._skip_body(close)  # find the end first, then evaluate the body per item
        body_end = self.i
        self.take(close)
        if isinstance(self.env, _Unresolved):
            return None
        if isinstance(collection, Ref):
            return Ref(f"[for ... in {collection}]")
        if isinstance(collection, dict):
            items = [(k, collection[k]) for k in sorted(collection)]
        else:
            items = list(enumerate(collection))
        result = [] if close == "]" else {}
        body = self.tokens[body_start:body_end]
        for key, value in items:
            bound = {
                **self.env,
                **({names[0]: value} if len(names) == 1 else {names[0]: key, names[1]: value}),
            }
            # As Terraform does, the condition decides first: an item it leaves out is never evaluated
            # (its value may not exist). So the body is read once unresolved, to find the condition.
            sub = self._sub(body, _Unresolved())
            sub._for_body(close)
            keep = True
            if sub.peek("if"):
                sub.take()
                sub.env = bound
                keep = sub.expr()
            if sub.i != len(sub.tokens):
                raise ValueError(f"unexpected {sub.tokens[sub.i]} in for expression of {self.text!r}")
            if keep:
                first_value, second = self._sub(body, bound)._for_body(close)
                if close == "]":
                    result.append(first_value)
                else:
                    result[first_value] = second
        return result

    def _sub(self, tokens: list, env: dict) -> _Parser:
        """A parser of ``tokens`` (part of this expression) in ``env``."""
        sub = _Parser("", env, self.hcl)
        sub.tokens, sub.text = tokens, self.text
        return sub

    def _for_body(self, close):
        """A for expression's body: its value (``]``), or key and value (``}``)."""
        first_value = self.expr()
        if close == "]":
            return first_value, None
        self.take("=>")
        return first_value, self.expr()

    def _skip_body(self, close):
        depth = 0
        while self.i < len(self.tokens):
            token = self.tokens[self.i]
            if token[0] == "op" and token[1] in "([{":
                depth += 1
            elif token[0] == "op" and token[1] in ")]}":
                if depth == 0 and token[1] == close:
                    return
                depth -= 1
            self.i += 1
        raise ValueError(f"unclosed for expression in {self.text!r}")


class _Unresolved(dict):
    """The environment of a branch not taken: parsed, never looked up."""


def _get(value, key):
    if isinstance(value, Ref):
        return Ref(f"{value}[{key}]" if isinstance(key, int) else f"{value}.{key}")
    if isinstance(value, _Lazy):
        return value[key]
    if isinstance(value, list):
        return value[int(key)]
    if key not in value:
        raise KeyError(f"{key!r} not in {sorted(value)}")
    return value[key]
