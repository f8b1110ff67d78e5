"""Golden record of every method's first training steps: what a refactor of the method layer must keep.

For every registered method and every built-in MICD variant (the ablation rows and the mask
grid), three SGD steps as the engine takes them (one optimiser per student, ``after_step`` for
the teachers) run from seeded initial weights on seeded batches, on one thread, in double
precision (single where a method's code cannot run in double: the record says which). The test
compares each step's loss terms, every tensor of the final state and the logits of ``predict``
with ``tests/fixtures/golden_method_steps.json`` to 1e-9 relative. A change that is meant to change
these numbers records them again and says so in its commit:

    .venv/bin/python tests/methods/test_method_golden.py --record

A new method or variant records its own cases alone, leaving every other case as recorded
(docs/methods.md, "Adding a method"):

    .venv/bin/python tests/methods/test_method_golden.py --record mine
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from micd.methods import METHODS, Batch, Progress, build_method
from micd.methods.micd import MICDSettings, builtin_variants, mask_sensitivity_variants
from micd.settings import TrainSettings
from micd.training.loop import seed_everything

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden_method_steps.json"
RELATIVE = 1e-9
ABSOLUTE = 1e-12  # for quantities that are zero up to round-off
NUM_CLASSES = 4
PATCH = (16, 32, 32)
STEPS = 3
SAMPLES = 5  # entries of each state tensor recorded besides its sum and sum of squares
# late enough in a 10-epoch schedule that every ramped-up unsupervised term weighs in
PROGRESS = {"epoch": 6, "max_epochs": 10, "iterations_per_epoch": 4}


def golden_cases() -> dict[str, tuple[str, dict]]:
    """Every case the record covers: name -> (registered method, its settings)."""
    cases = {name: (name, {}) for name in METHODS}
    variants = {**builtin_variants(), **mask_sensitivity_variants([0.3, 0.5, 0.7], [8, 16], {})}
    for name, variant in variants.items():
        cases.setdefault(name, (variant["method"], variant["settings"]))
    assert MICDSettings().mask_block in (8, 16), "the mask grid above must hold MICD's own block size"
    return cases


def fixed_batches(n_labelled: int, n_unlabelled: int, dtype: torch.dtype) -> list[Batch]:
    generator = torch.Generator().manual_seed(1234)
    batches = []
    for _ in range(STEPS):
        image = torch.rand((n_labelled + n_unlabelled, 1, *PATCH), generator=generator, dtype=torch.float64).to(dtype)
        # blocky labels, so that every class forms regions as organs do
        coarse = torch.randint(0, NUM_CLASSES, (n_labelled, *(s // 8 for s in PATCH)), generator=generator)
        label = coarse.repeat_interleave(8, 1).repeat_interleave(8, 2).repeat_interleave(8, 3)
        batches.append(Batch(image=image, label=label))
    return batches


def tensor_summary(tensor: torch.Tensor) -> list[float]:
    values = tensor.detach().double().flatten()
    if values.numel() == 0:
        return []
    picks = torch.linspace(0, values.numel() - 1, min(SAMPLES, values.numel())).round().long()
    return [values.sum().item(), values.square().sum().item(), *values[picks].tolist()]


def run_case(method_name: str, settings: dict, dtype_name: str | None = None) -> dict:
    """Three training steps of one method from seeded weights, on one thread; what they computed.
    ``dtype_name`` None: double precision, or single where the method's code fails in double."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if dtype_name is not None:
            return _run_case(method_name, settings, dtype_name)
        try:
            return _run_case(method_name, settings, "float64")
        except RuntimeError as exc:
            if "scalar type" not in str(exc) and "dtype" not in str(exc):
                raise
            return _run_case(method_name, settings, "float32")
    finally:
        torch.set_num_threads(threads)


