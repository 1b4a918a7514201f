"""The project's own files: the things a fresh machine depends on."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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
