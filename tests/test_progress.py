"""The one progress helper: a line with done/total, rate and ETA; nested lines share one
display; a disabled line prints nothing."""

from __future__ import annotations

from warehouse.store import progress
from warehouse.store.progress import Progress


def test_a_line_shows_done_total_rate_and_eta(capsys):
    with Progress("ingest", 3, unit="prompts") as bar:
        bar.advance(1)
        bar.advance(2, info="12 tok/s")
    err = capsys.readouterr().err
    assert "ingest" in err and "3/3" in err and "prompts" in err and "ETA" in err
    assert "/s" in err and "12 tok/s" in err
    assert progress._LIVE == [] and progress._USERS == [0]


def test_nested_lines_share_one_display(capsys):
    with Progress("study", 2, unit="steps") as outer:
        with Progress("stats", 4) as inner:
            assert len(progress._LIVE) == 1 and progress._USERS == [2]
            inner.advance(4)
        outer.add_total(3)
        assert outer.total == 5
        outer.advance(5)
        outer.note("a note")
    err = capsys.readouterr().err
    assert "5/5" in err and "a note" in err
    assert progress._LIVE == [] and progress._USERS == [0]


def test_relabel_and_set_never_pass_the_total(capsys):
    with Progress("eval a", 2) as bar:
        bar.relabel("eval b", 4)
        bar.set(9)
        assert (bar.label, bar.done, bar.total) == ("eval b", 4, 4)
    assert "eval b" in capsys.readouterr().err


def test_a_disabled_line_prints_nothing(capsys):
    with Progress("ingest", 3, enabled=False) as bar:
        bar.advance(3)
        bar.note("hidden")
    assert capsys.readouterr().err == ""
    assert progress._LIVE == []
