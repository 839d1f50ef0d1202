"""Loading a found program with its tuned lr, the standalone optimizer file (imported in a
subprocess with no metaopt on the path, compared step by step with search.to_optimizer), and
search.report."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import search
from search.export import TEMPLATES, helper_source, standalone_source
from search.functions import FUNCTIONS
from search.warm import ADAMW

# every function of the language at least once, tree functions and t included
RICH = """def train(w, g, m, v, lr, t):
    a = interp(g, m, 0.9)
    m = a
    v = max(v, square(g)) + cosine_sim(g, w) * 0.001
    b = clip_by_global_norm(m, 1.5) / (sqrt(v) + eps)
    c = sign(b) * power(global_norm(g), 0.5) + dot(w, g) * 0.0001
    d = tanh(c) + relu(b) * sigmoid(w) - clip(g, 0.3) / t + min(w, 0.1) * exp(-abs(w))
    update = d * lr + w * 0.01 * lr
    return update, m, v
"""


def test_every_template_equals_the_interpreter_function():
    torch.manual_seed(0)
    x, y, z = (torch.randn(7, dtype=torch.float64) for _ in range(3))
    assert set(TEMPLATES) == set(FUNCTIONS)
    for name, f in FUNCTIONS.items():
        args = [x, y, z.abs() * 0.5][:f.arity]
        if name in ("arcsin", "arctanh", "arccos"):
            args = [torch.tanh(x) * 0.9]
        if name == "arccosh":
            args = [x.abs() + 1.1]
        scope = {"torch": torch, "_EPS": 1e-8}
        exec(helper_source(name), scope)  # the exported helper, compared with the interpreter
        got = scope[f"_f_{name}"](*args)
        ref = f.fn(*args, dim=None)
        assert torch.allclose(got, ref, rtol=1e-12, atol=1e-12, equal_nan=True), name


@pytest.mark.parametrize("text", [ADAMW, RICH])
def test_standalone_file_steps_like_to_optimizer(tmp_path, text):
    prog = search.parse(text)
    (tmp_path / "found_opt.py").write_text(standalone_source(prog, 0.01))
    code = textwrap.dedent(f"""
        import sys, json, torch
        sys.path = [p for p in sys.path if 'metaopt' not in p and 'wt/' not in p]
        sys.path.insert(0, {str(tmp_path)!r})
        import found_opt
        assert 'metaopt' not in sys.modules and 'search' not in sys.modules
        torch.manual_seed(0)
        ws = [torch.randn(5, 3, dtype=torch.float64, requires_grad=True),
              torch.randn(4, dtype=torch.float64, requires_grad=True)]
        opt = found_opt.FoundOptimizer(ws)
        for k in range(6):
            opt.zero_grad()
            loss = sum((w.sin() * (k + 1)).pow(2).sum() for w in ws)
            loss.backward()
            opt.step()
        print(json.dumps([w.detach().reshape(-1).tolist() for w in ws]))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    exported = json.loads(proc.stdout)
    torch.manual_seed(0)
    ws = [torch.randn(5, 3, dtype=torch.float64, requires_grad=True),
          torch.randn(4, dtype=torch.float64, requires_grad=True)]
    opt = search.to_optimizer(prog, ws, lr=0.01)
    for k in range(6):
        opt.zero_grad()
        loss = sum((w.sin() * (k + 1)).pow(2).sum() for w in ws)
        loss.backward()
        opt.step()
    for a, b in zip(exported, ws):
        assert torch.allclose(torch.tensor(a, dtype=torch.float64), b.detach().reshape(-1),
                              rtol=1e-10, atol=1e-12)


def test_load_export_and_report_a_run(tmp_path):
    from search.cli import main

    out = tmp_path / "run"
    assert main(["--task", "quadratic", "--budget", "6", "--batch", "3", "--population", "3", "--tournament", "2",
                 "--steps", "5", "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    best = json.loads((out / "best.json").read_text())
    found = search.load(str(out))
    assert found.lr == best["lr"] and found.program.to_text() == best["text"]
    w = torch.zeros(3, requires_grad=True)
    opt = found.optimizer([w])
    assert opt.param_groups[0]["lr"] == best["lr"]
    path = search.export(str(out))
    assert os.path.exists(path) and oct(os.stat(path).st_mode & 0o777) == "0o644"
    assert "import metaopt" not in open(path).read() and "from metaopt" not in open(path).read()
    md = search.report(str(out))
    assert "| 1 |" in md and (out / "report.md").exists() and (out / "progress.png").exists()


@pytest.mark.parametrize("content, message", [
    ("{", "not a best.json"),
    (json.dumps({"text": "def train(w, g, lr):\n    return g\n", "lr": 0.1}), "best.json"),
    (json.dumps({"text": ADAMW, "lr": "0.1"}), "not a best.json"),
    (json.dumps({"text": ADAMW, "lr": -1.0}), "must be a finite number"),
])
def test_load_bad_files_are_one_line_errors(tmp_path, content, message):
    f = tmp_path / "best.json"
    f.write_text(content)
    with pytest.raises(ValueError, match=message) as err:
        search.load(str(f))
    assert "\n" not in str(err.value)


def test_export_cli_bad_folder_exits_2(tmp_path, capsys):
    from search.export import main

    assert main([str(tmp_path / "missing")]) == 2
    assert "not a search run folder" in capsys.readouterr().err


def test_interrupt_says_search_and_exits_130(tmp_path, monkeypatch, capsys):
    import search.evolve as evolve
    from search.cli import main

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(evolve, "run", interrupted)
    assert main(["--task", "quadratic", "--budget", "4", "--out", str(tmp_path / "r")]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "metaopt search: interrupted" in err and "bench" not in err
