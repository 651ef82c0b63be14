"""What the week measures besides training: the component tests, and manual vs SDPA attention on one batch."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import torch

from shared.data.sampling import random_batch
from shared.models.gpt import GPT
from shared.paths import REPO_ROOT
from shared.tasks.lm import causal_lm_loss

# The tests of the hand-written pieces this week builds (each against a library reference).
COMPONENT_TESTS = ("shared/tests/test_attention.py", "shared/tests/test_layers.py", "shared/tests/test_positions.py",
                   "shared/tests/test_mha.py", "shared/tests/test_gpt.py", "shared/tests/test_text.py")


@dataclass
class TestCount:
    """Outcome of one pytest run (from its JUnit XML)."""

    __test__ = False  # not a pytest class

    tests: int
    failures: int
    errors: int
    skipped: int
    seconds: float

    @property
    def passed(self) -> int:
        return self.tests - self.failures - self.errors - self.skipped


def run_component_tests(files: tuple[str, ...] = COMPONENT_TESTS) -> TestCount:
    """Run the component tests in a child pytest (CPU, no plugins' state) and count the outcomes.

    Raises:
        RuntimeError: pytest wrote no report (it could not start; its output is in the message).
    """
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", *files],
            cwd=REPO_ROOT, capture_output=True, text=True, check=False,
        )
        if not report.is_file():
            raise RuntimeError(f"pytest did not run the component tests:\n{proc.stdout}\n{proc.stderr}")
        suite = ET.parse(report).getroot()
        suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
        a = suite.attrib
        return TestCount(int(a["tests"]), int(a["failures"]), int(a["errors"]), int(a["skipped"]), float(a["time"]))


@torch.no_grad()
def backend_losses(model: GPT, val: torch.Tensor, batch_size: int, seed: int = 0) -> dict[str, float]:
    """Loss of the same model on the same val batch with the hand-written and the PyTorch attention, in fp32.

    Returns:
        ``{"manual": loss, "torch": loss, "abs_diff": |difference|, "max_logit_diff": max |logits difference|}``.
    """
    device = next(model.parameters()).device
    x, y = random_batch(val, batch_size, model.cfg.block_size, seed, 0, device)
    was, backend = model.training, model.cfg.attn_backend
    model.eval()
    out = {}
    logits = {}
    for b in ("manual", "torch"):
        model.set_attn_backend(b)
        logits[b] = model(x)
        out[b] = causal_lm_loss(logits[b], y).item()
    model.set_attn_backend(backend)
    model.train(was)
    out["abs_diff"] = abs(out["manual"] - out["torch"])
    out["max_logit_diff"] = (logits["manual"] - logits["torch"]).abs().max().item()
    return out
