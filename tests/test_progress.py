"""Progress: an ETA from the steps so far, a line at least every LOG_EVERY seconds outside a terminal, and nothing at
all under quiet(), NNCF's own bars included (they go to stderr, never to stdout where tables and JSON go)."""

import io

from nncf.common.logging.track_progress import track

from edgesmlp import progress


def test_eta_from_the_mean_step():
    assert progress.eta(0, 10, 5.0) == ""
    assert progress.eta(10, 10, 5.0) == ""
    assert progress.eta(1, 10, 7.0) == "1:03 left"


def test_outside_a_terminal_a_line_with_done_total_and_eta():
    stream = io.StringIO()
    with progress.progress_bar("ranking 4 layers", 4, log_every=0.0, stream=stream) as advance:
        for _ in range(4):
            advance("token_mix.0")
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("ranking 4 layers: 1/4, 0:0") and lines[0].endswith("left (token_mix.0)")
    assert len(lines) == 3  # the last step says nothing: the step's own result line follows


def nncf_bar():
    for _ in track(range(3), description="Statistics collection"):
        pass


def test_nncf_bars_go_to_stderr_and_nowhere_when_quiet(capsys, monkeypatch):
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich draws as on a terminal
    nncf_bar()
    assert "Statistics collection" in capsys.readouterr().out  # NNCF's own choice: stdout
    with progress.foreign_output():
        nncf_bar()
    shown = capsys.readouterr()
    assert shown.out == "" and "Statistics collection" in shown.err
    stream = io.StringIO()
    with progress.quiet(), progress.foreign_output():
        nncf_bar()
        with progress.progress_bar("ranking", 2, log_every=0.0, stream=stream) as advance:
            advance()
    assert capsys.readouterr() == ("", "") and stream.getvalue() == ""