def _run_case(method_name: str, settings: dict, dtype_name: str) -> dict:
    dtype = getattr(torch, dtype_name)
    seed_everything(0)
    train = TrainSettings()
    method = build_method(method_name, settings, NUM_CLASSES, n_filters=2, dropout=0.5).to(dtype)
    labelled_counts = torch.tensor([5000.0, 2000.0, 800.0, 100.0])
    method.initialise(labelled_counts, unlabelled_cases=6)
    optimisers = [
        torch.optim.SGD(
            net.parameters(),
            lr=train.lr,
            momentum=train.momentum,
            weight_decay=train.weight_decay,
            nesterov=train.nesterov,
        )
        for net in method.students().values()
    ]
    n_unlabelled = train.batch_unlabelled if method.uses_unlabelled else 0
    method.train()
    steps = []
    for iteration, batch in enumerate(fixed_batches(train.batch_labelled, n_unlabelled, dtype)):
        progress = Progress(iteration=iteration, **PROGRESS)
        result = method.training_step(batch, progress)
        for optimiser in optimisers:
            optimiser.zero_grad(set_to_none=True)
        result.loss.backward()
        for optimiser in optimisers:
            optimiser.step()
        method.after_step(progress)
        logged = {**result.losses, **result.diagnostics}
        steps.append({name: float(value.detach()) for name, value in logged.items()})
    method.eval()
    with torch.no_grad():
        probe = torch.rand((1, 1, *PATCH), generator=torch.Generator().manual_seed(99), dtype=torch.float64).to(dtype)
        logits = method.predict(probe)
    state = {name: tensor_summary(value) for name, value in method.state_dict().items() if value.is_floating_point()}
    return {
        "method": method_name,
        "settings": settings,
        "dtype": dtype_name,
        "steps": steps,
        "state": state,
        "predict": tensor_summary(logits),
    }


RECORD_COMMAND = ".venv/bin/python tests/methods/test_method_golden.py --record"


def record(names: list[str] | None = None, path: Path = GOLDEN) -> None:
    """Record every case (``names`` None), or only the named ones, keeping the rest of ``path``;
    a case no method or variant has any more is dropped."""
    cases = golden_cases()
    unknown = sorted(set(names or []) - set(cases))
    if unknown:
        sys.exit(f"not a registered method or built-in variant: {', '.join(unknown)}")
    kept = json.loads(path.read_text()) if names and path.is_file() else {}
    golden = {name: kept[name] for name in kept if name in cases}
    golden |= {name: run_case(*cases[name]) for name in (names or cases)}
    # one line per case: a re-record's diff names the cases it changed
    lines = [f"{json.dumps(name)}: {json.dumps(golden[name], sort_keys=True)}" for name in sorted(golden)]
    path.write_text("{\n" + ",\n".join(lines) + "\n}\n")
    print(f"recorded {len(names or cases)} of the {len(golden)} cases in {path}")


def coverage_problems(recorded: dict) -> str:
    """What the record lacks or has too many of, with the command that records it; empty if whole."""
    cases = golden_cases()
    missing = sorted(set(cases) - set(recorded))
    retired = sorted(set(recorded) - set(cases))
    problems = []
    if missing:
        problems.append(
            f"not in the golden record {GOLDEN.name}: {', '.join(missing)}. A new method or variant records its "
            f"first training steps with `{RECORD_COMMAND} {' '.join(missing)}` (docs/methods.md) and commits the record"
        )
    if retired:
        problems.append(
            f"recorded but no longer a method or variant: {', '.join(retired)}; `{RECORD_COMMAND}` records "
            "every case afresh (and drops these); say so in the commit"
        )
    return "\n".join(problems)


def close(actual: float, expected: float) -> bool:
    if math.isnan(expected):
        return math.isnan(actual)
    return math.isclose(actual, expected, rel_tol=RELATIVE, abs_tol=ABSOLUTE)


