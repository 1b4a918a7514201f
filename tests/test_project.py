"""The project's own files: the things a fresh machine depends on."""

from pathlib import Path

import pytest

from conftest import REQUIRE_BROWSER

ROOT = Path(__file__).resolve().parents[1]
pytest_plugins = ["pytester"]


def test_environment_yml_wraps_requirements():
    import yaml

    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps and "pip" in deps
    pip_section = next(d["pip"] for d in deps if isinstance(d, dict))
    assert pip_section == ["-r requirements.txt"]


def test_torch_is_pinned_and_xformers_is_optional():
    import tomllib

    reqs = (ROOT / "requirements.txt").read_text().splitlines()
    assert "torch==2.13.0" in reqs
    assert not any(line.startswith("xformers") for line in reqs)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(d.startswith("xformers") for d in project["optional-dependencies"]["cuda"])
    assert any(d.startswith("transformers") for d in project["optional-dependencies"]["dev"])
    assert not any(line.startswith("transformers") for line in reqs)


BROWSER_TEST = """
import pytest

@pytest.mark.browser
def test_needs_a_browser():
    pytest.skip("chromium is not installed")
"""


@pytest.mark.parametrize("in_ci", [False, True])
def test_a_skipped_browser_test_fails_in_ci(pytester, monkeypatch, in_ci):
    """Where `.ci/run` sets REQUIRE_BROWSER a browser test that would skip fails; elsewhere it skips."""
    script = (ROOT / ".ci" / "run").read_text()
    assert f"export {REQUIRE_BROWSER}=1" in script and "make setup" in script
    monkeypatch.delenv(REQUIRE_BROWSER, raising=False)
    if in_ci:
        monkeypatch.setenv(REQUIRE_BROWSER, "1")
    pytester.makeconftest((ROOT / "tests" / "conftest.py").read_text())
    pytester.makepyfile(BROWSER_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-o", "markers=browser: a real Chromium")
    result.assert_outcomes(failed=1) if in_ci else result.assert_outcomes(skipped=1)
    if in_ci:
        result.stdout.fnmatch_lines([f"*{REQUIRE_BROWSER} is set (CI)*chromium is not installed*"])
