"""The quantization report's verdict on the shipped int8 model's agreement with float (pipeline.stages)."""
from types import SimpleNamespace

from pipeline.stages.quantization_report import fidelity_verdict


def _context(agreement, goal=0.97):
    converted = SimpleNamespace(agreement_quantized_vs_float=agreement)
    return SimpleNamespace(summaries={"convert_verify": converted}, config=SimpleNamespace(int8_min_agreement=goal))


def test_a_met_goal_says_so_with_the_number():
    assert fidelity_verdict(_context(0.9812)) == (
        "int8 keeps the float model's top-1 answer on 98.12% of the held-out images (goal 97%), run as the app runs "
        "it, on XNNPACK.")


def test_a_missed_goal_names_the_number_the_goal_and_what_to_try():
    verdict = fidelity_verdict(_context(0.9635))
    assert verdict.startswith("**int8 misses its fidelity goal**") and "96.35%" in verdict and "(goal 97%)" in verdict
    assert "`--qat`" in verdict and "near-ties" not in verdict
    report = {"changed_answers": 15, "changed_near_ties": 14}
    assert "Of the 15 answers int8 changes on the reference kernels, 14 are near-ties" in fidelity_verdict(
        _context(0.9635), report)
    assert fidelity_verdict(_context(0.9635, goal=0.95)).startswith("int8 keeps")


def test_no_verdict_without_a_measured_agreement():
    assert fidelity_verdict(_context(None)) is None
    assert fidelity_verdict(SimpleNamespace(summaries={}, config=SimpleNamespace(int8_min_agreement=0.97))) is None
