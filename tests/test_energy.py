"""Energy counters: RAPL read from sysfs files (laid out here as the kernel does), wraps included."""

from llama_core import energy


def _zone(root, n, value, wrap):
    zone = root / f"intel-rapl:{n}"
    zone.mkdir()
    (zone / "energy_uj").write_text(f"{value}\n")
    (zone / "max_energy_range_uj").write_text(f"{wrap}\n")
    return zone


def test_rapl_counters_sum_packages_and_survive_a_wrap(tmp_path, monkeypatch):
    a = _zone(tmp_path, 0, 1_000_000, 10_000_000)
    b = _zone(tmp_path, 1, 9_500_000, 10_000_000)
    core = _zone(tmp_path, "0:0", 500_000, 10_000_000)  # a sub-zone (cores), inside package 0
    monkeypatch.setattr(energy, "POWERCAP", tmp_path)
    meter = energy.EnergyMeter("cpu")
    assert meter.source == "RAPL" and meter.joules() == 0.0
    (a / "energy_uj").write_text("3000000\n")  # +2 J
    (b / "energy_uj").write_text("500000\n")  # wrapped: +1 J
    (core / "energy_uj").write_text("900000\n")  # already part of package 0: not counted twice
    assert meter.joules() == 3.0


def test_no_counter_means_none(tmp_path, monkeypatch):
    monkeypatch.setattr(energy, "POWERCAP", tmp_path / "absent")
    meter = energy.EnergyMeter("cpu")
    assert meter.source is None and meter.joules() is None
