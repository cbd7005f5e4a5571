"""labkit.report: figures redrawn from saved metrics alone; malformed files skipped, warned."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

from labkit import report
from labkit.errors import LabkitError
from labkit.report import ReportWarning, regenerate, results_figure, run_figure

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# ------------------------------------------------------------------ files in the real structures
def _method(scores: dict[str, float], oracle: bool = False) -> dict:
    """One method of labkit.oracles.report_data (the relative numbers are not drawn)."""
    return {"scores": {**scores, "mean": float(np.mean(list(scores.values())))},
            "oracle": oracle, "fraction_of_reference": {}, "gap_closed": {}}


SPEC_UNET = {  # benchmarks/spec_unet.py: methods.*.sdr and tables.sdr (report_data)
    "benchmark": "spectrogram U-Net vs Open-Unmix",
    "metrics": {"sdr": "SDR, museval v4 (MUSDB convention)", "si_sdr": "SI-SDR"},
    "methods": {"Spec U-Net": {"sdr": {"vocals": 3.0, "accompaniment": 8.0}},
                "IRM2 oracle": {"sdr": {"vocals": 11.0, "accompaniment": 16.0}}},
    "tables": {"sdr": {"metric": "sdr", "sources": ["vocals", "accompaniment"],
                       "reference": "IRM2 oracle", "floor": "do-nothing",
                       "methods": {
                           "Spec U-Net": _method({"vocals": 3.0, "accompaniment": 8.0}),
                           "Open-Unmix": _method({"vocals": -12.0, "accompaniment": -7.5}),
                           "IRM2 oracle": _method({"vocals": 11.5, "accompaniment": 16.0}, True),
                           "do-nothing": _method({"vocals": -4.5, "accompaniment": 4.5})}}},
}
TOY_MUSDB = {  # benchmarks/toy_musdb.py: a report_data table under "sdr"
    "benchmark": "toy_musdb",
    "sdr": {"metric": "SDR (museval BSSEval v4)", "sources": ["vocals", "drums", "bass", "other"],
            "reference": "IRM2 oracle", "floor": "do-nothing",
            "methods": {"IRM2 oracle": _method({"vocals": 10.0, "drums": 11.0, "bass": 9.5,
                                                "other": 11.0}, True),
                        "do-nothing": _method({"vocals": -6.0, "drums": -4.0, "bass": -5.5,
                                               "other": -4.5})}},
}
WAVE_UNET = {  # benchmarks/wave_unet.py: scores.<method>.sdr
    "metric": "SDR, MUSDB convention",
    "scores": {name: {"sdr": dict(zip(("vocals", "drums", "bass", "other"), values)),
                      "mean": float(np.mean(values))}
               for name, values in {"WaveUNet": [2.0, 3.0, 1.0, 0.5],
                                    "IRM2 oracle": [10.0, 11.0, 9.0, 11.0],
                                    "do-nothing": [-6.0, -4.0, -5.0, -4.0]}.items()},
}
ATOMS = {  # benchmarks/atoms.py: rate_distortion.<clip> = [{method, target_kbps, kbps, snr, ...}]
    "machine": {"cpus": 2},
    "rate_distortion": {
        clip: [{"method": method, "target_kbps": target, "kbps": target * factor,
                "snr": snr + target / 8, "bytes": 1000, "setting": "x"}
               for target in (16, 8) for method, factor, snr in
               (("mp3", 1.0, 10.0), ("opus", 0.95, 12.0), ("atoms", 0.9, 14.0))]
        for clip in ("speech", "music")},
}
DIFFUSION_SR = {  # benchmarks/diffusion_sr.py: quality.<set>.mean.<method>.{lsd,lsd_high,snr}
    "fast": True,
    "quality": {
        "settings": {"case": "soxr 44.1 -> 11.025 kHz"},
        "music": {"mean": {"model": {"lsd": 1.2, "lsd_high": 1.4, "snr": 17.0},
                           "soxr": {"lsd": 5.2, "lsd_high": 6.0, "snr": 25.0},
                           "input": {"lsd": 5.1, "lsd_high": 5.9, "snr": 25.0}},
                  "per_clip": {}},
        "speech": {"mean": {"model": {"lsd": 1.7, "lsd_high": 2.0, "snr": 19.0},
                            "soxr": {"lsd": 5.0, "lsd_high": 5.8, "snr": 23.0},
                            "input": {"lsd": 5.0, "lsd_high": 5.8, "snr": 23.0}},
                   "per_clip": {}},
        "evaluation_seconds": 9.5,
        "robustness": {"butter@4410": {"input": {"lsd": 5.4}, "model": {"lsd": 1.1}},
                       "mp3": {"input": {"lsd": 5.6}, "model": {"lsd": 3.5}}},
    },
}
SINGLE_SONG = {  # benchmarks/single_song.py: songs = [{song, shipped_db, finetuned_db, ...}]
    "metric": "vocals SDR on the last 30 % of each song",
    "songs": [{"song": "toy-test-000", "shipped_db": 2.0, "finetuned_db": 3.5, "oracle_db": 9.0},
              {"song": "toy-test-001", "shipped_db": 1.0, "finetuned_db": 2.0, "oracle_db": 8.0}],
    "median": {"shipped_db": 1.5, "finetuned_db": 2.75, "oracle_db": 8.5},
}
ENGINE_TRANSFER = {  # benchmarks/engine_transfer.py: conditions.<condition>.tables.sdr
    "metrics": {"sdr": "SDR, museval v4 (MUSDB convention)"},
    "transfer": {"sdr": {"vocals": {"gap_db": 2.0}}},
    "conditions": {
        condition: {"tables": {"sdr": {
            "metric": "sdr", "sources": ["vocals", "accompaniment"], "reference": "IRM2 oracle",
            "floor": "do-nothing",
            "methods": {"Spec U-Net": _method({"vocals": model, "accompaniment": 7.0}),
                        "IRM2 oracle": _method({"vocals": 11.0, "accompaniment": 15.0}, True)}}},
            "evaluation_seconds": 1.0}
        for condition, model in (("same engines", 4.0), ("other engines", 2.0))},
}
STEP_SCALING = {  # benchmarks/step_scaling.py: jobs.<job>.points = [{step, headline, ...}]
    "device": "a GPU", "targets": {"spec": 0.6, "wave": 0.5},
    "cpu_budget_steps": {"spec": {"steps": 1500}, "wave": {"steps": 1700}},
    "jobs": {
        "spec-a": {"part": "spec", "oracle_headline": 9.0,
                   "points": [{"step": 4000, "headline": 3.0}, {"step": 2000, "headline": 2.0}]},
        "spec-b": {"part": "spec", "oracle_headline": 9.0,
                   "points": [{"step": 2000, "headline": 2.5}]},
        "wave-a": {"part": "wave", "oracle_headline": 10.0,
                   "points": [{"step": 2000, "headline": 3.5}]},
    },
}
RESULTS = {"spec_unet": SPEC_UNET, "step_scaling": STEP_SCALING, "engine_transfer": ENGINE_TRANSFER, "toy_musdb": TOY_MUSDB,
           "wave_unet": WAVE_UNET, "atoms": ATOMS, "diffusion_sr": DIFFUSION_SR,
           "single_song": SINGLE_SONG}


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data, indent=1))
    return path


def write_run(folder: Path, steps: int = 40) -> Path:
    """A run folder with a history.json as labkit.train.History saves it."""
    step = list(range(5, 5 * steps + 1, 5))
    history = {"step": step, "epoch": [s // 50 for s in step],
               "train_loss": [1.0 / (1 + 0.1 * s) for s in step], "lr": [1e-3] * steps,
               "time": [0.1 * s for s in step], "val_step": step[9::10],
               "val_loss": [1.2 / (1 + 0.1 * s) for s in step[9::10]]}
    write_json(folder / "history.json", history)
    return folder


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    for name, data in RESULTS.items():
        write_json(tmp_path / "results" / f"{name}.json", data)
    return tmp_path / "results"


def bars_by_label(ax) -> dict[str, list[float]]:
    """The visible bar heights of each legend entry of a grouped-bar axes."""
    out = {}
    for container in ax.containers:
        out[container.get_label()] = [p.get_height() if p.get_visible() else np.nan
                                      for p in container.patches]
    return out


def check_written(paths: list[Path]) -> None:
    for path in paths:
        assert path.is_file() and path.stat().st_size > 1000, path
        head = path.read_bytes()[:8]
        assert head == PNG_MAGIC if path.suffix == ".png" else head.startswith(b"%PDF"), path


# ------------------------------------------------------------------------------------- tests
def test_regenerate_draws_every_results_file_and_run(results_dir: Path, tmp_path: Path):
    run = write_run(tmp_path / "runs" / "02_spec_unet")
    out = tmp_path / "figures"
    written = regenerate(results_dir, runs=[run], out=out)
    stems = [f"bench_{name}" for name in sorted(RESULTS)] + ["loss_02_spec_unet"]
    assert sorted(p.name for p in written) == sorted(f"{s}.{ext}" for s in stems
                                                     for ext in ("pdf", "png"))
    assert all(p.parent == out for p in written)
    check_written(written)
    assert plt.get_fignums() == []  # every figure closed once saved


def test_separation_bars_are_the_saved_scores(results_dir: Path):
    fig = results_figure(results_dir / "spec_unet.json")
    ax = fig.axes[0]
    # tables.sdr wins over methods.*.sdr: it has every method, in the file's order
    bars = bars_by_label(ax)
    assert list(bars) == ["Spec U-Net", "Open-Unmix", "IRM2 oracle", "do-nothing"]
    assert bars["Open-Unmix"] == pytest.approx([-12.0, -7.5])
    assert bars["IRM2 oracle"] == pytest.approx([11.5, 16.0])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["vocals", "accompaniment"]
    hatched = {c.get_label() for c in ax.containers if c.patches[0].get_hatch()}
    assert hatched == {"IRM2 oracle"}
    assert "museval v4" in ax.get_title(loc="left")  # the file's own words for the metric


def test_wave_unet_scores_in_stem_order(results_dir: Path):
    ax = results_figure(results_dir / "wave_unet.json").axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["vocals", "drums", "bass", "other"]
    assert bars_by_label(ax)["WaveUNet"] == pytest.approx([2.0, 3.0, 1.0, 0.5])


def test_missing_score_leaves_a_gap(tmp_path: Path):
    data = json.loads(json.dumps(WAVE_UNET))
    data["scores"]["WaveUNet"]["sdr"]["bass"] = None
    ax = results_figure(write_json(tmp_path / "w.json", data)).axes[0]
    heights = bars_by_label(ax)["WaveUNet"]
    assert np.isnan(heights[2]) and heights[3] == pytest.approx(0.5)


def test_step_scaling_lines_per_job_with_oracle_target_and_budget(results_dir: Path):
    fig = results_figure(results_dir / "step_scaling.json")
    spec, wave = fig.axes
    lines = {line.get_label(): line for line in spec.get_lines()}
    assert list(lines["spec-a"].get_xdata()) == [2000, 4000]  # sorted by step
    assert list(lines["spec-a"].get_ydata()) == [2.0, 3.0]
    assert list(lines["spec-b"].get_ydata()) == [2.5]
    assert list(lines["IRM2 oracle (9.00)"].get_ydata()) == [9.0, 9.0]
    assert list(lines["course target (0.6x oracle)"].get_ydata()) == pytest.approx([5.4, 5.4])
    assert list(lines["CPU budget (1500 steps)"].get_xdata()) == [1500, 1500]
    assert "course target (0.5x oracle)" in {line.get_label() for line in wave.get_lines()}
    assert "notebook 03" in wave.get_title(loc="left")


def test_rate_distortion_lines_per_codec_and_clip(results_dir: Path):
    fig = results_figure(results_dir / "atoms.json")
    assert [ax.get_title(loc="left") for ax in fig.axes] == ["atoms: speech", "atoms: music"]
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert sorted(lines) == ["atoms", "mp3", "opus"]
    # points sorted by rate, whatever the order in the file
    assert list(lines["atoms"].get_xdata()) == pytest.approx([7.2, 14.4])
    assert list(lines["atoms"].get_ydata()) == pytest.approx([15.0, 16.0])


def test_lsd_bars_per_set_and_degradation(results_dir: Path):
    fig = results_figure(results_dir / "diffusion_sr.json")
    main, robust = fig.axes[:2]
    assert [t.get_text() for t in main.get_xticklabels()] == ["music", "speech"]
    assert bars_by_label(main)["model"] == pytest.approx([1.2, 1.7])
    assert bars_by_label(robust) == {"input": pytest.approx([5.4, 5.6]),
                                     "model": pytest.approx([1.1, 3.5])}
    # one colour per method across both panels
    colour = {c.get_label(): c.patches[0].get_facecolor() for c in main.containers}
    assert {c.get_label(): c.patches[0].get_facecolor() for c in robust.containers} == {
        k: colour[k] for k in ("input", "model")}


def test_engine_transfer_one_panel_per_condition_on_one_scale(results_dir: Path):
    fig = results_figure(results_dir / "engine_transfer.json")
    same, other = fig.axes[:2]
    assert same.get_title(loc="left") == "engine_transfer: same engines"
    assert bars_by_label(same)["Spec U-Net"] == pytest.approx([4.0, 7.0])
    assert bars_by_label(other)["Spec U-Net"] == pytest.approx([2.0, 7.0])
    assert same.get_ylim() == other.get_ylim()


def test_single_song_bars_with_median(results_dir: Path):
    ax = results_figure(results_dir / "single_song.json").axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["toy-test-000", "toy-test-001",
                                                            "median"]
    assert bars_by_label(ax)["fine-tuned"] == pytest.approx([3.5, 2.0, 2.75])


@pytest.mark.parametrize("text, reason", [
    ("{not json", "cannot read it as JSON"),
    ("[1, 2, 3]", "holds a list, expected a JSON object"),
    ('{"benchmark": "something else", "numbers": [1, 2]}', "no figure recipe fits"),
    ('{"sdr": {"methods": {"x": {"scores": {"vocals": "loud"}}}}}', "'loud', not a number"),
    ('{"rate_distortion": {"speech": {"mp3": 1}}}', "rate_distortion.speech is dict"),
    ('{"songs": [{"song": "a"}]}', "none of shipped_db"),
])
def test_malformed_results_file_is_skipped_with_a_warning(tmp_path: Path, text: str,
                                                          reason: str):
    results_dir = tmp_path / "results"
    write_json(results_dir / "wave_unet.json", WAVE_UNET)
    write_json(results_dir / "broken.json", text)
    with pytest.warns(ReportWarning) as caught:
        written = regenerate(results_dir, out=tmp_path / "figures")
    messages = [str(w.message) for w in caught if issubclass(w.category, ReportWarning)]
    assert len(messages) == 1
    assert str(results_dir / "broken.json") in messages[0] and reason in messages[0]
    # the good file beside it is still drawn
    assert sorted(p.name for p in written) == ["bench_wave_unet.pdf", "bench_wave_unet.png"]
    assert plt.get_fignums() == []  # a recipe failing half-way leaves no figure open


def test_runs_found_below_a_folder_and_names_kept_apart(tmp_path: Path):
    write_run(tmp_path / "runs" / "a" / "vocals")
    write_run(tmp_path / "runs" / "b" / "vocals")
    write_run(tmp_path / "runs" / "stems")
    written = regenerate(None, runs=[tmp_path / "runs"], out=tmp_path / "figures")
    assert sorted(p.stem for p in written if p.suffix == ".png") == [
        "loss_a_vocals", "loss_b_vocals", "loss_stems"]


def test_run_without_history_or_losses_warns(tmp_path: Path):
    (tmp_path / "empty_run").mkdir()
    write_json(tmp_path / "odd" / "history.json", {"step": [1, 2], "lr": [0.1, 0.1]})
    good = write_run(tmp_path / "good")
    with pytest.warns(ReportWarning) as caught:
        written = regenerate(None, runs=[tmp_path / "empty_run", tmp_path / "odd", good],
                             out=tmp_path / "figures")
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2
    assert any("empty_run" in m and "no history.json" in m for m in messages)
    assert any("odd" in m and "no loss values" in m for m in messages)
    assert [p.name for p in written] == ["loss_good.pdf", "loss_good.png"]


def test_loss_figure_plots_the_saved_history(tmp_path: Path):
    run = write_run(tmp_path / "run", steps=40)
    ax = run_figure(run).axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["val_loss"].get_xdata()) == [50, 100, 150, 200]
    assert list(lines["train_loss"].get_ydata())[:2] == pytest.approx([1 / 1.5, 1 / 2.0])


def test_explicit_results_folder_must_exist(tmp_path: Path):
    with pytest.raises(LabkitError, match="nowhere.*is not a folder"):
        regenerate(tmp_path / "nowhere", out=tmp_path / "figures")


def test_command_line_writes_and_lists_files(results_dir: Path, tmp_path: Path, capsys):
    run = write_run(tmp_path / "myrun")
    out = tmp_path / "figures"
    code = report.main(["--results", str(results_dir), "--run", str(run), "--out", str(out)])
    printed = capsys.readouterr().out.split()
    assert code == 0
    assert sorted(Path(p).name for p in printed) == sorted(p.name for p in out.iterdir())
    assert (out / "loss_myrun.png").is_file() and (out / "bench_wave_unet.pdf").is_file()
    assert report.main(["--no-results", "--out", str(tmp_path / "f2")]) == 0
    assert not (tmp_path / "f2").exists() or not any((tmp_path / "f2").iterdir())


def test_redrawing_needs_no_torch(results_dir: Path, tmp_path: Path):
    """Figures come from JSON alone: nothing that could train or evaluate is even imported."""
    code = ("import sys; from labkit.report import regenerate; "
            f"regenerate({str(results_dir)!r}, out={str(tmp_path / 'f')!r}); "
            "print(sorted(m for m in ('torch', 'labkit.train', 'labkit.metrics') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "MPLBACKEND": "Agg"}, check=True)
    assert done.stdout.strip() == "[]"
