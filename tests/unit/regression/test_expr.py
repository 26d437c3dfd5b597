"""parse_expression: allowed expressions evaluate like numpy; everything else is rejected, never evaluated."""

import builtins
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from pipeline.regression import ExpressionError, curve_fit, parse_expression

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

X = np.linspace(0.1, 3.0, 7)


@pytest.mark.parametrize(
    "text, params, values, reference",
    [
        ("b1*(1-exp(-b2*x))", ("b1", "b2"), (2.0, 0.7), lambda x, a, b: a * (1 - np.exp(-b * x))),
        ("a + b*x - c*x**2", ("a", "b", "c"), (1.0, 2.0, 0.5), lambda x, a, b, c: a + b * x - c * x**2),
        ("-k*x/ (1 + x)", ("k",), (3.0,), lambda x, k: -k * x / (1 + x)),
        ("pow(x, n) + sqrt(x) + abs(-x) + log(x)", ("n",), (1.5,),
         lambda x, n: x**n + np.sqrt(x) + np.abs(-x) + np.log(x)),
        ("sin(w*x) + cos(w*x) + tan(0.1*x) + arctan(x/w)", ("w",), (2.0,),
         lambda x, w: np.sin(w * x) + np.cos(w * x) + np.tan(0.1 * x) + np.arctan(x / w)),
        ("b1 - b2*x - arctan(b3/(x-b4))/pi", ("b1", "b2", "b3", "b4"), (0.2, -6e-6, 1.2e3, -1.8e2),
         lambda x, b1, b2, b3, b4: b1 - b2 * x - np.arctan(b3 / (x - b4)) / np.pi),
        ("+x * 2e-3 + 1_000", (), (), lambda x: x * 2e-3 + 1000),
    ],
)
def test_valid_expressions_match_numpy(text, params, values, reference):
    expr = parse_expression(text)
    assert expr.params == params
    out = expr(torch.tensor(X, dtype=torch.float64), *values)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), reference(X, *values), rtol=1e-13)


def test_params_in_order_of_first_appearance_and_variables_excluded():
    expr = parse_expression("z*x + a*exp(-z) + b1 + a", variables=("x",))
    assert expr.params == ("z", "a", "b1")
    assert expr.variables == ("x",)


def test_several_variables_index_x():
    expr = parse_expression("b1 - b2*x1*exp(-b3*x2)", variables=("x1", "x2"))
    assert expr.params == ("b1", "b2", "b3")
    x = torch.tensor([[1.0, 2.0], [0.5, 0.0]], dtype=torch.float64)
    out = expr(x, 1.0, 2.0, 3.0)
    np.testing.assert_allclose(out.numpy(), 1 - 2 * np.array([1.0, 2.0]) * np.exp(-3 * np.array([0.5, 0.0])))


def test_wrong_number_of_params_is_a_type_error():
    with pytest.raises(TypeError, match="takes 2 parameters"):
        parse_expression("a*x+b")(torch.ones(2), 1.0)


def test_usable_by_curve_fit():
    expr = parse_expression("b1*(1-exp(-b2*x))")
    x = np.array([1, 2, 3, 5, 7, 10], dtype=float)
    y = 213.8 * (1 - np.exp(-0.547 * x))
    popt, _ = curve_fit(expr, x, y, p0=[100.0, 0.75])
    np.testing.assert_allclose(popt, [213.8, 0.547], rtol=1e-10)


REJECTED = [
    ("__import__('os').system('x')", "attribute access '.system'", 1),
    ("x.__class__", "attribute access '.__class__'", 1),
    ("open('f')", "call to 'open'", 1),
    ("b*eval('1')", "call to 'eval'", 3),
    ("lambda: 1", "lambda", 1),
    ("[i for i in x]", "comprehension", 1),
    ("(i for i in x)", "generator expression", 1),
    ("'s' + x", "constant 's'", 1),
    ("exp(x, out=x)", "keyword argument", 12),
    ("__x__ * 2", "name '__x__'", 1),
    ("a + _hidden", "name '_hidden'", 5),
    ("x[0]", "subscript", 1),
    ("x ^ 2", "BitXor (use ** for powers)", 1),
    ("exp", "function 'exp' used as a value", 1),
    ("a if x else b", "conditional expression", 1),
    ("x < 1", "comparison", 1),
    ("x and 1", "boolean operator", 1),
    ("pow(x)", "pow() with 1 arguments", 1),
    ("exp(*x)", "starred argument", 5),
    ("True * x", "constant True", 1),
    ("x @ a", "MatMult", 1),
    ("{'a': 1}", "Dict node", 1),
    ("f'{x}'", "f-string", 1),
    ("(y := 2)", "assignment expression", 2),
    ("  x.real", "attribute access '.real'", 3),
]


@pytest.mark.parametrize("text, what, column", REJECTED)
def test_rejections_name_the_construct_and_column(text, what, column, monkeypatch):
    calls = []
    real_open = builtins.open
    monkeypatch.setattr(builtins, "eval", lambda *a, **k: calls.append(("eval", a)))
    monkeypatch.setattr(builtins, "exec", lambda *a, **k: calls.append(("exec", a)))
    monkeypatch.setattr(os, "system", lambda *a, **k: calls.append(("os.system", a)))
    monkeypatch.setattr(
        builtins, "open", lambda f, *a, **k: calls.append(("open", f)) if f == "f" else real_open(f, *a, **k))
    with pytest.raises(ExpressionError) as info:
        parse_expression(text)
    monkeypatch.undo()
    msg = str(info.value)
    assert what in msg and f"column {column})" in msg, msg
    assert "\n" not in msg
    assert calls == [], f"{text!r} triggered {calls}"


def test_syntax_errors_and_bad_input_are_expression_errors():
    for text in ("1 +", "", "   ", "x" * 20_000, "(" * 300 + "x" + ")" * 300):
        with pytest.raises(ExpressionError):
            parse_expression(text)
    with pytest.raises(ExpressionError, match="invalid variable name"):
        parse_expression("a*t", variables=("__t",))


def test_the_library_raises_its_own_value_error_and_imports_nothing_of_the_pipeline():
    assert issubclass(ExpressionError, ValueError)
    code = ("import sys, pipeline.regression, pipeline.regression.nist; print(sorted(m for m in sys.modules "
            "if m.startswith('pipeline.') and not m.startswith('pipeline.regression')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_pi_is_a_constant_unless_declared_a_variable():
    assert parse_expression("pi*x").params == ()
    assert float(parse_expression("pi").__call__(torch.zeros(1))) == pytest.approx(math.pi)
    expr = parse_expression("pi*2", variables=("pi",))
    assert float(expr(torch.tensor(3.0))) == 6.0
