"""Progress output written to a log file or a pipe is plain lines: no carriage returns, no ANSI escape codes
(keras.utils.Progbar writes both whenever `"posix" in sys.modules`, i.e. on every Linux process)."""

import io

import keras

from evaluation import progress
from tests.test_fit import digits_config
from training import evaluate, fit


def _plain(text):
    return "\x1b[" not in text and "\r" not in text and "\b" not in text


def test_training_and_evaluation_print_plain_lines_off_a_terminal(tmp_path, capsys):
    """capsys's stdout is not a TTY, as when the command runs with `> run.log` or `| tee`."""
    fit.train(digits_config(epochs=1, sets=["train.verbose=auto"]), tmp_path)
    out = capsys.readouterr().out
    assert _plain(out), repr(out[-500:])
    assert "250/250 images" in out  # the evaluation's progress, as one line at the end
    evaluate.main([str(tmp_path), "--metrics", "nll", "--num-samples", "10", "--max-examples", "40"])
    out = capsys.readouterr().out
    assert _plain(out) and "40/40 images" in out, repr(out[-500:])


def test_line_progress_prints_every_interval_and_at_the_end(capsys):
    bar = progress.LineProgress(10, unit_name="image", interval=0.0)
    bar.add(4)
    bar.update(10, [("loss", 1.5)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("4/10 images") and lines[1].startswith("10/10 images")
    assert lines[1].endswith("loss: 1.5000")
    quiet = progress.LineProgress(10, interval=3600.0)
    quiet.add(3)
    quiet.add(3)
    assert capsys.readouterr().out == ""
    quiet.add(4)
    assert capsys.readouterr().out.startswith("10/10 steps")


def test_a_terminal_gets_the_keras_bar(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stdout", Terminal())
    assert progress.is_terminal()
    assert isinstance(progress.progress_bar(5), keras.utils.Progbar)
    monkeypatch.setattr("sys.stdout", io.StringIO())
    assert isinstance(progress.progress_bar(5), progress.LineProgress)
