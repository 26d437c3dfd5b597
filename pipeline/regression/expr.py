"""Safe model expressions: "b1*(1-exp(-b2*x))" → a torch function f(x, *params) for curve_fit.

The text is parsed with Python's `ast` and checked against an allow-list; it is never passed to eval/exec.
The torch function is built by walking the checked tree into closures. Allowed:
  * numbers (int, float), parentheses;
  * names: the declared variables, the constant `pi`, and any other identifier, which becomes a parameter;
  * operators + - * / ** and unary - / +;
  * calls, with positional arguments only, to exp, log, sin, cos, tan, sqrt, abs, arctan (one argument) and
    pow (two arguments).
Everything else (attribute access, subscripts, other calls, lambdas, comprehensions, strings, keywords,
comparisons, names starting with an underscore such as __import__ or __class__, ...) raises ExpressionError
(a ValueError) whose one-line message names the construct and its column (1-based).

`Expression.params` lists the parameters in order of first appearance, left to right in the text; that is the
order of the *params passed to the function. With one variable, f(x, *params) binds it to x; with several,
x is indexable (a (k, n) tensor or a tuple) and variable i is x[i].
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

__all__ = ["CONSTANTS", "FUNCTIONS", "Expression", "ExpressionError", "parse_expression"]

FUNCTIONS: dict[str, tuple[Callable, int]] = {
    "exp": (torch.exp, 1), "log": (torch.log, 1), "sin": (torch.sin, 1), "cos": (torch.cos, 1),
    "tan": (torch.tan, 1), "sqrt": (torch.sqrt, 1), "abs": (torch.abs, 1), "arctan": (torch.atan, 1),
    "pow": (torch.pow, 2),
}
CONSTANTS = {"pi": math.pi}
_BINOPS = {ast.Add: torch.add, ast.Sub: torch.sub, ast.Mult: torch.mul, ast.Div: torch.div, ast.Pow: torch.pow}
_MAX_LEN = 10_000
_Env = dict


class ExpressionError(ValueError):
    """Text that is not an allowed model expression; the message is one line, fit to show a user as is."""


def _tensor(v):
    """Numbers become float64 tensors; tensors and tensor-likes (`dual.Dual`) pass through."""
    return torch.as_tensor(v, dtype=torch.float64) if isinstance(v, (int, float)) else v


@dataclass(frozen=True)
class Expression:
    """A checked model expression; call it as f(x, *params) (torch in, torch out)."""

    text: str
    variables: tuple[str, ...]
    params: tuple[str, ...]
    _fn: Callable[[_Env], object] = field(repr=False, compare=False)

    def __call__(self, x, *params):
        if len(params) != len(self.params):
            raise TypeError(f"{self.text!r} takes {len(self.params)} parameters {self.params}, got {len(params)}")
        env = dict(zip(self.params, params))
        if len(self.variables) == 1:
            env[self.variables[0]] = x
        else:
            env.update((name, x[i]) for i, name in enumerate(self.variables))
        return _tensor(self._fn(env))


class _Compiler:
    def __init__(self, text: str, variables: tuple[str, ...]):
        self.text, self.variables, self.params = text, variables, []

    def reject(self, node, what: str):
        col = getattr(node, "col_offset", -1) + 1 + len(self.text) - len(self.text.lstrip())
        raise ExpressionError(f"expression {self.text!r}: {what} is not allowed (column {col})")

    def compile(self, node):
        if isinstance(node, ast.Constant):
            return self._constant(node)
        if isinstance(node, ast.Name):
            return self._name(node)
        if isinstance(node, ast.BinOp):
            return self._binop(node)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            inner = self.compile(node.operand)
            return (lambda env: -inner(env)) if isinstance(node.op, ast.USub) else inner
        if isinstance(node, ast.Call):
            return self._call(node)
        self.reject(node, _describe(node))

    def _constant(self, node):
        v = node.value
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            self.reject(node, f"constant {v!r} ({type(v).__name__})")
        value = float(v)
        return lambda env: value

    def _check_name(self, node, name: str):
        if name.startswith("_"):
            self.reject(node, f"name {name!r} (names starting with '_')")
        if name in FUNCTIONS:
            self.reject(node, f"function {name!r} used as a value")

    def _name(self, node):
        name = node.id
        self._check_name(node, name)
        if name in CONSTANTS and name not in self.variables:
            value = CONSTANTS[name]
            return lambda env: value
        if name not in self.variables and name not in self.params:
            self.params.append(name)
        return lambda env: env[name]

    def _binop(self, node):
        op = _BINOPS.get(type(node.op))
        if op is None:
            hint = " (use ** for powers)" if isinstance(node.op, ast.BitXor) else ""
            self.reject(node, f"operator {type(node.op).__name__}{hint}")
        left, right = self.compile(node.left), self.compile(node.right)
        if op is torch.pow:
            return lambda env: _tensor(left(env)) ** right(env)
        return lambda env: op(_tensor(left(env)), right(env))

    def _call(self, node):
        if not isinstance(node.func, ast.Name):
            self.reject(node.func, f"call of {_describe(node.func)}")
        name = node.func.id
        if name not in FUNCTIONS:
            self.reject(node.func, f"call to {name!r} (allowed: {', '.join(FUNCTIONS)})")
        if node.keywords:
            self.reject(node.keywords[0].value, f"keyword argument in {name}()")
        fn, arity = FUNCTIONS[name]
        for a in node.args:
            if isinstance(a, ast.Starred):
                self.reject(a, f"starred argument in {name}()")
        if len(node.args) != arity:
            self.reject(node, f"{name}() with {len(node.args)} arguments (takes {arity})")
        args = [self.compile(a) for a in node.args]
        if arity == 1:
            (a0,) = args
            return lambda env: fn(_tensor(a0(env)))
        a0, a1 = args
        return lambda env: fn(_tensor(a0(env)), _tensor(a1(env)))


def _describe(node) -> str:
    names = {ast.Attribute: "attribute access", ast.Subscript: "subscript", ast.Lambda: "lambda",
             ast.ListComp: "comprehension", ast.SetComp: "comprehension", ast.DictComp: "comprehension",
             ast.GeneratorExp: "generator expression", ast.Compare: "comparison", ast.BoolOp: "boolean operator",
             ast.IfExp: "conditional expression", ast.NamedExpr: "assignment expression",
             ast.JoinedStr: "f-string", ast.Starred: "starred expression"}
    if isinstance(node, ast.Attribute):
        return f"attribute access '.{node.attr}'"
    return names.get(type(node), f"{type(node).__name__} node")


def parse_expression(text: str, variables=("x",)) -> Expression:
    """Check `text` against the allow-list and build its torch function (see the module docstring)."""
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError(f"expression must be a non-empty string, got {text!r}")
    if len(text) > _MAX_LEN:
        raise ExpressionError(f"expression is {len(text)} characters long (limit {_MAX_LEN})")
    variables = (variables,) if isinstance(variables, str) else tuple(variables)
    for v in variables:
        if not v.isidentifier() or v.startswith("_") or v in FUNCTIONS:
            raise ExpressionError(f"expression {text!r}: invalid variable name {v!r}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise ExpressionError(f"expression {text!r}: syntax error at column {e.offset or '?'}: {e.msg}") from None
    except (RecursionError, MemoryError, ValueError) as e:
        raise ExpressionError(f"expression {text!r}: cannot parse ({type(e).__name__})") from None
    comp = _Compiler(text, variables)
    try:
        fn = comp.compile(tree.body)
    except RecursionError:
        raise ExpressionError(f"expression {text!r}: nested too deeply") from None
    return Expression(text=text, variables=variables, params=tuple(comp.params), _fn=fn)
