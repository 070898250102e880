"""bacalhau.observability.tracing: traceparents parsed strictly, spans kept per job, bounded."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bacalhau.cli._trace_cmds import tree, waterfall
from bacalhau.observability.tracing import (
    MAX_ATTRIBUTES,
    KeptSpan,
    SpanStore,
    Tracing,
    annotate,
    context_of,
    parse_traceparent,
    traceparent_of,
)

GOOD = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_traceparent_parsed_strictly() -> None:
    sc = parse_traceparent(GOOD)
    assert sc is not None and sc.is_remote
    assert f"{sc.trace_id:032x}" == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert f"{sc.span_id:016x}" == "00f067aa0ba902b7"
    for bad in (
        "",
        GOOD.upper(),
        GOOD + " ",
        " " + GOOD,
        GOOD.replace("00-", "01-", 1),  # another version
        GOOD.replace("-01", "-1"),
        "00-" + "0" * 32 + "-00f067aa0ba902b7-01",  # all-zero trace ID
        "00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01",  # all-zero span ID
        GOOD[:-2] + "zz",
        GOOD + "\n",
        "x" * 10_000,
    ):
        assert parse_traceparent(bad) is None, bad
        assert context_of(bad) is None


@given(st.text(max_size=80))
def test_any_text_parses_or_is_refused(text: str) -> None:
    sc = parse_traceparent(text)
    assert sc is None or (len(text) == 55 and sc.is_valid)


def test_store_is_bounded() -> None:
    store = SpanStore(max_jobs=3, max_spans=10, max_per_job=4)

    def span(i: int) -> KeptSpan:
        return KeptSpan("s", "n", "t" * 32, f"{i:016x}", "", i, i + 1)

    for i in range(6):
        store.add("a", span(i))
    assert len(store.spans("a")) == 4 and store.dropped == 2
    for job in ("b", "c", "d"):
        store.add(job, span(0))
    assert store.spans("a") == [] and len(store) == 3  # the oldest job went first
    for i in range(4):
        store.add("b", span(i + 1))
        store.add("c", span(i + 1))
    assert len(store) <= 10


def test_spans_filed_under_their_job_with_parents() -> None:
    tracing = Tracing("node-x")
    root = tracing.start("job", GOOD, job_id="j-1")
    tp = traceparent_of(root)
    with tracing.span("child", tp, job_id="j-1", cid="bafy") as child:
        child.set_attribute("bacalhau.bytes", 3)
    tracing.record("after", 1, 2, parent=tp, job_id="j-1")
    with tracing.span("no job", tp):
        pass
    root.end()
    spans = {s.name: s for s in tracing.store.spans("j-1")}
    assert set(spans) == {"job", "child", "after"}
    assert spans["job"].parent_span_id == "00f067aa0ba902b7"  # the remote parent
    assert spans["job"].trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert spans["child"].parent_span_id == spans["job"].span_id
    assert spans["child"].attributes["bacalhau.cid"] == "bafy"
    assert spans["child"].attributes["bacalhau.bytes"] == "3"
    assert spans["child"].node_id == "node-x"
    assert spans["after"].start_ns == 1 and spans["after"].end_ns == 2
    tracing.shutdown()


def test_bogus_parent_starts_a_new_trace() -> None:
    tracing = Tracing("n")
    with tracing.span("job", "00-bogus", job_id="j"):
        pass
    (s,) = tracing.store.spans("j")
    assert s.parent_span_id == "" and len(s.trace_id) == 32


def test_unsampled_parent_is_still_recorded() -> None:
    tracing = Tracing("n")
    with tracing.span("job", GOOD[:-2] + "00", job_id="j"):
        pass
    (s,) = tracing.store.spans("j")
    assert s.parent_span_id == "00f067aa0ba902b7"


def test_kept_span_error_limits_and_annotations() -> None:
    """The spans a node only keeps (no exporter): an exception marks the span an error, an
    annotation reaches the current span, attributes are capped, and a span ends once."""
    tracing = Tracing("n")
    with pytest.raises(ValueError), tracing.span("run", job_id="j") as s:
        annotate(sources="peer-a")
        for i in range(100):
            s.set_attribute(f"bacalhau.a{i}", i)
        raise ValueError("boom")
    s.end()  # a second end keeps nothing more
    s.set_attribute("bacalhau.late", 1)  # nor does a change after the end
    (kept,) = tracing.store.spans("j")
    assert kept.error and kept.name == "run"
    assert kept.attributes["bacalhau.sources"] == "peer-a"
    assert len(kept.attributes) == MAX_ATTRIBUTES and "bacalhau.late" not in kept.attributes
    assert kept.end_ns >= kept.start_ns > 0


def test_off_makes_nothing() -> None:
    tracing = Tracing.off()
    assert not tracing.on
    with tracing.span("x", GOOD, job_id="j") as s:
        assert traceparent_of(s) == ""
    tracing.record("y", 1, 2, job_id="j")
    assert tracing.store.spans("j") == []


def test_current_span_crosses_tasks() -> None:
    tracing = Tracing("n")

    async def main() -> None:
        async def fetch() -> None:
            with tracing.span("input_fetch", job_id="j"):
                await asyncio.sleep(0)

        with tracing.span("execution", job_id="j"):
            await asyncio.gather(fetch(), fetch())

    asyncio.run(main())
    spans = tracing.store.spans("j")
    (ex,) = [s for s in spans if s.name == "execution"]
    assert [s.parent_span_id for s in spans if s.name == "input_fetch"] == [ex.span_id] * 2


def _doc(name: str, span: str, parent: str, start: int, end: int) -> dict[str, object]:
    return {
        "name": name,
        "node_id": "node-" + name,
        "trace_id": "t",
        "span_id": span,
        "parent_span_id": parent,
        "start_unix_nano": start,
        "end_unix_nano": end,
        "error": False,
    }


def test_waterfall_draws_children_under_parents() -> None:
    spans = [
        _doc("b", "2", "1", 10, 50),
        _doc("a", "1", "", 0, 100),
        _doc("loop", "3", "3", 5, 6),  # its own parent: drawn once, as a root
        _doc("c", "4", "2", 20, 30),
    ]
    assert [(d, s["name"]) for d, s in tree(spans)] == [(0, "a"), (1, "b"), (2, "c"), (0, "loop")]
    text = waterfall("j-1", spans, ["node-gone"], 80)
    lines = text.splitlines()
    assert lines[0].startswith("job j-1  trace t")
    assert lines[1].startswith("a ") and lines[2].startswith("  b ")
    assert len({x.rindex("|") for x in lines[1:5]}) == 1  # one shared axis
    assert "no answer from node node-gone" in text
