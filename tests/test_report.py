"""`align report`: the HTML a researcher opens, checked in a real headless Chromium."""

import json
import os
import shutil
from pathlib import Path

import pytest

from tunejury_align.cli import main
from tunejury_align.report import ReportError, build_report

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def debug_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "run"
    assert main(["best-of-n", "--n", "4", "--generator", "debug", "--reward", "debug", "--prompt", "lofi hip hop",
                 "jazz trio", "generation.duration=1.0", "candidates_per_batch=2", "--out", str(out)]) == 0
    return out


def test_report_is_written_at_the_end_of_a_run(debug_run):
    page = (debug_run / "report.html").read_text()
    assert "<svg" in page and "Mean best reward vs N" in page
    assert 'src="winners/p0000.wav"' in page and 'src="candidates/p0001_c00.wav"' in page
    assert "Debug world" in page and "debug-musicgen" in page
    assert "/tmp" not in page.split("<h2>Configuration")[0]  # audio referenced relatively


def test_half_finished_run_shows_what_exists(debug_run, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(debug_run, partial)
    (partial / "results.jsonl").unlink()
    (partial / "report.html").unlink()
    log = partial / ".progress" / "rank0.jsonl"
    log.write_text(log.read_text().splitlines()[0] + "\n")  # only the first unit survived
    shutil.rmtree(partial / "winners")
    assert main(["report", str(partial)]) == 0
    page = (partial / "report.html").read_text()
    assert "2 of 8 candidates scored (in progress)" in page and "not written yet" in page


def test_not_a_run_folder(tmp_path, capsys):
    with pytest.raises(ReportError, match="no run.json"):
        build_report(tmp_path)
    assert main(["report", str(tmp_path)]) == 2


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER) and os.environ.get("CI") != "true",
                    reason="needs Debian's chromium and chromium-driver (.ci/run installs them; CI never skips)")
def test_report_renders_in_headless_chromium(debug_run, ditto_run, expert_run):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1200,1600", "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        for name, run, players in (("ditto", ditto_run, 2), ("expert_iter", expert_run, 2)):
            driver.get((run / "report.html").resolve().as_uri())
            assert driver.find_elements("css selector", "svg.chart polyline")
            assert len(driver.find_elements("css selector", "audio")) == players
            assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
            ARTIFACTS.mkdir(exist_ok=True)
            driver.save_screenshot(str(ARTIFACTS / f"{name}_report.png"))
        driver.get((debug_run / "report.html").resolve().as_uri())
        charts = driver.find_elements("css selector", "svg.chart")
        assert charts and all(c.size["width"] > 100 and c.size["height"] > 100 for c in charts)
        assert driver.find_elements("css selector", "svg.chart polyline")
        players = driver.find_elements("css selector", "audio")
        assert len(players) == 4
        # every player's source loads and decodes: duration known after metadata load
        durations = driver.execute_async_script("""
            const done = arguments[arguments.length - 1];
            const players = Array.from(document.querySelectorAll('audio'));
            Promise.all(players.map(a => new Promise(resolve => {
                if (a.readyState >= 1) return resolve(a.duration);
                a.addEventListener('loadedmetadata', () => resolve(a.duration));
                a.addEventListener('error', () => resolve(-1));
                a.preload = 'metadata'; a.load();
            }))).then(done);
        """)
        assert all(d > 0.5 for d in durations), durations
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "best_of_n_report.png"))
    finally:
        driver.quit()
    assert (ARTIFACTS / "best_of_n_report.png").stat().st_size > 10_000
    json.dumps(durations)



RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.fixture(scope="module")
def ditto_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "ditto"
    assert main(["ditto", "--config", str(RECIPES / "debug/ditto.yaml"), "--generator", "debug", "--reward", "debug",
                 "--prompt", "lofi hip hop", "iterations=2", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def expert_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "expert"
    assert main(["expert-iter", "--config", str(RECIPES / "debug/expert_iter.yaml"), "--generator", "debug",
                 "--reward", "debug", "--prompt", "lofi hip hop beat", "epic orchestral soundtrack", "rounds=1",
                 "--out", str(out)]) == 0
    return out


def test_ditto_report(ditto_run):
    page = (ditto_run / "report.html").read_text()
    assert "Reward per iteration" in page and "Initial-noise norm" in page
    assert 'src="baseline/p0000.wav"' in page and 'src="optimised/p0000.wav"' in page
    assert "1 of 1 prompts finished" in page


def test_expert_iteration_report(expert_run):
    page = (expert_run / "report.html").read_text()
    for title in ("Reward of fresh samples", "Kept fraction", "Frechet distance to round 0", "Diversity"):
        assert title in page
    assert 'src="round_0/eval/audio/p0000_c000.wav"' in page and 'src="round_1/eval/audio/p0000_c000.wav"' in page
