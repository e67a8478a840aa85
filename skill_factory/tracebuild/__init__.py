"""SkillFactory trace building, without the stage runner: formats, layout, accounting.

    from skill_factory.tracebuild import PhrasePools, TraceOptions, build_traces, rows_from_table
    result = build_traces(rows_from_table(canonical_table), TraceOptions(), PhrasePools.from_config(cfg.phrases))

``build`` turns raw rows (completions, grades, reflections) into traces; ``layout`` renders
and parses the trace text. The traces stage (``skill_factory.stages.traces``) adds input
loading, the parquet artifact, token statistics and the optional hub push.
"""
from skill_factory.tracebuild.build import (
    FORMATS,
    FULL_RANGE,
    REASONS,
    EmptyTracesError,
    PhrasePools,
    RawRows,
    TraceOptions,
    TraceResult,
    build_traces,
    length_stats,
    phrase_problems,
    rows_from_table,
)
from skill_factory.tracebuild.layout import (
    LAYOUT_TAGS,
    ParsedTrace,
    TraceLayoutError,
    parse_trace,
    render_trace,
)

__all__ = [
    "FORMATS",
    "FULL_RANGE",
    "LAYOUT_TAGS",
    "REASONS",
    "EmptyTracesError",
    "ParsedTrace",
    "PhrasePools",
    "RawRows",
    "TraceLayoutError",
    "TraceOptions",
    "TraceResult",
    "build_traces",
    "length_stats",
    "parse_trace",
    "phrase_problems",
    "render_trace",
    "rows_from_table",
]
