"""``./run`` on a first setup says what it does while it does it (issue 21, item 8): one
line per step, and pip's own lines for the package's install, not minutes of silence.

The setup runs for real (``python3 -m venv``, ``pip install -e``) into a virtual
environment in the test's directory. To stay fast and touch no network, that
environment sees this one's installed packages (a ``.pth`` line) so every dependency is
already satisfied, and pip is told to use no index and no build isolation (pip's own
``PIP_*`` settings): the build backend comes from the test extra."""

from __future__ import annotations

import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(400)
def test_the_first_setup_prints_each_step_and_what_pip_installs(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    # pip itself, and every dependency, from this environment
    (next(venv.glob("lib/python3*/site-packages")) / "outer.pth").write_text(
        "\n".join(site.getsitepackages()) + "\n")
    env = {**os.environ, "SAXS_VENV": str(venv), "PIP_NO_INDEX": "1",
           "PIP_NO_BUILD_ISOLATION": "0", "PIP_FIND_LINKS": ""}
    env.pop("PIP_QUIET", None)
    proc = subprocess.run([str(REPO / "run"), "test", "--version"], cwd=tmp_path, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=360)  # one pipe: the lines in the order they came
    out = proc.stdout
    assert proc.returncode == 0, out
    steps = [line for line in out.splitlines() if line.startswith("./run: ")]
    assert [s.split()[1] for s in steps] == ["upgrading", "installing", "installed;"], out
    assert f"source {venv}/bin/activate" in steps[-1]
    # pip's lines between the install step and its end: what it is installing, as it goes
    between = out.split(steps[1], 1)[1].split(steps[2], 1)[0]
    assert "saxs" in between.lower() and "Successfully installed" in between, out
    assert (venv / ".installed-test").exists()
    again = subprocess.run([str(REPO / "run"), "test", "--version"], cwd=tmp_path, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=120)
    assert again.returncode == 0 and "./run: " not in again.stdout, "set up once, then quiet"