def summaries_close(actual: list[float], expected: list[float]) -> bool:
    """Two :func:`tensor_summary` lists: the sum of squares to ``RELATIVE``; the sum and the sampled
    entries to ``RELATIVE`` of the tensor's norm, since an entry near zero carries round-off of the
    size of its neighbours', which differs between CPUs' kernels (seen: 1e-9 relative on one
    logit of 2e-3 among logits of 1e2)."""
    if len(actual) != len(expected):
        return False
    if not expected:
        return True
    norm_tol = RELATIVE * math.sqrt(expected[1]) if math.isfinite(expected[1]) else 0.0
    return close(actual[1], expected[1]) and all(
        close(a, e) or math.isclose(a, e, rel_tol=0.0, abs_tol=norm_tol)
        for a, e in zip([actual[0], *actual[2:]], [expected[0], *expected[2:]])
    )


def differences(actual: dict, expected: dict) -> list[str]:
    found = []
    for i, (got, want) in enumerate(zip(actual["steps"], expected["steps"], strict=True)):
        if set(got) != set(want):
            found.append(f"step {i + 1}: terms {sorted(got)}, recorded {sorted(want)}")
        found += [
            f"step {i + 1} {k}: {got[k]!r}, recorded {want[k]!r}"
            for k in want
            if k in got and not close(got[k], want[k])
        ]
    if set(actual["state"]) != set(expected["state"]):
        found.append(f"state keys differ: {sorted(set(actual['state']) ^ set(expected['state']))}")
    for key, want in expected["state"].items():
        got = actual["state"].get(key, [])
        if not summaries_close(got, want):
            found.append(f"state {key}: {got[:3]}..., recorded {want[:3]}...")
    if not summaries_close(actual["predict"], expected["predict"]):
        found.append(f"predict: {actual['predict'][:3]}..., recorded {expected['predict'][:3]}...")
    return found


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(GOLDEN.read_text())


def test_the_record_covers_every_method_and_builtin_variant(golden):
    problems = coverage_problems(golden)
    assert not problems, problems


@pytest.mark.parametrize("case", sorted(golden_cases()))
def test_three_training_steps_match_the_record(case, golden):
    if case not in golden:
        pytest.fail(coverage_problems(golden), pytrace=False)
    method, settings = golden_cases()[case]
    actual = run_case(method, settings, golden[case]["dtype"])
    assert actual["settings"] == golden[case]["settings"]
    found = differences(actual, golden[case])
    assert not found, f"{case}: " + "; ".join(found[:8])


def test_the_comparison_notices_a_changed_weight(golden):
    case = golden["dhc"]
    changed = json.loads(json.dumps(case))
    key = next(iter(changed["state"]))
    changed["state"][key][0] *= 1 + 1e-7
    assert differences(case, case) == []
    assert differences(changed, case) == [
        f"state {key}: {changed['state'][key][:3]}..., recorded {case['state'][key][:3]}..."
    ]


def test_a_method_missing_from_the_record_is_named_with_the_command_that_records_it(golden, tmp_path):
    without = {name: case for name, case in golden.items() if name not in ("dhc", "micd_mcpc")}
    assert coverage_problems(without) == (
        "not in the golden record golden_method_steps.json: dhc, micd_mcpc. A new method or variant records its "
        "first training steps with `.venv/bin/python tests/methods/test_method_golden.py --record dhc micd_mcpc` "
        "(docs/methods.md) and commits the record"
    )
    assert "recorded but no longer a method or variant: mine;" in coverage_problems({**golden, "mine": {}})
    # the command records the named case alone, into a copy here, and keeps every other case as it was
    copy = tmp_path / GOLDEN.name
    copy.write_text(json.dumps({name: case for name, case in golden.items() if name != "dhc"}))
    record(["dhc"], copy)
    recorded = json.loads(copy.read_text())
    assert sorted(recorded) == sorted(golden) and differences(recorded["dhc"], golden["dhc"]) == []
    assert all(recorded[name] == golden[name] for name in golden if name != "dhc")


if __name__ == "__main__":
    if sys.argv[1:2] != ["--record"]:
        sys.exit(__doc__)
    record(sys.argv[2:] or None)
